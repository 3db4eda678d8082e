"""Consistent flags: help on every option, --config and --bootstrap on every Kafka command, one dead-letter
topic flag, --reason checked, samples routed by the example config, kafka status naming its directory."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from stream.cli import build_parser
from stream.errors import UsageError
from stream.tools import dlq

CLI = [sys.executable, "-m", "stream"]
# commands that talk to a Kafka broker (demo and kafka run their own)
KAFKA_COMMANDS = (("run",), ("produce",), ("status",), ("replay",), ("dlq", "show"), ("dlq", "redrive"))


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


PARSERS = dict(_parsers(build_parser(["--help"])))


@pytest.mark.parametrize("path", sorted(PARSERS), ids=lambda p: " ".join(p) or "capi-stream")
def test_every_option_and_argument_has_help(path: tuple[str, ...]) -> None:
    """`capi-stream ... --help` explains every flag and positional argument."""
    missing = [a.dest for a in PARSERS[path]._actions
               if not isinstance(a, argparse._SubParsersAction) and not a.help]
    assert missing == []


@pytest.mark.parametrize("path", KAFKA_COMMANDS, ids=" ".join)
def test_every_kafka_command_takes_config_and_bootstrap(path: tuple[str, ...]) -> None:
    """Each command that talks to Kafka reads its settings from --config and lets --bootstrap override."""
    options = _options(PARSERS[path])
    assert "--config" in options
    assert "--bootstrap" in options


def test_the_dead_letter_topic_flag_has_one_name() -> None:
    """dlq show and dlq redrive both name the dead-letter topic --dlq-topic; no --from/--topic spelling."""
    for path in (("dlq", "show"), ("dlq", "redrive")):
        options = _options(PARSERS[path])
        assert "--dlq-topic" in options
        assert "--from" not in options
        assert "--topic" not in options


def test_config_and_bootstrap_can_be_given_together() -> None:
    """--bootstrap overrides the file's bootstrap instead of being refused next to --config."""
    args = build_parser().parse_args(["dlq", "show", "--config", "c.toml", "--bootstrap", "b:9092"])
    assert (str(args.config), args.bootstrap) == ("c.toml", "b:9092")
    args = build_parser().parse_args(["replay", "--config", "c.toml", "--bootstrap", "b:9092", "--to-earliest"])
    assert (str(args.config), args.bootstrap) == ("c.toml", "b:9092")


def test_reason_codes_are_checked_against_the_known_reasons() -> None:
    """A misspelt --reason is refused with the known codes listed; real codes pass."""
    assert dlq.reasons_flag(["meta_rejected,event_too_old", "bad_avro"]) == {"meta_rejected", "event_too_old",
                                                                             "bad_avro"}
    with pytest.raises(UsageError, match="--reason event_to_old: unknown reason code"):
        dlq.reasons_flag(["event_to_old"])
    assert "no_consent" not in dlq.known_reasons(), "no_consent events are dropped, never dead-lettered"
    assert {"unknown_destination", "delivery_deadline", "unusable_schema"} <= dlq.known_reasons()


def test_samples_default_to_the_apps_the_example_config_routes() -> None:
    """`samples | produce | run --config config/example.toml` produces no unknown_destination letters."""
    from stream.commands.samples import EXAMPLE_CONFIG
    from stream.config import load

    routed = set(load(EXAMPLE_CONFIG, env={}).route())
    done = subprocess.run([*CLI, "samples", "--events", "300"], capture_output=True, timeout=60, check=True)
    apps = {orjson.loads(line)["app_id"] for line in done.stdout.splitlines()}
    assert apps == routed


def test_kafka_status_and_down_name_the_directory_they_looked_at(tmp_path: Path) -> None:
    """With no broker in the home, status (exit 1) and down (exit 0) say which directory that was."""
    home = tmp_path / "kafka-home"
    status = subprocess.run([*CLI, "kafka", "status", "--data-dir", str(home)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert (status.returncode, status.stdout.strip()) == (1, f"kafka not running ({home})")
    down = subprocess.run([*CLI, "kafka", "down", "--data-dir", str(home)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert down.returncode == 0
    assert f"kafka was not running ({home})" in down.stderr


@pytest.mark.parametrize("content", [None, "not json {", '{"type": "record", "name": "X", "fields": [{"name": "a"}]}'])
def test_a_produce_schema_that_cannot_be_read_is_bad_usage(tmp_path: Path, content: str | None,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`produce --schema F` with a missing or invalid file is exit 2 in one line (it was exit 1, a run-time
    failure, for a flag the person can fix); nothing is read or sent."""
    from stream.cli import main

    schema = tmp_path / "s.avsc"
    if content is not None:
        schema.write_text(content)
    code = main(["produce", "--topic", "t", "--bootstrap", "127.0.0.1:1", "--schema", str(schema)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1
    assert err[0].startswith("capi-stream: error: ")
    assert str(schema) in err[0]
