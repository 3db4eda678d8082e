"""A local Apicurio Registry 3.3.3, fetched from Maven Central and run with a Java 21+, like the broker.

`capi-stream registry up|down|status` and the integration tests use this one launcher. Its
Confluent-compatible API (`/apis/ccompat/v7`) is what `decode.schema_registry_url` points at; the
Confluent wire format's schema ids come from it. Storage is in memory: every start is an empty registry.

Layout of a registry's home directory (``--data-dir``)::

    registry.json   the ports of the last start
    registry.pid
    registry.out    the application's stdout/stderr
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import tarfile
import urllib.error
import urllib.request
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

APICURIO_VERSION = "3.3.3"
# Maven Central carries the prebuilt Quarkus application as the `all` classifier of the app artifact
ARTIFACT = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
# the application is compiled for Java 21 (class file version 65)
MIN_JAVA = 21
DEFAULT_PORT = 8081
CCOMPAT_PATH = "/apis/ccompat/v7"
# cold start measured at ~12 s on this machine kind; a loaded 2-core CI machine needs slack
READY_TIMEOUT_S = 120.0
# a plain SIGTERM stops it in ~2 s
STOP_TIMEOUT_S = 20.0
# small heap, serial GC, C1 only: a test registry holds a handful of schemas
JVM_FLAGS = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
_JVM_DIR = Path("/usr/lib/jvm")


def default_registry_dir() -> Path:
    """The default registry home: $XDG_STATE_HOME or ~/.local/state, then capi-stream/registry."""
    return default_home("registry")


def java_version(java: Path) -> int | None:
    """The feature version of a java binary (17, 21, 25), or None when it does not run."""
    try:
        proc = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def find_java(minimum: int = MIN_JAVA) -> Path:
    """A java binary of at least `minimum`: $JAVA_HOME, then every JDK in /usr/lib/jvm, then PATH.

    UsageError saying what is missing when none is found.
    """
    candidates: list[Path] = []
    if home := os.environ.get("JAVA_HOME"):
        candidates.append(Path(home) / "bin" / "java")
    if _JVM_DIR.is_dir():
        candidates += sorted((p / "bin" / "java" for p in _JVM_DIR.iterdir()), reverse=True)
    if on_path := shutil.which("java"):
        candidates.append(Path(on_path))
    seen: list[str] = []
    for java in candidates:
        if not java.is_file():
            continue
        version = java_version(java)
        seen.append(f"{java} ({version})")
        if version is not None and version >= minimum:
            return java
    raise UsageError(f"Apicurio Registry {APICURIO_VERSION} needs Java {minimum} or newer; found "
                     f"{', '.join(seen) or 'no java'} (install a JDK {minimum}+ or set JAVA_HOME)")


@dataclasses.dataclass(frozen=True)
class RegistryStatus:
    """Whether a registry home has a live registry, and where."""

    running: bool
    pid: int | None
    url: str | None
    home: Path

    @property
    def address(self) -> str | None:
        """Where it answers (the Confluent-compatible URL), under the name every local service's status shares."""
        return self.url


class LocalRegistry(JavaService):
    """One registry home: fetch the app once, start it, wait until ready, stop it."""

    cmdline_marker = b"quarkus-run.jar"
    stop_timeout = STOP_TIMEOUT_S
    pid_name = "registry.pid"
    state_name = "registry.json"
    log_name = "registry.out"

    def __init__(self, data_dir: Path | None = None, cache_dir: Path | None = None) -> None:
        super().__init__(data_dir or default_registry_dir(), cache_dir)
        self.app_dir = self.cache_dir / f"apicurio-registry-{APICURIO_VERSION}"

    def ensure_app(self) -> Path:
        """Fetch and unpack the application from Maven Central into the cache (once); return its dir."""
        marker = self.app_dir / ".complete"
        if marker.is_file():
            return self.app_dir
        require_mvn("Apicurio Registry")
        # copied to a directory we name: Maven's local repository follows Java's user.home (the passwd
        # entry), which need not be $HOME (containers, a fresh HOME)
        download = self.app_dir.with_name(self.app_dir.name + ".download")
        shutil.rmtree(download, ignore_errors=True)
        run_maven([f"{DEPENDENCY_PLUGIN}:copy", f"-Dartifact={ARTIFACT}", f"-DoutputDirectory={download}"], ARTIFACT)
        archive = download / f"apicurio-registry-app-{APICURIO_VERSION}-all.tar.gz"
        if not archive.is_file():
            raise BrokerError(f"Maven finished but {archive} is missing")
        staging = self.app_dir.with_name(self.app_dir.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        _unpack(archive, staging)
        runner = next(staging.rglob("quarkus-run.jar"), None)
        if runner is None:
            raise BrokerError(f"{archive} holds no quarkus-run.jar")
        shutil.rmtree(self.app_dir, ignore_errors=True)
        runner.parent.rename(self.app_dir)
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(download, ignore_errors=True)
        marker.write_text(APICURIO_VERSION + "\n")
        return self.app_dir

    def status(self) -> RegistryStatus:
        """Whether the registry of this home runs, and its Confluent-compatible URL."""
        pid = self.pid()
        port = self._read_state().get("port")
        url = f"http://127.0.0.1:{port}{CCOMPAT_PATH}" if pid and port else None
        return RegistryStatus(running=pid is not None, pid=pid, url=url, home=self.home)

    def start(self, port: int | None = None, timeout: float = READY_TIMEOUT_S) -> tuple[str, bool]:
        """Start unless already running; wait until ready. Returns (Confluent-compatible URL, started now).

        UsageError for a missing Java 21+/mvn or a busy port, BrokerError when it dies or is not ready in time.
        """
        current = self.status()
        if current.running and current.url:
            return current.url, False
        java = find_java()
        app = self.ensure_app()
        port = self._port_to_use(port, DEFAULT_PORT)
        management = free_port()
        self.home.mkdir(parents=True, exist_ok=True)
        self.state_file.write_bytes(orjson.dumps({"port": port, "management_port": management}))
        cmd = [str(java), *JVM_FLAGS,
               "-Dquarkus.http.host=127.0.0.1", f"-Dquarkus.http.port={port}",
               "-Dquarkus.management.host=127.0.0.1", f"-Dquarkus.management.port={management}",
               "-Dquarkus.http.access-log.enabled=false", "-jar", "quarkus-run.jar"]  # fmt: skip
        self._spawn(cmd, self.log_file, cwd=app)
        self._wait_ready_on(management, timeout)
        return f"http://127.0.0.1:{port}{CCOMPAT_PATH}", True

    def _wait_ready_on(self, management: int, timeout: float) -> None:
        self._wait_ready(
            lambda: _health(management), timeout,
            died=lambda: f"Apicurio Registry exited during start-up; see {self.log_file}",
            late=lambda _last: f"Apicurio Registry not ready after {timeout:.0f}s; see {self.log_file}",
        )


def _health(management: int) -> tuple[bool, str]:
    """Whether the registry's management port says it is ready."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{management}/health/ready", timeout=2) as resp:
            return resp.status == 200, f"HTTP {resp.status}"
    except (urllib.error.URLError, OSError) as exc:
        return False, str(exc)


def register_schema(url: str, subject: str, schema: str) -> int:
    """Register an Avro schema under `subject` through the Confluent-compatible API; returns its id."""
    body = orjson.dumps({"schema": schema, "schemaType": "AVRO"})
    request = urllib.request.Request(f"{url}/subjects/{subject}/versions", data=body, method="POST",  # noqa: S310
                                     headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - the URL names our registry
            return int(orjson.loads(resp.read())["id"])
    except urllib.error.HTTPError as exc:
        raise BrokerError(f"registry at {url} refused the schema for {subject}: HTTP {exc.code} "
                          f"{exc.read()[:200]!r}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise BrokerError(f"registry at {url} does not answer: {exc}") from exc


def _unpack(archive: Path, dest: Path) -> None:
    """Extract `archive` into `dest`, refusing (BrokerError) a member that would land outside it: a `../` or
    absolute name, a link pointing out, a device. Python 3.11.4+ also applies tarfile's "data" filter;
    3.11.0-3.11.3 (Debian 12's python3 is 3.11.2) have no `filter` argument, and the checks here are the guard."""
    root = dest.resolve()

    def inside(path: Path) -> bool:
        return path.resolve().is_relative_to(root)

    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for m in members:
                target = dest / m.name
                link = (target.parent / m.linkname if m.issym() else dest / m.linkname) if m.issym() or m.islnk() \
                    else target
                if not (inside(target) and inside(link)) or m.isdev():
                    raise BrokerError(f"{archive}: member {m.name!r} would be unpacked outside {dest}; refused")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:
                tar.extractall(dest, members=members)  # noqa: S202 - every member checked above
    except (tarfile.TarError, OSError) as exc:
        raise BrokerError(f"cannot unpack {archive}: {exc}") from exc

