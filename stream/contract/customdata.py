"""custom_data: numbers as numbers, ISO 4217 currency, contents, custom keys (pure).

Meta: `value` is a number, `currency` a valid ISO 4217 code, both required for Purchase (contract README §5).
Currency leaves lowercase like the SDK and Meta's own curl sample (Meta treats it case-insensitively).
An invalid currency rejects the event (Meta would refuse the batch); other bad keys are dropped.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any, Final

from stream.contract import places
from stream.contract.results import Dropped, Rejection

_NUM, _INT, _STR, _FLAG, _ENUM = "number", "integer", "string", "flag", "enum"
# How each plain key of custom_data is checked [5][4]; currency, contents, content_ids and
# custom_properties have their own functions.
_KINDS: Final = {
    **dict.fromkeys(("value", "predicted_ltv", "net_revenue", "max_rating_value"), _NUM),
    "num_items": _INT,
    **dict.fromkeys(("content_type", "content_name", "content_category", "order_id", "search_string",
                     "status", "description", "level"), _STR),
    "success": _FLAG, "delivery_category": _ENUM,
}  # fmt: skip
_ONLY_STR: Final = {str}
DELIVERY_CATEGORIES: Final = frozenset({"in_store", "curbside", "home_delivery"})
_CONTENT_STRINGS: Final = frozenset({"title", "brand", "category"})
_KNOWN: Final = frozenset((*_KINDS, "currency", "content_ids", "contents", "custom_properties"))
_LETTERS: Final = str.maketrans("", "", "".join(c for c in map(chr, range(128)) if not c.isalpha()))


def number(value: Any) -> float | int | None:
    """A finite int or float (a numeric string from JSON is read as a float); None otherwise."""
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        return value
    if type(value) is str:
        try:
            parsed = float(value.strip())
        except ValueError:
            return None
        return parsed if math.isfinite(parsed) else None
    return None


def currency(value: Any) -> str | None:
    """ISO 4217 code, lowercase (USD, usd, "U.S.D" -> usd); None if not a known code."""
    if type(value) is not str:
        return None
    return _currency(value)


@functools.lru_cache(maxsize=256)  # a stream uses a handful of currencies
def _currency(value: str) -> str | None:
    if not value.isascii():
        return None
    code = value.translate(_LETTERS).lower()
    return code if code in places.CURRENCIES else None


def _content(item: Any, dropped: list[Dropped]) -> dict[str, Any] | None:
    """One element of contents: an id (required by Meta), then what else is valid."""
    if type(item) is not dict and not isinstance(item, Mapping):
        dropped.append(Dropped("custom_data.contents", "invalid_type"))
        return None
    cid = item.get("id")
    if type(cid) is int:
        cid = str(cid)
    if type(cid) is not str or not (cid := cid.strip()):
        dropped.append(Dropped("custom_data.contents", "missing_content_id"))
        return None
    out: dict[str, Any] = {"id": cid}
    for key, raw in item.items():
        if raw is None or key == "id":
            continue
        if key == "quantity" and type(raw) is int:
            out[key] = raw
        elif key == "item_price" and (price := number(raw)) is not None:
            out[key] = price
        elif key == "delivery_category" and raw in DELIVERY_CATEGORIES:
            out[key] = raw
        elif key in _CONTENT_STRINGS and type(raw) is str and (text := raw.strip()):
            out[key] = text
    return out


def _content_ids(ids: Any, dropped: list[Dropped]) -> list[str] | None:
    if type(ids) is list and set(map(type, ids)) == _ONLY_STR and all(ids):
        return list(map(str.strip, ids))  # the usual shape: a list of id strings
    if not isinstance(ids, list | tuple):
        dropped.append(Dropped("custom_data.content_ids", "invalid_type"))
        return None
    kept = [str(i).strip() for i in ids if type(i) in (str, int) and str(i).strip()]
    if len(kept) != len(ids):
        dropped.append(Dropped("custom_data.content_ids", "invalid_type"))
    return kept or None


def _contents(contents: Any, dropped: list[Dropped]) -> list[dict[str, Any]] | None:
    if not isinstance(contents, list | tuple):
        dropped.append(Dropped("custom_data.contents", "invalid_type"))
        return None
    items = [content for item in contents if (content := _content(item, dropped)) is not None]
    return items or None


def _custom_properties(extra: Any, out: dict[str, Any], dropped: list[Dropped]) -> None:
    if not isinstance(extra, Mapping):
        dropped.append(Dropped("custom_data.custom_properties", "invalid_type"))
        return
    for key, text in extra.items():
        if key in _KNOWN or key in out:
            dropped.append(Dropped(f"custom_data.custom_properties.{key}", "reserved_key"))
        else:
            out[key] = text


def _simple(key: str, raw: Any, dropped: list[Dropped]) -> Any:
    """The value to send for a number, integer, string, flag or enum key; None (and a drop) if bad."""
    kind = _KINDS[key]
    if kind is _NUM:
        if (num := number(raw)) is not None:
            return num
        reason = "invalid_number"
    elif kind is _STR:
        if type(raw) is str and (text := raw.strip()):
            return text
        reason = "empty" if type(raw) is str else "invalid_type"
    elif kind is _INT:
        if type(raw) is int:
            return raw
        reason = "invalid_number"
    elif key == "success":
        return int(bool(raw))  # app events: 0/1 [4]
    else:  # delivery_category
        if raw in DELIVERY_CATEGORIES:
            return raw
        reason = "invalid_delivery_category"
    dropped.append(Dropped(f"custom_data.{key}", reason))
    return None


def normalize_custom_data(custom_data: Any, dropped: list[Dropped]) -> dict[str, Any] | Rejection | None:
    """Meta's custom_data object, None when nothing is left, or a rejection for an invalid currency."""
    if type(custom_data) is not dict and not isinstance(custom_data, Mapping):
        if custom_data is not None:
            dropped.append(Dropped("custom_data", "invalid_type"))
        return None
    out: dict[str, Any] = {}
    extra = None
    for key, raw in custom_data.items():
        if raw is None:
            continue
        result: Any
        kind = _KINDS.get(key)
        # hot path: a plain string, or a finite number (x - x is 0.0 only for finite floats)
        if kind is _STR and type(raw) is str and (text := raw.strip()):
            out[key] = text
            continue
        if kind is _NUM and (type(raw) is int or (type(raw) is float and raw - raw == 0.0)):
            out[key] = raw
            continue
        if kind is not None:
            result = _simple(key, raw, dropped)
        elif key == "currency":
            if (result := currency(raw)) is None:
                return Rejection("invalid_currency", "custom_data.currency must be an ISO 4217 code")
        elif key == "contents":
            result = _contents(raw, dropped)
        elif key == "content_ids":
            result = _content_ids(raw, dropped)
        elif key == "custom_properties":
            extra = raw
            continue
        else:
            dropped.append(Dropped(f"custom_data.{key}", "unknown_field"))
            continue
        if result is not None:
            out[key] = result
    if extra is not None:
        _custom_properties(extra, out, dropped)
    return out or None
