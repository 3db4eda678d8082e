"""The local Apicurio Registry launcher: Java discovery and the commands that need no running registry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stream.errors import UsageError
from stream.tools import registry


def test_find_java_returns_a_java_of_at_least_the_minimum() -> None:
    """On this machine kind a Java 21+ sits beside the default Java 17; find_java picks one that qualifies."""
    try:
        java = registry.find_java()
    except UsageError as exc:
        pytest.skip(f"no Java 21+ here: {exc}")
    version = registry.java_version(java)
    assert version is not None
    assert version >= registry.MIN_JAVA


def test_find_java_says_what_is_missing_when_nothing_is_new_enough() -> None:
    """Asking for a Java no machine has gives a UsageError naming the version and what was found."""
    with pytest.raises(UsageError, match=r"needs Java 999 or newer; found .*\(\d+\)"):
        registry.find_java(minimum=999)


def test_status_and_down_of_an_empty_home_say_which_directory(tmp_path: Path) -> None:
    """`registry status|down` on a home with no registry say so and name the directory they looked at."""
    home = tmp_path / "reg"
    status = subprocess.run([sys.executable, "-m", "stream", "registry", "status", "--data-dir", str(home)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert status.returncode == 1
    assert status.stdout.strip() == f"registry not running ({home})"
    down = subprocess.run([sys.executable, "-m", "stream", "registry", "down", "--data-dir", str(home)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert down.returncode == 0
    assert f"registry was not running ({home})" in down.stderr


def test_the_app_is_taken_from_where_maven_was_told_to_put_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Maven's local repository follows Java's user.home (the passwd entry), not $HOME: in a container with
    another HOME, or a fresh HOME, the archive was looked for in $HOME/.m2 and 'missing' although Maven had
    fetched it. The archive must be copied to a directory we name and read from there."""
    import io
    import tarfile

    from stream.tools import registry

    def fake_maven(args: list[str], what: str) -> None:
        out = next(Path(a.split("=", 1)[1]) for a in args if a.startswith("-DoutputDirectory="))
        out.mkdir(parents=True, exist_ok=True)
        with tarfile.open(out / f"apicurio-registry-app-{registry.APICURIO_VERSION}-all.tar.gz", "w:gz") as tar:
            info = tarfile.TarInfo("apicurio-registry-app/quarkus-run.jar")
            info.size = 3
            tar.addfile(info, io.BytesIO(b"jar"))

    monkeypatch.setattr(registry, "run_maven", fake_maven)
    monkeypatch.setattr(registry, "require_mvn", lambda what: None)
    monkeypatch.setenv("HOME", str(tmp_path / "elsewhere"))
    app = registry.LocalRegistry(data_dir=tmp_path / "home", cache_dir=tmp_path / "cache").ensure_app()
    assert (app / "quarkus-run.jar").read_bytes() == b"jar"
    assert not list((tmp_path / "cache").glob("*.download")), "the downloaded archive is not kept twice"


def _fake_maven_with(members: list[tuple[str, bytes]]) -> object:
    import io
    import tarfile

    def fake_maven(args: list[str], what: str) -> None:
        out = next(Path(a.split("=", 1)[1]) for a in args if a.startswith("-DoutputDirectory="))
        out.mkdir(parents=True, exist_ok=True)
        with tarfile.open(out / f"apicurio-registry-app-{registry.APICURIO_VERSION}-all.tar.gz", "w:gz") as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

    return fake_maven


def _python_without_extraction_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.11.0-3.11.3 (Debian 12's python3 is 3.11.2) has no `filter` argument to extractall."""
    import tarfile

    plain = tarfile.TarFile.extractall

    def extractall(self: tarfile.TarFile, path: str = ".", members: object = None, *,
                   numeric_owner: bool = False, **kwargs: object) -> None:
        if kwargs:
            raise TypeError(f"TarFile.extractall() got an unexpected keyword argument {next(iter(kwargs))!r}")
        plain(self, path, members, numeric_owner=numeric_owner)  # type: ignore[arg-type]

    monkeypatch.setattr(tarfile.TarFile, "extractall", extractall)
    monkeypatch.delattr(tarfile, "data_filter", raising=False)


def test_the_app_unpacks_on_a_python_without_extraction_filters(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`registry up` on Debian 12's python3 (3.11.2) failed with TypeError: extractall(filter=...) came in 3.11.4."""
    _python_without_extraction_filters(monkeypatch)
    monkeypatch.setattr(registry, "run_maven", _fake_maven_with([("apicurio-registry-app/quarkus-run.jar", b"jar")]))
    monkeypatch.setattr(registry, "require_mvn", lambda what: None)
    app = registry.LocalRegistry(data_dir=tmp_path / "home", cache_dir=tmp_path / "cache").ensure_app()
    assert (app / "quarkus-run.jar").read_bytes() == b"jar"


@pytest.mark.parametrize("filters", [True, False], ids=["with filters", "without filters"])
def test_an_archive_member_outside_the_app_directory_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                filters: bool) -> None:
    """A member that would land outside the directory (`../`, an absolute path) is refused, whatever the Python."""
    from stream.errors import BrokerError

    if not filters:
        _python_without_extraction_filters(monkeypatch)
    monkeypatch.setattr(registry, "run_maven", _fake_maven_with(
        [("apicurio-registry-app/quarkus-run.jar", b"jar"), ("../../escaped.txt", b"x")]))
    monkeypatch.setattr(registry, "require_mvn", lambda what: None)
    with pytest.raises(BrokerError, match=r"escaped\.txt"):
        registry.LocalRegistry(data_dir=tmp_path / "home", cache_dir=tmp_path / "cache").ensure_app()
    assert not list(tmp_path.rglob("escaped.txt"))
