"""Config loading: every error names the key and the file; env overrides; passthrough."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from stream import config
from stream.commands.check_config import REDACTED, redacted
from stream.errors import ConfigError
from stream.pipeline.sender import backoff_delay

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.toml"
DEST = '[destinations.main]\ndataset_id = "123"\napp_ids = ["a"]\ntoken_env = "T"\n'


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> config.Settings:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return config.load(path, env=env or {})


def test_the_example_config_is_valid_and_documents_the_defaults() -> None:
    """config/example.toml loads, and its values equal the built-in defaults (it documents them)."""
    settings = config.load(EXAMPLE, env={})
    defaults = config.load(None, env={})
    for section in ("kafka", "decode", "pipeline", "dedupe", "batch", "send", "logging", "quality"):
        assert getattr(settings, section) == getattr(defaults, section), section
    assert settings.destinations[0].dataset_id == "123456789012345"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[kafka]\nbootstrap = 'x'\n", "unknown key 'kafka.bootstrap'"),
        ("[nonsense]\n", "unknown key 'nonsense'"),
        ("[kafka]\ntopics = 'one'\n", "'kafka.topics' must be a list of strings"),
        ("[send]\nconcurrency = 'four'\n", "'send.concurrency' must be int"),
        ("[send]\nconcurrency = 0\n", "'send.concurrency' must be at least 1"),
        ("[batch]\nmax_events = 1001\n", "'batch.max_events' must be 1..1000"),
        ("[decode]\nwire_format = 'json'\n", "'decode.wire_format'"),
        ("[decode]\nwire_format = 'confluent'\n", "'decode.schema_registry_url' is required"),
        ("[kafka]\ndlq_topic = 'conversions'\n", "'kafka.dlq_topic' must differ"),
        # an illegal source topic was reported as a bad 'dedupe.changelog_topic', the key derived from it
        ("[kafka]\ntopics = ['bad topic!']\n", "'kafka.topics' 'bad topic!' is not a legal Kafka topic name"),
        ("[kafka]\ndlq_topic = 'dead letters'\n", "'kafka.dlq_topic' 'dead letters' is not a legal Kafka topic"),
        ("[logging]\nlevel = 'loud'\n", "'logging.level'"),
        ("[kafka\nbootstrap_servers = 1\n", "not valid TOML"),
        (DEST.replace('"123"', '"abc"'), "'destinations.main.dataset_id'"),
        # a dataset id written as a TOML number: the message says how to write it
        (DEST.replace('"123"', "123"), "'destinations.main.dataset_id' must be str, got 123: quote it, \"123\""),
        (DEST.replace('token_env = "T"', ""), "'destinations.main.token_env' set exactly one"),
        (DEST + 'token_file = "/x"\n', "set exactly one"),
        (DEST.replace('dataset_id = "123"\n', ""), "missing key 'destinations.main.dataset_id'"),
        (DEST + 'default_country = "USA"\n', "'destinations.main.default_country'"),
        (DEST + '[destinations.other]\ndataset_id = "9"\napp_ids = ["a"]\ntoken_env = "T"\n', "already routed"),
        (DEST + 'api_version = "26"\n', "'destinations.main.api_version'"),
        (DEST + "canary_interval_s = 60\n", "'destinations.main.canary_interval_s' needs test_event_code"),
        (DEST + 'canary_interval_s = 0.5\ntest_event_code = "TEST1"\n', "'destinations.main.canary_interval_s'"),
        ("[quality]\nuser_consistency = 95\n", "'quality.user_consistency' must be a share"),
        ("[quality]\nlatency_threshold_s = 0\n", "'quality.latency_threshold_s' must be > 0"),
        ("[quality]\nconsistency_max_ids = 0\n", "'quality.consistency_max_ids'"),
        ("[quality]\ntarget = 1\n", "unknown key 'quality.target'"),
        ("[pipeline]\nmax_held_per_partition = 0\n", "'pipeline.max_held_per_partition' must be at least 1"),
        ("[send]\ndeadline_margin_s = 604800.0\n", "'send.deadline_margin_s' must be >= 0 and below 604800"),
        ("[send]\ndeadline_margin_s = -1.0\n", "'send.deadline_margin_s'"),
        ("[send]\nprobe_interval_s = -1\n", "'send.probe_interval_s' must be >= 0"),
        ("[send]\nthrottle_backoff_initial_s = 0\n", "'send.throttle_backoff_initial_s' must be > 0"),
        ("[send]\nprobe_interval_s = 60\nprobe_max_interval_s = 30\n", "'send.probe_max_interval_s' must be >="),
    ],
)
def test_each_config_error_names_the_key_and_the_file(tmp_path: Path, text: str, message: str) -> None:
    """A bad key, type or value raises ConfigError whose message names the file and the key."""
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    assert message in str(info.value)
    assert str(tmp_path / "c.toml") in str(info.value)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("not json {", "is not a valid Avro schema"),
        ('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nosuchtype"}]}',
         "is not a valid Avro schema"),
        ('"string"', "is not an Avro record schema"),
        ('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "string"}]}',
         "lacks the fields event_name, event_time, app_id, user_data"),
    ],
)
def test_a_schema_file_that_cannot_read_conversion_events_is_a_config_error(tmp_path: Path, schema: str,
                                                                           message: str) -> None:
    """decode.schema_path is loaded by the config check: a file that is no Avro schema, or a record without
    the fields every ConversionEvent has, is exit 2 before the start (check-config passed it; `run` then
    exited 1 with 'invalid Avro schema', or ran and dead-lettered every record as bad_avro)."""
    (tmp_path / "s.avsc").write_text(schema)
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, f"[decode]\nschema_path = '{tmp_path / 's.avsc'}'\n")
    assert "'decode.schema_path'" in str(info.value)
    assert message in str(info.value)


def test_the_bundled_schema_is_a_valid_schema_path(tmp_path: Path) -> None:
    """The bundled schema, named explicitly, passes the same check."""
    from stream.avro.schema import default_schema_path

    settings = _load(tmp_path, f"[decode]\nschema_path = '{default_schema_path()}'\n")
    assert settings.decode.schema_path == str(default_schema_path())


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    """A config saved as UTF-16 (a Windows editor's BOM) is one line naming the file, not a traceback."""
    path = tmp_path / "c.toml"
    path.write_bytes("[kafka]\ntopics = ['t']\n".encode("utf-16"))
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        config.load(path, env={})
    assert str(path) in str(info.value)


def test_a_token_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    """A token file written as UTF-16 is a ConfigError naming the destination and the file (check-config and
    run exit 2; the token watcher logs token_reload_failed), never a traceback, and never the bytes."""
    token = tmp_path / "token"
    token.write_bytes("SECRET-TOKEN-42".encode("utf-16"))
    settings = _load(tmp_path, DEST.replace('token_env = "T"', f"token_file = '{token}'"))
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        settings.destinations[0].read_token()
    assert "destination main" in str(info.value)
    assert str(token) in str(info.value)


def test_environment_overrides_are_typed(tmp_path: Path) -> None:
    """CAPI_STREAM_SECTION__KEY overrides the file, converted to the key's type."""
    settings = _load(tmp_path, DEST, env={
        "CAPI_STREAM_KAFKA__BOOTSTRAP_SERVERS": "b:1", "CAPI_STREAM_SEND__CONCURRENCY": "8",
        "CAPI_STREAM_KAFKA__TOPICS": "t1, t2", "CAPI_STREAM_DESTINATIONS__MAIN__REQUIRE_CONSENT": "true",
    })  # fmt: skip
    assert settings.kafka.bootstrap_servers == "b:1"
    assert settings.send.concurrency == 8
    assert settings.kafka.topics == ("t1", "t2")
    assert settings.destinations[0].require_consent is True


def test_a_bad_environment_override_names_the_key(tmp_path: Path) -> None:
    """An override that does not convert to the key's type is a ConfigError naming the key."""
    with pytest.raises(ConfigError, match=r"send\.concurrency"):
        _load(tmp_path, "", env={"CAPI_STREAM_SEND__CONCURRENCY": "many"})


def test_librdkafka_settings_pass_through_verbatim(tmp_path: Path) -> None:
    """Keys under [kafka.consumer] are not checked by us and reach librdkafka unchanged."""
    settings = _load(tmp_path, '[kafka.consumer]\n"fetch.min.bytes" = 65536\n"sasl.password" = "pw"\n')
    assert settings.kafka.consumer == {"fetch.min.bytes": 65536, "sasl.password": "pw"}
    shown = redacted(settings)
    assert shown["kafka"]["consumer"] == {"fetch.min.bytes": 65536, "sasl.password": REDACTED}


def test_tokens_come_from_env_or_file_and_a_missing_one_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """read_token returns the env variable or the file's stripped content; empty is a ConfigError."""
    settings = _load(tmp_path, DEST)
    monkeypatch.setenv("T", " tok \n")
    assert settings.destinations[0].read_token() == "tok"
    monkeypatch.delenv("T")
    with pytest.raises(ConfigError, match="no access token"):
        settings.destinations[0].read_token()
    token_file = tmp_path / "tok"
    token_file.write_text("from-file\n")
    settings = _load(tmp_path, DEST.replace('token_env = "T"', f'token_file = "{token_file}"'))
    assert settings.destinations[0].read_token() == "from-file"


def test_quality_targets_and_a_canary_with_a_test_code_load(tmp_path: Path) -> None:
    """[quality] sets the targets; a canary is allowed once the destination has a test_event_code."""
    s = _load(tmp_path, "[quality]\nuser_consistency = 0.9\nlatency_threshold_s = 2.5\n"
              + DEST + 'canary_interval_s = 30\ntest_event_code = "TEST1"\n')
    assert (s.quality.user_consistency, s.quality.latency_threshold_s, s.quality.identifier_share) == (0.9, 2.5, 0.95)
    assert s.destinations[0].canary_interval_s == 30.0
    assert _load(tmp_path, DEST).destinations[0].canary_interval_s == 0.0  # off by default


def test_default_send_settings_cover_one_process_at_metas_latency() -> None:
    """Requests in flight x 1,000 / latency: at Meta's typical 0.6 s the defaults carry more than one
    process prepares (12,000 events per CPU second, the #15 target), and the rate limit does not cap
    that; the in-flight bound holds a full window of requests twice over."""
    send, pipeline = config.SendSettings(), config.PipelineSettings()
    assert send.capacity(0.6) >= 12_000
    assert send.rate_limit_rps * 1_000 >= send.concurrency * 1_000 / 0.6
    assert pipeline.max_in_flight_events >= 2 * send.concurrency * 1_000


def test_send_capacity_is_the_smaller_of_in_flight_and_rate_limit() -> None:
    assert config.SendSettings(concurrency=4, rate_limit_rps=0).capacity(0.5) == 8_000
    assert config.SendSettings(concurrency=4, rate_limit_rps=2).capacity(0.5) == 2_000
    assert config.SendSettings(concurrency=4, rate_limit_rps=50).capacity(0.5, events_per_request=100) == 800
    assert config.SendSettings(concurrency=4, rate_limit_rps=0).capacity(0.0) == float("inf")


def test_a_low_backoff_max_caps_throttle_waits_instead_of_refusing_the_config(tmp_path: Path) -> None:
    """send.backoff_max_s below the throttle default (1 s) is a valid config (tests and impatient operators
    set 0.5): every wait is capped there. Checking the throttle start against it refused such configs."""
    settings = _load(tmp_path, "[send]\nbackoff_initial_s = 0.05\nbackoff_max_s = 0.5\n")
    assert settings.send.backoff_max_s == 0.5
    assert backoff_delay(0, settings.send.throttle_backoff_initial_s, settings.send.backoff_max_s, None,
                         random.Random(1)) <= 0.5
