"""The README is a newcomer's only guide: every file it names exists, and its Markdown is whole."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_repository_path_the_readme_names_exists() -> None:
    """`stream/...`, `tests/...`, `config/...`, `schemas/...` in backticks are files or folders of the tree
    (after the layout of issue #11 the README still sent readers to stream/normalize.py and ten others)."""
    named = set(re.findall(r"`((?:stream|tests|config|schemas)/[\w./-]*\w/?)`", README))
    assert named, "the README names no path: the pattern is wrong"
    assert sorted(p for p in named if not (ROOT / p).exists()) == []


def test_html_comments_are_opened_and_closed() -> None:
    """A comment's closing `-->` without its opening `<!--` shows its inside as a heading and text."""
    prose = re.sub(r"^```.*?^```", "", README, flags=re.S | re.M)  # diagrams in code blocks draw arrows
    assert prose.count("<!--") == prose.count("-->"), [ln for ln in prose.splitlines() if "-->" in ln]


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_dotted_name_the_readme_names_imports() -> None:
    """`stream.x.y` in backticks and `from stream.x import` lines name a module or an attribute of one
    (the README pointed at stream.contract.validate.REJECTION_REASONS, which lives in results)."""
    named = set(re.findall(r"`(stream(?:\.\w+)+)", README)) | set(re.findall(r"from (stream(?:\.\w+)+) import", README))
    assert named, "the README names no module: the pattern is wrong"
    assert sorted(n for n in named if not _resolves(n)) == []
