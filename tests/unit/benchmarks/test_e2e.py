"""`bench e2e`: the emulator's Meta-like options and the figures' table (the runs themselves are benchmarks)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from stream.benchmarks import e2e
from stream.config import BatchSettings, SendSettings


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    e2e.add_arguments(parser)
    return parser.parse_args(argv)


def test_meta_like_options_reach_the_emulator() -> None:
    args = _parse(["--latency-ms", "300,700", "--http-500", "0.01"])
    assert args.latency_ms == [300.0, 700.0]
    assert e2e.emulator_args(args.latency_ms, args.http_500, 3) == [
        "--seed", "3", "--latency-ms", "300,700", "--http-500", "0.01"]
    assert e2e.emulator_args(None, 0.0, 7) == ["--seed", "7"]  # answers at once, no faults


@pytest.mark.parametrize("argv", [["--latency-ms", "300"], ["--latency-ms", "a,b"], ["--http-500", "1.5"]])
def test_bad_meta_like_options_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parse(argv)
    assert exc.value.code == 2


def _pipeline(**extra: object) -> dict[str, object]:
    base: dict[str, object] = {
        "complete": True, "wall_s": 20.0, "consumed": 100_000, "acked": 99_000, "events_per_s": 8_000.0,
        "p50_ms": 900.0, "p99_ms": 1_500.0, "max_ms": 2_000.0, "added_p50_ms": 80.0, "added_p99_ms": 240.0,
        "added_max_ms": 900.0, "cpu_s": 12.0, "peak_rss_mib": 300.0, "main_cpu_s": 8.0, "worker_cpu_s": 0.0,
        "events_per_cpu_s": 12_500.0, "main_us_per_event": 80.0, "events_per_request": 990.0,
    }
    base.update(extra)
    return base


def test_table_gives_both_contenders_per_cpu_second_and_the_added_latency() -> None:
    result = {"events": 100_000, "partitions": 8, "instances": 1, "workers": 0, "cores": 2,
              "latency_ms": [300.0, 700.0], "http_500": 0.01, "pipeline": _pipeline(),
              "baseline": {"consumed": 100_000, "refused": 1_000, "seconds": 62.5, "events_per_s": 1_600.0,
                           "events_per_cpu_s": 6_250.0},
              "ratio": 5.0, "cpu_ratio": 2.0}
    text = "\n".join(e2e.table(result))
    assert "the emulator holds each request 300-700 ms, HTTP 500 for 1.0% of requests" in text
    assert "capi-stream: 8,000 events/s" in text
    assert "12,500 events per CPU second; main process 80 us/event" in text
    assert "990 events per request" in text
    assert "added by capi-stream (minus Meta's request time): p50 80 ms, p99 240 ms, max 900 ms" in text
    assert "SDK loop: 1,600 events/s" in text
    assert "by part" not in text  # no parts, no line
    assert "1,000 refused and lost), 6,250 events per CPU second" in text
    assert "5.00x events/s, 2.00x events per CPU second" in text


def test_table_breaks_the_added_latency_into_its_parts() -> None:
    parts = {name: {"p50_ms": 10.0 * i, "p99_ms": 100.0 * i, "slowest_1pct_mean_ms": 50.0 * i}
             for i, name in enumerate(("kafka", "prepare", "batch", "slot", "retry"), start=1)}
    result = {"events": 1000, "partitions": 4, "instances": 1, "workers": 0, "cores": 2, "latency_ms": None,
              "http_500": 0.0, "pipeline": _pipeline(added_parts=parts)}
    text = "\n".join(e2e.table(result))
    assert ("added latency by part, ms p50 / p99 / mean of the slowest 1% (every 8th acked event): "
            "append->loop 10 / 100 / 50, wait+prepare 20 / 200 / 100, batch fill 30 / 300 / 150, "
            "request slot 40 / 400 / 200, retries 50 / 500 / 250") in text


def test_table_with_workers_gives_the_one_process_ceiling() -> None:
    result = {"events": 1000, "partitions": 4, "instances": 1, "workers": 1, "cores": 2, "latency_ms": None,
              "http_500": 0.0, "pipeline": _pipeline(main_us_per_event=50.0, worker_cpu_s=6.5)}
    text = "\n".join(e2e.table(result))
    assert "the emulator answers at once" in text
    assert "main process 50 us/event (ceiling of one process ~20,000 events/s), workers 6.5 CPU s" in text


def test_per_cpu_second() -> None:
    assert e2e.per_cpu_second(1_000, 0.5) == 2_000.0
    assert e2e.per_cpu_second(1_000, 0.0) == 0.0


def test_the_pipeline_config_keeps_the_defaults_unless_told(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from stream.config import load

    monkeypatch.setenv("CAPI_STREAM_BENCH_TOKEN", "bench-token-0123456789")
    plain = load(str(e2e._config(tmp_path, "b:1", "t", "g1", "http://127.0.0.1:1", 0)))
    assert plain.batch.linger_ms == BatchSettings().linger_ms
    assert plain.send.concurrency == SendSettings().concurrency
    tuned = load(str(e2e._config(tmp_path, "b:1", "t", "g2", "http://127.0.0.1:1", 1, linger_ms=100, concurrency=16)))
    assert (tuned.batch.linger_ms, tuned.send.concurrency, tuned.pipeline.workers) == (100, 16, 1)
