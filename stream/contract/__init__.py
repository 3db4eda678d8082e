"""Meta's Conversions API contract, pure: normalize, hash and validate one record into a Meta server event.

The entry point is `normalize_event(record, now, settings) -> Outcome`. Submodules hold one concern each
(`meta`: Meta's constants; `fields`, `userdata`, `phones`, `places`: user_data; `customdata`, `appdata`;
`validate`: event-level rules; `results`: the result types). Names load on first use, so importing a
light submodule such as `meta` does not load the phone and country tables.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stream.contract.normalize import NormalizeSettings, normalize_event
    from stream.contract.results import REJECTION_REASONS, Dropped, Outcome, Rejection

__all__ = ["REJECTION_REASONS", "Dropped", "NormalizeSettings", "Outcome", "Rejection", "normalize_event"]

_HOMES = {
    "NormalizeSettings": "stream.contract.normalize", "normalize_event": "stream.contract.normalize",
    "REJECTION_REASONS": "stream.contract.results", "Dropped": "stream.contract.results",
    "Outcome": "stream.contract.results", "Rejection": "stream.contract.results",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
