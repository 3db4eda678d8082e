"""What Meta documents, written out for the test oracles (`stream/contract/README.md`, section in brackets).

The integration and chaos oracles state what Meta must receive from these facts and fixed vectors, never
from the code under test: nothing here is imported from `stream.contract` (a test enforces it), so a wrong
constant in the pipeline or the emulator shows up as a failing test instead of agreeing with itself.
"""

from __future__ import annotations

from typing import Final

GRAPH_API_VERSION: Final = "v26.0"  # the newest Graph API version when these tests were written [7]
MAX_EVENTS_PER_REQUEST: Final = 1000  # events in one request's `data` [1.3]
MAX_EVENT_AGE_S: Final = 7 * 86400  # an older event makes Meta refuse the request [1.3]
MAX_FUTURE_SKEW_S: Final = 300  # the clock drift the emulator forgives [1.3]
DEDUPE_WINDOW_S: Final = 48 * 3600  # Meta keeps the first (event_name, event_id) within 48 hours [1.4]
SUBCODE_EVENT_TOO_OLD: Final = 2804003  # with code 100 [6.2]
SUBCODE_INSUFFICIENT_CUSTOMER_INFO: Final = 2804050  # with code 100 [6.2]
