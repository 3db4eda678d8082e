"""Faults on demand: what to break, and a seeded plan that decides it per request (pure).

A `FaultSpec` is what `POST /_emulator/faults` and the CLI flags describe. A `FaultPlan` turns it into
one `Decision` per request from its own `random.Random(seed)`, drawing the same numbers in the same
order whatever the spec says, so a given seed and request order always give the same faults.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from stream.emulator.answers import THROTTLE_SEQUENCE
from stream.errors import UsageError

# Held requests outlast any sane client timeout (Meta recommends 1.5 s [1.3]); tests shorten it.
DEFAULT_TIMEOUT_HOLD_S: Final = 60.0
DEFAULT_SEED: Final = 0


class FaultKind(StrEnum):
    """A fault drawn for one request; the value is its key in the faults body and the statistics."""

    HTTP_500 = "http_500"
    HTTP_503 = "http_503"
    THROTTLE = "throttle"
    TIMEOUT = "timeout"
    RESET = "reset"
    # Answers that are not Meta's: what a proxy, a captive portal, a WAF or a wrong version gives.
    # (Appended after the first five, so existing seeds draw the same faults as before.)
    OK_EMPTY = "ok_empty"  # HTTP 200 with an empty body
    OK_HTML = "ok_html"  # HTTP 200 with an HTML page (a captive portal or a proxy's page)
    NO_CONTENT = "no_content"  # HTTP 204
    BAD_VERSION = "bad_version"  # HTTP 400, code 2500 (unknown path: a retired or wrong API version)
    WAF_403 = "waf_403"  # HTTP 403 with a web application firewall's HTML page


# Order of the cumulative draw: one uniform number picks at most one fault.
_KINDS: Final = tuple(FaultKind)
_KEYS: Final = frozenset(
    {k.value for k in FaultKind}
    | {"latency_ms", "token_expired", "seed", "reject_event_ids", "timeout_hold_s", "throttle_regain_minutes",
       "denied_datasets"}
)


class FaultSpecError(UsageError):
    """A faults body or flag that cannot be used; the message names the key."""


def _probability(body: Mapping[str, Any], key: str) -> float:
    value = body.get(key, 0.0)
    if type(value) not in (int, float) or not 0.0 <= value <= 1.0:
        raise FaultSpecError(f"{key}: a probability between 0 and 1 is needed, got {value!r}")
    return float(value)


def _latency(value: object) -> tuple[float, float] | None:
    if value is None:
        return None
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or any(type(v) not in (int, float) for v in value)
        or not 0 <= value[0] <= value[1]
    ):
        raise FaultSpecError(f"latency_ms: [lo, hi] with 0 <= lo <= hi is needed, got {value!r}")
    return (float(value[0]), float(value[1]))


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """Which faults to inject. Probabilities are per request and their sum is at most 1."""

    http_500: float = 0.0
    http_503: float = 0.0
    throttle: float = 0.0
    timeout: float = 0.0
    reset: float = 0.0
    ok_empty: float = 0.0
    ok_html: float = 0.0
    no_content: float = 0.0
    bad_version: float = 0.0
    waf_403: float = 0.0
    latency_ms: tuple[float, float] | None = None
    token_expired: bool = False
    seed: int | None = None
    reject_event_ids: frozenset[str] = field(default_factory=frozenset)
    timeout_hold_s: float = DEFAULT_TIMEOUT_HOLD_S
    throttle_regain_minutes: int = 0
    # Datasets whose permission is revoked: a valid token gets Meta's 100 / 33 ("cannot be loaded due to
    # missing permissions") for events and reads of them, until the faults are replaced (re-granted).
    denied_datasets: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        total = sum(self.probability(kind) for kind in _KINDS)
        if total > 1.0 + 1e-9:
            raise FaultSpecError(f"the fault probabilities add up to {total:g}; at most 1 is possible")

    def probability(self, kind: FaultKind) -> float:
        """The probability of `kind` per request."""
        value: float = getattr(self, kind.value)
        return value

    @classmethod
    def from_mapping(cls, body: Mapping[str, Any]) -> FaultSpec:
        """Parse a faults body; raise FaultSpecError naming the first bad key."""
        unknown = sorted(set(body) - _KEYS)
        if unknown:
            raise FaultSpecError(f"unknown fault option(s): {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}")
        token_expired = body.get("token_expired", False)
        if type(token_expired) is not bool:
            raise FaultSpecError(f"token_expired: true or false is needed, got {token_expired!r}")
        seed = body.get("seed")
        if seed is not None and type(seed) is not int:
            raise FaultSpecError(f"seed: an integer is needed, got {seed!r}")
        ids = body.get("reject_event_ids", [])
        if not isinstance(ids, list) or any(type(i) is not str for i in ids):
            raise FaultSpecError("reject_event_ids: a list of event id strings is needed")
        hold = body.get("timeout_hold_s", DEFAULT_TIMEOUT_HOLD_S)
        if type(hold) not in (int, float) or hold < 0:
            raise FaultSpecError(f"timeout_hold_s: a number of seconds >= 0 is needed, got {hold!r}")
        regain = body.get("throttle_regain_minutes", 0)
        if type(regain) is not int or regain < 0:
            raise FaultSpecError(f"throttle_regain_minutes: an integer >= 0 is needed, got {regain!r}")
        denied = body.get("denied_datasets", [])
        if not isinstance(denied, list) or any(type(i) is not str for i in denied):
            raise FaultSpecError("denied_datasets: a list of dataset id strings is needed")
        return cls(
            **{kind.value: _probability(body, kind.value) for kind in _KINDS},
            latency_ms=_latency(body.get("latency_ms")),
            token_expired=token_expired, seed=seed, reject_event_ids=frozenset(ids),
            timeout_hold_s=float(hold), throttle_regain_minutes=regain, denied_datasets=frozenset(denied),
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The spec as a faults body (what `GET /_emulator/faults` answers)."""
        return {
            **{kind.value: self.probability(kind) for kind in _KINDS},
            "latency_ms": list(self.latency_ms) if self.latency_ms is not None else None,
            "token_expired": self.token_expired,
            "seed": self.seed,
            "reject_event_ids": sorted(self.reject_event_ids),
            "timeout_hold_s": self.timeout_hold_s,
            "throttle_regain_minutes": self.throttle_regain_minutes,
            "denied_datasets": sorted(self.denied_datasets),
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """What happens to one request: an added delay, and at most one fault."""

    latency_s: float = 0.0
    fault: FaultKind | None = None
    throttle_code: int | None = None


class FaultPlan:
    """Draws a `Decision` per request from `spec`, seeded by `spec.seed` or else `default_seed`."""

    def __init__(self, spec: FaultSpec, default_seed: int = DEFAULT_SEED) -> None:
        self.spec = spec
        self._random = random.Random(spec.seed if spec.seed is not None else default_seed)  # noqa: S311 - test faults, not secrets
        self._throttles = 0
        bounds = []
        total = 0.0
        for kind in _KINDS:
            total += spec.probability(kind)
            bounds.append((total, kind))
        self._bounds = tuple(bounds)
        self._quiet = total == 0.0 and spec.latency_ms is None

    def draw(self) -> Decision:
        """The decision for the next request; always consumes two numbers, so sequences stay aligned."""
        pick = self._random.random()
        spread = self._random.random()
        if self._quiet:
            return _NO_FAULT
        latency_s = 0.0
        if self.spec.latency_ms is not None:
            lo, hi = self.spec.latency_ms
            latency_s = (lo + (hi - lo) * spread) / 1000.0
        for bound, kind in self._bounds:
            if pick < bound:
                if kind is FaultKind.THROTTLE:
                    code = THROTTLE_SEQUENCE[self._throttles % len(THROTTLE_SEQUENCE)]
                    self._throttles += 1
                    return Decision(latency_s, kind, code)
                return Decision(latency_s, kind)
        return Decision(latency_s)


_NO_FAULT: Final = Decision()
