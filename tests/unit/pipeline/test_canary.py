"""The canary: a valid synthetic app event, sent through the sender's rules, outcome kept apart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from stream.config import Destination, SendSettings
from stream.emulator.rules import check_event
from stream.pipeline.canary import CANARY_EVENT_NAME, Canary, canary_event
from stream.pipeline.meta_client import Action, Answer
from stream.pipeline.sender import DestinationSender, DestinationState
from stream.pipeline.stats import Stats

TOKEN = "tok-canary-0123456789"  # noqa: S105 - a test value
NOW = 1_800_000_000
ACK = Answer(Action.ACKED, 200, events_received=1)
EXPIRED = Answer(Action.HALT, 400, 190, 463)


class FakeMeta:
    """A Poster answering from a list (then acking); it records each request's parsed body."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.bodies: list[dict[str, object]] = []

    async def post(self, url: str, body: bytes, events: int) -> Answer:
        self.bodies.append(orjson.loads(body))
        await asyncio.sleep(0)
        return self.answers.pop(0) if self.answers else ACK


def _dest(tmp_path: Path, **kw: object) -> Destination:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    return Destination("shop", "111", ("com.example.shop",), base_url="http://meta.invalid", token_file=str(token),
                       test_event_code="TEST123", canary_interval_s=60.0, **kw)  # type: ignore[arg-type]


def _sender(dest: Destination, meta: FakeMeta, stats: Stats) -> DestinationSender:
    settings = SendSettings(rate_limit_rps=0, token_check_interval_s=3600)
    return DestinationSender(dest, meta, settings, stats, lambda _b: None, lambda _i, _a: None)


def test_the_canary_event_is_a_valid_app_event_meta_would_accept(tmp_path: Path) -> None:
    """The synthetic event passes our validation and the emulator's (Meta's) rules, with hashed ids only."""
    event = orjson.loads(canary_event(_dest(tmp_path), NOW, 1))
    assert check_event(event, NOW) is None
    assert event["event_name"] == CANARY_EVENT_NAME
    assert event["action_source"] == "app"
    assert len(event["user_data"]["external_id"][0]) == 64


async def test_an_ack_records_the_success_and_counts_no_real_event(tmp_path: Path) -> None:
    """A canary ack sets the last success time; the request carries the test code; nothing counts as sent."""
    dest, meta, stats = _dest(tmp_path), FakeMeta(), Stats()
    sender = _sender(dest, meta, stats)
    await sender.start()
    try:
        canary = Canary(dest, sender, sender.is_halted, clock=lambda: float(NOW))
        assert await canary.run_once() == "ok"
    finally:
        await sender.stop()
    assert canary.state.last_success_at == NOW
    assert canary.state.runs == {"ok": 1}
    (body,) = meta.bodies
    assert body["test_event_code"] == "TEST123"
    assert body["access_token"] == TOKEN
    assert (stats.batches_sent, stats.events_sent) == (0, 0)


async def test_an_expired_token_found_by_the_canary_halts_the_destination(tmp_path: Path) -> None:
    """A 190 answer to the canary halts the destination as a real batch would, and is kept as the last error."""
    dest, meta, stats = _dest(tmp_path), FakeMeta(EXPIRED), Stats()
    sender = _sender(dest, meta, stats)
    await sender.start()
    try:
        canary = Canary(dest, sender, sender.is_halted, clock=lambda: float(NOW))
        assert await canary.run_once() == "halt"
        assert sender.state is DestinationState.HALTED
        assert sender.halt_reason == "190/463"
        assert await canary.run_once() == "skipped"  # halted: no second probe until a new token
        assert len(meta.bodies) == 1
        (tmp_path / "token").write_text("tok-new-0123456789")
        assert sender.reload_token()
        assert sender.state is DestinationState.FLOWING
        assert await canary.run_once() == "ok"
    finally:
        await sender.stop()
    assert (canary.state.last_error_code, canary.state.last_error_at) == (190, NOW)
    assert canary.state.runs == {"halt": 1, "skipped": 1, "ok": 1}
    assert stats.halts == 1


async def test_a_dedicated_canary_code_leaves_real_events_without_one(tmp_path: Path) -> None:
    """canary_test_event_code marks canary requests only; the destination's real events keep no test code."""
    token = tmp_path / "token"
    token.write_text(TOKEN)
    dest = Destination("shop", "111", ("com.example.shop",), base_url="http://meta.invalid", token_file=str(token),
                       canary_interval_s=60.0, canary_test_event_code="CANARY1")
    meta = FakeMeta()
    sender = _sender(dest, meta, Stats())
    await sender.start()
    try:
        await Canary(dest, sender, sender.is_halted, clock=lambda: float(NOW)).run_once()
    finally:
        await sender.stop()
    assert meta.bodies[0]["test_event_code"] == "CANARY1"
    assert dest.test_event_code == ""


@pytest.mark.parametrize(("answer", "code"), [(Answer(Action.RETRY, 503, retry_class="transient"), 503),
                                              (Answer(Action.RETRY, retry_class="timeout"), 0),
                                              (Answer(Action.HALT, 403, 10), 10)])
async def test_a_failed_run_reports_metas_code_else_the_http_status(tmp_path: Path, answer: Answer, code: int) -> None:
    """The last error code is Meta's code, else the HTTP status, else 0 when nothing answered."""
    dest = _dest(tmp_path)
    sender = _sender(dest, FakeMeta(answer), Stats())
    await sender.start()
    try:
        canary = Canary(dest, sender, sender.is_halted, clock=lambda: float(NOW))
        await canary.run_once()
    finally:
        await sender.stop()
    assert canary.state.last_error_code == code
    assert canary.state.last_success_at == 0.0


async def test_a_failing_run_is_logged_and_counted_and_the_schedule_goes_on(tmp_path: Path) -> None:
    """An exception inside a run never ends the canary silently: it is counted as an error and it runs again."""

    class Broken:
        calls = 0

        async def probe(self, event: bytes, test_event_code: str) -> Answer | None:
            Broken.calls += 1
            raise RuntimeError("boom")

    dest = Destination("shop", "111", ("com.example.shop",), token_env="T", test_event_code="T1",  # noqa: S106
                       canary_interval_s=0.01)
    canary = Canary(dest, Broken(), lambda: False, clock=lambda: float(NOW))
    await canary.start()
    try:
        for _ in range(200):
            if Broken.calls >= 2:
                break
            await asyncio.sleep(0.01)
    finally:
        await canary.stop()
    assert Broken.calls >= 2
    assert canary.state.runs["error"] >= 2
