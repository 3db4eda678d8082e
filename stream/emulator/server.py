"""The emulator's HTTP server: Meta's `/{version}/{dataset_id}/events`, a read of a dataset
(`GET /{version}/{dataset_id}?fields=id`, capi-stream's probe), plus `/_emulator/*` (I/O).

`Emulator` has the lifecycle of every I/O component here: `start()` refuses to run twice, `stop()` is
idempotent, `async with` works. `EmulatorThread` runs one in a background thread for synchronous code
(pipeline tests and the demo run it next to a subprocess). The decisions live in pure modules: rules
(validation), tokens, faults (the seeded plan) and state (dedupe and counts); this module reads the
request, asks them, and writes the answer, or misbehaves as the plan says.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import unquote_plus

import orjson
import structlog
from aiohttp import web

from stream.emulator import answers, fastpath, rules
from stream.emulator.answers import ErrorAnswer
from stream.emulator.faults import DEFAULT_SEED, FaultKind, FaultPlan, FaultSpec, FaultSpecError
from stream.emulator.page import render_page
from stream.emulator.state import DEFAULT_KEEP_EVENTS, Ledger
from stream.emulator.tokens import TokenBook
from stream.errors import CapiStreamError

log = structlog.get_logger("stream.emulator")

try:
    # yarl (an aiohttp dependency) has a C percent-decoder, 20x faster than urllib's on a 1 MB form
    # body; with '+' made a space first it decodes like unquote_plus (it keeps invalid UTF-8
    # sequences percent-encoded where urllib puts U+FFFD).
    from yarl._quoting import _Unquoter

    _yarl_unquote = _Unquoter()

    def _unquote_plus(text: str) -> str:
        decoded: str = _yarl_unquote(text.replace("+", " "))
        return decoded

except ImportError:  # pragma: no cover - yarl moved its decoder; fall back to the standard library
    _unquote_plus = unquote_plus  # type: ignore[assignment]  # same call shape for our use

# Graph versions look like v26.0; anything else is a path Graph does not route.
_VERSION: Final = re.compile(r"v\d+\.\d+")
# Held (timeout fault) requests are released at stop; in-flight ones get this long to finish.
_SHUTDOWN_S: Final = 2.0
# Default and maximum of `GET /_emulator/events?limit=N`.
_EVENTS_DEFAULT_LIMIT: Final = 50
_JSON: Final = "application/json"
_FORM: Final = "application/x-www-form-urlencoded"
_MULTIPART: Final = "multipart/form-data"

T = TypeVar("T")
# (HTTP status, JSON body, extra headers) of one answer.
Reply = tuple[int, bytes, Mapping[str, str]]


class EmulatorError(CapiStreamError, RuntimeError):
    """Misuse of the Emulator object itself (started twice, url before start): a bug in the caller."""


def _trace_id() -> str:
    # Meta's fbtrace_id is 23 URL-safe characters starting with "A".
    return "A" + secrets.token_urlsafe(16)


def _answer(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=body, content_type=_JSON, headers=headers)


# Answers from something in front of Meta, or to a request Meta does not route; none records an event.
_NOT_META: Final = frozenset({FaultKind.OK_EMPTY, FaultKind.OK_HTML, FaultKind.NO_CONTENT, FaultKind.BAD_VERSION,
                              FaultKind.WAF_403})
_PORTAL_PAGE: Final = (b"<!DOCTYPE html><html><head><title>Sign in to the network</title></head>"
                       b"<body><h1>Welcome</h1><p>Accept the terms to continue.</p></body></html>")
_WAF_PAGE: Final = (b"<!DOCTYPE html><html><head><title>403 Forbidden</title></head><body><h1>Request blocked"
                    b"</h1><p>The web application firewall refused this request.</p></body></html>")


def _not_meta(fault: FaultKind, path: str) -> web.Response:
    """A 200 that acknowledges nothing, a 204, Graph's unknown-path error, or a WAF's 403 page."""
    if fault is FaultKind.OK_EMPTY:
        return web.Response(status=200, body=b"", content_type=_JSON)
    if fault is FaultKind.OK_HTML:
        return web.Response(status=200, body=_PORTAL_PAGE, content_type="text/html")
    if fault is FaultKind.NO_CONTENT:
        return web.Response(status=204)
    if fault is FaultKind.BAD_VERSION:
        problem = answers.unknown_path(path)
        trace = _trace_id()
        return _answer(problem.status, problem.encode(trace), {**problem.headers, "x-fb-trace-id": trace})
    return web.Response(status=403, body=_WAF_PAGE, content_type="text/html")


def _own_error(status: int, message: str) -> web.Response:
    """An error of the `/_emulator` endpoints themselves (not a Meta answer)."""
    return _answer(status, orjson.dumps({"error": message}))


class Emulator:
    """A local Meta Conversions API that validates like Meta and misbehaves on demand.

    `tokens` maps dataset id -> valid token; None accepts any non-empty token for any dataset.
    `faults` starts the server with those faults; `seed` seeds fault plans whose spec names none.
    `clock` gives Unix seconds (tests may fix it). `fast_path=False` sends every request through the
    exact rules (tests compare the two). Only the event loop thread may call its methods.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: Mapping[str, str] | None = None,
        faults: FaultSpec | None = None,
        seed: int = DEFAULT_SEED,
        keep_events: int = DEFAULT_KEEP_EVENTS,
        clock: Callable[[], float] = time.time,
        fast_path: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self._seed = seed
        self._clock = clock
        self.tokens = TokenBook(tokens)
        self.ledger = Ledger(keep_events=keep_events, decode=_decode_kept)
        self._plan = FaultPlan(faults or FaultSpec(), seed)
        self._runner: web.AppRunner | None = None
        self._started = False
        self._stopped = False
        self._closing = asyncio.Event()
        self._url: str | None = None
        self._fast_path = fast_path
        # Requests accepted by the fast path (the benchmark checks it took them all).
        self.fast_requests = 0

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. "http://127.0.0.1:PORT"; available after start()."""
        if self._url is None:
            raise EmulatorError("the emulator has no URL before start()")
        return self._url

    async def start(self) -> None:
        """Bind and serve; raises EmulatorError when called twice, OSError when the port is taken."""
        if self._started:
            raise EmulatorError("Emulator.start() called twice")
        self._started = True
        self._closing = asyncio.Event()
        runner = web.AppRunner(
            self._app(), access_log=None, shutdown_timeout=_SHUTDOWN_S, handler_cancellation=True
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._url = f"http://{host}:{self.port}"
        log.info("emulator_started", host=self.host, port=self.port, open_tokens=self.tokens.open,
                 datasets=len(self.tokens.datasets()))  # fmt: skip

    async def stop(self) -> None:
        """Release held requests, close every connection and the socket; safe to call twice."""
        if self._stopped or self._runner is None:
            self._stopped = True
            return
        self._stopped = True
        self._closing.set()
        runner, self._runner = self._runner, None
        await runner.cleanup()
        log.info("emulator_stopped", port=self.port, **self.ledger.stats()["faults"])

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # --- control (also reachable over HTTP) ------------------------------------------------------

    @property
    def faults(self) -> FaultSpec:
        """The fault options in force."""
        return self._plan.spec

    def set_faults(self, spec: FaultSpec | Mapping[str, Any]) -> FaultSpec:
        """Replace the fault options (a new seeded plan starts); raises FaultSpecError for a bad body."""
        if not isinstance(spec, FaultSpec):
            spec = FaultSpec.from_mapping(spec)
        self._plan = FaultPlan(spec, self._seed)
        log.info("emulator_faults_set", **{k: v for k, v in spec.to_dict().items() if k != "reject_event_ids"},
                 reject_event_ids=len(spec.reject_event_ids))  # fmt: skip
        return spec

    def rotate_token(self, dataset_id: str, token: str) -> None:
        """Make `token` the valid token of `dataset_id`; the previous one now answers 190 / 463."""
        self.tokens.rotate(dataset_id, token, self._clock())
        log.info("emulator_token_rotated", dataset_id=dataset_id)

    # --- the Meta endpoint -----------------------------------------------------------------------

    def process(self, dataset_id: str, params: Mapping[str, Any], now: float, body: bytes | None = None) -> Reply:
        """Authenticate, validate and record one request's parameters; return (status, JSON body, headers).

        The exact path: every rule in order, naming the first problem as Meta does. `body`, when
        given, is the request's JSON body, kept as the compact form of the accepted events.
        """
        refused = self._admit(dataset_id, params.get("access_token"), params.get("test_event_code"), now)
        if refused is not None:
            return refused
        events = rules.read_events(params.get("data"))
        if isinstance(events, ErrorAnswer):
            return self._refuse(events)
        problem = rules.validate_events(events, now, self._plan.spec.reject_event_ids)
        if problem is not None:
            return self._refuse(problem)
        data = params.get("data")
        # Keep the request in its compact form (see Ledger.accept): the `data` text, or the JSON body.
        raw = data if isinstance(data, str) else body
        test_event_code = params.get("test_event_code")
        self.ledger.accept(dataset_id, events, now, test_event_code, raw=raw)
        return self._accepted(len(events))

    def _process_fast(self, dataset_id: str, request: fastpath.FastRequest, now: float) -> Reply:
        """`process` for a request the fast path found valid: the same checks before, the same answer."""
        refused = self._admit(dataset_id, request.access_token, request.test_event_code, now)
        if refused is not None:
            return refused
        test_event_code = request.test_event_code
        assert test_event_code is None or type(test_event_code) is str  # _admit refuses any other
        self.ledger.accept_keys(dataset_id, request.names, request.ids, now, test_event_code, request.raw)
        self.fast_requests += 1
        return self._accepted(len(request.names))

    def _authorize(self, dataset_id: str, access_token: object, now: float, method: str) -> ErrorAnswer | None:
        """Meta's refusal of the token, or of its permission on `dataset_id` (fault denied_datasets), or None."""
        problem = self.tokens.check(dataset_id, access_token, now, method)
        if problem is None and dataset_id in self._plan.spec.denied_datasets:
            problem = answers.unknown_object(dataset_id, method)
        return problem

    def _admit(self, dataset_id: str, access_token: object, test_event_code: object, now: float) -> Reply | None:
        """Meta's refusal of the token, its permission or the test_event_code parameter, or None."""
        problem = self._authorize(dataset_id, access_token, now, "post")
        if problem is not None:
            return self._refuse(problem)
        if test_event_code is not None and type(test_event_code) is not str:
            return self._refuse(answers.invalid_parameter("param test_event_code must be a string"))
        return None

    @staticmethod
    def _accepted(count: int) -> Reply:
        trace = _trace_id()
        answer = orjson.dumps({"events_received": count, "messages": [], "fbtrace_id": trace})
        return 200, answer, {"x-fb-trace-id": trace}

    def _refuse(self, problem: ErrorAnswer) -> Reply:
        self.ledger.count_error(problem.key)
        trace = _trace_id()
        return problem.status, problem.encode(trace), {**problem.headers, "x-fb-trace-id": trace}

    def handle(self, dataset_id: str, content_type: str, body: bytes, query: Mapping[str, str], now: float) -> Reply:
        """Parse a request body and `process` it: all the synchronous work of one events request
        (what `capi-stream bench emulator` times).

        A valid request of the common shapes is decoded and validated by `fastpath` (C code);
        anything it is not sure of goes through `parse_params` and `process`, which name Meta's error.
        Either way the answer is the same (tests/unit/test_emulator_fastpath.py). The fast path stays
        out of the way while the `reject_event_ids` test hook is set.

        The cyclic garbage collector is paused meanwhile: a parsed 1,000-event body is thousands of
        containers that all live until the answer, which the collector would traverse several times
        for nothing (JSON trees hold no cycles; reference counting frees them). The collector runs
        again right after.
        """
        paused = gc.isenabled()
        if paused:
            gc.disable()
        try:
            fast = self._fast_path and not self._plan.spec.reject_event_ids
            params: dict[str, Any] | ErrorAnswer | None = None
            if content_type == _FORM or not body:
                params = parse_params(content_type, body, query)
                request = fastpath.from_params(params, now) if fast and isinstance(params, dict) else None
            else:
                request = fastpath.from_json(body, query, now) if fast else None
            if request is not None:
                return self._process_fast(dataset_id, request, now)
            if params is None:
                params = parse_params(content_type, body, query)
            if isinstance(params, ErrorAnswer):
                return self._refuse(params)
            return self.process(dataset_id, params, now, body if content_type != _FORM else None)
        finally:
            if paused:
                gc.enable()

    async def _events(self, request: web.Request) -> web.StreamResponse:
        dataset_id = request.match_info["dataset_id"]
        content_type = request.content_type
        query: Mapping[str, str] = request.query
        if content_type == _MULTIPART:
            form = await request.post()
            query = {**query, **{k: v for k, v in form.items() if isinstance(v, str)}}
            body = b""
        else:
            body = await request.read()
        self.ledger.count_request()
        decision = self._plan.draw()
        if decision.latency_s:
            await self._hold(decision.latency_s)
        if decision.fault is not None:
            self.ledger.count_fault(decision.fault.value)
            return await self._inject(request, decision.fault, decision.throttle_code, dataset_id)
        now = self._clock()
        if self._plan.spec.token_expired:
            self.ledger.count_fault("token_expired")
            return self._meta_error(answers.expired_token(now, now))
        if not _VERSION.fullmatch(request.match_info["version"]):
            return self._meta_error(answers.unknown_path(request.path), count=True)
        return _answer(*self.handle(dataset_id, content_type, body, query, now))

    def read(self, dataset_id: str, version: str, path: str, access_token: object, now: float) -> Reply:
        """Meta's answer to `GET /{version}/{dataset_id}?fields=id`: the dataset's id when the token may read
        it, else the error POST events would get (the same token and permission checks); no event."""
        if not _VERSION.fullmatch(version):
            return self._refuse(answers.unknown_path(path))
        problem = self._authorize(dataset_id, access_token, now, "get")
        if problem is not None:
            return self._refuse(problem)
        trace = _trace_id()
        return 200, orjson.dumps({"id": dataset_id}), {"x-fb-trace-id": trace}

    async def _read(self, request: web.Request) -> web.StreamResponse:
        self.ledger.count_read()
        decision = self._plan.draw()
        if decision.latency_s:
            await self._hold(decision.latency_s)
        if decision.fault is not None:
            self.ledger.count_fault(decision.fault.value)
            return await self._inject(request, decision.fault, decision.throttle_code, request.match_info["dataset_id"])
        now = self._clock()
        if self._plan.spec.token_expired:
            self.ledger.count_fault("token_expired")
            return self._meta_error(answers.expired_token(now, now))
        return _answer(*self.read(request.match_info["dataset_id"], request.match_info["version"], request.path,
                                  _bearer(request.headers.get("Authorization")) or request.query.get("access_token"),
                                  now))

    def _meta_error(self, problem: ErrorAnswer, count: bool = False) -> web.Response:
        if count:
            return _answer(*self._refuse(problem))
        trace = _trace_id()
        return _answer(problem.status, problem.encode(trace), {**problem.headers, "x-fb-trace-id": trace})

    async def _hold(self, seconds: float) -> None:
        """Sleep `seconds`, or less when the emulator is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    async def _inject(
        self, request: web.Request, fault: FaultKind, throttle_code: int | None, dataset_id: str
    ) -> web.StreamResponse:
        if fault is FaultKind.HTTP_500:
            return self._meta_error(answers.server_error())
        if fault is FaultKind.HTTP_503:
            return self._meta_error(answers.service_unavailable())
        if fault is FaultKind.THROTTLE:
            assert throttle_code is not None
            return self._meta_error(
                answers.throttled(throttle_code, dataset_id, self._plan.spec.throttle_regain_minutes)
            )
        if fault in _NOT_META:
            return _not_meta(fault, request.path)
        if fault is FaultKind.TIMEOUT:
            await self._hold(self._plan.spec.timeout_hold_s)
        _drop_connection(request)
        # The connection is gone; aiohttp discards this response.
        return web.Response(status=500)

    # --- inspection and control endpoints --------------------------------------------------------

    async def _stats(self, request: web.Request) -> web.Response:
        return _answer(200, orjson.dumps(self.ledger.stats()))

    async def _received(self, request: web.Request) -> web.Response:
        dataset_id = request.query.get("dataset_id")
        test = request.query.get("test", "") in ("1", "true")
        return _answer(200, orjson.dumps({"received": self.ledger.received(dataset_id, test=test)}))

    async def _recent(self, request: web.Request) -> web.Response:
        raw = request.query.get("limit", str(_EVENTS_DEFAULT_LIMIT))
        if not raw.isdigit():
            return _own_error(400, f"limit must be a non-negative integer, got {raw!r}")
        items = self.ledger.recent(int(raw))
        return _answer(200, orjson.dumps({"events": [item.to_dict() for item in items]}))

    async def _reset(self, request: web.Request) -> web.Response:
        self.ledger.reset()
        log.info("emulator_reset")
        return _answer(200, orjson.dumps({"reset": True}))

    async def _get_faults(self, request: web.Request) -> web.Response:
        return _answer(200, orjson.dumps(self._plan.spec.to_dict()))

    async def _post_faults(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError as exc:
            return _own_error(400, f"the faults body is not JSON: {exc}")
        if not isinstance(body, dict):
            return _own_error(400, "the faults body must be a JSON object")
        try:
            spec = self.set_faults(body)
        except FaultSpecError as exc:
            return _own_error(400, str(exc))
        return _answer(200, orjson.dumps(spec.to_dict()))

    async def _post_tokens(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return _own_error(400, f"the tokens body is not JSON: {exc}")
        dataset_id = body.get("dataset_id") if isinstance(body, dict) else None
        token = body.get("token") if isinstance(body, dict) else None
        if type(dataset_id) is not str or type(token) is not str or not dataset_id or not token:
            return _own_error(400, 'the tokens body must be {"dataset_id": "<id>", "token": "<token>"}')
        self.rotate_token(dataset_id, token)
        return _answer(200, orjson.dumps({"dataset_id": dataset_id, "rotated": True}))

    async def _page(self, request: web.Request) -> web.Response:
        text = render_page(self.ledger.stats(), self.ledger.recent(20), self._plan.spec.to_dict())
        return web.Response(text=text, content_type="text/html")

    async def _unknown_path(self, request: web.Request) -> web.Response:
        return self._meta_error(answers.unknown_path(request.path))

    def _app(self) -> web.Application:
        # Meta takes requests of up to 1,000 events; let a generous body through so our own limit
        # answers with Meta's error instead of aiohttp's 413.
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes([
            web.post("/{version}/{dataset_id}/events", self._events),
            web.get("/_emulator/stats", self._stats),
            web.get("/_emulator/received", self._received),
            web.get("/_emulator/events", self._recent),
            web.post("/_emulator/reset", self._reset),
            web.get("/_emulator/faults", self._get_faults),
            web.post("/_emulator/faults", self._post_faults),
            web.post("/_emulator/tokens", self._post_tokens),
            web.get("/", self._page),
            # after /_emulator/*, which the same pattern would match
            web.get("/{version}/{dataset_id}", self._read),
            web.route("*", "/{tail:.*}", self._unknown_path),
        ])  # fmt: skip
        return app


def _bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` (or Graph's `OAuth <token>`) header, else None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return (token.strip() or None) if scheme.lower() in ("bearer", "oauth") else None


def _decode_kept(raw: bytes | str) -> list[dict[str, Any]]:
    """The events of an accepted request kept in compact form: a JSON body, or the `data` text."""
    data = orjson.loads(raw)
    if isinstance(raw, bytes) and isinstance(data, dict):
        data = data.get("data")
    events = rules.read_events(data)
    return [] if isinstance(events, ErrorAnswer) else events


def _form_pairs(text: str) -> list[tuple[str, str]]:
    """Decode an application/x-www-form-urlencoded body, as `urllib.parse.parse_qsl` does.

    Each value is sliced out of `text` once (a split and a partition would copy a 1 MB `data` twice).
    """
    pairs = []
    start, size = 0, len(text)
    while start < size:
        end = text.find("&", start)
        if end < 0:
            end = size
        if end > start:
            equals = text.find("=", start, end)
            if equals < 0:
                pairs.append((_unquote_plus(text[start:end]), ""))
            else:
                pairs.append((_unquote_plus(text[start:equals]), _unquote_plus(text[equals + 1 : end])))
        start = end + 1
    return pairs


def parse_params(content_type: str, body: bytes, query: Mapping[str, str]) -> dict[str, Any] | ErrorAnswer:
    """Parameters of a form-encoded or JSON body overlaid on the query string, or Meta's error."""
    params: dict[str, Any] = dict(query)
    if not body:
        return params
    if content_type == _FORM:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return answers.invalid_parameter("the form body is not UTF-8")
        params.update(_form_pairs(text))
        return params
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return answers.invalid_parameter("the request body is neither JSON nor form-encoded")
    if not isinstance(decoded, dict):
        return answers.invalid_parameter("the JSON body must be an object")
    params.update(decoded)
    return params


def _drop_connection(request: web.Request) -> None:
    """Reset the client's TCP connection (RST, not a clean close), as a crashed front end would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # SO_LINGER on with a zero timeout makes close() send RST.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class EmulatorThread:
    """Runs an `Emulator` on its own event loop in a daemon thread, for synchronous callers.

    Use as a context manager: `with EmulatorThread(tokens=...) as emu: emu.url`. Keyword arguments
    go to `Emulator`. The helper methods run on the emulator's loop and return their result.
    """

    def __init__(self, start_timeout_s: float = 10.0, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._start_timeout_s = start_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._emulator: Emulator | None = None
        self._stop: asyncio.Event | None = None
        self._ready: Future[None] = Future()

    @property
    def url(self) -> str:
        """Base URL of the running emulator."""
        return self._running().url

    def _running(self) -> Emulator:
        if self._emulator is None:
            raise EmulatorError("the emulator thread is not running")
        return self._emulator

    def start(self) -> EmulatorThread:
        """Start the thread and wait until the emulator listens; re-raises its start-up error."""
        if self._thread is not None:
            raise EmulatorError("EmulatorThread.start() called twice")
        self._thread = threading.Thread(target=self._main, name="capi-stream-emulator", daemon=True)
        self._thread.start()
        self._ready.result(timeout=self._start_timeout_s)
        return self

    def stop(self) -> None:
        """Stop the emulator and join the thread; safe to call twice."""
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(timeout=self._start_timeout_s)
        self._emulator = None

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def call(self, fn: Callable[[Emulator], T]) -> T:
        """Run `fn(emulator)` on the emulator's loop and return its result."""
        emulator = self._running()
        assert self._loop is not None
        result: Future[T] = Future()

        def run() -> None:
            try:
                result.set_result(fn(emulator))
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                result.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return result.result(timeout=self._start_timeout_s)

    def set_faults(self, spec: FaultSpec | Mapping[str, Any]) -> FaultSpec:
        """`Emulator.set_faults` from this thread."""
        return self.call(lambda emu: emu.set_faults(spec))

    def rotate_token(self, dataset_id: str, token: str) -> None:
        """`Emulator.rotate_token` from this thread."""
        self.call(lambda emu: emu.rotate_token(dataset_id, token))

    def stats(self) -> dict[str, Any]:
        """`GET /_emulator/stats` without HTTP."""
        return self.call(lambda emu: emu.ledger.stats())

    def received(self, dataset_id: str | None = None, test: bool = False) -> list[dict[str, Any]]:
        """`GET /_emulator/received` (`?test=1` with `test`) without HTTP."""
        return self.call(lambda emu: emu.ledger.received(dataset_id, test=test))

    def reset(self) -> None:
        """`POST /_emulator/reset` without HTTP."""
        self.call(lambda emu: emu.ledger.reset())

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        emulator = Emulator(**self._kwargs)
        try:
            await emulator.start()
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that waits in start()
            self._ready.set_exception(exc)
            return
        self._emulator = emulator
        self._ready.set_result(None)
        try:
            await self._stop.wait()
        finally:
            await emulator.stop()
