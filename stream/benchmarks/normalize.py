"""`capi-stream bench normalize`: events/s of our normalize stage and of Meta's SDK, same events, same run.

Events come from stream.tools.samples (installs, registrations, trials, subscriptions, purchases; phones and
names in 16 national formats; one person per 4 events by default, so values repeat as in a real
stream). Throughput is events per CPU second of this single-threaded process, i.e. per core, which
keeps the figure honest on a shared machine; wall-clock figures are printed too. Each contender runs
`--rounds` times, interleaved, and the best round counts (the usual way to filter out noise).
Our stage is measured with its caches emptied before each round (cold start) and with them off. The
speed ratio is the median over rounds of (SDK time / our time) measured back to back.

Every contender runs the way the pipeline runs this stage (stream.pipeline.prepare, stream.pipeline.runner): records
in batches of kafka.consume_batch_size (1,000), the cyclic garbage collector paused while a batch is
handled and running between batches with the runner's thresholds, outcomes kept (as in-flight events
are). Without that, full collections walking the stage's caches and the kept outcomes would be timed,
which the pipeline does not pay in that form.

For scale it also times a floor: the least any Python stage does per record (read the envelope, look
the person and the device up in a dict, build the event dict; no normalization, no checks, every
look-up a hit). Its rate bounds what pure-Python normalization can reach on this machine.
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

# Targets from the contract issue: per core, and against the SDK on the same events.
TARGET_EVENTS_PER_S: Final = 100_000
TARGET_RATIO: Final = 4.0
NOW: Final = 1_790_000_000  # a fixed "now" so runs are comparable; events are within 24 h of it
DEFAULT_CACHE_SIZE: Final = 100_000  # the stage's default (stream.contract.userdata.DEFAULT_HASH_CACHE_SIZE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `bench normalize`."""
    parser.add_argument("--events", type=int, default=20_000, help="events to generate (default 20000)")
    parser.add_argument("--people", type=int, default=None, help="person pool size (default events/4)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per contender; best counts (default 5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--default-country", default="US", help="phone default country (default US)")


def _measure(work: Callable[[], Any], before: Callable[[], None] | None = None) -> tuple[float, float]:
    if before is not None:
        before()
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    work()
    return time.process_time() - cpu, time.perf_counter() - wall


def _best(samples: Sequence[tuple[float, float]]) -> tuple[float, float]:
    return min(s[0] for s in samples), min(s[1] for s in samples)


def in_batches(handle: Callable[[Any], Any], events: Sequence[Any], size: int) -> Callable[[], list[Any]]:
    """`handle` over `events` as stream.pipeline.prepare runs it: per batch of `size`, collector paused within one."""

    def work() -> list[Any]:
        out: list[Any] = []
        for start in range(0, len(events), size):
            gc.disable()
            try:
                out.extend([handle(r) for r in events[start : start + size]])
            finally:
                gc.enable()
        return out

    return work


def floor_stage(events: Sequence[Mapping[str, Any]], person_keys: Sequence[str]) -> Callable[[], int]:
    """A stand-in stage that does only the bookkeeping every record needs: the bound on a Python stage.

    Not a normalizer: it checks nothing and hashes nothing; each person and device is looked up in a
    plain dict that already holds it (a warm cache with no eviction), so only dict and tuple work is left.
    """
    people: dict[tuple[Any, ...], dict[str, Any]] = {}
    devices: dict[tuple[Any, ...], dict[str, Any]] = {}

    def one(record: Mapping[str, Any]) -> dict[str, Any]:
        user = record["user_data"]
        person = people.setdefault(tuple(map(user.get, person_keys)), {})
        app = record["app_data"] or {}
        device = devices.setdefault((app.get("advertiser_tracking_enabled"), tuple(app.get("extinfo") or ())), {})
        event = {
            "event_name": record["event_name"],
            "event_time": record["event_time"],
            "event_id": record["event_id"],
            "action_source": record["action_source"],
            "user_data": {**person, "client_ip_address": user["client_ip_address"]},
            "app_data": device,
        }
        if (custom := record["custom_data"]) is not None:
            event["custom_data"] = {k: v for k, v in custom.items() if v is not None}
        return event

    def work() -> int:
        return len([one(r) for r in events])

    work()  # fill the look-up tables: every measured look-up is a hit
    return work


def run(args: argparse.Namespace) -> int:
    """Generate the events, run both contenders, print the table; exit 0, or 2 on bad options."""
    from stream.benchmarks.sdk_baseline import sdk_event
    from stream.config import KafkaSettings
    from stream.contract import places
    from stream.contract.normalize import NormalizeSettings, cache_stats, normalize_event, set_cache_size
    from stream.contract.userdata import PERSON_KEYS
    from stream.errors import UsageError
    from stream.pipeline.runner import GC_GEN0_THRESHOLD
    from stream.tools.samples import generate

    if args.events < 1 or args.rounds < 1:
        raise UsageError("--events and --rounds must be at least 1")
    events = list(generate(args.events, args.seed, NOW, people=args.people))
    country = places.iso_country(args.default_country)
    if country is None:
        raise UsageError(f"--default-country {args.default_country!r} is not an ISO 3166-1 alpha-2 code (e.g. US)")
    settings = NormalizeSettings(default_country=country)

    batch = KafkaSettings().consume_batch_size
    ours = in_batches(lambda r: normalize_event(r, NOW, settings), events, batch)
    sdk = in_batches(sdk_event, events, batch)

    # The corpus exists only because the benchmark pre-generates it (a stream frees each record once
    # handled); freezing it keeps the garbage collector from re-walking it, for both contenders alike.
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)  # the runner's
    ours()  # load phone metadata and build the field tables once, as a running pipeline would have
    sdk()
    cold = lambda: set_cache_size(DEFAULT_CACHE_SIZE)  # noqa: E731
    off = lambda: set_cache_size(0)  # noqa: E731
    floor = floor_stage(events, PERSON_KEYS)
    cached, uncached, baseline, floors = [], [], [], []
    stats: dict[str, tuple[int, int]] = {}
    for _ in range(args.rounds):
        cached.append(_measure(ours, cold))
        stats = cache_stats()
        uncached.append(_measure(ours, off))
        baseline.append(_measure(sdk))
        floors.append(_measure(floor))
    set_cache_size(DEFAULT_CACHE_SIZE)
    gc.set_threshold(*thresholds)
    gc.unfreeze()
    _report(args, len(events), cached, uncached, baseline, stats, ours())
    cpu, wall = _best(floors)
    print(
        f"for scale, the floor of a Python stage (read the record, warm dict look-ups, build the event; no "
        f"normalization, no checks): {len(events) / cpu:,.0f} events/s (CPU), {len(events) / wall:,.0f} (wall)"
    )
    return 0


def _report(
    args: argparse.Namespace,
    n: int,
    cached: list[tuple[float, float]],
    uncached: list[tuple[float, float]],
    baseline: list[tuple[float, float]],
    stats: dict[str, tuple[int, int]],
    outcomes: list[Any],
) -> None:
    reasons = collections.Counter(o.rejection.reason for o in outcomes if o.rejection is not None)
    dropped = collections.Counter(d.reason for o in outcomes for d in o.dropped)
    rows = [
        ("capi-stream, caches on (emptied each round)", _best(cached)),
        ("capi-stream, caches off", _best(uncached)),
        ("Meta SDK facebook-business 26.0.3", _best(baseline)),
    ]
    people = args.people if args.people is not None else max(1, n // 4)
    print(
        f"bench normalize: {n:,} generated app events, {people:,} people, seed {args.seed}, "
        f"best of {args.rounds} rounds, 1 core, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'contender':46} {'events/s (CPU)':>15} {'events/s (wall)':>16}")
    for label, (cpu, wall) in rows:
        print(f"{label:46} {n / cpu:>15,.0f} {n / wall:>16,.0f}")
    # each round runs the contenders back to back, so its ratio cancels the load of that moment
    ratios = [
        statistics.median(sdk[0] / mine[0] for mine, sdk in zip(ours, baseline, strict=True))
        for ours in (cached, uncached)
    ]
    for label, ratio in zip(("caches on", "caches off"), ratios, strict=True):
        print(f"speed vs SDK, {label} (median of per-round ratios) {ratio:>5.1f}x")
    print(
        "caches: "
        + ", ".join(f"{name} {h:,} hits / {m:,} misses ({h / max(1, h + m):.0%})" for name, (h, m) in stats.items())
    )
    print(f"outcomes: {n - sum(reasons.values()):,} events, rejected {dict(reasons)}, dropped fields {dict(dropped)}")
    best = n / rows[0][1][0]
    rate_ok = "met" if best >= TARGET_EVENTS_PER_S else "NOT met"
    ratio_ok = "met" if ratios[0] >= TARGET_RATIO else "NOT met"
    print(f"targets: >= {TARGET_EVENTS_PER_S:,} events/s per core: {rate_ok}; >= {TARGET_RATIO:.0f}x SDK: {ratio_ok}")
