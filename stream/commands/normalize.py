"""`capi-stream normalize`: what exactly would we send to Meta for these events?

Reads JSON records shaped like schemas/conversion_event.avsc, one per line, from a file or stdin, and
writes one JSON line per input line, in order: `{"event": {...}, "dropped": [...]}` or
`{"rejected": {"reason": ..., "detail": ...}, "dropped": [...]}`. A line that is not JSON or does not
fit the schema gives a `bad_record` rejection and the run goes on. Exit 0 when every line was a record,
1 when some were bad records, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from stream.commands import Subparsers
from stream.errors import UsageError

_FASTAVRO_MESSAGE = re.compile(
    r'"?(?P<path>[\w.]+) is <.*> of type (?P<got><[^>]*>) expected (?P<want>.+?)"?$', re.DOTALL
)


def register(sub: Subparsers, argv: Sequence[str]) -> None:
    """Add the `normalize` command to the CLI."""
    parser = sub.add_parser("normalize", help="show the Meta event (or the rejection) for each JSON record")
    parser.add_argument("file", nargs="?", type=Path, help="JSON lines file (default: stdin)")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="capi-stream config: per-app default country, consent and external_id policy",
    )
    parser.add_argument(
        "--default-country",
        default=None,
        metavar="CC",
        help="ISO 3166-1 alpha-2 country for phones without a country code",
    )
    parser.add_argument(
        "--now",
        type=int,
        default=None,
        metavar="UNIX_SECONDS",
        help="the current time for the 7-day window (default: the clock)",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="add to each answer every user_data field's normalized value before hashing (personal data in "
             "clear: for your own test records), why a field was dropped, the event's country and age in days",
    )
    parser.set_defaults(handler=run)


def country_flag(value: str | None) -> str | None:
    """The validated --default-country (upper case), or UsageError naming the flag."""
    from stream.contract import places  # pycountry tables load only when needed

    if value is None:
        return None
    code = places.iso_country(value)
    if code is None:
        raise UsageError(f"--default-country {value!r} is not an ISO 3166-1 alpha-2 country code (e.g. US)")
    return code


def _settings_chooser(args: argparse.Namespace) -> Callable[[Mapping[str, Any]], Any]:
    from stream.contract.normalize import NormalizeSettings

    fallback = NormalizeSettings(default_country=country_flag(args.default_country))
    if args.config is None:
        return lambda record: fallback
    from stream import config

    routes = config.load(args.config).route()
    per_app = {
        app: NormalizeSettings(
            default_country=fallback.default_country or dest.default_country.upper() or None,
            require_consent=dest.require_consent,
            hash_external_id=dest.hash_external_id,
        )
        for app, dest in routes.items()
    }
    return lambda record: per_app.get(str(record.get("app_id")), fallback)


def bad_record_detail(exc: Exception) -> str:
    """A short reason a line is not a record, without echoing the line's values (they may be PII)."""
    text = str(exc).strip().strip("[]").strip()
    if (m := _FASTAVRO_MESSAGE.match(text)) is not None:
        path = m["path"].removeprefix("io.capistream.")
        got = m["got"].strip("<>").removeprefix("class ").strip("'")
        return f"{path}: got {got}, expected {m['want']}"
    return type(exc).__name__


_HASHED = re.compile(r"[0-9a-fA-F]{64}")
_PHONE_WITH_CODE = ("+", "00")


def _values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def phone_warnings(record: Mapping[str, Any], settings: Any) -> list[str]:
    """Phones the pipeline drops because nothing says their country: said, not guessed."""
    from stream.contract import userdata

    raw = record.get("user_data")
    if not isinstance(raw, Mapping) or raw.get("ph") is None:
        return []
    if userdata.event_country(raw.get("country"), settings.default_country) is not None:
        return []
    from stream.contract import fields

    national = [v for v in _values(raw["ph"]) if isinstance(v, str) and v.strip()
                and not v.strip().startswith(_PHONE_WITH_CODE) and not _HASHED.fullmatch(v.strip())]
    if not national:
        return []
    read = [fields.phone(v, None) for v in national]
    where = ("no country for the event (user_data.country, --default-country, or the destination's "
             "default_country with --config)")
    out = []
    if dropped := sum(1 for r in read if r is None):
        out.append(f"user_data.ph: {dropped} number(s) without a country code and {where}: dropped, not guessed")
    if guessed := [r for r in read if r is not None]:
        out.append(f"user_data.ph: {len(guessed)} number(s) without a + and {where}: their leading digits were "
                   f"read as the country code (+{guessed[0][:3]}...); set a default country if that is wrong")
    return out


def explain(record: Mapping[str, Any], now: int, settings: Any) -> dict[str, Any]:
    """Each user_data field's normalized value before hashing, the country used and the event's age."""
    from stream.contract import fields, userdata
    from stream.contract.meta import MAX_EVENT_AGE_S

    raw = record.get("user_data")
    raw = raw if isinstance(raw, Mapping) else {}
    country = userdata.event_country(raw.get("country"), settings.default_country)
    table = fields.field_table(country, time.gmtime(now).tm_year)
    shown: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue
        normalizer = table.get(key) or fields.RAW_NORMALIZERS.get(key)
        if normalizer is None:
            shown[key] = {"unknown_field": True}
            continue
        out = []
        for item in _values(value):
            if not isinstance(item, str):
                out.append({"normalized": None, "why": "invalid_type"})
            elif key in table and _HASHED.fullmatch(item.strip()):
                out.append({"normalized": item.strip().lower(), "why": "already a SHA-256 hash: sent as is"})
            else:
                normalized = normalizer(item)
                out.append({"normalized": normalized} if normalized is not None
                           else {"normalized": None, "why": "does not normalize: dropped"})
        shown[key] = out if isinstance(value, list | tuple) else out[0]
    event_time = record.get("event_time")
    age_days = round((now - event_time) / 86400, 2) if isinstance(event_time, int) else None
    return {"country": country.upper() if country else None, "age_days": age_days,
            "max_age_days": MAX_EVENT_AGE_S // 86400, "hashed_fields": sorted(k for k in shown if k in table),
            "user_data": shown}


def normalize_lines(
    lines: Iterable[bytes | str], now: int, choose: Callable[[Mapping[str, Any]], Any], out: IO[bytes],
    explain_fields: bool = False,
) -> tuple[int, int, int]:
    """Write one JSON answer per line to `out`; return (events, rejected, bad records)."""
    import orjson
    from fastavro.validation import ValidationError, validate

    from stream.avro.schema import load_schema
    from stream.contract.normalize import BAD_RECORD, normalize_event

    schema = load_schema()
    counts = [0, 0, 0]
    for line in lines:
        try:
            record = orjson.loads(line)
            if not isinstance(record, dict):
                raise TypeError("not a JSON object")  # noqa: TRY301 -- one path for every bad line
            validate(record, schema, raise_errors=True)
        except (orjson.JSONDecodeError, TypeError, ValidationError) as exc:
            detail = "not JSON" if isinstance(exc, orjson.JSONDecodeError) else bad_record_detail(exc)
            answer: dict[str, Any] = {"rejected": {"reason": BAD_RECORD, "detail": detail}}
            counts[2] += 1
        else:
            settings = choose(record)
            outcome = normalize_event(record, now, settings)
            dropped = [{"field": d.field, "reason": d.reason} for d in outcome.dropped]
            if outcome.rejection is None:
                answer = {"event": outcome.event, "dropped": dropped}
                counts[0] += 1
            else:
                answer = {
                    "rejected": {"reason": outcome.rejection.reason, "detail": outcome.rejection.detail},
                    "dropped": dropped,
                }
                counts[1] += 1
            if warnings := phone_warnings(record, settings):
                answer["warnings"] = warnings
            if explain_fields:
                answer["explain"] = shown = explain(record, now, settings)
                for d in outcome.dropped:  # the pipeline's own reason for each dropped field
                    entry = shown["user_data"].get(d.field.removeprefix("user_data."))
                    if isinstance(entry, dict) and entry.get("normalized") is None:
                        entry["why"] = d.reason
        out.write(orjson.dumps(answer) + b"\n")
    return counts[0], counts[1], counts[2]


def run(args: argparse.Namespace) -> int:
    """Normalize every line; 0 if all were records, 1 if some were bad records (UsageError -> 2)."""
    if args.now is not None and args.now < 0:
        raise UsageError("--now must be Unix seconds (>= 0)")
    choose = _settings_chooser(args)
    now = args.now if args.now is not None else int(time.time())
    if args.file is not None:
        try:
            stream: IO[bytes] = args.file.open("rb")
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror}") from exc
    else:
        stream = sys.stdin.buffer
    with stream:
        lines = (line.rstrip(b"\r\n") for line in stream)
        events, rejected, bad = normalize_lines(lines, now, choose, sys.stdout.buffer, args.explain)
    sys.stdout.flush()
    print(
        f"normalize: {events + rejected + bad} lines: {events} events, {rejected} rejected, {bad} bad records",
        file=sys.stderr,
    )
    return 1 if bad else 0
