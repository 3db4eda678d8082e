"""Message values to what the pipeline does with them: decode -> route -> normalize -> serialize (pure).

This is the CPU-heavy part of the pipeline (Avro decode and SHA-256 normalization are most of the cost).
It runs inline on the event loop, or in worker processes (`pipeline.workers`) so that a 2-core machine
uses both cores: its inputs (bytes, a time) and outputs (small tuples of bytes and strings) pickle cheaply.
"""

from __future__ import annotations

import dataclasses
import enum
import gc
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from stream.avro.decode import DecodeError, Decoder
from stream.avro.schema import load_schema
from stream.avro.wire import WireFormat
from stream.contract.normalize import NO_CONSENT, NormalizeSettings, normalize_event
from stream.pipeline.consistency import Identity, identity
from stream.pipeline.quality import REVENUE_EVENTS, match_keys

UNKNOWN_DESTINATION = "unknown_destination"


class Kind(enum.IntEnum):
    """What happens to a message."""

    SEND = 0  # a Meta server event for a destination
    DEAD = 1  # dead-letter it with a reason
    NO_CONSENT = 2  # drop it silently: never sent, never kept


class Prepared(NamedTuple):
    """The outcome for one message value."""

    kind: Kind
    destination: str = ""
    body: bytes = b""  # the Meta server event as JSON (SEND)
    event_name: str = ""
    event_id: str | None = None
    event_time: int = 0
    reason: str = ""  # DEAD: the reason code; also set for NO_CONSENT
    detail: str = ""
    decode_failed: bool = False
    dropped: tuple[tuple[str, str], ...] = ()  # (field, reason) of dropped fields
    keys: tuple[str, ...] = ()  # SEND: the match keys the event carries (quality)
    revenue: bool = False
    has_value: bool = False
    identity: Identity | None = None  # SEND: external_id, em and ph fingerprints (user consistency)


_new_prepared = tuple.__new__  # Prepared from a tuple of all its fields, in order


@dataclasses.dataclass(frozen=True)
class PrepareContext:
    """Everything `prepare` needs, picklable: which schema, framing and app -> destination routes."""

    schema_path: str | None
    wire_format: str
    routes: Mapping[str, tuple[str, NormalizeSettings]]  # app_id -> (destination name, settings)


class Preparer:
    """A Decoder plus the routes; one per process."""

    def __init__(self, ctx: PrepareContext) -> None:
        self.ctx = ctx
        self.decoder = Decoder(load_schema(ctx.schema_path), WireFormat(ctx.wire_format))

    def add_writer_schemas(self, schemas: Mapping[int, Any]) -> None:
        """Writer schemas (id -> parsed schema or None) looked up by the caller for Confluent values."""
        for schema_id, schema in schemas.items():
            self.decoder.add_writer_schema(schema_id, schema)

    def prepare(self, values: Sequence[bytes | None], now: int) -> list[Prepared]:
        """One Prepared per value, in order.

        The cyclic garbage collector is paused for the batch: decoding and normalizing allocate many
        dicts and lists but no cycles, and each collection would walk every live object of the process.
        """
        paused = gc.isenabled()
        gc.disable()
        try:
            return [self.one(v, now) for v in values]
        finally:
            if paused:
                gc.enable()

    def one(self, value: bytes | None, now: int) -> Prepared:
        """Decode, route, normalize and serialize one value."""
        try:
            record = self.decoder.decode(value)
        except DecodeError as exc:
            return Prepared(Kind.DEAD, reason=exc.reason, detail=exc.detail, decode_failed=True)
        name = record.get("event_name")
        event_name = name if isinstance(name, str) else ""
        eid = record.get("event_id")
        event_id = eid if isinstance(eid, str) else None
        app_id = record.get("app_id")
        route = self.ctx.routes.get(app_id) if isinstance(app_id, str) else None
        if route is None:
            return Prepared(Kind.DEAD, event_name=event_name, event_id=event_id, reason=UNKNOWN_DESTINATION,
                            detail=f"no destination for app_id {app_id!r}"[:200])
        destination, settings = route
        outcome = normalize_event(record, now, settings)
        dropped = tuple((d.field, d.reason) for d in outcome.dropped) if outcome.dropped else ()
        if outcome.event is None:
            assert outcome.rejection is not None
            kind = Kind.NO_CONSENT if outcome.rejection.reason == NO_CONSENT else Kind.DEAD
            return Prepared(kind, destination, event_name=event_name, event_id=event_id,
                            reason=outcome.rejection.reason, detail=outcome.rejection.detail, dropped=dropped)
        event = outcome.event
        user_data = event.get("user_data") or {}
        name = event["event_name"]
        revenue = name in REVENUE_EVENTS
        if revenue:
            custom = event.get("custom_data") or {}
            has_value = custom.get("value") is not None and bool(custom.get("currency"))
        else:
            has_value = False
        # every field in order, built as the tuple it is: a keyword call of the NamedTuple costs ~0.4 us
        return _new_prepared(Prepared, (
            Kind.SEND, destination, orjson.dumps(event), name, event.get("event_id"), event["event_time"],
            "", "", False, dropped, match_keys(user_data), revenue, has_value, identity(user_data),
        ))  # fmt: skip


# -- worker processes ------------------------------------------------------------------------------
_WORKER: Preparer | None = None


def init_worker(ctx: PrepareContext) -> None:
    """ProcessPoolExecutor initializer: build this worker's Preparer once."""
    global _WORKER
    _WORKER = Preparer(ctx)


def prepare_in_worker(values: list[bytes | None], now: int, schemas: Mapping[int, Any]) -> list[Prepared]:
    """The worker-side call: prepare a batch of values."""
    assert _WORKER is not None, "init_worker did not run"
    if schemas:
        _WORKER.add_writer_schemas(schemas)
    return _WORKER.prepare(values, now)
