"""The demo's embedded default: the files it reads at start-up are where it looks for them."""

from __future__ import annotations

from stream import config
from stream.tools import demo


def test_the_demo_config_is_found_and_valid() -> None:
    """`capi-stream demo` reads config/demo.toml from the repository; the path resolves and the file loads."""
    assert demo.DEMO_CONFIG.is_file(), demo.DEMO_CONFIG
    assert config.load(demo.DEMO_CONFIG).destinations
