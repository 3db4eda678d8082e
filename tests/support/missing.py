"""What a test does when a real part it needs (a Kafka broker, a schema registry) cannot be had."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(thing: str, reason: str) -> NoReturn:
    """Fail in CI (CI=true), where the part must be there; skip with the reason elsewhere."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{thing} missing in CI: {reason}", pytrace=False)
    pytest.skip(f"no {thing}: {reason}")
