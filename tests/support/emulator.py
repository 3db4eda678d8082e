"""Fixtures that run the Meta emulator on 127.0.0.1 over a real socket (no Kafka needed).

Loaded for every test as a pytest plugin by tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest

from stream.emulator import Emulator, EmulatorThread

EmulatorFactory = Callable[..., Awaitable[Emulator]]


@pytest.fixture
async def emulator_factory() -> AsyncIterator[EmulatorFactory]:
    """Start emulators with `await emulator_factory(**Emulator kwargs)`; all are stopped afterwards."""
    started: list[Emulator] = []

    async def make(**kwargs: Any) -> Emulator:
        emulator = Emulator(**kwargs)
        await emulator.start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        await emulator.stop()


@pytest.fixture
async def emulator(emulator_factory: EmulatorFactory) -> Emulator:
    """One emulator in open token mode (any non-empty token for any dataset)."""
    return await emulator_factory()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for talking to the emulator."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def emulator_thread() -> Iterator[EmulatorThread]:
    """An emulator running in a background thread, for synchronous tests next to a subprocess."""
    with EmulatorThread() as running:
        yield running
