"""A canary per destination: one synthetic app event on a schedule, to find a dead token before real events do.

A dataset that sees a few events a day learns that its token expired only when the next real event
fails. With `[destinations.X] canary_interval_s`, capi-stream sends one synthetic, valid app event
every interval (the first at start-up) through the destination's own sender: the same client, the same
classification, the same halting rules. A token or permission answer halts the destination, and so
flips /readyz, exactly as a real failure would; a new token, SIGHUP or the sender's own probe of the
halted destination (sender.probe_halted, which sends this same event) resumes it as usual.

Canary requests always carry a test event code (config validation refuses a canary without one), so
Meta shows them in Events Manager's Test Events tab and counts none of them as a real event. They never
touch the pipeline's counters (sent, acked, quality), the dedupe store or the offsets. The outcome is
kept here (last success time, last error code, runs by outcome) for the metrics, and logged as
`canary_ok` / `canary_failed`. Nothing here ever holds a token or a person's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import orjson
import structlog

from stream.config import Destination
from stream.contract.normalize import NormalizeSettings, normalize_event
from stream.pipeline.meta_client import Action, Answer

log = structlog.get_logger("capi_stream.canary")

CANARY_EVENT_NAME = "CapiStreamCanary"
# a synthetic user: the canary's identifiers belong to nobody (external_id is hashed like any other)
CANARY_EXTERNAL_ID = "capi-stream-canary"
# extinfo as an iOS app would send it (Meta needs 16 strings, i2/a2 first and the OS version fifth)
_EXTINFO = ["i2", "", "1.0", "1", "17.0", "iPhone15,2", "en_US", "UTC", "", "1170", "2532", "3.0", "6", "128",
            "64", "UTC"]


class Prober(Protocol):
    """What the canary needs of a destination's sender."""

    async def probe(self, event: bytes, test_event_code: str) -> Answer | None: ...


def canary_event(dest: Destination, now: int, seq: int) -> bytes:
    """The canary's Meta server event as JSON: a valid app event, normalized like every real one."""
    app_id = dest.app_ids[0]
    record: dict[str, Any] = {
        "event_name": CANARY_EVENT_NAME, "event_time": now, "event_id": f"canary-{dest.name}-{now}-{seq}",
        "action_source": "app", "app_id": app_id, "consent": True,
        "user_data": {"external_id": CANARY_EXTERNAL_ID, "anon_id": CANARY_EXTERNAL_ID,
                      "client_ip_address": "127.0.0.1", "client_user_agent": "capi-stream-canary"},
        "app_data": {"advertiser_tracking_enabled": False, "application_tracking_enabled": False,
                     "extinfo": [_EXTINFO[0], app_id, *_EXTINFO[2:]]},
    }  # fmt: skip
    outcome = normalize_event(record, now, NormalizeSettings(default_country=dest.default_country or None,
                                                              hash_external_id=dest.hash_external_id))
    if outcome.event is None:  # a bug in this module, never the destination's: say so loudly
        raise AssertionError(f"the canary event does not pass validation: {outcome.rejection}")
    return orjson.dumps(outcome.event)


def error_code(answer: Answer) -> int:
    """The code a failed run reports: Meta's error code, else the HTTP status, else 0 (no answer)."""
    if answer.code is not None:
        return answer.code
    return answer.status


@dataclasses.dataclass
class CanaryState:
    """What the last runs said (read by the metrics)."""

    runs: Counter[str] = dataclasses.field(default_factory=Counter)  # ok|halt|retry|rejected|skipped|error
    last_run_at: float = 0.0
    last_success_at: float = 0.0
    last_error_at: float = 0.0
    last_error_code: int = 0


class Canary:
    """Send one canary event every `interval` seconds through `sender`, the first at start."""

    def __init__(self, dest: Destination, sender: Prober, halted: Callable[[], bool],
                 clock: Callable[[], float] = time.time) -> None:
        self.dest = dest
        self.state = CanaryState()
        self._sender = sender
        self._halted = halted
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._seq = 0

    async def start(self) -> None:
        """Start the schedule; refuses to run twice."""
        if self._task is not None:
            raise RuntimeError("canary already started")
        self._task = asyncio.create_task(self._run(), name=f"canary-{self.dest.name}")

    async def stop(self) -> None:
        """Stop the schedule (idempotent); a request in flight is abandoned."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # noqa: BLE001 - a canary bug must neither stop the pipeline nor go unseen
                self.state.runs["error"] += 1
                log.error("canary_error", destination=self.dest.name, error=type(exc).__name__,
                          detail=str(exc)[:200])
            await asyncio.sleep(self.dest.canary_interval_s)

    async def run_once(self) -> str:
        """Send one canary event (unless the destination is halted already) and record the outcome."""
        now = self._clock()
        self.state.last_run_at = now
        if self._halted():
            # the halt is known: the sender probes it on its own schedule (backing off) and the token watcher
            # resumes it on a new token; a canary now would only repeat the error
            self.state.runs["skipped"] += 1
            return "skipped"
        self._seq += 1
        answer = await self._sender.probe(canary_event(self.dest, int(now), self._seq), self.dest.canary_code)
        if answer is None:  # halted while waiting for a slot
            self.state.runs["skipped"] += 1
            return "skipped"
        outcome = answer.action.value if answer.action is not Action.ACKED else "ok"
        self.state.runs[outcome] += 1
        if answer.action is Action.ACKED:
            self.state.last_success_at = self._clock()
            log.info("canary_ok", destination=self.dest.name, dataset_id=self.dest.dataset_id)
        else:
            self.state.last_error_at = self._clock()
            self.state.last_error_code = error_code(answer)
            log.warning("canary_failed", destination=self.dest.name, dataset_id=self.dest.dataset_id,
                        outcome=outcome, code=answer.code, subcode=answer.subcode, status=answer.status,
                        retry_class=answer.retry_class or None, fbtrace_id=answer.fbtrace_id or None)
        return outcome
