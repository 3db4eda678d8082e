"""Shared by the tests of config/ (alert rules, dashboard, Kubernetes manifests): what capi-stream really
exports, a small PromQL reader that finds the metric and label names a query uses, and promtool."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from stream import config

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"

# Labels Prometheus adds to every scraped series (static configs, Kubernetes service discovery, the
# Prometheus operator): a query may group or match on them although the code does not export them.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "container", "service", "endpoint"})


@dataclasses.dataclass(frozen=True)
class Exported:
    """The series names one scrape of capi-stream can hold, with their label names and seen label values."""

    labels: dict[str, frozenset[str]]
    values: dict[tuple[str, str], frozenset[str]]


def _sample_names(name: str, kind: str) -> list[str]:
    """The series a metric family of this type is written as in the Prometheus text format."""
    if kind == "counter":
        return [name + "_total", name + "_created"]
    if kind == "histogram":
        return [name + "_bucket", name + "_sum", name + "_count", name + "_created"]
    if kind == "summary":
        return [name, name + "_sum", name + "_count", name + "_created"]
    if kind == "info":
        return [name + "_info"]
    return [name]


@functools.cache
def exported_metrics() -> Exported:
    """Every metric capi-stream's /metrics serves, read from the code's own registry.

    A real Pipeline (built from config/example.toml, nothing started) is registered the way
    `capi-stream run` does it (MetricsServer's CollectorRegistry) and collected once. Families whose
    rows are empty until events flow still name their type and label names, so the list is complete.
    """
    from stream.pipeline.metrics import MetricsServer
    from stream.pipeline.runner import Pipeline

    settings = config.load(CONFIG / "example.toml", env={})
    server = MetricsServer(Pipeline(settings), "127.0.0.1", 0)
    labels: dict[str, set[str]] = {}
    values: dict[tuple[str, str], set[str]] = {}
    for family in server.registry.collect():
        names = set(getattr(family, "_labelnames", ()))
        for sample in family.samples:
            names.update(sample.labels)
        for series in _sample_names(family.name, family.type):
            labels.setdefault(series, set()).update(names | ({"le"} if series.endswith("_bucket") else set()))
        for sample in family.samples:
            for label, value in sample.labels.items():
                values.setdefault((sample.name, label), set()).add(value)
    assert labels, "the collector exported nothing: the name check would be empty"
    return Exported({k: frozenset(v) for k, v in labels.items()}, {k: frozenset(v) for k, v in values.items()})


@dataclasses.dataclass(frozen=True)
class Matcher:
    """One label matcher of a selector: name, operator, value."""

    label: str
    op: str
    value: str


@dataclasses.dataclass(frozen=True)
class Selector:
    """A vector selector: its metric name and its label matchers."""

    metric: str
    matchers: tuple[Matcher, ...]


@dataclasses.dataclass(frozen=True)
class QueryNames:
    """What a PromQL expression refers to."""

    selectors: tuple[Selector, ...]
    grouping: frozenset[str]  # labels in by/without/on/ignoring/group_left/group_right lists


_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}
# aggregation operators may be followed by `by (...)`/`without (...)` before their parenthesis
_AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
                 "quantile", "limitk", "limit_ratio"}
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_STRING = r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`"
_MATCHER = re.compile(rf"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*({_STRING})\s*,?")


def _skip_string(q: str, i: int) -> int:
    quote = q[i]
    i += 1
    while i < len(q) and q[i] != quote:
        i += 2 if q[i] == "\\" and quote != "`" else 1
    return i + 1


def _matchers(body: str) -> tuple[Matcher, ...]:
    found, pos = [], 0
    while pos < len(body.strip()):
        m = _MATCHER.match(body, pos)
        if m is None:
            raise ValueError(f"cannot read label matchers {{{body}}}")
        found.append(Matcher(m.group(1), m.group(2), m.group(3)[1:-1]))
        pos = m.end()
    return tuple(found)


def promql_names(query: str) -> QueryNames:
    """The metric names, label matchers and grouping labels a PromQL expression uses.

    A reader, not a parser (promtool checks the syntax): strings, durations, numbers and Grafana
    variables ($job, $__rate_interval) are skipped; an identifier followed by `(` is a function or an
    aggregation; the lists after by/without/on/ignoring/group_left/group_right are label names.
    """
    selectors: list[Selector] = []
    grouping: set[str] = set()
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        if c.isspace():
            i += 1
        elif c == "#":
            i = query.find("\n", i) if "\n" in query[i:] else n
        elif c in "\"'`":
            i = _skip_string(query, i)
        elif c == "$":
            i += 1
            if i < n and query[i] == "{":
                i = query.index("}", i) + 1
            else:
                while i < n and (query[i].isalnum() or query[i] == "_"):
                    i += 1
        elif c == "[":
            i = query.index("]", i) + 1
        elif c == "{":
            end = i
            while query[end] != "}":
                end = _skip_string(query, end) if query[end] in "\"'`" else end + 1
            selectors.append(Selector("", _matchers(query[i + 1:end])))
            i = end + 1
        elif c.isdigit() or (c == "." and i + 1 < n and query[i + 1].isdigit()):
            while i < n and (query[i].isalnum() or query[i] in "._"):
                i += 1
        elif (m := _IDENT.match(query, i)) is not None:
            word, i = m.group(0), m.end()
            j = i
            while j < n and query[j].isspace():
                j += 1
            nxt = query[j] if j < n else ""
            if word.lower() in _GROUPING:
                if nxt == "(":
                    close = query.index(")", j)
                    grouping.update(x.strip() for x in query[j + 1:close].split(",") if x.strip())
                    i = close + 1
            elif word.lower() in _KEYWORDS or word in _AGGREGATIONS or nxt == "(":
                pass
            elif nxt == "{":
                end = j
                while query[end] != "}":
                    end = _skip_string(query, end) if query[end] in "\"'`" else end + 1
                selectors.append(Selector(word, _matchers(query[j + 1:end])))
                i = end + 1
            else:
                selectors.append(Selector(word, ()))
        else:
            i += 1
    named = []
    for s in selectors:
        name = next((m.value for m in s.matchers if m.label == "__name__" and m.op == "="), s.metric)
        named.append(Selector(name, s.matchers))
    return QueryNames(tuple(named), frozenset(grouping))


def unknown_names(query: str, exported: Exported) -> list[str]:
    """What a query names that capi-stream does not export: metrics, labels, and label values."""
    found = promql_names(query)
    problems: list[str] = []
    used_labels: set[str] = set()
    for sel in found.selectors:
        if not sel.metric:
            problems.append(f"a selector without a metric name: {sel.matchers}")
            continue
        if sel.metric not in exported.labels:
            problems.append(f"metric {sel.metric}")
            continue
        used_labels |= exported.labels[sel.metric]
        for m in sel.matchers:
            if m.label == "__name__":
                continue
            if m.label not in exported.labels[sel.metric] | TARGET_LABELS:
                problems.append(f"label {m.label} of {sel.metric}")
                continue
            seen = exported.values.get((sel.metric, m.label))
            if seen is None or "$" in m.value:
                continue
            literal = m.value.split("|") if m.op in ("=~", "!~") else [m.value]
            if all(re.fullmatch(r"[A-Za-z0-9_.:-]+", v) for v in literal):
                problems += [f'{sel.metric}{{{m.label}="{v}"}}: the code exports {m.label} values {sorted(seen)}'
                             for v in literal if v not in seen]
    for label in found.grouping - used_labels - TARGET_LABELS:
        problems.append(f"grouping label {label}")
    return problems


def promtool() -> str:
    """The promtool binary; missing is a failure in CI (CI=true) and a skip on a developer's machine."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("promtool is not installed: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return path


def run_promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """promtool with these arguments; its output is kept for the assertion message."""
    return subprocess.run([promtool(), *args], capture_output=True, text=True, check=False, timeout=120, cwd=cwd)
