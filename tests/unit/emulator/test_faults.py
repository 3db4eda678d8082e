"""The fault spec and its seeded plan: parsing, determinism and the throttle rotation (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from stream.emulator.answers import THROTTLE_SEQUENCE
from stream.emulator.faults import DEFAULT_TIMEOUT_HOLD_S, FaultKind, FaultPlan, FaultSpec, FaultSpecError

BAD_BODIES: list[tuple[dict[str, Any], str]] = [
    ({"http_500": 1.5}, "http_500"),
    ({"http_503": -0.1}, "http_503"),
    ({"throttle": "0.5"}, "throttle"),
    ({"timeout": True}, "timeout"),
    ({"reset": 0.6, "http_500": 0.6}, "add up to"),
    ({"latency_ms": [10]}, "latency_ms"),
    ({"latency_ms": [20, 10]}, "latency_ms"),
    ({"latency_ms": "10,20"}, "latency_ms"),
    ({"token_expired": 1}, "token_expired"),
    ({"seed": "7"}, "seed"),
    ({"reject_event_ids": "e1"}, "reject_event_ids"),
    ({"reject_event_ids": [1]}, "reject_event_ids"),
    ({"timeout_hold_s": -1}, "timeout_hold_s"),
    ({"throttle_regain_minutes": 1.5}, "throttle_regain_minutes"),
    ({"denied_datasets": "123"}, "denied_datasets"),
    ({"denied_datasets": [123]}, "denied_datasets"),
    ({"http_502": 0.1}, "unknown fault option(s): http_502"),
]


@pytest.mark.parametrize(("body", "fragment"), BAD_BODIES, ids=[str(b) for b, _ in BAD_BODIES])
def test_bad_fault_bodies_name_the_key(body: dict[str, Any], fragment: str) -> None:
    """Each unusable option is refused with a message that names it."""
    with pytest.raises(FaultSpecError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        FaultSpec.from_mapping(body)


def test_full_body_round_trips() -> None:
    """Every option parses and `to_dict` gives the same body back."""
    body = {"http_500": 0.1, "http_503": 0.1, "throttle": 0.2, "timeout": 0.05, "reset": 0.05,
            "ok_empty": 0.05, "ok_html": 0.05, "no_content": 0.05, "bad_version": 0.05, "waf_403": 0.05,
            "latency_ms": [5.0, 10.0], "token_expired": True, "seed": 42, "reject_event_ids": ["a", "b"],
            "timeout_hold_s": 0.5, "throttle_regain_minutes": 3, "denied_datasets": ["1", "2"]}  # fmt: skip
    assert FaultSpec.from_mapping(body).to_dict() == body


def test_empty_body_means_no_faults() -> None:
    """An empty body is the quiet spec: no fault, no delay, the default hold."""
    spec = FaultSpec.from_mapping({})
    assert spec == FaultSpec()
    assert spec.timeout_hold_s == DEFAULT_TIMEOUT_HOLD_S
    plan = FaultPlan(spec)
    assert all(d.fault is None and d.latency_s == 0.0 for d in (plan.draw() for _ in range(100)))


def _draws(spec: FaultSpec, n: int, default_seed: int = 0) -> list[tuple[float, str | None, int | None]]:
    plan = FaultPlan(spec, default_seed)
    return [(d.latency_s, d.fault.value if d.fault else None, d.throttle_code) for d in (plan.draw() for _ in range(n))]


def test_same_seed_same_faults() -> None:
    """Two plans with the same seed decide the same faults and delays for the same request order."""
    spec = FaultSpec(http_500=0.2, http_503=0.2, throttle=0.2, reset=0.1, latency_ms=(1.0, 9.0), seed=7)
    first = _draws(spec, 200)
    assert first == _draws(spec, 200)
    assert first != _draws(FaultSpec(http_500=0.2, http_503=0.2, throttle=0.2, reset=0.1,
                                     latency_ms=(1.0, 9.0), seed=8), 200)  # fmt: skip
    assert {kind for _, kind, _ in first} == {"http_500", "http_503", "throttle", "reset", None}


def test_spec_without_seed_uses_the_default_seed() -> None:
    """A spec that names no seed is seeded by the emulator's seed."""
    spec = FaultSpec(http_500=0.5)
    assert _draws(spec, 50, default_seed=3) == _draws(FaultSpec(http_500=0.5, seed=3), 50)


def test_probability_one_always_injects() -> None:
    """A probability of 1 injects that fault into every request."""
    for kind in FaultKind:
        plan = FaultPlan(FaultSpec(**{kind.value: 1.0}))
        assert {plan.draw().fault for _ in range(20)} == {kind}


def test_throttles_cycle_through_metas_codes() -> None:
    """Successive throttle faults answer 4, 17, 613, 80004 and then start again."""
    plan = FaultPlan(FaultSpec(throttle=1.0))
    assert [plan.draw().throttle_code for _ in range(8)] == list(THROTTLE_SEQUENCE) * 2


def test_latency_stays_within_bounds() -> None:
    """Added delays are drawn between the given bounds, in seconds."""
    plan = FaultPlan(FaultSpec(latency_ms=(10.0, 20.0)))
    delays = [plan.draw().latency_s for _ in range(200)]
    assert all(0.010 <= d <= 0.020 for d in delays)
    assert max(delays) - min(delays) > 0.005


def test_injection_rate_follows_the_probability() -> None:
    """Over many requests a probability of 0.3 injects roughly 30% (seeded, so exact every run)."""
    plan = FaultPlan(FaultSpec(http_503=0.3, seed=1))
    hits = sum(plan.draw().fault is FaultKind.HTTP_503 for _ in range(2000))
    assert 500 < hits < 700

