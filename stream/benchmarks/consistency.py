"""`capi-stream bench consistency`: bytes per external_id and events/s of the user-consistency tracker.

Each size is measured in a fresh interpreter (`python -m stream.benchmarks.consistency MODE SIZE SEED`)
so one run's freed memory cannot flatter the next: a traced pass (tracemalloc: the bytes the tracker
holds per id once `size` ids are in it) and a timed pass (first sightings, repeat sightings with 10% of
them carrying another email, then evicting sightings into the full tracker), with the RSS growth.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
import tracemalloc
from typing import Any

from stream.benchmarks import children
from stream.pipeline.consistency import ConsistencyTracker, Identity, Outcome

DEFAULT_SIZES = "1000000"
MIN_SIZE = 1000
T0 = 1_800_000_000.0
WINDOW_S = 48 * 3600.0
SWITCH_EVERY = 10  # one repeat sighting in ten carries another email


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `capi-stream bench consistency`."""
    parser.add_argument("--ids", default=DEFAULT_SIZES, help="comma-separated tracker sizes (default 1000000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the fingerprints (default 1)")


def parse_sizes(text: str) -> list[int]:
    """`"1000000,100000"` -> [1000000, 100000]; UsageError for anything but integers >= MIN_SIZE."""
    return children.parse_sizes(text, "--ids", MIN_SIZE)


def run(args: argparse.Namespace) -> int:
    """Measure each size in a child process and print the table; exit 1 if a check fails."""
    sizes = parse_sizes(args.ids)
    print(f"user-consistency tracker (LRU, one per destination), python {sys.version.split()[0]}")
    print(f"{'ids':>11} {'B/id traced':>11} {'B/id RSS':>9} {'new/s':>10} {'repeat/s':>10} {'evicting/s':>10} "
          f"{'peak RSS MB':>11}")  # fmt: skip
    ok = True
    for size in sizes:
        traced = _child("trace", size, args.seed)
        timed = _child("time", size, args.seed)
        rss = "-" if timed["rss_bytes_per_id"] is None else f"{timed['rss_bytes_per_id']:.1f}"
        print(f"{size:>11,} {traced['bytes_per_id']:>11.1f} {rss:>9} {timed['new_per_s']:>10,.0f} "
              f"{timed['repeat_per_s']:>10,.0f} {timed['evict_per_s']:>10,.0f} "
              f"{timed['peak_rss_mb']:>11,.0f}")  # fmt: skip
        expected = (size + SWITCH_EVERY - 1) // SWITCH_EVERY
        if timed["inconsistent"] != expected or timed["evictions"] != size // 4 or timed["held"] != size:
            ok = False
            print(f"  ERROR: {timed['inconsistent']} inconsistent (want {expected}), {timed['evictions']} evictions "
                  f"(want {size // 4}), {timed['held']} held (want {size})")
    return 0 if ok else 1


def _child(mode: str, size: int, seed: int) -> dict[str, Any]:
    return children.run_child("consistency", mode, size, seed)


def _identities(size: int, seed: int) -> list[Identity]:
    rng = random.Random(seed)  # noqa: S311 - benchmark data, not secrets
    return [(rng.getrandbits(60), rng.getrandbits(32) | 1, rng.getrandbits(32) | 1) for _ in range(size)]


def _measure_trace(size: int, seed: int) -> dict[str, Any]:
    ids = _identities(size, seed)
    tracker = ConsistencyTracker(WINDOW_S, size)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i, ident in enumerate(ids):
        tracker.observe(ident, T0 + i * 0.01)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {"bytes_per_id": (after - before) / len(tracker)}


def _measure_time(size: int, seed: int) -> dict[str, Any]:
    ids = _identities(size + size // 4, seed)
    first, extra = ids[:size], ids[size:]
    repeats = [(x, em + 2 if i % SWITCH_EVERY == 0 else em, ph) for i, (x, em, ph) in enumerate(first)]
    tracker = ConsistencyTracker(WINDOW_S, size)
    observe = tracker.observe
    rss_before = children.rss_bytes()
    started = time.perf_counter()
    for ident in first:
        observe(ident, T0)
    new_s = time.perf_counter() - started
    rss_after = children.rss_bytes()
    started = time.perf_counter()
    first_time = Outcome.FIRST_INCONSISTENT
    inconsistent = sum(observe(ident, T0 + 1) is first_time for ident in repeats)
    repeat_s = time.perf_counter() - started
    started = time.perf_counter()
    for ident in extra:
        observe(ident, T0 + 2)
    evict_s = time.perf_counter() - started
    return {
        "new_per_s": size / new_s, "repeat_per_s": size / repeat_s, "evict_per_s": len(extra) / evict_s,
        "rss_bytes_per_id": None if rss_before is None or rss_after is None else (rss_after - rss_before) / size,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "inconsistent": inconsistent, "evictions": tracker.evictions, "held": len(tracker),
    }  # fmt: skip


if __name__ == "__main__":
    children.answer_child(sys.argv[1:], {"trace": _measure_trace, "time": _measure_time})
