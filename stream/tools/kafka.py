"""A local single-node KRaft Apache Kafka broker, assembled from Maven Central jars and run with java.

`capi-stream kafka up|down|status`, the test harness, the demo and the chaos suite all use this one
launcher. Nothing here needs Docker: `mvn` copies the broker's runtime jars into a cache directory that
is reused across runs, and `java` runs `kafka.Kafka` in the background with a pid file.

Layout of a broker's home directory (``--data-dir``)::

    broker.json          ports chosen at format time (the controller port is part of the quorum state)
    server.properties    written on every start
    log4j2.properties
    kafka.pid
    logs/server.log      the broker's own log; logs/kafka.out its stdout/stderr
    data/                log.dirs
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
import shutil
import subprocess
from pathlib import Path

import orjson

from stream.errors import BrokerError, UsageError
from stream.tools.javaservice import (
    DEPENDENCY_PLUGIN,
    JavaService,
    default_home,
    free_port,
    require_mvn,
    run_maven,
)

KAFKA_VERSION = "4.1.1"
# Kafka 4.x is built against slf4j 1.7 and its published POMs carry no logging backend (the release
# tarball adds one); log4j-slf4j-impl is the slf4j 1.x binding, so the broker writes server.log.
LOG4J_VERSION = "2.24.3"
SLF4J_VERSION = "1.7.36"
# Maven 3.8's default dependency plugin is too old for copy-dependencies with includeScope; pin it.
DEFAULT_PORT = 9092
# First start creates __consumer_offsets and elects its leaders; 2-core CI machines need some slack.
READY_TIMEOUT_S = 90.0
# A clean shutdown of a small broker takes 1-5 s; past this we SIGKILL so `down` never hangs.
STOP_TIMEOUT_S = 30.0
# Heap for a test/demo broker on a 24 GiB box; the tarball's default is also 1 GiB.
HEAP = "1g"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.capistream.local</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencyManagement>
    <dependencies>
      <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId>
        <version>{slf4j}</version></dependency>
    </dependencies>
  </dependencyManagement>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId>
      <version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.reqs.name = kafka.request.logger
logger.reqs.level = WARN
"""

# Java properties files have no inline comments, so every comment stands on its own line.
_SERVER_PROPERTIES = """process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={log_dirs}
num.partitions=4
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
offsets.topic.replication.factor=1
# default 50 partitions; 4 makes the first group join fast on a small machine
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
delete.topic.enable=true
log.retention.hours=168
log.segment.bytes=104857600
"""


def default_data_dir() -> Path:
    """The default broker home: $XDG_STATE_HOME or ~/.local/state, then capi-stream/kafka."""
    return default_home("kafka")


@dataclasses.dataclass(frozen=True)
class BrokerStatus:
    """What `status` reports: whether it runs, its pid and its bootstrap address."""

    running: bool
    pid: int | None
    bootstrap: str | None

    @property
    def address(self) -> str | None:
        """Where it answers (the bootstrap), under the name every local service's status shares."""
        return self.bootstrap


class LocalKafka(JavaService):
    """One broker home directory: assemble jars, format, start, wait until ready, stop.

    `start()` is idempotent (an already running broker is left alone) and `stop()` always leaves no
    java process of this home behind.
    """

    cmdline_marker = b"kafka.Kafka"
    stop_timeout = STOP_TIMEOUT_S
    pid_name = "kafka.pid"
    state_name = "broker.json"
    log_name = "logs/server.log"

    def __init__(self, data_dir: Path | None = None, cache_dir: Path | None = None) -> None:
        super().__init__(data_dir or default_data_dir(), cache_dir)
        self.libs = self.cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"

    # -- jars ---------------------------------------------------------------------------------
    def ensure_libs(self) -> Path:
        """Copy the broker's runtime jars from Maven Central into the cache (once) and return the dir.

        Raises UsageError when java or mvn is missing, BrokerError when Maven cannot fetch.
        """
        marker = self.libs / ".complete"
        if marker.is_file():
            return self.libs
        require_mvn("the Kafka jars")
        work = self.libs.parent
        work.mkdir(parents=True, exist_ok=True)
        pom = work / "pom.xml"
        pom.write_text(_POM.format(kafka=KAFKA_VERSION, log4j=LOG4J_VERSION, slf4j=SLF4J_VERSION))
        staging = work / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        run_maven(["-f", str(pom), f"{DEPENDENCY_PLUGIN}:copy-dependencies",
                   "-DincludeScope=runtime", f"-DoutputDirectory={staging}"], f"Kafka {KAFKA_VERSION} jars")
        if not any(staging.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
            raise BrokerError(f"Maven finished but kafka_2.13-{KAFKA_VERSION}.jar is missing in {staging}")
        shutil.rmtree(self.libs, ignore_errors=True)
        staging.rename(self.libs)
        marker.write_text(KAFKA_VERSION + "\n")
        return self.libs

    # -- state ---------------------------------------------------------------------------------
    def status(self) -> BrokerStatus:
        """Whether the broker of this home runs, and where."""
        pid = self.pid()
        port = self._read_state().get("port")
        bootstrap = f"127.0.0.1:{port}" if pid and port else None
        return BrokerStatus(running=pid is not None, pid=pid, bootstrap=bootstrap)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, port: int | None = None, timeout: float = READY_TIMEOUT_S) -> tuple[str, bool]:
        """Start the broker unless it already runs; wait until it serves metadata and groups.

        Returns (bootstrap address, started_now). Raises UsageError for a missing java/mvn or a
        busy port, BrokerError when the broker dies or is not ready in time.
        """
        current = self.status()
        if current.running and current.bootstrap:
            return current.bootstrap, False
        if shutil.which("java") is None:
            raise UsageError("java not found on PATH: Java 17 or newer runs the Kafka broker")
        libs = self.ensure_libs()
        state = self._read_state()
        port = self._port_to_use(port, DEFAULT_PORT)
        controller_port = state.get("controller_port") or free_port()
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)
        self.state_file.write_bytes(orjson.dumps({"port": port, "controller_port": controller_port}))
        props = self.home / "server.properties"
        props.write_text(
            _SERVER_PROPERTIES.format(
                port=port, controller_port=controller_port, log_dirs=self.home / "data"
            )
        )
        (self.home / "log4j2.properties").write_text(_LOG4J2)
        if not (self.home / "data" / "meta.properties").is_file():
            self._format(libs, props)
        self._launch(libs, props)
        bootstrap = f"127.0.0.1:{port}"
        self._wait_ready_at(bootstrap, timeout)
        return bootstrap, True

    def _java_base(self, libs: Path) -> list[str]:
        return [
            "java",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.home / 'logs'}",
            "-cp", f"{libs}/*",
        ]  # fmt: skip

    def _format(self, libs: Path, props: Path) -> None:
        base = self._java_base(libs)
        cluster_id = new_cluster_id()
        fmt = subprocess.run(
            [*base[:1], "-Xmx256m", *base[1:], "kafka.tools.StorageTool", "format", "--standalone",
             "-t", cluster_id, "-c", str(props), "--ignore-formatted"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if fmt.returncode != 0:
            raise BrokerError(f"formatting Kafka storage failed: {(fmt.stderr or fmt.stdout).strip()[:300]}")

    def _launch(self, libs: Path, props: Path) -> None:
        base = self._java_base(libs)
        cmd = [
            base[0], f"-Xms{HEAP}", f"-Xmx{HEAP}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true", *base[1:], "kafka.Kafka", str(props),
        ]  # fmt: skip
        self._spawn(cmd, self.home / "logs" / "kafka.out")

    def _wait_ready_at(self, bootstrap: str, timeout: float) -> None:
        self._wait_ready(
            lambda: probe(bootstrap), timeout,
            died=lambda: (f"the Kafka broker exited during start-up; see {self.log_file}: "
                          f"{_last_error_line(self.log_file)}"),
            late=lambda last: (f"Kafka at {bootstrap} not ready after {timeout:.0f}s ({last}); "
                               f"see {self.log_file}"),
        )  # fmt: skip


def new_cluster_id() -> str:
    """A KRaft cluster id like `kafka-storage random-uuid` prints (Kafka's Uuid): 16 random bytes in URL-safe
    base64 without padding, never Kafka's reserved all-zero or ...01 ids, never starting with "-" (a
    command line would read it as an option). Made here, it spares each new broker a JVM start."""
    while True:
        raw = secrets.token_bytes(16)
        text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        if raw not in _RESERVED_UUIDS and not text.startswith("-"):
            return text


_RESERVED_UUIDS = (bytes(16), bytes(15) + b"\x01")


def probe(bootstrap: str, timeout: float = 2.0) -> tuple[bool, str]:
    """Ask the broker for metadata and for a group coordinator. Returns (ready, reason if not)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from stream.logs import KAFKA_LOGGER

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "capi-stream-readiness-probe",
        "enable.auto.commit": False,
        "log_level": 0,
        "socket.timeout.ms": int(timeout * 1000),
        "logger": KAFKA_LOGGER,
    })  # fmt: skip
    try:
        md = consumer.list_topics(timeout=timeout)
        if not md.brokers:
            return False, "no broker in metadata"
        # committed() goes through FindCoordinator: it succeeds only when the group coordinator serves
        consumer.committed([TopicPartition("capi-stream-readiness-probe", 0)], timeout=timeout)
    except KafkaException as exc:
        return False, str(exc.args[0]) if exc.args else "kafka error"
    finally:
        consumer.close()
    return True, ""


def _last_error_line(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    errors = [ln for ln in lines if " ERROR " in ln or "Exception" in ln]
    return (errors or lines or ["empty log"])[-1][:300]
