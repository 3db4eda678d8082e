"""`capi-stream replay` against the real broker: the dry-run plan, the reset, and the refusals."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer

from stream.cli import main
from stream.tools import admin
from stream.tools.samples import generate
from tests.support.harness import APPS_A, Scenario, committed, end_offsets, expected_keys, produce_records, wait_until

pytestmark = pytest.mark.kafka

DAY = 86_400
PARTITIONS = 2


def consume_and_commit(bootstrap: str, topic: str, group: str, want: int) -> None:
    """Read `want` messages as `group` and commit them, then leave the group (as a stopped pipeline)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    got = 0
    deadline = time.monotonic() + 60
    try:
        while got < want and time.monotonic() < deadline:
            got += sum(1 for m in consumer.consume(100, timeout=0.5) if m.error() is None)
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert got == want


def records(n: int, *, seed: int, stale: int = 0) -> list[dict[str, Any]]:
    """`n` sample records; the first `stale` carry an event_time 8 days old."""
    now = int(time.time())
    out = list(generate(n, seed, now))
    for record in out[:stale]:
        record["event_time"] = now - 8 * DAY
    return out


def replay(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `capi-stream replay ARGV` in-process; returns (exit code, stdout, stderr)."""
    code = main(["replay", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def plan_of(out: str) -> dict[str, Any]:
    """The JSON document `--format json` printed."""
    doc: dict[str, Any] = orjson.loads(out)
    return doc


@pytest.fixture
def consumed(kafka_bootstrap: str, topic_factory: Callable[..., str],
             group_factory: Callable[[], str]) -> tuple[str, str, list[dict[str, Any]]]:
    """A 2-partition topic of 40 records (10 with an 8-day-old event_time), all committed by a stopped group."""
    topic, group = topic_factory(partitions=PARTITIONS), group_factory()
    sent = records(40, seed=11, stale=10)
    produce_records(kafka_bootstrap, topic, sent)
    consume_and_commit(kafka_bootstrap, topic, group, len(sent))
    return topic, group, sent


@pytest.fixture
def active_member(kafka_bootstrap: str) -> Iterator[Callable[[str, str], None]]:
    """Join a group with a live consumer that holds its partitions until the test ends."""
    consumers: list[Any] = []

    def join(topic: str, group: str) -> None:
        consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group,
                             "auto.offset.reset": "latest", "enable.auto.commit": False})
        consumer.subscribe([topic])
        consumers.append(consumer)

        def assigned() -> bool:
            consumer.consume(10, timeout=0.2)  # the join and the assignment happen inside consume()
            return bool(consumer.assignment())

        assert wait_until(assigned, timeout=30)

    yield join
    for consumer in consumers:
        consumer.close()


def test_dry_run_plans_and_changes_nothing(kafka_bootstrap: str, consumed: tuple[str, str, list[dict[str, Any]]],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """--to-earliest re-reads every committed event, counts the 8-day-old ones and moves no offset."""
    topic, group, sent = consumed
    before = committed(kafka_bootstrap, group, topic, PARTITIONS)
    code, out, _ = replay(capsys, "--group", group, "--topic", topic, "--to-earliest",
                          "--bootstrap", kafka_bootstrap, "--format", "json")
    assert code == 0
    plan = plan_of(out)
    assert plan["exact"] is True
    assert plan["executed"] is False
    assert plan["totals"]["re_read"] == len(sent)
    assert plan["totals"]["older_than_max_age"] == 10  # decoded event_time, 8 days old
    assert plan["totals"]["in_dedupe_window"] == len(sent)  # all written seconds ago
    assert plan["totals"]["undecodable"] == 0
    assert {(p["partition"], p["current"], p["target"]) for p in plan["partitions"]} == {
        (p, o, 0) for p, o in before.items()}
    assert committed(kafka_bootstrap, group, topic, PARTITIONS) == before


def test_dry_run_table(kafka_bootstrap: str, consumed: tuple[str, str, list[dict[str, Any]]],
                       capsys: pytest.CaptureFixture[str]) -> None:
    """The table names the group, says dry run, and has a row per partition and a total."""
    topic, group, sent = consumed
    code, out, _ = replay(capsys, "--group", group, "--topic", topic, "--to-earliest", "--bootstrap", kafka_bootstrap)
    assert code == 0
    lines = out.splitlines()
    assert f"group {group} topic {topic}" in lines[0]
    assert "dry run" in lines[0]
    total = next(line for line in lines if line.strip().startswith("total")).split()
    assert total[1:5] == [str(len(sent)), "10", str(len(sent)), "0"]


def test_sampled_plan_is_marked_estimated(kafka_bootstrap: str, consumed: tuple[str, str, list[dict[str, Any]]],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """With --sample smaller than the range, counts are scaled estimates and say so."""
    topic, group, sent = consumed
    code, out, _ = replay(capsys, "--group", group, "--topic", topic, "--to-earliest", "--sample", "4",
                          "--bootstrap", kafka_bootstrap, "--format", "json")
    assert code == 0
    plan = plan_of(out)
    assert plan["exact"] is False
    assert plan["totals"]["sampled"] == 2 * 4
    assert plan["totals"]["re_read"] == len(sent)
    assert plan["totals"]["in_dedupe_window"] == len(sent)  # every sampled message is recent: scales to all


def test_to_datetime_replays_only_newer_messages(kafka_bootstrap: str, topic_factory: Callable[..., str],
                                                 group_factory: Callable[[], str],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """--to-datetime finds, per partition, the first message at or after that time by its Kafka timestamp."""
    topic, group = topic_factory(partitions=PARTITIONS), group_factory()
    produce_records(kafka_bootstrap, topic, records(20, seed=1))
    time.sleep(0.05)  # a clear gap between the two batches' timestamps (ms resolution)
    cut = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
    time.sleep(0.05)
    produce_records(kafka_bootstrap, topic, records(12, seed=2))
    consume_and_commit(kafka_bootstrap, topic, group, 32)
    code, out, _ = replay(capsys, "--group", group, "--topic", topic, "--to-datetime", cut,
                          "--bootstrap", kafka_bootstrap, "--format", "json")
    assert code == 0
    assert plan_of(out)["totals"]["re_read"] == 12


def test_execute_resets_the_group(kafka_bootstrap: str, consumed: tuple[str, str, list[dict[str, Any]]],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """--execute moves the named partitions to their targets, clamps past the end, and leaves others."""
    topic, group, _ = consumed
    before = committed(kafka_bootstrap, group, topic, PARTITIONS)
    assert min(before.values()) >= 4
    code, out, _ = replay(capsys, "--group", group, "--topic", topic, "--to-offset", "0:3",
                          "--bootstrap", kafka_bootstrap, "--execute")
    assert code == 0
    assert f"done: group {group} now reads {topic} from 0:3" in out
    assert committed(kafka_bootstrap, group, topic, PARTITIONS) == {0: 3, 1: before[1]}
    # a second reset to the earliest offsets, for every partition
    code, out, _ = replay(capsys, "--group", group, "--topic", topic, "--to-earliest",
                          "--bootstrap", kafka_bootstrap, "--execute", "--format", "json")
    assert code == 0
    assert plan_of(out)["applied"] == {"0": 0, "1": 0}
    assert committed(kafka_bootstrap, group, topic, PARTITIONS) == {0: 0, 1: 0}


def test_execute_then_consume_re_reads_the_range(kafka_bootstrap: str,
                                                 consumed: tuple[str, str, list[dict[str, Any]]],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """After a reset the group's next consumer receives exactly the planned re-read count again."""
    topic, group, _ = consumed
    code, out, _ = replay(capsys, "--group", group, "--topic", topic, "--to-offset", "0:2,1:5",
                          "--bootstrap", kafka_bootstrap, "--execute", "--format", "json")
    assert code == 0
    expected = plan_of(out)["totals"]["re_read"]
    ends = end_offsets(kafka_bootstrap, topic, PARTITIONS)
    assert expected == (ends[0] - 2) + (ends[1] - 5)
    consume_and_commit(kafka_bootstrap, topic, group, expected)


def test_forward_reset_skips(kafka_bootstrap: str, topic_factory: Callable[..., str],
                             group_factory: Callable[[], str], capsys: pytest.CaptureFixture[str]) -> None:
    """A group with no commits re-reads nothing; moving it forward reports the skipped messages."""
    topic, group = topic_factory(partitions=1), group_factory()
    produce_records(kafka_bootstrap, topic, records(6, seed=3))
    code, out, _ = replay(capsys, "--group", group, "--topic", topic, "--to-offset", "0:4",
                          "--bootstrap", kafka_bootstrap)
    assert code == 0
    assert "none" in out
    assert "4 message(s) will be skipped" in out


def test_refuses_while_a_member_is_active(kafka_bootstrap: str, consumed: tuple[str, str, list[dict[str, Any]]],
                                         active_member: Callable[[str, str], None],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """With a live consumer in the group, dry run and --execute both exit 2 and nothing moves."""
    topic, group, _ = consumed
    before = committed(kafka_bootstrap, group, topic, PARTITIONS)
    active_member(topic, group)
    for extra in ([], ["--execute"]):
        code, out, err = replay(capsys, "--group", group, "--topic", topic, "--to-earliest",
                                "--bootstrap", kafka_bootstrap, *extra)
        assert code == 2
        assert out == ""
        assert f"group {group} is active" in err
        assert "stop every consumer" in err
    assert committed(kafka_bootstrap, group, topic, PARTITIONS) == before


@pytest.mark.parametrize(("argv", "message"), [
    (["--to-earliest", "--topic", "nope-{uuid}"], "does not exist"),
    (["--to-offset", "9:1"], "partition(s) [9]"),
    (["--to-offset", "0:x"], "PARTITION:OFFSET"),
    (["--by-duration", "6 hours"], "--by-duration"),
    (["--to-datetime", "yesterday"], "--to-datetime"),
    (["--to-earliest", "--sample", "-1"], "--sample"),
    (["--to-earliest", "--sample", "0"], "--sample"),
])  # fmt: skip
def test_bad_input_exits_2(kafka_bootstrap: str, consumed: tuple[str, str, list[dict[str, Any]]],
                           capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    """An unknown topic or partition, or a malformed target, is one clear line on stderr and exit 2."""
    topic, group, _ = consumed
    argv = [a.replace("{uuid}", group) for a in argv]
    base = ["--group", group, "--bootstrap", kafka_bootstrap] + ([] if "--topic" in argv else ["--topic", topic])
    code, _out, err = replay(capsys, *base, *argv)
    assert code == 2
    assert message in err
    assert err.startswith("capi-stream: error:")


@pytest.mark.parametrize("argv", [
    ["--group", "g", "--topic", "t"],  # no target
    ["--group", "g", "--topic", "t", "--to-earliest", "--by-duration", "1h"],  # two targets
    ["--group", "g", "--topic", "t", "--to-earliest", "--to-offset", "0:1"],  # two targets again
])  # fmt: skip
def test_argument_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Missing or conflicting flags are rejected by the parser with exit 2, before any broker call."""
    with pytest.raises(SystemExit) as exc:
        main(["replay", *argv])
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_group_and_topic_are_required_without_config(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --config, --group and --topic must be named (never a default group)."""
    code, _, err = replay(capsys, "--topic", "t", "--to-earliest", "--bootstrap", "127.0.0.1:1")
    assert code == 2
    assert "--group" in err


def test_config_supplies_group_topic_and_window(kafka_bootstrap: str,
                                                consumed: tuple[str, str, list[dict[str, Any]]],
                                                tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """With --config the group, topic, bootstrap and dedupe window come from the file."""
    topic, group, sent = consumed
    config = tmp_path / "c.toml"
    config.write_text(f'[kafka]\nbootstrap_servers = "{kafka_bootstrap}"\ntopics = ["{topic}"]\n'
                      f'group_id = "{group}"\n\n[dedupe]\nwindow_s = 3600\n')
    code, out, _ = replay(capsys, "--config", str(config), "--to-earliest", "--format", "json")
    assert code == 0
    plan = plan_of(out)
    assert (plan["group"], plan["topic"], plan["dedupe_window_s"]) == (group, topic, 3600.0)
    assert plan["totals"]["re_read"] == len(sent)


def test_reset_refused_by_the_broker_is_reported(kafka_bootstrap: str,
                                                 consumed: tuple[str, str, list[dict[str, Any]]],
                                                 active_member: Callable[[str, str], None]) -> None:
    """If a member joins between the check and the reset, the broker's refusal becomes GroupActiveError."""
    topic, group, _ = consumed
    before = committed(kafka_bootstrap, group, topic, PARTITIONS)
    active_member(topic, group)
    client = admin.Admin(admin.client_config(kafka_bootstrap))
    with pytest.raises(admin.GroupActiveError, match="became active"):
        client.alter(group, topic, {0: 0, 1: 0})
    assert committed(kafka_bootstrap, group, topic, PARTITIONS) == before


def test_group_state_seen_by_the_broker(kafka_bootstrap: str, consumed: tuple[str, str, list[dict[str, Any]]],
                                        active_member: Callable[[str, str], None], group_factory: Callable[[], str]
                                        ) -> None:
    """Kafka reports a stopped group EMPTY, an unknown one DEAD, and a live one with its member."""
    topic, group, _ = consumed
    client = admin.Admin(admin.client_config(kafka_bootstrap))
    assert client.group_state(group) == ("EMPTY", 0)
    assert client.group_state(group_factory()) == ("DEAD", 0)
    active_member(topic, group)
    state, members = client.group_state(group)
    assert members == 1
    assert state not in ("EMPTY", "DEAD")


def test_replay_with_the_real_pipeline(scenario_factory: Callable[..., Scenario],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Refused while `capi-stream run` consumes; after it stops, a reset inside the window is deduped against
    the changelog, and one with --forget-dedupe re-sends every event to Meta once more."""
    sc = scenario_factory(partitions=2)
    sent = [{**r, "consent": True} for r in generate(30, 21, int(time.time()), app_ids=APPS_A)]
    produce_records(sc.bootstrap, sc.topic, sent)
    expected = expected_keys(sent, int(time.time()), sc.routes)
    assert expected
    proc = sc.start()
    assert sc.all_committed()
    code, _, err = replay(capsys, "--config", str(sc.config), "--to-earliest", "--execute")
    assert code == 2
    assert f"group {sc.group} is active" in err
    assert proc.stop() == 0
    assert set(sc.counts()) == expected
    assert set(sc.counts().values()) == {1}

    code, out, _ = replay(capsys, "--config", str(sc.config), "--to-earliest")
    assert code == 0
    assert "deduped against the changelog" in out
    assert "--forget-dedupe" in out
    code, out, _ = replay(capsys, "--config", str(sc.config), "--to-earliest", "--execute", "--format", "json")
    assert code == 0
    plan = plan_of(out)
    assert plan["totals"]["re_read"] == len(sent)
    assert plan["totals"]["in_dedupe_window"] == len(sent)
    assert plan["changelog_topic"]
    assert plan["forget_dedupe"] is False
    assert sc.committed() == {0: 0, 1: 0}
    proc = sc.start()
    assert sc.all_committed()
    assert proc.stop() == 0
    # the restarted pipeline restored the window from the changelog: nothing reached Meta a second time
    assert set(sc.counts().values()) == {1}

    code, out, _ = replay(capsys, "--config", str(sc.config), "--to-earliest", "--forget-dedupe", "--execute",
                          "--format", "json")
    assert code == 0
    plan = plan_of(out)
    assert plan["forget_dedupe"] is True
    assert set(plan["changelog_cleared"]) == {"0", "1"}
    proc = sc.start()
    assert sc.all_committed()
    assert proc.stop() == 0
    # --forget-dedupe cleared the window: each event reached Meta a second time, on purpose
    assert set(sc.counts().values()) == {2}


def test_forget_dedupe_without_a_changelog_exits_2(kafka_bootstrap: str,
                                                   consumed: tuple[str, str, list[dict[str, Any]]],
                                                   capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """--forget-dedupe with dedupe.changelog = false is bad usage: there is nothing to forget."""
    topic, group, _ = consumed
    cfg = tmp_path / "no-changelog.toml"
    cfg.write_text(f'[kafka]\nbootstrap_servers = "{kafka_bootstrap}"\ntopics = ["{topic}"]\ngroup_id = "{group}"\n'
                   "[dedupe]\nchangelog = false\n")
    code, _, err = replay(capsys, "--config", str(cfg), "--to-earliest", "--forget-dedupe")
    assert code == 2
    assert "no changelog" in err
