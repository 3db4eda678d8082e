"""Typed, frozen settings loaded once from one TOML file, with `CAPI_STREAM_` environment overrides.

Every key is checked at start-up: an unknown key, a wrong type or a bad value raises ConfigError naming
the key and the file. Secrets (access tokens) are never in the file: a destination names an environment
variable or a file that holds its token. librdkafka settings under `[kafka.consumer]` and
`[kafka.producer]` pass through verbatim.

Environment overrides: `CAPI_STREAM_<SECTION>__<KEY>=value`, e.g. `CAPI_STREAM_KAFKA__BOOTSTRAP_SERVERS`,
`CAPI_STREAM_SEND__CONCURRENCY=8`, `CAPI_STREAM_DESTINATIONS__MAIN__DATASET_ID=123`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from stream.contract import meta
from stream.errors import ConfigError, SchemaError
from stream.logs import register_secret

ENV_PREFIX = "CAPI_STREAM_"
# a canary more often than once a second would be traffic of its own, not a probe
MIN_CANARY_INTERVAL_S = 1.0


@dataclasses.dataclass(frozen=True)
class KafkaSettings:
    """Where events come from and where dead letters go."""

    bootstrap_servers: str = "127.0.0.1:9092"
    topics: tuple[str, ...] = ("conversions",)
    group_id: str = "capi-stream"
    dlq_topic: str = "conversions.dlq"
    # Where a parked destination's events wait (see send.park_after_s): one topic per group and
    # destination; {group} and {destination} are replaced (characters Kafka refuses become "_")
    parking_topic: str = "{group}.{destination}.parking"
    # consume() batch: large enough to amortise the call, small enough to keep latency low
    consume_batch_size: int = 1000
    # librdkafka settings, verbatim (e.g. "fetch.min.bytes", "session.timeout.ms")
    consumer: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    producer: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
    """How message values are framed and which schema reads them."""

    wire_format: str = "schemaless"  # schemaless | confluent
    schema_path: str = ""  # empty: the bundled schemas/conversion_event.avsc
    schema_registry_url: str = ""  # needed for confluent


@dataclasses.dataclass(frozen=True)
class PipelineSettings:
    """Bounds on in-flight work, rebalances and shutdown."""

    # Consumed but not yet finished events; above it partitions pause (memory bound, about 1-2 KB each)
    max_in_flight_events: int = 50_000
    # Consumed offsets one partition holds until they can be committed: unfinished ones and the finished
    # ones waiting behind the oldest unfinished one (a batch retried for hours, a halted destination with
    # a share of the partition). At the bound that partition alone pauses until its commit point moves;
    # finished offsets cost about 75 bytes each, so 100,000 is ~7.5 MB per partition at most.
    max_held_per_partition: int = 100_000
    # Wait this long in a revoke for in-flight batches of the revoked partitions before giving them up
    revoke_timeout_s: float = 10.0
    # SIGTERM drains (flush, await acks, commit) under this one deadline
    shutdown_deadline_s: float = 30.0
    # How often stored offsets are committed to the group (librdkafka auto.commit.interval.ms)
    commit_interval_ms: int = 1000
    # Processes that decode and normalize (the CPU-heavy part); 0 runs it on the event loop
    workers: int = 0


@dataclasses.dataclass(frozen=True)
class DedupeSettings:
    """The windowed (dataset, event_name, event_id) store."""

    window_s: float = float(meta.DEDUPE_WINDOW_S)  # Meta's own horizon is 48 h
    max_keys: int = 5_000_000  # about 80 bytes a key (bench dedupe): 0.4 GB at most
    # Back the window with a compacted changelog topic, so it survives restarts and rebalances; false
    # keeps it in memory only: every restart and every moved partition re-sends what it had not committed
    changelog: bool = True
    # The changelog topic of each source topic; {group} and {topic} are replaced (illegal characters of
    # the group become "_")
    changelog_topic: str = "{group}.{topic}.dedupe-changelog"


@dataclasses.dataclass(frozen=True)
class BatchSettings:
    """When an open batch of one destination is sent."""

    max_events: int = meta.MAX_EVENTS_PER_REQUEST
    # No byte limit is documented for /events; stay far below any proxy's body limit
    max_bytes: int = 4_000_000
    # How long an open batch waits to fill: linger_ms while the consumer has a backlog (its last consumed
    # batch was full) or the destination's request slots are busy; idle_linger_ms when the consumer has
    # caught up and the destination has a free slot (waiting longer would only add latency; at most
    # linger_ms: a longer one counts as linger_ms). See the
    # README's "Requests in flight, for SREs" for the requests per second this gives.
    linger_ms: int = 200
    idle_linger_ms: int = 50


@dataclasses.dataclass(frozen=True)
class SendSettings:
    """HTTP behaviour towards Meta, per destination."""

    timeout_s: float = meta.RECOMMENDED_TIMEOUT_S
    # Requests in flight per destination: 8 x 1,000 events / 0.6 s (Meta's typical answer) = 13,333
    # events/s, above what one process prepares (see `capacity`)
    concurrency: int = 8
    # Requests per second per destination; 0 = unlimited. CAPI has no stated rate limit, BUC limits apply
    rate_limit_rps: float = 50.0
    # Retries back off exponentially with full jitter, from here up to backoff_max_s: a 5xx, a timeout or
    # a dropped connection is first retried within 0.1 s (Meta's transient errors pass quickly, and each
    # retried event carries the wait in its latency) ...
    backoff_initial_s: float = 0.1
    # ... a throttle answer without a hint from here (hammering a rate limit prolongs it); a hint is a floor
    throttle_backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    # A halted destination re-reads its token file this often (SIGHUP does it at once)
    token_check_interval_s: float = 2.0
    # An event not acknowledged by event_time + 7 days - this margin is given up and dead-lettered
    # (reason delivery_deadline): Meta refuses events older than 7 days, and the margin leaves room for
    # clock skew and a request in flight at that moment.
    deadline_margin_s: float = 3600.0
    # A destination halted this long (a token or permission error) is parked: its held and new events are
    # written to its parking topic (kafka.parking_topic), so the source partitions commit past them and
    # the other destinations never wait behind it; they are drained through the same pipeline when it
    # resumes. 0 disables parking: a halted destination's events stay in memory until the in-flight
    # bound pauses every partition.
    park_after_s: float = 180.0
    # A destination holding more than this share of pipeline.max_in_flight_events is parked too (halted
    # or not), so one slow destination alone never fills the memory bound that pauses the others
    park_share: float = 0.5
    # While a destination is halted, it is probed this often (a request that counts no event: its canary
    # event with the test event code, else a read of its dataset); a probe Meta acknowledges resumes it,
    # like a new token. Each failed probe doubles the wait up to probe_max_interval_s. 0: no probes (only a
    # new token or SIGHUP resumes a halted destination).
    probe_interval_s: float = 60.0
    probe_max_interval_s: float = 900.0

    def capacity(self, latency_s: float, events_per_request: int = meta.MAX_EVENTS_PER_REQUEST) -> float:
        """Events/s one destination can have acknowledged when Meta answers in `latency_s`.

        concurrency x events per request / latency, capped by the rate limit x events per request.
        """
        by_flight = self.concurrency * events_per_request / latency_s if latency_s > 0 else float("inf")
        by_rate = self.rate_limit_rps * events_per_request if self.rate_limit_rps else float("inf")
        return min(by_flight, by_rate)


@dataclasses.dataclass(frozen=True)
class Destination:
    """One Meta dataset and the apps routed to it."""

    name: str
    dataset_id: str
    app_ids: tuple[str, ...]
    api_version: str = meta.GRAPH_API_VERSION
    base_url: str = meta.GRAPH_BASE_URL
    token_env: str = ""
    token_file: str = ""
    test_event_code: str = ""
    # Seconds between two canary events (one synthetic app event sent with a test event code); 0: off
    canary_interval_s: float = 0.0
    # The test event code of canary requests only (real events keep test_event_code); empty: test_event_code
    canary_test_event_code: str = ""
    default_country: str = ""
    require_consent: bool = False
    hash_external_id: bool = True

    @property
    def canary_code(self) -> str:
        """The test event code canary requests carry."""
        return self.canary_test_event_code or self.test_event_code

    def read_token(self) -> str:
        """The current access token from the env variable or file; ConfigError when there is none."""
        if self.token_file:
            try:
                token = Path(self.token_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"destination {self.name}: cannot read token_file {self.token_file}: "
                                  f"{exc.strerror}") from exc
            except UnicodeDecodeError as exc:
                raise ConfigError(f"destination {self.name}: token_file {self.token_file} is not UTF-8 text "
                                  f"(byte {exc.start})") from exc
        else:
            token = os.environ.get(self.token_env, "").strip()
        if not token:
            where = f"file {self.token_file}" if self.token_file else f"environment variable {self.token_env}"
            raise ConfigError(f"destination {self.name}: no access token in {where}")
        register_secret(token)  # every token ever read, a reloaded one too, is redacted from the logs
        return token


@dataclasses.dataclass(frozen=True)
class QualitySettings:
    """Signal-quality targets (the quality table, the demo and the alert rules read them).

    The defaults are the figures of the guide app marketers follow (README, "Signal quality").
    """

    # share of valid events carrying at least one match key
    identifier_share: float = 0.95
    # share of revenue events (Purchase, Subscribe) carrying value and currency
    revenue_value_share: float = 0.90
    # share of events accepted (not refused by validation)
    acceptance_rate: float = 0.99
    # share of external_ids that always came with the same em and ph
    user_consistency: float = 0.95
    # an event is on time when Meta acknowledged it within this many seconds of its Kafka append time
    latency_threshold_s: float = 5.0
    # external_ids remembered per destination for user consistency (LRU; see README for bytes per id)
    consistency_max_ids: int = 1_000_000


@dataclasses.dataclass(frozen=True)
class MetricsSettings:
    """The Prometheus and health endpoint."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: no metrics server


@dataclasses.dataclass(frozen=True)
class LoggingSettings:
    """structlog output."""

    level: str = "info"
    format: str = "auto"  # json | console | auto (console on a TTY)
    # one `progress` line (consumed, acked, in flight, lag, destination states) this often; 0: none
    progress_interval_s: float = 30.0


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything `capi-stream run` needs, validated."""

    kafka: KafkaSettings
    decode: DecodeSettings
    pipeline: PipelineSettings
    dedupe: DedupeSettings
    batch: BatchSettings
    send: SendSettings
    destinations: tuple[Destination, ...]
    metrics: MetricsSettings
    logging: LoggingSettings
    quality: QualitySettings = QualitySettings()
    source: str = "<defaults>"

    def route(self) -> dict[str, Destination]:
        """app_id -> destination."""
        return {app_id: dest for dest in self.destinations for app_id in dest.app_ids}


def changelog_topic(settings: Settings, topic: str) -> str:
    """The dedupe changelog topic of source `topic`; ValueError when it is no legal topic name."""
    return changelog_topic_name(settings.dedupe.changelog_topic, settings.kafka.group_id, topic)


def parking_topic_name(template: str, group: str, destination: str) -> str:
    """The parking topic of `destination` for consumer group `group`, from a template with {group} and
    {destination}; characters Kafka refuses in a topic name that come from them are replaced with "_".

    Raises ValueError when the result is no legal Kafka topic name.
    """
    try:
        name = template.format(group=_ILLEGAL_TOPIC_CHAR.sub("_", group),
                               destination=_ILLEGAL_TOPIC_CHAR.sub("_", destination))
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"only {{group}} and {{destination}} may be used in {template!r}") from exc
    if not _legal_topic(name):
        raise ValueError(f"{name!r} {_ILLEGAL_TOPIC_WHY}")
    return name


def parking_group(settings: Settings) -> str:
    """The consumer group that reads the parking topics back: the source group's id + ".parking".

    A group of its own, so the parking partitions never take a place in the source topics' assignment
    (the assignor balances partition counts, not topics: in the source group a member could be given
    parking partitions instead of source partitions).
    """
    return f"{settings.kafka.group_id}.parking"


def parking_topics(settings: Settings) -> dict[str, str]:
    """destination name -> its parking topic (empty when parking is off)."""
    if settings.send.park_after_s <= 0:
        return {}
    return {d.name: parking_topic_name(settings.kafka.parking_topic, settings.kafka.group_id, d.name)
            for d in settings.destinations}


# Kafka topic names: at most 249 characters of [a-zA-Z0-9._-] (and not "." or "..").
MAX_TOPIC_NAME = 249
_LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]+")
_ILLEGAL_TOPIC_CHAR = re.compile(r"[^a-zA-Z0-9._-]")
_ILLEGAL_TOPIC_WHY = f"is not a legal Kafka topic name (at most {MAX_TOPIC_NAME} characters of a-z A-Z 0-9 . _ -)"


def _legal_topic(name: str) -> bool:
    return bool(_LEGAL_TOPIC.fullmatch(name)) and name not in (".", "..") and len(name) <= MAX_TOPIC_NAME


def changelog_topic_name(template: str, group: str, topic: str) -> str:
    """The changelog topic of `topic` for consumer group `group`, from a template with {group} and {topic}.

    Characters Kafka refuses in a topic name that come from the group or topic are replaced with "_".
    Raises ValueError when the result is still no legal topic name (too long, or an illegal character
    written in the template itself).
    """
    try:
        name = template.format(group=_ILLEGAL_TOPIC_CHAR.sub("_", group), topic=topic)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"only {{group}} and {{topic}} may be used in {template!r}") from exc
    if not _legal_topic(name):
        raise ValueError(f"{name!r} {_ILLEGAL_TOPIC_WHY}")
    return name


_SECTIONS: dict[str, type] = {
    "kafka": KafkaSettings, "decode": DecodeSettings, "pipeline": PipelineSettings,
    "dedupe": DedupeSettings, "batch": BatchSettings, "send": SendSettings,
    "metrics": MetricsSettings, "logging": LoggingSettings, "quality": QualitySettings,
}  # fmt: skip
_PASSTHROUGH = {("kafka", "consumer"), ("kafka", "producer")}

T = TypeVar("T")


def load(path: Path | str | None, env: Mapping[str, str] | None = None) -> Settings:
    """Read, override from the environment and validate a config file (None: defaults + environment).

    Raises ConfigError naming the key and the file on any problem.
    """
    env = os.environ if env is None else env
    source = str(path) if path else "<defaults>"
    raw: dict[str, Any] = {}
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start}): TOML files are UTF-8") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    _apply_env(raw, env, source)
    return _build(raw, source)


def _apply_env(raw: dict[str, Any], env: Mapping[str, str], source: str) -> None:
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        _check_env_path(name, parts)
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{source}: environment {name} overrides {'.'.join(parts)} "
                                  f"but {part} is not a table")
            node = child
        node[parts[-1]] = _EnvValue(value)


def _check_env_path(name: str, parts: list[str]) -> None:
    """ConfigError naming the environment variable when it overrides no known key (a typo)."""

    def unknown(key: str, known: list[str]) -> ConfigError:
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(known)})"
        return ConfigError(f"environment variable {name} overrides unknown key '{'.'.join(parts)}'{hint}")

    section = parts[0]
    if section == "destinations":
        if len(parts) != 3:
            raise ConfigError(f"environment variable {name}: a destination override is "
                              f"{ENV_PREFIX}DESTINATIONS__NAME__KEY")
        known = [f.name for f in dataclasses.fields(Destination) if f.name != "name"]
        if parts[2] not in known:
            raise unknown(parts[2], known)
        return
    if section not in _SECTIONS:
        raise unknown(section, [*_SECTIONS, "destinations"])
    known = [f.name for f in dataclasses.fields(_SECTIONS[section])]
    if len(parts) < 2 or parts[1] not in known:
        raise unknown(parts[1] if len(parts) > 1 else "", known)
    if len(parts) > 2 and (section, parts[1]) not in _PASSTHROUGH:
        raise ConfigError(f"environment variable {name}: '{section}.{parts[1]}' is not a table")


class _EnvValue(str):
    """A string from the environment, converted to the field's type on validation."""

    __slots__ = ()


def _build(raw: Mapping[str, Any], source: str) -> Settings:
    sections: dict[str, Any] = {}
    for key in raw:
        if key not in _SECTIONS and key != "destinations":
            raise ConfigError(f"{source}: unknown key '{key}' (known: {', '.join([*_SECTIONS, 'destinations'])})")
    for name, cls in _SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, Mapping):
            raise ConfigError(f"{source}: '{name}' must be a table")
        sections[name] = _make(cls, table, name, source)
    dests_raw = raw.get("destinations", {})
    if not isinstance(dests_raw, Mapping):
        raise ConfigError(f"{source}: 'destinations' must be a table of [destinations.NAME] tables")
    destinations = []
    for dname, table in dests_raw.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"{source}: 'destinations.{dname}' must be a table")
        destinations.append(_make(Destination, {**table, "name": dname}, f"destinations.{dname}", source))
    settings = Settings(destinations=tuple(destinations), source=source, **sections)
    _check(settings)
    return settings


def _make(cls: type[T], table: Mapping[str, Any], where: str, source: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(f"{source}: unknown key '{where}.{key}'")
        if (where, key) in _PASSTHROUGH:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: '{where}.{key}' must be a table of librdkafka settings")
            values[key] = dict(value)
            continue
        values[key] = _coerce(value, hints[key], f"{where}.{key}", source)
    missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{source}: missing key '{where}.{missing[0]}'")
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        if isinstance(value, _EnvValue):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{source}: '{key}' must be a list of strings")
        return tuple(value)
    if isinstance(value, _EnvValue):
        value = _from_env(str(value), hint, key, source)
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
        value = str(value) if ok else value
    elif isinstance(hint, types.UnionType):
        ok = True
    else:
        ok = True
    if not ok:
        # a number where text is wanted (a dataset id): say how to write it
        number = isinstance(value, int | float) and not isinstance(value, bool)
        quote = f': quote it, "{value}"' if hint is str and number else ""
        raise ConfigError(f"{source}: '{key}' must be {getattr(hint, '__name__', hint)}, got {value!r}{quote}")
    return value


def _from_env(text: str, hint: Any, key: str, source: str) -> Any:
    if hint is bool:
        lowered = text.strip().lower()
        if lowered in ("true", "false", "1", "0", "yes", "no"):
            return lowered in ("true", "1", "yes")
        raise ConfigError(f"{source}: environment override for '{key}' must be bool, got {text!r}")
    try:
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
    except ValueError as exc:
        raise ConfigError(f"{source}: environment override for '{key}' must be "
                          f"{getattr(hint, '__name__', hint)}, got {text!r}") from exc
    return text


def _check(s: Settings) -> None:
    """Cross-field and range checks; each error names the key."""
    src = s.source

    def need(ok: bool, key: str, why: str) -> None:
        if not ok:
            raise ConfigError(f"{src}: '{key}' {why}")

    need(bool(s.kafka.bootstrap_servers), "kafka.bootstrap_servers", "must not be empty")
    need(bool(s.kafka.topics), "kafka.topics", "must name at least one topic")
    need(bool(s.kafka.group_id), "kafka.group_id", "must not be empty")
    need(bool(s.kafka.dlq_topic), "kafka.dlq_topic", "must not be empty")
    need(s.kafka.dlq_topic not in s.kafka.topics, "kafka.dlq_topic", "must differ from the source topics")
    for topic in s.kafka.topics:
        need(_legal_topic(topic), "kafka.topics", f"{topic!r} {_ILLEGAL_TOPIC_WHY}")
    need(_legal_topic(s.kafka.dlq_topic), "kafka.dlq_topic", f"{s.kafka.dlq_topic!r} {_ILLEGAL_TOPIC_WHY}")
    need(1 <= s.kafka.consume_batch_size <= 100_000, "kafka.consume_batch_size", "must be 1..100000")
    need(s.decode.wire_format in ("schemaless", "confluent"), "decode.wire_format",
         "must be 'schemaless' or 'confluent'")
    need(s.decode.wire_format != "confluent" or bool(s.decode.schema_registry_url),
         "decode.schema_registry_url", "is required when decode.wire_format is 'confluent'")
    need(not s.decode.schema_path or Path(s.decode.schema_path).is_file(), "decode.schema_path",
         f"names no file ({s.decode.schema_path})")
    if s.decode.schema_path:
        problem = _schema_problem(s.decode.schema_path)
        need(problem is None, "decode.schema_path", problem or "")
    need(s.pipeline.max_in_flight_events >= 1, "pipeline.max_in_flight_events", "must be at least 1")
    need(s.pipeline.max_held_per_partition >= 1, "pipeline.max_held_per_partition", "must be at least 1")
    need(s.pipeline.revoke_timeout_s >= 0, "pipeline.revoke_timeout_s", "must be >= 0")
    need(s.pipeline.shutdown_deadline_s > 0, "pipeline.shutdown_deadline_s", "must be > 0")
    need(s.pipeline.commit_interval_ms >= 1, "pipeline.commit_interval_ms", "must be >= 1")
    need(0 <= s.pipeline.workers <= 64, "pipeline.workers", "must be 0..64")
    need(s.dedupe.window_s > 0, "dedupe.window_s", "must be > 0")
    need(s.dedupe.max_keys >= 1, "dedupe.max_keys", "must be at least 1")
    if s.dedupe.changelog:
        names = set()
        for topic in s.kafka.topics:
            try:
                name = changelog_topic(s, topic)
            except ValueError as exc:
                raise ConfigError(f"{src}: 'dedupe.changelog_topic' {exc}") from exc
            need(name not in s.kafka.topics and name != s.kafka.dlq_topic, "dedupe.changelog_topic",
                 f"names {name}, a source or dead-letter topic")
            names.add(name)
        need(len(names) == len(s.kafka.topics), "dedupe.changelog_topic",
             "must contain {topic} when kafka.topics lists several topics")
    need(1 <= s.batch.max_events <= meta.MAX_EVENTS_PER_REQUEST, "batch.max_events",
         f"must be 1..{meta.MAX_EVENTS_PER_REQUEST} (Meta refuses larger requests)")
    need(s.batch.max_bytes >= 10_000, "batch.max_bytes", "must be at least 10000")
    need(s.batch.linger_ms >= 0, "batch.linger_ms", "must be >= 0")
    need(s.batch.idle_linger_ms >= 0, "batch.idle_linger_ms", "must be >= 0")
    need(s.send.timeout_s > 0, "send.timeout_s", "must be > 0")
    need(s.send.concurrency >= 1, "send.concurrency", "must be at least 1")
    need(s.send.rate_limit_rps >= 0, "send.rate_limit_rps", "must be >= 0 (0 = unlimited)")
    need(0 < s.send.backoff_initial_s <= s.send.backoff_max_s, "send.backoff_initial_s",
         "must be > 0 and <= send.backoff_max_s")
    # not checked against backoff_max_s: every wait is capped there (a low backoff_max_s caps throttle waits too)
    need(s.send.throttle_backoff_initial_s > 0, "send.throttle_backoff_initial_s", "must be > 0")
    need(0 <= s.send.deadline_margin_s < meta.MAX_EVENT_AGE_S, "send.deadline_margin_s",
         f"must be >= 0 and below {meta.MAX_EVENT_AGE_S} (Meta's 7 days)")
    need(s.send.token_check_interval_s > 0, "send.token_check_interval_s", "must be > 0")
    need(s.send.park_after_s >= 0, "send.park_after_s", "must be >= 0 (0 = no parking)")
    need(0 < s.send.park_share <= 1, "send.park_share", "must be a share above 0 and at most 1")
    need(s.send.probe_interval_s >= 0, "send.probe_interval_s", "must be >= 0 (0 = no probes of a halted destination)")
    need(s.send.probe_interval_s == 0 or s.send.probe_max_interval_s >= s.send.probe_interval_s,
         "send.probe_max_interval_s", "must be >= send.probe_interval_s (the backoff's cap)")
    if s.send.park_after_s > 0:
        try:
            parked = parking_topics(s)
        except ValueError as exc:
            raise ConfigError(f"{src}: 'kafka.parking_topic' {exc}") from exc
        taken = {*s.kafka.topics, s.kafka.dlq_topic}
        if s.dedupe.changelog:
            taken.update(changelog_topic(s, t) for t in s.kafka.topics)
        for ptopic in parked.values():
            need(ptopic not in taken, "kafka.parking_topic",
                 f"names {ptopic}, a source, dead-letter or dedupe changelog topic")
        need(len(set(parked.values())) == len(parked), "kafka.parking_topic",
             "must contain {destination} when several destinations are configured")
    need(0 <= s.metrics.port <= 65535, "metrics.port", "must be 0..65535")
    need(s.logging.level in ("debug", "info", "warning", "error"), "logging.level",
         "must be debug, info, warning or error")
    need(s.logging.format in ("json", "console", "auto"), "logging.format", "must be json, console or auto")
    need(s.logging.progress_interval_s >= 0, "logging.progress_interval_s", "must be >= 0 (0: no progress lines)")
    for target in ("identifier_share", "revenue_value_share", "acceptance_rate", "user_consistency"):
        need(0.0 <= getattr(s.quality, target) <= 1.0, f"quality.{target}", "must be a share between 0 and 1")
    need(s.quality.latency_threshold_s > 0, "quality.latency_threshold_s", "must be > 0")
    need(s.quality.consistency_max_ids >= 1, "quality.consistency_max_ids", "must be at least 1")
    seen: dict[str, str] = {}
    for d in s.destinations:
        key = f"destinations.{d.name}"
        need(d.dataset_id.isdigit(), f"{key}.dataset_id", "must be the numeric id of the Meta dataset/pixel")
        need(bool(d.app_ids), f"{key}.app_ids", "must list at least one app_id")
        need(bool(d.token_env) != bool(d.token_file), f"{key}.token_env",
             "set exactly one of token_env and token_file (tokens are never written in the config)")
        need(d.api_version.startswith("v") and d.api_version[1:].replace(".", "").isdigit(),
             f"{key}.api_version", "must look like v26.0")
        need(d.base_url.startswith(("http://", "https://")), f"{key}.base_url", "must be an http(s) URL")
        need(not d.default_country or _is_country(d.default_country),
             f"{key}.default_country", f"must be an ISO 3166-1 alpha-2 code such as US, got {d.default_country!r}")
        need(d.canary_interval_s == 0 or d.canary_interval_s >= MIN_CANARY_INTERVAL_S, f"{key}.canary_interval_s",
             f"must be 0 (off) or at least {MIN_CANARY_INTERVAL_S:g} seconds")
        need(d.canary_interval_s == 0 or bool(d.canary_code), f"{key}.canary_interval_s",
             "needs test_event_code (or canary_test_event_code) on the destination, so that Meta counts no "
             "canary event as real")
        for app in d.app_ids:
            need(app not in seen, f"{key}.app_ids", f"app_id {app!r} is already routed to {seen.get(app)}")
            seen[app] = d.name


def _schema_problem(path: str) -> str | None:
    """Why the Avro schema file at `path` cannot be the reader schema of ConversionEvents, or None: not a
    valid Avro record schema, or without a field that the bundled schema's records always carry."""
    from stream.avro.schema import load_schema  # fastavro: only when a schema file is named

    try:
        schema = load_schema(path)
    except SchemaError as exc:
        return f"is not a valid Avro schema: {exc}"
    required = [f["name"] for f in load_schema(None)["fields"] if "default" not in f]
    have = {f.get("name") for f in schema.get("fields", ())}
    missing = [name for name in required if name not in have]
    if missing:
        return f"lacks the fields {', '.join(missing)} every ConversionEvent carries ({path})"
    return None


def _is_country(code: str) -> bool:
    """An assigned ISO 3166-1 alpha-2 code (any case): what Meta's `country` field takes."""
    import pycountry

    return len(code) == 2 and code.isalpha() and pycountry.countries.get(alpha_2=code.upper()) is not None
