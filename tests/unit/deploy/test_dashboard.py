"""config/grafana: the dashboard shows what the on-call SRE needs, queries only what the code exports, is
valid PromQL, and docker compose provisions it next to a Prometheus that loads the alert rules."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream.contract import meta
from tests.support.deploy import CONFIG, ROOT, exported_metrics, promql_names, run_promtool, unknown_names

DASHBOARD = CONFIG / "grafana" / "dashboards" / "capi-stream.json"
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _queries() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in _panels() for t in p["targets"]]


def _grouped(metric: str) -> set[str]:
    """The labels the dashboard groups a metric by, over all its queries."""
    labels: set[str] = set()
    for _, expr in _queries():
        found = promql_names(expr)
        if any(s.metric == metric for s in found.selectors):
            labels |= found.grouping
    return labels


def test_every_query_names_only_what_the_code_exports() -> None:
    exported = exported_metrics()
    assert _queries()
    for title, expr in _queries():
        assert unknown_names(expr, exported) == [], title
    for variable in _dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            assert unknown_names(variable["definition"].removeprefix("label_values(").split(",")[0],
                                 exported) == []


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    """Throughput, lag, in-flight, the oldest unacked age, destination states, retries and dead letters by
    reason, match-key coverage."""
    used = {s.metric for _, expr in _queries() for s in promql_names(expr).selectors}
    assert {"capi_stream_consumed_total", "capi_stream_events_acked_total", "capi_stream_consumer_lag",
            "capi_stream_in_flight_events", "capi_stream_oldest_unacked_event_age_seconds",
            "capi_stream_destination_state", "capi_stream_retries_total", "capi_stream_dead_lettered_total",
            "capi_stream_quality_match_key_total", "capi_stream_quality_events_total"} <= used
    assert "reason" in _grouped("capi_stream_dead_lettered_total")
    assert "class" in _grouped("capi_stream_retries_total")
    assert {"destination", "key"} <= _grouped("capi_stream_quality_match_key_total")
    assert {"destination", "state"} <= _grouped("capi_stream_destination_state")
    assert {"topic", "partition"} <= _grouped("capi_stream_consumer_lag")


def _alert_thresholds_days() -> set[int]:
    rules = yaml.safe_load((CONFIG / "prometheus" / "alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    return {int(m) for e in exprs for m in re.findall(r"oldest_unacked_event_age_seconds > (\d+) \* 86400", e)}


def test_the_age_panel_draws_metas_cliff_and_the_alerts() -> None:
    """The 7-day line is the code's MAX_EVENT_AGE_S; the other lines are the alert thresholds."""
    panel = next(p for p in _panels() if p["type"] == "timeseries"
                 and "capi_stream_oldest_unacked_event_age_seconds" in p["targets"][0]["expr"])
    defaults = panel["fieldConfig"]["defaults"]
    steps = {s["value"] for s in defaults["thresholds"]["steps"] if s["value"] is not None}
    assert max(steps) == meta.MAX_EVENT_AGE_S
    assert _alert_thresholds_days() == {5, 6}
    assert steps == {d * 86400 for d in _alert_thresholds_days()} | {meta.MAX_EVENT_AGE_S}
    assert defaults["custom"]["thresholdsStyle"]["mode"] in ("line", "line+area", "dashed")
    assert defaults["unit"] == "s"


def test_the_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query (Grafana's variables replaced by what Grafana would put there)."""
    grafana_vars = {"$__rate_interval": "1m", "$__range": "6h", "$__interval": "30s", "$job": ".+"}
    rules = []
    for n, (title, expr) in enumerate(_queries()):
        for var, value in grafana_vars.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"{title}: a Grafana variable the test does not know"
        rules.append({"record": f"dashboard:query_{n}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = run_promtool("check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_panel_reads_the_chosen_prometheus() -> None:
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in _panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
    ids = [p["id"] for p in _dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in _dashboard()["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells.get((x, y))}"
                cells[(x, y)] = panel["title"]


def _mounts(service: str) -> dict[str, Path]:
    """container path -> repository path of a compose service's bind mounts."""
    found = {}
    for volume in COMPOSE["services"][service]["volumes"]:
        host, container = volume.split(":")[:2]
        found[container] = (ROOT / host).resolve()
    return found


def test_compose_provisions_the_dashboard_and_its_data_source() -> None:
    mounts = _mounts("grafana")
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning == (CONFIG / "grafana" / "provisioning").resolve()
    providers = yaml.safe_load((provisioning / "dashboards" / "capi-stream.yml").read_text())["providers"]
    (provider,) = providers
    assert mounts[provider["options"]["path"]] == DASHBOARD.parent.resolve()
    home = COMPOSE["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert mounts[str(Path(home).parent)] / Path(home).name == DASHBOARD.resolve()
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus"
    assert source["uid"] == next(v for v in _dashboard()["templating"]["list"]
                                 if v["name"] == "datasource")["current"]["value"]
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in COMPOSE["services"]
    assert "127.0.0.1:9090:9090" in COMPOSE["services"]["prometheus"]["ports"]
    assert all(p.startswith("127.0.0.1:") for p in COMPOSE["services"]["grafana"]["ports"])


def test_compose_prometheus_loads_the_alert_rules() -> None:
    mounts = _mounts("prometheus")
    command = COMPOSE["services"]["prometheus"]["command"]
    config_file = Path(next(a for a in command if a.startswith("--config.file=")).split("=", 1)[1])
    folder = mounts[str(config_file.parent)]
    assert folder == (CONFIG / "prometheus").resolve()
    prom = yaml.safe_load((folder / config_file.name).read_text())
    assert [(folder / f).resolve() for f in prom["rule_files"]] == [(CONFIG / "prometheus" / "alerts.yml").resolve()]
    proc = run_promtool("check", "config", str(folder / config_file.name))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("bad", ["rate(capi_stream_consumed[5m])", 'capi_stream_destination_state{state="stuck"}'])
def test_a_dashboard_query_the_code_does_not_export_is_caught(bad: str) -> None:
    assert unknown_names(bad, exported_metrics())


def test_the_state_table_colours_every_state_the_code_exports() -> None:
    """A state added to the code gets a colour here too (else it shows uncoloured, easy to miss)."""
    table = next(p for p in _panels() if p["type"] == "table"
                 and "capi_stream_destination_state" in p["targets"][0]["expr"])
    (override,) = [o for o in table["fieldConfig"]["overrides"] if o["matcher"]["options"] == "state"]
    (mappings,) = [p["value"] for p in override["properties"] if p["id"] == "mappings"]
    coloured = {state for m in mappings for state in m["options"]}
    assert exported_metrics().values[("capi_stream_destination_state", "state")] <= coloured


def test_the_quality_panel_draws_every_exported_target_next_to_its_share() -> None:
    """The shares the signal-quality alerts watch, per destination, with each [quality] target as a line."""
    panel = next(p for p in _panels() if any("capi_stream_quality_target" in t["expr"] for t in p["targets"]))
    found = [promql_names(t["expr"]) for t in panel["targets"]]
    (targets,) = [f for f in found if any(s.metric == "capi_stream_quality_target" for s in f.selectors)]
    assert targets.grouping == {"target"}  # every target the code exports, none picked by name
    assert exported_metrics().values[("capi_stream_quality_target", "target")] == {
        "identifier_share", "revenue_value_share", "acceptance_rate", "user_consistency"}
    used = {s.metric for f in found for s in f.selectors}
    assert {"capi_stream_quality_with_identifier_total", "capi_stream_quality_revenue_with_value_total",
            "capi_stream_quality_meta_rejected_total", "capi_stream_quality_rejected_total",
            "capi_stream_quality_identity_inconsistent_ids_total", "capi_stream_quality_acked_on_time_total"} <= used
    assert all("destination" in f.grouping for f in found if f is not targets)
    assert panel["fieldConfig"]["defaults"]["unit"] == "percentunit"
