"""Owned asyncio tasks: the one way the pipeline ends a background task (STYLE.md habit 5)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """Cancel every given task (None entries are skipped) and wait until each has ended.

    A task's CancelledError is absorbed; any other exception a task ended with is raised to the caller,
    so a failure is never hidden by the stop.
    """
    owned = [t for t in tasks if t is not None]
    for task in owned:
        task.cancel()
    for task in owned:
        with contextlib.suppress(asyncio.CancelledError):
            await task
