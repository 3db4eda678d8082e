"""`capi-stream bench emulator`: how many events per second the Meta emulator validates.

Two measurements, because a client in the same process as the server would be timed too:
1. **core**: the server's own per-request work (`Emulator.handle`: parse the body, check the token,
   validate every event, dedupe and count, encode the answer) called directly, no HTTP, on pre-built
   1,000-event bodies; JSON and form-encoded; events per CPU second of this process (one thread, so
   one core), best / median / worst of a few rounds because the machine may be shared. This is the
   figure for "validates >= 100,000 events/s on one core". Valid requests like these take the
   acceptance fast path (stream/emulator/fastpath.py); the benchmark checks that every one did, and
   also times the exact rules alone on the JSON bodies (`fast_path=False`), for comparison.
2. **http**: the emulator in a child process (`capi-stream emulator --port 0`), this process as the
   client with a few concurrent connections; requests/s and events/s end to end, plus the server's
   own CPU seconds (from /proc) per event, so the client's share is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import orjson

from stream.emulator.samples import sample_events

DATASET = "1234567890"
TOKEN = "bench-token"  # noqa: S105 - a fake token for a local emulator


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `capi-stream bench emulator`."""
    parser.add_argument("--requests", type=int, default=100, help="requests per measurement (default 100)")
    parser.add_argument("--events", type=int, default=1000, help="events per request (default 1000)")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent HTTP requests (default 4)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of the core measurement; best and median are printed (default 5)")  # fmt: skip
    parser.add_argument("--no-http", action="store_true", help="only the in-process core measurement")


def _bodies(requests: int, events: int, now: int) -> tuple[list[bytes], list[bytes]]:
    json_bodies, form_bodies = [], []
    for r in range(requests):
        batch = sample_events(events, now, prefix=f"r{r}-e")
        json_bodies.append(orjson.dumps({"data": batch, "access_token": TOKEN}))
        form_bodies.append(urlencode({"data": orjson.dumps(batch).decode(), "access_token": TOKEN}).encode())
    return json_bodies, form_bodies


def measure_core(bodies: list[bytes], content_type: str, events: int, fast_path: bool = True) -> dict[str, float]:
    """Time the emulator's per-request work on `bodies`; every request must be accepted (by the fast
    path when `fast_path`)."""
    from stream.emulator import Emulator

    emulator = Emulator(tokens={DATASET: TOKEN}, fast_path=fast_path)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for body in bodies:
        status, answer, _ = emulator.handle(DATASET, content_type, body, {}, time.time())
        if status != 200:
            raise SystemExit(f"bench request refused: {answer.decode()}")
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    total = len(bodies) * events
    if emulator.ledger.events_received != total:
        raise SystemExit("bench: the emulator did not count every event")
    if emulator.fast_requests != (len(bodies) if fast_path else 0):
        raise SystemExit(f"bench: the fast path took {emulator.fast_requests} of {len(bodies)} requests")
    return {"events": total, "wall_s": wall, "cpu_s": cpu, "events_per_s": total / wall,
            "events_per_cpu_s": total / cpu if cpu else float("inf")}  # fmt: skip


def measure_parse_only(bodies: list[bytes], events: int) -> float:
    """Events per CPU second of `orjson.loads` alone on `bodies` (GC paused as in the server): the
    floor under any Python emulator on this machine, printed so the core figure can be read against it."""
    paused = gc.isenabled()
    gc.disable()
    try:
        cpu0 = time.process_time()
        for body in bodies:
            orjson.loads(body)
        cpu = time.process_time() - cpu0
    finally:
        if paused:
            gc.enable()
    return len(bodies) * events / cpu if cpu else float("inf")


def python_loop_seconds(n: int = 2_000_000) -> float:
    """CPU seconds this machine needs for `n` iterations of a bare Python loop (best of 3): a yardstick
    that lets a reader scale the figures to another machine."""
    best = float("inf")
    for _ in range(3):
        cpu0 = time.process_time()
        total = 0
        for i in range(n):
            total += i
        best = min(best, time.process_time() - cpu0)
    return best


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _send_all(url: str, bodies: list[bytes], concurrency: int) -> None:
    import aiohttp

    queue = list(reversed(bodies))
    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as session:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                async with session.post(url, data=body) as response:
                    if response.status != 200:
                        raise SystemExit(f"bench request refused: {await response.text()}")
                    await response.read()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def measure_http(bodies: list[bytes], events: int, concurrency: int) -> dict[str, float]:
    """Send `bodies` to an emulator in a child process; time it and read the child's CPU use."""
    cmd = [sys.executable, "-m", "stream", "emulator", "--port", "0", "--token", f"{DATASET}={TOKEN}"]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        # The server on one core, this client on the others: neither is timed on the other's CPU.
        os.sched_setaffinity(child.pid, {cpus[0]})
        os.sched_setaffinity(0, set(cpus[1:]))
    try:
        assert child.stdout is not None
        base = ""
        for _ in range(20):  # log lines may come first; the URL is the line that starts with http://
            base = child.stdout.readline().strip()
            if base.startswith("http://") or not base:
                break
        if not base.startswith("http://"):
            raise SystemExit("bench: the emulator did not start")
        url = f"{base}/v26.0/{DATASET}/events"
        asyncio.run(_send_all(url, bodies[:2], 1))  # warm-up: connections, imports
        cpu0, wall0 = _cpu_seconds(child.pid), time.perf_counter()
        asyncio.run(_send_all(url, bodies[2:], concurrency))
        wall, cpu = time.perf_counter() - wall0, _cpu_seconds(child.pid) - cpu0
    finally:
        os.sched_setaffinity(0, set(cpus))
        child.terminate()
        child.wait(timeout=10)
    total = (len(bodies) - 2) * events
    return {"requests": len(bodies) - 2, "events": total, "wall_s": wall, "server_cpu_s": cpu,
            "requests_per_s": (len(bodies) - 2) / wall, "events_per_s": total / wall,
            "events_per_server_cpu_s": total / cpu if cpu else float("inf")}  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Print the figures; exit 0."""
    if args.requests < 3 or not 1 <= args.events <= 1000 or args.concurrency < 1 or args.rounds < 1:
        from stream.errors import UsageError

        raise UsageError("--requests >= 3, --events 1..1000, --concurrency >= 1 and --rounds >= 1 are needed")
    now = int(time.time())
    json_bodies, form_bodies = _bodies(args.requests, args.events, now)
    _core_figures(args, json_bodies, form_bodies)  # one thread: its CPU seconds are one core's
    if not args.no_http:
        r = measure_http(json_bodies, args.events, args.concurrency)
        print(f"http json (server in a child process on its own core, concurrency {args.concurrency}): "
              f"{r['requests_per_s']:,.1f} requests/s, {r['events_per_s']:,.0f} events/s wall, "
              f"{r['events_per_server_cpu_s']:,.0f} events per server CPU s")
    return 0


def _core_figures(args: argparse.Namespace, json_bodies: list[bytes], form_bodies: list[bytes]) -> None:
    mb = sum(map(len, json_bodies)) / len(json_bodies) / 1e6
    print(f"emulator bench: {args.requests} requests x {args.events} events, JSON body {mb:.2f} MB")
    cases = (("core json", json_bodies, "application/json", True),
             ("core form", form_bodies, "application/x-www-form-urlencoded", True),
             ("exact rules only, json", json_bodies, "application/json", False))  # fmt: skip
    # Rounds interleave the cases, so a busy spell of the machine's neighbours hits them alike.
    results: dict[str, list[dict[str, float]]] = {label: [] for label, *_ in cases}
    for _ in range(args.rounds):
        for label, bodies, ctype, fast in cases:
            results[label].append(measure_core(bodies, ctype, args.events, fast))
    for label, rounds in results.items():
        rates = sorted(r["events_per_cpu_s"] for r in rounds)
        wall = max(r["events_per_s"] for r in rounds)
        print(f"{label}: best {rates[-1]:,.0f}, median {statistics.median(rates):,.0f}, worst {rates[0]:,.0f}"
              f" events per CPU second over {args.rounds} rounds of {args.requests * args.events:,} events"
              f" (best wall clock {wall:,.0f} events/s)")
    floor = max(measure_parse_only(json_bodies, args.events) for _ in range(args.rounds))
    print(f"for scale, orjson.loads alone on the JSON bodies: {floor:,.0f} events per CPU second (best);"
          f" a bare Python loop runs {2_000_000 / python_loop_seconds() / 1e6:.1f} M iterations per CPU second")
