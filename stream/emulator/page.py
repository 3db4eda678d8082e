"""The emulator's small HTML page: counts and the latest accepted events, refreshing itself (pure)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from stream.emulator.state import Accepted

# Seconds between reloads: fast enough to watch a demo, slow enough to cost nothing.
REFRESH_S: Final = 2
# Events shown on the page; /_emulator/events gives more.
PAGE_EVENTS: Final = 20


def _rows(items: Mapping[str, Any]) -> str:
    return "".join(
        f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(str(value))}</td></tr>" for key, value in items.items()
    )


def render_page(stats: Mapping[str, Any], recent: Sequence[Accepted], faults: Mapping[str, Any]) -> str:
    """The page as HTML text; every value is escaped."""
    counts = {k: v for k, v in stats.items() if not isinstance(v, dict)}
    errors = stats.get("errors", {})
    injected = stats.get("faults", {})
    active = {k: v for k, v in faults.items() if v not in (0, 0.0, None, False, [])}
    events = "".join(
        "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>".format(
            html.escape(item.dataset_id),
            html.escape(str(item.event.get("event_name"))),
            html.escape(str(item.event.get("event_id"))),
            html.escape(orjson.dumps(item.event).decode()[:400]),
        )
        for item in recent[:PAGE_EVENTS]
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_S}">
<title>capi-stream emulator</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;margin-bottom:1em}}
th,td{{border:1px solid #ccc;padding:2px 8px;text-align:left;vertical-align:top}}code{{font-size:85%}}</style>
</head><body>
<h1>Meta Conversions API emulator</h1>
<h2>Counts</h2><table>{_rows(counts)}</table>
<h2>Errors answered</h2><table>{_rows(errors) or "<tr><td>none</td></tr>"}</table>
<h2>Faults injected</h2><table>{_rows(injected) or "<tr><td>none</td></tr>"}</table>
<h2>Active fault options</h2><table>{_rows(active) or "<tr><td>none</td></tr>"}</table>
<h2>Latest accepted events</h2>
<table><tr><th>dataset</th><th>event_name</th><th>event_id</th><th>event</th></tr>{events}</table>
</body></html>
"""
