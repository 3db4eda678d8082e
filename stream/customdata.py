"""custom_data: numbers as numbers, ISO 4217 currency, contents, custom keys (pure).

Meta: `value` is a number, `currency` a valid ISO 4217 code, both required for Purchase (meta-capi.md §5).
Currency leaves lowercase like the SDK and Meta's own curl sample (Meta treats it case-insensitively).
An invalid currency rejects the event (Meta would refuse the batch); other bad keys are dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from stream import places
from stream.userdata import Dropped
from stream.validate import Rejection

_NUMBERS: Final = ("value", "predicted_ltv", "net_revenue", "max_rating_value")
_INTEGERS: Final = ("num_items",)
_STRINGS: Final = ("content_type", "content_name", "content_category", "order_id", "search_string",
                   "status", "description", "level")
DELIVERY_CATEGORIES: Final = frozenset({"in_store", "curbside", "home_delivery"})
_CONTENT_STRINGS: Final = ("title", "brand", "category")
_KNOWN: Final = frozenset(
    (*_NUMBERS, *_INTEGERS, *_STRINGS, "currency", "content_ids", "contents", "delivery_category",
     "success", "custom_properties")
)
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
    if type(value) is not str or not value.isascii():
        return None
    code = value.translate(_LETTERS).lower()
    return code if code in places.CURRENCIES else None


def _content(item: Any, dropped: list[Dropped]) -> dict[str, Any] | None:
    if not isinstance(item, Mapping):
        dropped.append(Dropped("custom_data.contents", "invalid_type"))
        return None
    cid = item.get("id")
    if type(cid) is int:
        cid = str(cid)
    if type(cid) is not str or not cid.strip():
        dropped.append(Dropped("custom_data.contents", "missing_content_id"))
        return None
    out: dict[str, Any] = {"id": cid.strip()}
    if type(quantity := item.get("quantity")) is int:
        out["quantity"] = quantity
    if (price := number(item.get("item_price"))) is not None:
        out["item_price"] = price
    if item.get("delivery_category") in DELIVERY_CATEGORIES:
        out["delivery_category"] = item["delivery_category"]
    for key in _CONTENT_STRINGS:
        if type(text := item.get(key)) is str and text.strip():
            out[key] = text.strip()
    return out


def _put_simple(custom_data: Mapping[str, Any], out: dict[str, Any], dropped: list[Dropped]) -> None:
    for key in _NUMBERS:
        if (raw := custom_data.get(key)) is not None:
            if (num := number(raw)) is None:
                dropped.append(Dropped(f"custom_data.{key}", "invalid_number"))
            else:
                out[key] = num
    for key in _INTEGERS:
        if (raw := custom_data.get(key)) is not None:
            if type(raw) is int:
                out[key] = raw
            else:
                dropped.append(Dropped(f"custom_data.{key}", "invalid_number"))
    for key in _STRINGS:
        if type(text := custom_data.get(key)) is str and text.strip():
            out[key] = text.strip()
    if (success := custom_data.get("success")) is not None:
        out["success"] = int(bool(success))  # app events: 0/1 [4]
    category = custom_data.get("delivery_category")
    if category in DELIVERY_CATEGORIES:
        out["delivery_category"] = category
    elif category is not None:
        dropped.append(Dropped("custom_data.delivery_category", "invalid_delivery_category"))


def _put_lists(custom_data: Mapping[str, Any], out: dict[str, Any], dropped: list[Dropped]) -> None:
    ids = custom_data.get("content_ids")
    if isinstance(ids, list | tuple):
        kept = [str(i).strip() for i in ids if type(i) in (str, int) and str(i).strip()]
        if len(kept) != len(ids):
            dropped.append(Dropped("custom_data.content_ids", "invalid_type"))
        if kept:
            out["content_ids"] = kept
    contents = custom_data.get("contents")
    if isinstance(contents, list | tuple):
        items = [c for c in (_content(i, dropped) for i in contents) if c is not None]
        if items:
            out["contents"] = items
    extra = custom_data.get("custom_properties")
    if isinstance(extra, Mapping):
        for key, text in extra.items():
            if key in _KNOWN or key in out:
                dropped.append(Dropped(f"custom_data.custom_properties.{key}", "reserved_key"))
            else:
                out[key] = text


def normalize_custom_data(custom_data: Any, dropped: list[Dropped]) -> dict[str, Any] | Rejection | None:
    """Meta's custom_data object, None when nothing is left, or a rejection for an invalid currency."""
    if not isinstance(custom_data, Mapping):
        if custom_data is not None:
            dropped.append(Dropped("custom_data", "invalid_type"))
        return None
    out: dict[str, Any] = {}
    raw_currency = custom_data.get("currency")
    if raw_currency is not None:
        code = currency(raw_currency)
        if code is None:
            return Rejection("invalid_currency", "custom_data.currency must be an ISO 4217 code")
        out["currency"] = code
    _put_simple(custom_data, out, dropped)
    _put_lists(custom_data, out, dropped)
    dropped.extend(Dropped(f"custom_data.{key}", "unknown_field") for key in custom_data if key not in _KNOWN)
    return out or None
