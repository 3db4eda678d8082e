"""One destination's sending loop: concurrency limit, rate limit, retries with backoff, halts and splits.

An event leaves this module in exactly one of four ways: acknowledged by Meta (`on_acked`), refused by
Meta on its own (`on_rejected`, after splitting the batch to isolate it), given up at its delivery
deadline (`on_expired`: Meta refuses events older than 7 days, so retrying past that cannot help), or
given back because its partitions were revoked (`take_partitions`). Transient failures and throttling
are retried until the deadline of each event; a token error halts the destination until its token
changes. An error about the request (a version Meta retired, a proxy's 404 or 403 page) halts it too, as
do repeated 2xx answers that acknowledge nothing (a proxy or captive portal answering for Meta): then a
SIGHUP, after the cause is fixed, resumes it (a new token does too). While halted, the destination is
probed every `send.probe_interval_s`, backing off (probing.py), with a request Meta counts as no event:
its canary event with the test event code when it has one, else a read of the dataset; a probe Meta
acknowledges resumes it as a new token does (a permission re-granted, a token fixed on Meta's side, a
proxy's 403 gone). Every task of a sender is watched: one that dies reports to `on_failure`, never
silently.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Protocol

import orjson
import structlog

from stream.config import Destination, SendSettings
from stream.contract import meta
from stream.pipeline.batch import Batch
from stream.pipeline.canary import canary_event
from stream.pipeline.items import Item
from stream.pipeline.meta_client import NOT_ACKED, Action, Answer, dataset_url, describe, events_url
from stream.pipeline.probing import ProbeOutcome, ProbeSchedule, probe_outcome
from stream.pipeline.stats import Stats
from stream.pipeline.tasks import cancel_and_wait

log = structlog.get_logger("capi_stream.sender")

# a halt on these codes waits for a new token; others resume on SIGHUP
TOKEN_HALT_CODES = meta.TOKEN_ERROR_CODES
# consecutive 2xx answers without an ack after which the destination is halted as misconfigured
NOT_ACKED_HALT_AFTER = 5


# consecutive failed requests with no ack between them after which a destination is `failing`
FAILING_AFTER = 5
# the probe task looks at its schedule at least this often (a halt or resume meanwhile moves it)
PROBE_RECHECK_S = 1.0


class DestinationState(enum.StrEnum):
    """What an SRE sees for a destination (README, "Destination states").

    The sender itself is flowing, throttled, failing or halted; the pipeline shows `parked` while a halted
    destination's events go to its parking topic and `draining` while they are sent from there.
    """

    FLOWING = "flowing"
    THROTTLED = "throttled"
    # every recent request failed (5xx, timeouts, resets): retried without end, nothing gets through
    FAILING = "failing"
    HALTED = "halted"
    PARKED = "parked"
    DRAINING = "draining"


class Poster(Protocol):
    """What a sender needs of the Meta client (`meta_client.MetaClient`): POST a body, or read an object
    (the probe of a halted destination), and get a classified answer.

    Network trouble comes back as a RETRY answer, never as an exception.
    """

    async def post(self, url: str, body: bytes, events: int) -> Answer: ...

    async def get(self, url: str, token: str, object_id: str) -> Answer: ...


class RateLimiter:
    """Spaces requests at most `rps` per second (0: no limit)."""

    def __init__(self, rps: float) -> None:
        self._interval = 1.0 / rps if rps > 0 else 0.0
        self._next = 0.0

    async def acquire(self) -> None:
        """Wait for the next free slot."""
        if not self._interval:
            return
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)


def delivery_deadline(event_time: float, margin_s: float) -> float:
    """The wall-clock second after which an event is given up: Meta's 7 days after it, less `margin_s`."""
    return event_time + meta.MAX_EVENT_AGE_S - margin_s


def backoff_delay(attempt: int, initial: float, maximum: float, hint: float | None, rng: random.Random) -> float:
    """Exponential backoff with full jitter in [d/2, d]; Meta's hint, when given, is a floor."""
    base = min(maximum, initial * (2 ** min(attempt, 30)))
    delay = base * (0.5 + rng.random() / 2)
    return float(max(delay, hint)) if hint else float(delay)


class DestinationSender:
    """Send batches of one destination; call back on ack and on refused events."""

    def __init__(
        self,
        dest: Destination,
        client: Poster,
        settings: SendSettings,
        stats: Stats,
        on_acked: Callable[[Batch], None],
        on_rejected: Callable[[Item, Answer], None],
        seed: int | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        *,
        on_expired: Callable[[Item], None] | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`on_expired`: events past their delivery deadline (None: retry without end). `on_failure`: a
        task of this sender died (None: it is logged). `clock`: wall-clock seconds, for the deadlines."""
        self.dest = dest
        self._client = client
        self._settings = settings
        self._stats = stats
        self._on_acked = on_acked
        self._on_rejected = on_rejected
        self._on_expired = on_expired
        self._on_failure = on_failure
        self._clock = clock
        self._url = events_url(dest.base_url, dest.api_version, dest.dataset_id)
        self._queue: deque[Batch] = deque()
        self._inflight: set[Batch] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._limiter = RateLimiter(settings.rate_limit_rps)
        self._rng = random.Random(seed)  # noqa: S311 - jitter, not security
        self._sleep = sleep  # backoff waits (unit tests pass a recorder)
        self._token = ""
        self._token_error = ""
        self.state = DestinationState.FLOWING
        self.halt_reason = ""
        self._halted_on_token = False
        self._not_acked = 0  # consecutive 2xx answers that acknowledged nothing
        self._failures = 0  # consecutive failed requests (not throttling) since the last ack
        self._runner: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        # probes of a halted destination: None when send.probe_interval_s is 0
        self.probe_schedule = (ProbeSchedule(settings.probe_interval_s, settings.probe_max_interval_s)
                               if settings.probe_interval_s > 0 else None)
        self.probes: Counter[str] = Counter()  # probe outcomes (metrics)
        self._read_url = dataset_url(dest.base_url, dest.api_version, dest.dataset_id)
        self._probe_wake = asyncio.Event()
        self._prober: asyncio.Task[None] | None = None
        self._probe_seq = 0
        self._last_probe_failure: tuple[object, ...] = ()
        self._halt_key: tuple[int | None, int | None, int] = (None, None, 0)  # the cause of the current halt
        # called when a request slot was given back (the runner closes a batch that waited for one)
        self.on_slot_free: Callable[[], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Read the token and start the dispatch and token-watch tasks; refuses to run twice."""
        if self._runner is not None:
            raise RuntimeError("sender already started")
        self._token = self.dest.read_token()
        self._runner = asyncio.create_task(self._run(), name=f"send-{self.dest.name}")
        self._watcher = asyncio.create_task(self._watch_token(), name=f"token-{self.dest.name}")
        self._runner.add_done_callback(self._task_done)
        self._watcher.add_done_callback(self._task_done)
        if self.probe_schedule is not None:
            self._prober = asyncio.create_task(self._probe_loop(), name=f"probe-{self.dest.name}")
            self._prober.add_done_callback(self._task_done)

    async def stop(self) -> None:
        """Cancel every task of this sender (idempotent); unsent batches stay unacknowledged."""
        await cancel_and_wait([self._runner, self._watcher, self._prober, *self._tasks])
        self._runner = self._watcher = self._prober = None
        self._tasks.clear()

    # -- feeding ---------------------------------------------------------------------------------
    def submit(self, batch: Batch, front: bool = False) -> None:
        """Queue a batch for sending (split halves and returned batches go to the front)."""
        if front:
            self._queue.appendleft(batch)
        else:
            self._queue.append(batch)
        self._idle.clear()
        self._wake.set()

    def take_partitions(self, tps: set[tuple[str, int]]) -> list[Item]:
        """Remove queued (unsent) items of revoked partitions and return them."""
        removed: list[Item] = []
        kept: deque[Batch] = deque()
        for batch in self._queue:
            keep = [i for i in batch.items if i.tp not in tps]
            removed.extend(i for i in batch.items if i.tp in tps)
            if len(keep) == len(batch.items):
                kept.append(batch)
            elif keep:
                kept.append(Batch(batch.destination, keep, sum(len(i.body) + 1 for i in keep) + 12,
                                  batch.opened_at, batch.attempts, batch.meta_s))
        self._queue = kept
        self._check_idle()
        return removed

    def holds(self, tps: set[tuple[str, int]]) -> bool:
        """True while a queued or in-flight batch holds an item of one of `tps`."""
        return any(i.tp in tps for b in (*self._queue, *self._inflight) for i in b.items)

    def take_queued(self) -> list[Item]:
        """Remove every queued (unsent) item and return them (the destination is being parked)."""
        removed = [i for b in self._queue for i in b.items]
        self._queue.clear()
        self._check_idle()
        return removed

    def inflight_holds(self, tps: set[tuple[str, int]]) -> bool:
        """True while a batch being sent holds an item of one of `tps`."""
        return any(i.tp in tps for b in self._inflight for i in b.items)

    def items(self) -> list[Item]:
        """Every item queued or in flight here."""
        return [i for b in (*self._queue, *self._inflight) for i in b.items]

    @property
    def queued_events(self) -> int:
        return sum(len(b.items) for b in self._queue)

    @property
    def inflight_events(self) -> int:
        return sum(len(b.items) for b in self._inflight)

    async def wait_idle(self) -> None:
        """Return once nothing is queued or in flight."""
        await self._idle.wait()

    async def probe(self, event: bytes, test_event_code: str) -> Answer | None:
        """Send one canary event (canary.py) with the current token and `test_event_code`, never retried.

        Same client, classification and halting rules as real traffic: a token or permission answer
        halts the destination. Not counted as sent events. None when the destination is halted.
        """
        if self._halted():
            return None
        await self._limiter.acquire()
        sent_with = self._token
        answer = await self._client.post(self._url, _test_body(event, sent_with, test_event_code), 1)
        if answer.action is Action.HALT and sent_with == self._token:
            self._halt(answer, "found by the canary")
        return answer

    async def probe_halted(self) -> ProbeOutcome | None:
        """Probe a halted destination once, with its current token; a probe Meta acknowledges resumes it.

        The probe is the canary event with the destination's test event code when it has one (the events
        endpoint itself; Meta counts no test event as real), else `GET /{version}/{dataset_id}?fields=id`
        (no event at all). Not counted as sent events, never retried. None when there was nothing to
        probe (not halted, probes off) or when a new token or SIGHUP resumed the destination meanwhile.
        """
        schedule = self.probe_schedule
        if schedule is None or not self._halted():
            return None
        await self._limiter.acquire()
        sent_with = self._token
        code = self.dest.canary_code
        if code:
            self._probe_seq += 1
            event = canary_event(self.dest, int(self._clock()), self._probe_seq)
            answer = await self._client.post(self._url, _test_body(event, sent_with, code), 1)
        else:
            answer = await self._client.get(self._read_url, sent_with, self.dest.dataset_id)
        if not self._halted() or sent_with != self._token:
            return None  # resumed meanwhile: this answer speaks of a halt that is over
        outcome = probe_outcome(answer)
        self.probes[outcome.value] += 1
        if outcome is ProbeOutcome.OK:
            self._resume("probe")
            return outcome
        if answer.action is Action.HALT and _halt_key(answer) != self._halt_key:
            self._halt(answer, "found by a probe")  # another cause now (a token expired meanwhile): say so
        now = self._clock()
        schedule.failed(now, answer.retry_after)
        wait = schedule.due_in(now)
        # the first failure and each change of answer at info; repeats (every backed-off probe) at debug
        seen = (outcome, answer.status, answer.code, answer.subcode, answer.retry_class)
        say = log.info if seen != self._last_probe_failure else log.debug
        self._last_probe_failure = seen
        say("probe_failed", destination=self.dest.name, outcome=outcome.value, probe="canary" if code else "read",
            next_probe_s=round(wait or 0.0, 1), halt_reason=self.halt_reason, **describe(answer, sent_with))
        return outcome

    def reload_token(self) -> bool:
        """Re-read the token (SIGHUP or the watcher). A changed token resumes a halted destination."""
        try:
            token = self.dest.read_token()
        except Exception as exc:  # noqa: BLE001 - ConfigError or OS trouble: keep the old token, say why
            if str(exc) != self._token_error:
                self._token_error = str(exc)
                log.warning("token_reload_failed", destination=self.dest.name, error=str(exc))
            return False
        self._token_error = ""
        if token == self._token:
            return False
        self._token = token
        log.info("token_replaced", destination=self.dest.name)
        self._resume("token replaced")
        return True

    def resume(self) -> bool:
        """Resume a destination halted for its request or its answers (SIGHUP, after fixing the cause).

        A token halt waits for a new token; True when the destination was resumed.
        """
        if self.state is not DestinationState.HALTED or self._halted_on_token:
            return False
        self._resume("signal")
        return True

    def _resume(self, why: str) -> None:
        if self.state is DestinationState.HALTED:
            self.state = DestinationState.FLOWING
            self.halt_reason = ""
            self._halted_on_token = False
            self._not_acked = 0
            if self.probe_schedule is not None:
                self.probe_schedule.resumed(self._clock(), by_probe=why == "probe")
            self._last_probe_failure = ()  # the next halt's first failed probe is news again
            log.warning("destination_resumed", destination=self.dest.name, why=why)
            self._wake.set()

    def has_free_slot(self) -> bool:
        """True when a batch handed over now would be sent at once: the destination flows (not throttled,
        failing or halted), nothing is queued, and fewer than send.concurrency requests are in flight."""
        return (self.state is DestinationState.FLOWING and not self._queue
                and len(self._inflight) < self._settings.concurrency)

    def is_halted(self) -> bool:
        """True while the destination is halted (it sends nothing until resumed)."""
        return self.state is DestinationState.HALTED

    # -- internals -------------------------------------------------------------------------------
    def _halted(self) -> bool:
        """Read the state afresh: it changes while this task waits for a slot."""
        return self.state is DestinationState.HALTED

    def _check_idle(self) -> None:
        if not self._queue and not self._inflight:
            self._idle.set()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A task of this sender ended: an exception stops the pipeline with a clear error."""
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        assert exc is not None
        log.error("send_task_failed", destination=self.dest.name, task=task.get_name(),
                  error=type(exc).__name__, detail=str(exc)[:200])
        if self._on_failure is not None:
            self._on_failure(exc)

    def _expire(self, batch: Batch) -> bool:
        """Give up the events of `batch` past their deadline; False when none is left to send."""
        if self._on_expired is None:
            return True
        now = self._clock()
        margin = self._settings.deadline_margin_s
        # event_time + 7 days - margin <= now, as one bound for the batch (no call per event per attempt)
        cutoff = now - delivery_deadline(0, margin)
        expired = [i for i in batch.items if i.event_time and i.event_time <= cutoff]
        if not expired:
            return True
        gone = {id(i) for i in expired}
        batch.retain([i for i in batch.items if id(i) not in gone])
        log.warning("events_expired", destination=self.dest.name, events=len(expired), attempts=batch.attempts)
        for item in expired:
            self._on_expired(item)
        return bool(batch.items)

    def _expire_queued(self) -> None:
        """Sweep the queue (a halted destination sends nothing) for events past their deadline."""
        self._queue = deque(b for b in self._queue if self._expire(b))
        self._check_idle()

    async def _watch_token(self) -> None:
        while True:
            await asyncio.sleep(self._settings.token_check_interval_s)
            self.reload_token()
            if self.state is DestinationState.HALTED:
                self._expire_queued()

    async def _probe_loop(self) -> None:
        """Probe while halted, when the schedule says; sleep on `_probe_wake` while flowing."""
        schedule = self.probe_schedule
        assert schedule is not None
        while True:
            await self._probe_wake.wait()
            due = schedule.due_in(self._clock())
            if due is None or not self._halted():
                self._probe_wake.clear()
                continue
            if due > 0:
                await asyncio.sleep(min(due, PROBE_RECHECK_S))
                continue
            await self.probe_halted()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and self.state is not DestinationState.HALTED:
                await self._slots.acquire()
                if not self._queue or self._halted():
                    self._slots.release()
                    break
                batch = self._queue.popleft()
                self._inflight.add(batch)
                task = asyncio.create_task(self._send(batch), name=f"send-batch-{self.dest.name}")
                self._tasks.add(task)
                task.add_done_callback(self._task_done)

    async def _send(self, batch: Batch) -> None:
        try:
            await self._attempts(batch)
        finally:
            self._inflight.discard(batch)
            self._slots.release()
            self._check_idle()
            if self.on_slot_free is not None:
                self.on_slot_free()

    async def _attempts(self, batch: Batch) -> None:
        while True:
            if not self._expire(batch):
                return
            if self.state is DestinationState.HALTED:
                self.submit(batch, front=True)
                return
            await self._limiter.acquire()
            body = batch.body(self._token, self.dest.test_event_code)
            sent_with = self._token
            self._stats.batches_sent += 1
            self._stats.events_sent += len(batch.items)
            started = time.monotonic()
            if not batch.sent_at:
                batch.sent_at = started
            answer = await self._client.post(self._url, body, len(batch.items))
            waited = time.monotonic() - started
            batch.meta_s += waited
            ms = waited * 1000
            self._stats.send_latency.observe(ms / 1000)
            if answer.action is Action.ACKED:
                self._not_acked = 0
                self._failures = 0
                if self.state is DestinationState.FAILING:
                    log.warning("destination_recovered", destination=self.dest.name)
                if self.state in (DestinationState.THROTTLED, DestinationState.FAILING):
                    self.state = DestinationState.FLOWING
                log.debug("batch_acked", destination=self.dest.name, events=len(batch.items), ms=round(ms, 1))
                self._on_acked(batch)
                return
            if answer.action is Action.RETRY and answer.retry_class == NOT_ACKED:
                self._not_acked += 1
                if self._not_acked >= NOT_ACKED_HALT_AFTER and sent_with == self._token:
                    self._halt(answer, f"{self._not_acked} answers in a row acknowledged nothing")
                    self.submit(batch, front=True)
                    return
            if answer.action is Action.RETRY:
                self._stats.retries[answer.retry_class] += 1
                if answer.retry_class == "throttle":
                    self.state = DestinationState.THROTTLED
                else:
                    self._failures += 1
                    if self._failures >= FAILING_AFTER and self.state is DestinationState.FLOWING:
                        self.state = DestinationState.FAILING
                        log.error("destination_failing", destination=self.dest.name, failures=self._failures,
                                  last=answer.retry_class, action="every request fails; events wait (offsets "
                                  "held) and are retried until Meta answers again")
                initial = (self._settings.throttle_backoff_initial_s if answer.retry_class == "throttle"
                           else self._settings.backoff_initial_s)
                delay = backoff_delay(batch.attempts, initial, self._settings.backoff_max_s, answer.retry_after,
                                      self._rng)
                batch.attempts += 1
                log.info("batch_retry", destination=self.dest.name, events=len(batch.items),
                         attempt=batch.attempts, delay_s=round(delay, 2), **describe(answer, self._token))
                await self._sleep(delay)
                continue
            if answer.action is Action.HALT:
                if sent_with == self._token:  # a token replaced meanwhile is tried before halting again
                    self._halt(answer, "")
                self.submit(batch, front=True)
                return
            self._reject(batch, answer)
            return

    def _halt(self, answer: Answer, why: str) -> None:
        if self.state is not DestinationState.HALTED:
            self._stats.halts += 1
            if self.probe_schedule is not None:
                self.probe_schedule.halted(self._clock())
                self._probe_wake.set()
        self.state = DestinationState.HALTED
        self._halted_on_token = answer.code in TOKEN_HALT_CODES
        self._halt_key = _halt_key(answer)
        self.halt_reason = (f"{answer.code}/{answer.subcode}" if answer.code is not None
                            else why or f"http {answer.status}")
        if self._halted_on_token:
            action = _token_action(self.dest, self._settings.token_check_interval_s)
        elif answer.code is not None:
            action = ("fix the destination's dataset, permissions or api_version, then SIGHUP (or restart); "
                      "offsets are held meanwhile")
        else:
            action = ("something other than Meta's API answers at base_url (a proxy, a firewall, a wrong URL): "
                      "fix it, then SIGHUP; offsets are held meanwhile")
        if self.probe_schedule is not None:
            action += f"; probed every {self._settings.probe_interval_s:g} s or more: resumes once Meta accepts"
        log.error("destination_halted", destination=self.dest.name, dataset_id=self.dest.dataset_id,
                  url=self._url, action=action, why=why or "request-level error", **describe(answer, self._token))

    def _reject(self, batch: Batch, answer: Answer) -> None:
        if len(batch.items) == 1:
            self._on_rejected(batch.items[0], answer)
            return
        self._stats.splits += 1
        left, right = batch.split()
        log.info("batch_split", destination=self.dest.name, events=len(batch.items), **describe(answer, self._token))
        self.submit(right, front=True)
        self.submit(left, front=True)


def _token_action(dest: Destination, check_interval_s: float) -> str:
    """What an SRE does about a token halt: a file is watched; an env variable needs a restart."""
    if dest.token_file:
        return (f"replace the access token in {dest.token_file} (picked up within {check_interval_s:g} s, or "
                "at once on SIGHUP); offsets are held meanwhile")
    return (f"restart the process with a new access token in {dest.token_env} (a running process's "
            "environment cannot change: a signal re-reads the old value); offsets are held meanwhile")


def _test_body(event: bytes, token: str, test_event_code: str) -> bytes:
    """The body of a one-event request with `test_event_code` (a canary or a probe): Meta counts it as no real event."""
    return b"".join((b'{"data":[', event, b'],"access_token":', orjson.dumps(token),
                     b',"test_event_code":', orjson.dumps(test_event_code), b"}"))


def _halt_key(answer: Answer) -> tuple[int | None, int | None, int]:
    """What tells one cause of a halt from another: Meta's code and subcode, else the HTTP status."""
    return (answer.code, answer.subcode, 0 if answer.code is not None else answer.status)
