"""POST batches to Meta's `/{version}/{dataset_id}/events` and classify the answer.

The only aiohttp client in capi-stream. Answers are classified by HTTP status, `code`, `error_subcode`
and `is_transient`, never by message text (Meta localises the text):

- Acked: 2xx with `events_received`.
- Retry: transient trouble (5xx, `is_transient`, codes 1/2, timeouts, resets) or throttling
  (4, 17, 32, 341, 613, 80000-80014, HTTP 429); `retry_after` carries Meta's hint when it gave one.
- Halt: the destination cannot send until its token or config changes (190, 102, 100/33, 10, 200-299, 3).
- Rejected: Meta refused the events themselves (other non-transient 4xx): split and dead-letter.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from stream import meta


class Verdict(enum.Enum):
    """What the sender does with a batch after an answer."""

    ACKED = "acked"
    RETRY = "retry"
    HALT = "halt"
    REJECTED = "rejected"


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """Meta's answer to one request, classified."""

    verdict: Verdict
    status: int = 0
    code: int | None = None
    subcode: int | None = None
    retry_class: str = ""  # transient | throttle | timeout | connection (for RETRY)
    retry_after: float | None = None
    events_received: int = 0
    fbtrace_id: str = ""
    title: str = ""  # Meta's error_user_title, for the dead-letter detail (never holds PII or the token)


# Permission and configuration errors: retrying the same request cannot help [6.2].
_PERMISSION_CODES = frozenset({3, 10, *range(200, 300)})
_THROTTLE = meta.THROTTLE_CODES | meta.BUC_THROTTLE_CODES


def classify(status: int, body: bytes, headers: Mapping[str, str]) -> Answer:
    """Classify an HTTP answer from Meta (pure)."""
    try:
        doc = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    if 200 <= status < 300 and "error" not in doc:
        received = doc.get("events_received")
        return Answer(Verdict.ACKED, status, events_received=received if isinstance(received, int) else 0,
                      fbtrace_id=str(doc.get("fbtrace_id", "")))
    err = doc.get("error") if isinstance(doc.get("error"), dict) else {}
    assert isinstance(err, dict)
    code = err.get("code") if isinstance(err.get("code"), int) else None
    subcode = err.get("error_subcode") if isinstance(err.get("error_subcode"), int) else None
    transient = err.get("is_transient") is True
    trace = str(err.get("fbtrace_id", ""))
    title = str(err.get("error_user_title", ""))[:120]

    def answer(verdict: Verdict, retry_class: str = "") -> Answer:
        hint = retry_after_hint(headers) if verdict is Verdict.RETRY else None
        return Answer(verdict, status, code, subcode, retry_class, hint, fbtrace_id=trace, title=title)

    if code in _THROTTLE or status == 429:
        return answer(Verdict.RETRY, "throttle")
    if code in meta.TOKEN_ERROR_CODES:
        return answer(Verdict.HALT)
    if code == meta.CODE_INVALID_PARAMETER and subcode == meta.SUBCODE_OBJECT_NOT_FOUND:
        return answer(Verdict.HALT)
    if code in _PERMISSION_CODES:
        return answer(Verdict.HALT)
    if transient or code in meta.TRANSIENT_CODES or status >= 500 or (code is None and status == 408):
        return answer(Verdict.RETRY, "transient")
    if 400 <= status < 500:
        return answer(Verdict.REJECTED)
    return answer(Verdict.RETRY, "transient")


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

    async def post(self, url: str, body: bytes) -> Answer:
        """POST `body` to `url`. Network failures become RETRY answers, never exceptions.

        `url` carries no token (it is in the body), so it is safe to log.
        """
        if self._session is None:
            raise RuntimeError("MetaClient not started")
        try:
            async with self._session.post(url, data=body) as resp:
                payload = await resp.read()
                return classify(resp.status, payload, resp.headers)
        except TimeoutError:
            return Answer(Verdict.RETRY, retry_class="timeout")
        except (aiohttp.ClientError, ConnectionError, asyncio.IncompleteReadError):
            return Answer(Verdict.RETRY, retry_class="connection")


def events_url(base_url: str, api_version: str, dataset_id: str) -> str:
    """`{base}/{version}/{dataset_id}/events`."""
    return f"{base_url.rstrip('/')}/{api_version}/{dataset_id}/events"


def describe(answer: Answer) -> dict[str, Any]:
    """Loggable fields of an answer (no token, no PII: codes, status and Meta's trace id)."""
    return {k: v for k, v in dataclasses.asdict(answer).items() if v not in (None, "", 0) or k == "verdict"} | {
        "verdict": answer.verdict.value
    }
