"""What the local Java services (the Kafka broker, Apicurio Registry) share: Maven fetches, ports, pid files.

A service has a home directory holding a pid file and a JSON state file of the ports it was started
with. It runs as a java process in a new session (it outlives the CLI and a Ctrl-C at the CLI does not
reach it); `pid()` trusts the pid file only while that pid is a live, non-zombie process whose command
line names the service, so a stale file from a crash or a reused pid never counts. `stop()` sends SIGTERM,
then SIGKILL, and never hangs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from stream.errors import BrokerError, UsageError

# How long a stop waits for the process to go after a SIGKILL.
KILL_WAIT_S = 10.0


def default_cache_dir() -> Path:
    """Where fetched jars and apps live: $CAPI_STREAM_CACHE_DIR, else $XDG_CACHE_HOME or ~/.cache."""
    if env := os.environ.get("CAPI_STREAM_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "capi-stream"


def default_home(name: str) -> Path:
    """The default home of a service: $XDG_STATE_HOME or ~/.local/state, then capi-stream/<name>."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "capi-stream" / name


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def require_mvn(what: str) -> None:
    """UsageError naming `what` Maven is needed for when mvn is not on PATH."""
    if shutil.which("mvn") is None:
        raise UsageError(f"mvn not found on PATH: Maven is needed once to fetch {what}")


# the plugin that copies artifacts out of Maven Central, pinned so a run does not depend on Maven's default
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"


def run_maven(args: Sequence[str], what: str) -> None:
    """Run `mvn -B -q <args>`; BrokerError with Maven's first ERROR line when it fails."""
    proc = subprocess.run(["mvn", "-B", "-q", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "ERROR" in ln] or ["(no output)"]
        raise BrokerError(f"Maven could not fetch {what}: {lines[0].strip()}")


def is_service_process(pid: int, marker: bytes) -> bool:
    """True while `pid` is a live (not zombie) process whose command line holds `marker`.

    Right after exec the JVM's command line can read as empty for a moment; a live process with an
    empty command line counts as ours.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    if state in ("Z", "X"):
        return False
    return not cmdline or marker in cmdline


def wait_gone(pid: int, marker: bytes, timeout: float) -> bool:
    """Wait up to `timeout` for the service process to go; True when it went."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_service_process(pid, marker):
            return True
        time.sleep(0.1)
    return not is_service_process(pid, marker)


class JavaService:
    """One home directory of a Java service: its pid file, its state file, start-up wait, stop and kill.

    Subclasses name the files, the `cmdline_marker` their process's command line holds, and `stop_timeout`.
    """

    cmdline_marker: bytes
    stop_timeout: float
    # the files in its home, by their path below it
    pid_name: str
    state_name: str
    log_name: str

    def __init__(self, home: Path, cache_dir: Path | None = None) -> None:
        self.home = home.resolve()
        self.cache_dir = (cache_dir or default_cache_dir()).resolve()

    @property
    def pid_file(self) -> Path:
        return self.home / self.pid_name

    @property
    def state_file(self) -> Path:
        """The JSON object of the ports it was last started with."""
        return self.home / self.state_name

    @property
    def log_file(self) -> Path:
        return self.home / self.log_name

    def _read_state(self) -> dict[str, int]:
        if not self.state_file.is_file():
            return {}
        state: dict[str, int] = orjson.loads(self.state_file.read_bytes())
        return state

    def _port_to_use(self, port: int | None, default: int) -> int:
        """The port asked for, else the one of the last start, else `default`; UsageError when it is busy."""
        chosen = port or self._read_state().get("port") or default
        if port_in_use(chosen):
            raise UsageError(f"port {chosen} on 127.0.0.1 is already in use; pick another with --port")
        return chosen

    def pid(self) -> int | None:
        """The pid of this home's service if it is alive, else None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if is_service_process(pid, self.cmdline_marker):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def _spawn(self, cmd: Sequence[str], out: Path, cwd: Path | None = None) -> None:
        """Start `cmd` in the background in a new session, its output appended to `out`; write the pid file."""
        with out.open("ab") as stream:
            # a new session: the service outlives this process and a Ctrl-C at the CLI does not reach it
            proc = subprocess.Popen(cmd, cwd=cwd, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid_file.write_text(f"{proc.pid}\n")

    def _wait_ready(self, probe: Callable[[], tuple[bool, str]], timeout: float,
                    died: Callable[[], str], late: Callable[[str], str]) -> None:
        """Poll `probe` until it says ready. BrokerError(died()) when the process exits first; after
        `timeout` the service is stopped and BrokerError(late(the probe's last reason)) raised."""
        deadline = time.monotonic() + timeout
        last_error = "no answer"
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise BrokerError(died())
            ok, last_error = probe()
            if ok:
                return
            time.sleep(0.25)
        self.stop()
        raise BrokerError(late(last_error))

    def stop(self, timeout: float | None = None) -> bool:
        """SIGTERM, then SIGKILL after `timeout` (default: the service's own). Returns True if one ran."""
        pid = self.pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not wait_gone(pid, self.cmdline_marker, self.stop_timeout if timeout is None else timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_gone(pid, self.cmdline_marker, KILL_WAIT_S)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL the service, as a crash would (chaos tests); its home is kept for a restart."""
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_gone(pid, self.cmdline_marker, KILL_WAIT_S)
        self.pid_file.unlink(missing_ok=True)
