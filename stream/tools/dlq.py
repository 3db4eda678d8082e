"""Dead-letter tools: what is in the dead-letter topic, and copying letters back (no I/O).

`show` turns each letter's headers (written by stream/dlq.py) into one row: reason, Meta's code and
subcode, the source position, the time, event name and id, and the short detail capi-stream wrote. It
never decodes or prints the value or the key: those are the app's original bytes and hold personal
data. `redrive` selects letters (by reason) and hands each, unchanged (key, value, every header), to a
`send` callable; the caller decides whether that produces (`--execute`) or only counts (dry run). Kafka
I/O lives in stream/admin.py. The header names come from stream/dlq.py, the writer, so reader and writer
cannot drift apart (that import brings confluent_kafka along; nothing here calls it).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Final

from stream.errors import UsageError
from stream.pipeline import deadletters as dlq
from stream.tools.replay import iso_ms

Headers = Sequence[tuple[str, bytes | None]]
# The detail column is cut here so a table row stays on one screen line; --format json has it whole.
TABLE_DETAIL_WIDTH: Final = 60
MISSING: Final = "-"
# how redrive counts a letter written without its value (too large): it cannot be sent back
NOT_COPIED: Final = "(value omitted: not copied)"


@dataclasses.dataclass(frozen=True, slots=True)
class RawMessage:
    """One Kafka message as read: where it is in its topic, and its bytes untouched."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class LetterRow:
    """The printable facts of one dead letter (no key, no value)."""

    partition: int  # position in the dead-letter topic
    offset: int
    reason: str
    code: int | None
    subcode: int | None
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    time_ms: int | None
    event_name: str
    event_id: str
    detail: str
    value_bytes: int

    @property
    def source(self) -> str:
        """`topic[partition]@offset` of the original message."""
        part = MISSING if self.source_partition is None else str(self.source_partition)
        off = MISSING if self.source_offset is None else str(self.source_offset)
        return f"{self.source_topic or MISSING}[{part}]@{off}"

    @property
    def code_text(self) -> str:
        """`code/subcode`, `code`, or `-`."""
        if self.code is None:
            return MISSING
        return f"{self.code}/{self.subcode}" if self.subcode is not None else str(self.code)


def header_map(headers: Headers | None) -> dict[str, str]:
    """Headers as text; the last value of a repeated name wins, undecodable bytes are replaced."""
    return {name: (value or b"").decode("utf-8", "replace") for name, value in headers or ()}


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def letter_row(message: RawMessage) -> LetterRow:
    """The row of one letter. Letters not written by capi-stream (no headers) give `-` fields, not errors."""
    h = header_map(message.headers)
    return LetterRow(
        partition=message.partition, offset=message.offset,
        reason=h.get(dlq.HEADER_REASON, "") or MISSING,
        code=_int(h.get(dlq.HEADER_CODE)), subcode=_int(h.get(dlq.HEADER_SUBCODE)),
        source_topic=h.get(dlq.HEADER_TOPIC, ""), source_partition=_int(h.get(dlq.HEADER_PARTITION)),
        source_offset=_int(h.get(dlq.HEADER_OFFSET)), time_ms=_int(h.get(dlq.HEADER_TIME)),
        event_name=h.get(dlq.HEADER_EVENT_NAME, ""), event_id=h.get(dlq.HEADER_EVENT_ID, ""),
        detail=h.get(dlq.HEADER_DETAIL, "")[: dlq.MAX_DETAIL],
        value_bytes=len(message.value or b""),
    )


def reason_of(message: RawMessage) -> str:
    """The letter's reason code (`-` when it has none)."""
    return header_map(message.headers).get(dlq.HEADER_REASON, "") or MISSING


def known_reasons() -> frozenset[str]:
    """Every reason a dead letter can carry: decoding, routing, validation (no_consent is never
    dead-lettered), Meta's refusal of one event and the delivery deadline."""
    from stream.avro import decode
    from stream.contract.results import REJECTION_REASONS
    from stream.pipeline import prepare, runner

    return frozenset({decode.BAD_AVRO, decode.NOT_CONFLUENT_FRAMED, decode.UNKNOWN_SCHEMA_ID,
                      decode.INCOMPATIBLE_SCHEMA, decode.UNUSABLE_SCHEMA, prepare.UNKNOWN_DESTINATION,
                      runner.META_REJECTED, runner.DELIVERY_DEADLINE,
                      *(r for r in REJECTION_REASONS if r != "no_consent")})


def reasons_flag(values: Iterable[str] | None) -> frozenset[str]:
    """The --reason filter: repeated flags and comma lists merge; empty means every reason.

    UsageError for a code no dead letter can carry (a typo would otherwise match nothing, silently).
    """
    out = frozenset(r.strip() for v in values or () for r in v.split(",") if r.strip())
    if values and not out:
        raise UsageError("--reason needs a reason code, e.g. --reason event_too_old")
    known = known_reasons()
    if unknown := sorted(out - known):
        raise UsageError(f"--reason {', '.join(unknown)}: unknown reason code (known: {', '.join(sorted(known))})")
    return out


def selected(reason: str, reasons: Collection[str]) -> bool:
    """True when a letter with `reason` passes the filter (an empty filter passes every letter)."""
    return not reasons or reason in reasons


@dataclasses.dataclass
class ShowResult:
    """The rows `show` prints, and how many letters it looked at."""

    rows: list[LetterRow] = dataclasses.field(default_factory=list)
    read: int = 0
    matched: int = 0
    limit_reached: bool = False


def show(messages: Iterable[RawMessage], reasons: Collection[str], limit: int) -> ShowResult:
    """Rows of the first `limit` letters (0: all) whose reason passes the filter, oldest first per
    partition; stops reading once the limit is reached."""
    if limit < 0:
        raise UsageError(f"--limit {limit} must be 0 (all) or more")
    result = ShowResult()
    for message in messages:
        result.read += 1
        row = letter_row(message)
        if not selected(row.reason, reasons):
            continue
        result.matched += 1
        result.rows.append(row)
        if limit and result.matched >= limit:
            result.limit_reached = True
            break
    return result


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_rows(rows: Sequence[LetterRow]) -> list[str]:
    """A fixed-width table: dlq position, time, reason, code, source, event name and id, detail."""
    head = ("dlq", "time", "reason", "code", "source", "event_name", "event_id", "detail")
    table = [head] + [
        (f"{r.partition}@{r.offset}", iso_ms(r.time_ms) if r.time_ms is not None else MISSING, r.reason,
         r.code_text, r.source, r.event_name or MISSING, r.event_id or MISSING,
         _cut(r.detail, TABLE_DETAIL_WIDTH) or MISSING)
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]


def row_dict(row: LetterRow) -> dict[str, object]:
    """A row as a JSON-ready dict, with the time also in ISO form."""
    out = dataclasses.asdict(row)
    out["time"] = iso_ms(row.time_ms) if row.time_ms is not None else None
    out["source"] = row.source
    return out


def show_summary(result: ShowResult, topic: str, reasons: Collection[str]) -> str:
    """The line under the table: how many letters were shown out of how many read."""
    which = f" with reason {', '.join(sorted(reasons))}" if reasons else ""
    if result.limit_reached:
        return f"{len(result.rows)} letter(s){which} shown from {topic}; limit reached, more may follow (--limit)"
    return f"{len(result.rows)} of {result.read} letter(s) in {topic}{which}"


def redrive(messages: Iterable[RawMessage], reasons: Collection[str],
            send: Callable[[RawMessage], None] | None) -> Counter[str]:
    """Hand every letter whose reason passes the filter to `send` (None: dry run, only count).

    Returns how many letters were selected, by reason. Letters go on unchanged: same key, value and
    headers, so a letter that fails again is dead-lettered with its history intact. A letter written
    without its value (too large for the dead-letter topic, header capi.omitted) is never sent: it is
    counted as "REASON (value omitted: not copied)"; its source position says where the original is.
    """
    counts: Counter[str] = Counter()
    for message in messages:
        reason = reason_of(message)
        if not selected(reason, reasons):
            continue
        if header_map(message.headers).get(dlq.HEADER_OMITTED):
            counts[f"{reason} {NOT_COPIED}"] += 1
            continue
        counts[reason] += 1
        if send is not None:
            send(message)
    return counts


def missing_topic_line(topic: str, named_by: str) -> str:
    """The one line `show` and `redrive` print when the dead-letter topic does not exist.

    capi-stream creates the topic with its first letter, so on a fresh deployment a missing topic means
    nothing has been dead-lettered yet; `named_by` (the flag or config key that gave the name) is where
    to look in case the name is a typo.
    """
    return (f"no dead letters: topic {topic} does not exist, so nothing has been dead-lettered yet "
            f"(if letters were expected, check {named_by} for a typo)")


def redrive_summary(counts: Counter[str], source: str, dest: str, *, executed: bool) -> str:
    """One line: what was (or would be) copied, by reason."""
    total = sum(counts.values())
    by_reason = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items())) or "nothing matched"
    if executed:
        return f"copied {total} letter(s) from {source} to {dest}: {by_reason}"
    return f"would copy {total} letter(s) from {source} to {dest}: {by_reason} (dry run; --execute to copy)"
