"""`check-config` catches what `run` would crash on, in one line with exit 2, naming the key or variable."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from stream.cli import main

BASE = """\
[kafka]
bootstrap_servers = "127.0.0.1:1"
topics = ["t"]
group_id = "g"
dlq_topic = "t.dlq"
{kafka_extra}
[destinations.shop]
dataset_id = "111"
app_ids = ["com.example.shop"]
token_env = "CHECK_CONFIG_TOKEN"
default_country = "{country}"
"""


def write(tmp_path: Path, kafka_extra: str = "", country: str = "US") -> Path:
    path = tmp_path / "capi.toml"
    path.write_text(BASE.format(kafka_extra=kafka_extra, country=country))
    return path


@dataclasses.dataclass
class Done:
    """What one in-process `capi-stream check-config` run returned and printed."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def check(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., Done]:
    """Run check-config in this process (the CLI's main) with extra environment variables."""

    def run(config: Path, **env: str) -> Done:
        for name in [n for n in os.environ if n.startswith("CAPI_STREAM_")]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("CHECK_CONFIG_TOKEN", "tok-123456")
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        code = main(["check-config", "--config", str(config), "--log-format", "json"])
        out, err = capsys.readouterr()
        return Done(code, out, err)

    return run


def one_error_line(done: Done) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("capi-stream: error: ")
    return lines[0]


def test_a_valid_config_passes(tmp_path: Path, check: Callable[..., Done]) -> None:
    """The base config with real librdkafka settings is valid: exit 0, settings printed."""
    done = check(write(tmp_path, '[kafka.consumer]\n"session.timeout.ms" = 30000\n'))
    assert done.returncode == 0, done.stderr
    assert '"session.timeout.ms": 30000' in done.stdout


def test_a_valid_config_warns_of_nothing(tmp_path: Path, check: Callable[..., Done]) -> None:
    """The offline probe leaves bootstrap.servers out on purpose: librdkafka's warning about that (every
    `run` of config/example.toml printed 'No `bootstrap.servers` configured' as a kafka_setting_ignored
    warning about [kafka.producer]) is the probe's own, not the operator's."""
    done = check(write(tmp_path, '[kafka.producer]\n"compression.type" = "lz4"\n'))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


@pytest.mark.parametrize(("extra", "named"), [
    ('[kafka.consumer]\n"fetch.min.byte" = 1\n', '"fetch.min.byte"'),
    ('[kafka.consumer]\n"session.timeout.ms" = "soon"\n', '"session.timeout.ms"'),
    ('[kafka.producer]\n"enable.idempotence" = "maybe"\n', '"enable.idempotence"'),
])  # fmt: skip
def test_a_setting_librdkafka_refuses_is_named_with_its_table(tmp_path: Path, extra: str, named: str,
                                                             check: Callable[..., Done]) -> None:
    """An unknown librdkafka key or a bad value is found offline and named with its table."""
    line = one_error_line(check(write(tmp_path, extra)))
    assert named in line
    assert ("[kafka.consumer]" if "consumer" in extra else "[kafka.producer]") in line


def test_a_setting_the_client_ignores_is_a_warning(tmp_path: Path, check: Callable[..., Done]) -> None:
    """A producer setting in [kafka.consumer] passes with a warning that names it."""
    done = check(write(tmp_path, '[kafka.consumer]\n"acks" = "all"\n'))
    assert done.returncode == 0, done.stderr
    assert "kafka_setting_ignored" in done.stderr
    assert "producer property" in done.stderr


@pytest.mark.parametrize("country", ["XX", "UK", "U1", "USA"])
def test_a_country_that_is_not_iso_3166_is_refused(tmp_path: Path, country: str, check: Callable[..., Done]) -> None:
    """default_country must be an assigned ISO 3166-1 alpha-2 code (UK is not one: GB is)."""
    line = one_error_line(check(write(tmp_path, country=country)))
    assert "destinations.shop.default_country" in line
    assert repr(country) in line


def test_an_environment_override_with_a_typo_names_the_variable(tmp_path: Path, check: Callable[..., Done]) -> None:
    """CAPI_STREAM_SEND__CONCURENCY is named, with the key it probably meant."""
    line = one_error_line(check(write(tmp_path), CAPI_STREAM_SEND__CONCURENCY="8"))
    assert "environment variable CAPI_STREAM_SEND__CONCURENCY" in line
    assert "did you mean 'concurrency'" in line


def test_an_environment_override_of_an_unknown_section_names_the_variable(tmp_path: Path,
                                                                          check: Callable[..., Done]) -> None:
    """A misspelt section in the variable is named too."""
    line = one_error_line(check(write(tmp_path), CAPI_STREAM_KAFAK__GROUP_ID="x"))
    assert "CAPI_STREAM_KAFAK__GROUP_ID" in line
    assert "did you mean 'kafka'" in line


def test_a_good_environment_override_applies(tmp_path: Path, check: Callable[..., Done]) -> None:
    """A correct override still works and shows in the effective settings."""
    done = check(write(tmp_path), CAPI_STREAM_SEND__CONCURRENCY="3")
    assert done.returncode == 0, done.stderr
    assert '"concurrency": 3' in done.stdout
