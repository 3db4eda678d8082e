"""POST batches to Meta's `/{version}/{dataset_id}/events` and classify the answer; read a dataset
(`GET /{version}/{dataset_id}?fields=id`, the probe of a halted destination, which sends no event).

The only aiohttp client in capi-stream. Answers are classified by HTTP status, `code`, `error_subcode`
and `is_transient`, never by message text (Meta localises the text):

- Acked: 2xx with a JSON body whose `events_received` equals the number of events sent. Any other 2xx
  (empty, an HTML page from a proxy, 204, another count) is not an ack: RETRY with class `not_acked`
  (the sender halts the destination after repeated ones) [contract README §6.4].
- Retry: transient trouble (5xx, `is_transient`, codes 1/2, timeouts, resets) or throttling
  (4, 17, 32, 341, 613, 80000-80014, HTTP 429); `retry_after` carries Meta's hint when it gave one.
- Rejected: Meta refused an event itself: code 100 with an event-validation subcode (2804xxx), not
  transient. Only these are split and dead-lettered.
- Halt: anything else in 4xx is about the request, not its events: token and permission codes (190,
  102, 100/33, 10, 200-299, 3), a retired or unknown version or path (12, 2500, 803), 100 without an
  event subcode, and any 4xx whose body is not a Graph error (a 404, a WAF's 403 page). The
  destination stops until its token or config changes; splitting would dead-letter the whole stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from stream.contract import meta


class Action(enum.Enum):
    """What the sender does with a batch after an answer."""

    ACKED = "acked"
    RETRY = "retry"
    HALT = "halt"
    REJECTED = "rejected"


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """Meta's answer to one request, classified."""

    action: Action
    status: int = 0
    code: int | None = None
    subcode: int | None = None
    retry_class: str = ""  # transient | throttle | timeout | connection (for RETRY)
    retry_after: float | None = None
    events_received: int = 0
    fbtrace_id: str = ""
    title: str = ""  # Meta's error_user_title, for the dead-letter detail (never holds PII or the token)
    # for halts and answers that are not acks: Meta's error message or the start of a page that is not
    # Meta's JSON, one line, bounded; `describe` masks the token in it
    excerpt: str = ""


_THROTTLE = meta.THROTTLE_CODES | meta.BUC_THROTTLE_CODES
# retry class of a 2xx that does not acknowledge the events sent
NOT_ACKED = "not_acked"
MAX_EXCERPT = 200
HTTP_REQUEST_TIMEOUT = 408


def _excerpt(text: str) -> str:
    """One line, at most MAX_EXCERPT characters, of an answer's text."""
    return " ".join(text.split())[:MAX_EXCERPT]


def classify(status: int, body: bytes, headers: Mapping[str, str], sent: int) -> Answer:
    """Classify an HTTP answer from Meta to a request that carried `sent` events (pure)."""
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        doc = None
    err = doc.get("error") if isinstance(doc, dict) else None
    if 200 <= status < 300 and err is None:
        received = doc.get("events_received") if isinstance(doc, dict) else None
        if type(received) is int and received == sent:
            return Answer(Action.ACKED, status, events_received=received,
                          fbtrace_id=str(doc.get("fbtrace_id", "")) if isinstance(doc, dict) else "")
        # an empty body, a proxy's page, a 204, another count: Meta did not say it has these events
        return Answer(Action.RETRY, status, retry_class=NOT_ACKED,
                      events_received=received if type(received) is int else 0,
                      excerpt=_excerpt(body[:1000].decode("utf-8", "replace")))
    if not isinstance(err, dict):
        # not a Graph error: a proxy, a load balancer or a WAF answered, not Meta's API
        action, retry_class = _without_graph_error(status)
        return Answer(action, status, retry_class=retry_class,
                      retry_after=retry_after_hint(headers) if action is Action.RETRY else None,
                      excerpt=_excerpt(body[:1000].decode("utf-8", "replace")))
    code = err.get("code") if type(err.get("code")) is int else None
    subcode = err.get("error_subcode") if type(err.get("error_subcode")) is int else None
    transient = err.get("is_transient") is True
    trace = str(err.get("fbtrace_id", ""))
    title = str(err.get("error_user_title", ""))[:120]
    message = _excerpt(str(err.get("message", "")))

    def answer(action: Action, retry_class: str = "") -> Answer:
        hint = retry_after_hint(headers) if action is Action.RETRY else None
        return Answer(action, status, code, subcode, retry_class, hint, fbtrace_id=trace, title=title,
                      excerpt=message if action is Action.HALT else "")

    if code in _THROTTLE or status == 429:
        return answer(Action.RETRY, "throttle")
    if code in meta.REQUEST_ERROR_CODES:
        return answer(Action.HALT)  # token, permission, version, path: no retry or split can help
    if code == meta.CODE_INVALID_PARAMETER and subcode == meta.SUBCODE_OBJECT_NOT_FOUND:
        return answer(Action.HALT)
    if transient or code in meta.TRANSIENT_CODES or status >= 500 or (code is None and status == 408):
        return answer(Action.RETRY, "transient")
    if code == meta.CODE_INVALID_PARAMETER and meta.is_event_subcode(subcode):
        return answer(Action.REJECTED)  # Meta ties it to an event: split to find it
    if 400 <= status < 500:
        return answer(Action.HALT)
    return answer(Action.RETRY, "transient")


def classify_read(status: int, body: bytes, headers: Mapping[str, str], object_id: str) -> Answer:
    """Classify Meta's answer to `GET /{version}/{object_id}?fields=id` (a probe that sends no event; pure).

    Acked only when the body is Graph's JSON naming `object_id`; any other 2xx (a proxy's or a portal's
    page, another object) is RETRY `not_acked`; an error is classified as for POST events (`classify`).
    """
    if 200 <= status < 300:
        try:
            doc = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict) and "error" not in doc:
            if doc.get("id") == object_id:
                return Answer(Action.ACKED, status)
            return Answer(Action.RETRY, status, retry_class=NOT_ACKED, excerpt=_excerpt(body[:1000].decode(
                "utf-8", "replace")))
    return classify(status, body, headers, 0)


def _without_graph_error(status: int) -> tuple[Action, str]:
    """What to do with a non-2xx answer whose body is not a Graph error."""
    if status == 429:
        return Action.RETRY, "throttle"
    if status >= 500 or status == HTTP_REQUEST_TIMEOUT:
        return Action.RETRY, "transient"
    if 400 <= status < 500:
        return Action.HALT, ""  # a 404, a WAF's 403 page: the request goes somewhere wrong
    return Action.RETRY, NOT_ACKED  # 1xx/3xx: nothing acknowledged


def retry_after_hint(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `Retry-After` or the BUC header's `estimated_time_to_regain_access` (minutes)."""
    value = headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
    usage = headers.get("X-Business-Use-Case-Usage")
    if usage:
        try:
            doc = orjson.loads(usage)
        except orjson.JSONDecodeError:
            return None
        minutes = [
            entry.get("estimated_time_to_regain_access", 0)
            for entries in (doc.values() if isinstance(doc, dict) else [])
            for entry in (entries if isinstance(entries, list) else [])
            if isinstance(entry, dict)
        ]
        longest = max((m for m in minutes if isinstance(m, int | float)), default=0)
        if longest > 0:
            return float(longest) * 60.0
    return None


class MetaClient:
    """A pooled aiohttp session that POSTs request bodies and returns classified answers."""

    def __init__(self, timeout_s: float, pool_size: int = 100) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the connection pool; refuses to run twice."""
        if self._session is not None:
            raise RuntimeError("MetaClient already started")
        connector = aiohttp.TCPConnector(limit=self._pool_size, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout,
                                              headers={"Content-Type": "application/json"})

    async def stop(self) -> None:
        """Close the pool (idempotent)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> MetaClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def post(self, url: str, body: bytes, events: int) -> Answer:
        """POST `body` (holding `events` events) to `url`. Network failures become RETRY answers, never exceptions.

        `url` carries no token (it is in the body), so it is safe to log.
        """
        answer = await self._request("POST", url, {}, data=body)
        return answer if isinstance(answer, Answer) else classify(*answer, events)

    async def get(self, url: str, token: str, object_id: str) -> Answer:
        """GET `url` (a read of `object_id`) with `token` in the Authorization header, never in the URL.

        Classified by `classify_read`; network failures become RETRY answers, never exceptions.
        """
        answer = await self._request("GET", url, {"Authorization": f"Bearer {token}"})
        return answer if isinstance(answer, Answer) else classify_read(*answer, object_id)

    async def _request(self, method: str, url: str, headers: Mapping[str, str],
                       data: bytes | None = None) -> Answer | tuple[int, bytes, Mapping[str, str]]:
        """Status, body and headers of Meta's answer; a network failure is already the RETRY answer."""
        if self._session is None:
            raise RuntimeError("MetaClient not started")
        try:
            async with self._session.request(method, url, headers=headers, data=data) as resp:
                return resp.status, await resp.read(), resp.headers
        except TimeoutError:
            return Answer(Action.RETRY, retry_class="timeout")
        except (aiohttp.ClientError, ConnectionError, asyncio.IncompleteReadError):
            return Answer(Action.RETRY, retry_class="connection")


def dataset_url(base_url: str, api_version: str, dataset_id: str) -> str:
    """`{base}/{version}/{dataset_id}?fields=id`: a read of the dataset that sends no event (the probe)."""
    return f"{base_url.rstrip('/')}/{api_version}/{dataset_id}?fields=id"


def events_url(base_url: str, api_version: str, dataset_id: str) -> str:
    """`{base}/{version}/{dataset_id}/events`."""
    return f"{base_url.rstrip('/')}/{api_version}/{dataset_id}/events"


def describe(answer: Answer, secret: str) -> dict[str, Any]:
    """Loggable fields of an answer: codes, status, Meta's trace id, the excerpt with `secret` (the token) masked."""
    out = {k: v for k, v in dataclasses.asdict(answer).items() if v not in (None, "", 0) and k != "action"}
    out["verdict"] = answer.action.value  # the log field keeps its name: "action" is the operator's next step
    if answer.excerpt and secret:
        out["excerpt"] = answer.excerpt.replace(secret, "***")
    return out
