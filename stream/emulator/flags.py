"""argparse types for the emulator's fault options, shared by `capi-stream emulator` and `bench e2e`."""

from __future__ import annotations

import argparse


def probability(text: str) -> float:
    """A fault probability between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a probability between 0 and 1 is needed, got {text}")
    return value


def latency_range(text: str) -> list[float]:
    """`LO,HI` milliseconds of answer latency."""
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"LO,HI in milliseconds is needed, got {text!r}") from None
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"LO,HI in milliseconds is needed, got {text!r}")
    return values
