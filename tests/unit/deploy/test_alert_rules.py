"""config/prometheus/alerts.yml: valid for promtool, each alert proven to fire and to stay quiet by
`promtool test rules`, every clause of every alert needed by those tests, and every name it queries
exported by the code."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.deploy import CONFIG, exported_metrics, promql_names, run_promtool, unknown_names

RULES = CONFIG / "prometheus" / "alerts.yml"
RULE_TESTS = CONFIG / "prometheus" / "alerts.test.yml"
ALERTS = {"CapiStreamEventsNearMetaCliff", "CapiStreamEventsAtMetaCliff", "CapiStreamDestinationDown",
          "CapiStreamDeadLetterSurge", "CapiStreamPartitionStuck", "CapiStreamIdentifierShareLow",
          "CapiStreamRevenueValueShareLow", "CapiStreamAcceptanceRateLow", "CapiStreamUserConsistencyLow"}
# the signal-quality alerts and the [quality] target each compares with (capi_stream_quality_target)
QUALITY_TARGETS = {"CapiStreamIdentifierShareLow": "identifier_share",
                   "CapiStreamRevenueValueShareLow": "revenue_value_share",
                   "CapiStreamAcceptanceRateLow": "acceptance_rate",
                   "CapiStreamUserConsistencyLow": "user_consistency"}


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_the_alerts_the_operators_asked_for_are_there() -> None:
    """The 7-day cliff (two steps), a halted or failing destination, a dead-letter surge, a stuck partition,
    and the four signal-quality shares below their targets."""
    assert {r["alert"] for r in _rules()} == ALERTS
    for rule in _rules():
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


def test_promtool_accepts_the_rules() -> None:
    proc = run_promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in proc.stdout


def test_each_alert_fires_and_stays_quiet_in_promtools_unit_tests() -> None:
    proc = run_promtool("test", "rules", str(RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    assert doc["rule_files"] == [RULES.name]
    fires, quiet = set(), set()
    for case in doc["tests"]:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fires == ALERTS
    assert quiet == ALERTS


# Each mutation breaks one thing an alert depends on; promtool's unit tests must then fail. This shows the
# unit tests pin every threshold, `for` and clause, not only that "something fires".
MUTATIONS = {
    "near cliff never fires": ("capi_stream_oldest_unacked_event_age_seconds > 5 * 86400",
                               "capi_stream_oldest_unacked_event_age_seconds > 50 * 86400"),
    "near cliff 3 days too early": ("capi_stream_oldest_unacked_event_age_seconds > 5 * 86400",
                                    "capi_stream_oldest_unacked_event_age_seconds > 3 * 86400"),
    "near cliff without its 10 minutes": ("        for: 10m\n", "        for: 0m\n"),
    "cliff never pages": ("capi_stream_oldest_unacked_event_age_seconds > 6 * 86400",
                          "capi_stream_oldest_unacked_event_age_seconds > 60 * 86400"),
    "cliff pages at 5 days": ("capi_stream_oldest_unacked_event_age_seconds > 6 * 86400",
                              "capi_stream_oldest_unacked_event_age_seconds > 5 * 86400"),
    "parked events never near the cliff": (
        "(capi_stream_parked_oldest_event_age_seconds) > 5 * 86400",
        "(capi_stream_parked_oldest_event_age_seconds) > 50 * 86400"),
    "parked events never page": (
        "(capi_stream_parked_oldest_event_age_seconds) > 6 * 86400",
        "(capi_stream_parked_oldest_event_age_seconds) > 60 * 86400"),
    "destination: throttled counted as down": ('state!~"flowing|throttled|draining"', 'state!~"flowing|draining"'),
    "destination: draining counted as down": ('state!~"flowing|throttled|draining"', 'state!~"flowing|throttled"'),
    "destination: only halted": ('state!~"flowing|throttled|draining"', 'state="halted"'),
    "destination: a one-minute halt pages": ("        for: 2m\n", "        for: 0m\n"),
    "surge threshold 0.1%": (") > 0.01\n", ") > 0.001\n"),
    "surge threshold 10%": (") > 0.01\n", ") > 0.1\n"),
    "surge without the 10-event floor": (
        "sum by (namespace, job, reason) (increase(capi_stream_dead_lettered_total[10m])) >= 10",
        "sum by (namespace, job, reason) (increase(capi_stream_dead_lettered_total[10m])) >= 0"),
    "stuck: idle partitions count": ("and min_over_time(capi_stream_consumer_lag[15m]) > 0\n",
                                     "and min_over_time(capi_stream_consumer_lag[15m]) >= 0\n"),
    "stuck: lag that goes down counts": (
        "and min_over_time(capi_stream_consumer_lag[15m]) >= capi_stream_consumer_lag offset 15m",
        "and min_over_time(capi_stream_consumer_lag[15m]) >= 0"),
    "stuck: reports the window's minimum": (
        "          capi_stream_consumer_lag\n          and min_over_time",
        "          min_over_time(capi_stream_consumer_lag[15m])\n          and min_over_time"),
    # signal quality: a number written in the rule instead of the exported target alerts `capi-lax`, whose
    # config lowers the targets; each floor keeps a quiet destination quiet; each `for` is 30 minutes; a
    # counter with no series yet (no event with an identifier, no valid event) still alerts
    "identifier: a hard-coded 95%": (
        '< on (namespace, job) group_left\n'
        '          max by (namespace, job) (capi_stream_quality_target{target="identifier_share"})', "< 0.95"),
    "identifier: another target": ('{target="identifier_share"}', '{target="user_consistency"}'),
    "identifier: without the 100-event floor": (
        "(increase(capi_stream_quality_events_total[1h])) >= 100\n",
        "(increase(capi_stream_quality_events_total[1h])) >= 0\n"),
    "identifier: without its 30 minutes": (
        "(increase(capi_stream_quality_events_total[1h])) >= 100\n        for: 30m\n",
        "(increase(capi_stream_quality_events_total[1h])) >= 100\n        for: 0m\n"),
    "identifier: no series with an identifier is no alert": (
        "\n            or 0 * sum by (namespace, job, destination) (rate(capi_stream_quality_events_total[1h]))\n",
        "\n"),
    "revenue: a hard-coded 90%": (
        '< on (namespace, job) group_left\n'
        '          max by (namespace, job) (capi_stream_quality_target{target="revenue_value_share"})', "< 0.9"),
    "revenue: without the 20-event floor": ("(increase(capi_stream_quality_revenue_events_total[1h])) >= 20\n",
                                            "(increase(capi_stream_quality_revenue_events_total[1h])) >= 0\n"),
    "revenue: without its 30 minutes": (
        "(increase(capi_stream_quality_revenue_events_total[1h])) >= 20\n        for: 30m\n",
        "(increase(capi_stream_quality_revenue_events_total[1h])) >= 20\n        for: 0m\n"),
    "revenue: no series with a value is no alert": (
        "\n            or 0 * sum by (namespace, job, destination)"
        " (rate(capi_stream_quality_revenue_events_total[1h]))\n", "\n"),
    "acceptance: a hard-coded 99%": (
        '< on (namespace, job) group_left\n'
        '          max by (namespace, job) (capi_stream_quality_target{target="acceptance_rate"})', "< 0.99"),
    "acceptance: without the 100-event floor": ("          ) >= 100\n", "          ) >= 0\n"),
    "acceptance: without its 30 minutes": ("          ) >= 100\n        for: 30m\n",
                                           "          ) >= 100\n        for: 0m\n"),
    "acceptance: Meta's refusals not counted": (
        "(rate(capi_stream_quality_meta_rejected_total[1h]))\n              or 0 *",
        "(rate(capi_stream_quality_meta_rejected_total[1h])) * 0\n              or 0 *"),
    "acceptance: our validation's rejections not counted": (
        "(rate(capi_stream_quality_rejected_total[1h]))\n              or 0 * sum by (namespace, job, destination)"
        " (rate(capi_stream_quality_meta_rejected_total[1h]))",
        "(rate(capi_stream_quality_rejected_total[1h])) * 0\n              or 0 * sum by (namespace, job, destination)"
        " (rate(capi_stream_quality_meta_rejected_total[1h]))"),
    "acceptance: no valid event is no alert": (
        "(rate(capi_stream_quality_events_total[1h]))\n"
        "              or 0 * sum by (namespace, job, destination) (rate(capi_stream_quality_rejected_total[1h]))\n",
        "(rate(capi_stream_quality_events_total[1h]))\n"),
    "consistency: a hard-coded 95%": (
        '< on (namespace, job) group_left\n'
        '          max by (namespace, job) (capi_stream_quality_target{target="user_consistency"})', "< 0.95"),
    "consistency: without the 100-id floor": ("(increase(capi_stream_quality_identity_ids_total[1h])) >= 100\n",
                                              "(increase(capi_stream_quality_identity_ids_total[1h])) >= 0\n"),
    "consistency: without its 30 minutes": (
        "(increase(capi_stream_quality_identity_ids_total[1h])) >= 100\n        for: 30m\n",
        "(increase(capi_stream_quality_identity_ids_total[1h])) >= 100\n        for: 0m\n"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_promtools_unit_tests_catch_a_broken_alert(name: str, tmp_path: Path) -> None:
    old, new = MUTATIONS[name]
    text = RULES.read_text()
    assert text.count(old) == 1, f"the mutation {name!r} no longer matches exactly one place in {RULES.name}"
    (tmp_path / RULES.name).write_text(text.replace(old, new))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    assert run_promtool("check", "rules", str(tmp_path / RULES.name)).returncode == 0, "the mutant must be valid"
    proc = run_promtool("test", "rules", str(tmp_path / RULE_TESTS.name))
    assert proc.returncode != 0, f"promtool's unit tests still pass with {name!r}:\n{proc.stdout}"


def test_the_rules_query_only_what_the_code_exports() -> None:
    exported = exported_metrics()
    for rule in _rules():
        assert unknown_names(rule["expr"], exported) == [], rule["alert"]
        assert promql_names(rule["expr"]).selectors, rule["alert"]


def test_the_quality_alerts_compare_with_the_exported_target() -> None:
    """Each signal-quality alert reads its [quality] target from the gauge, a target the code exports."""
    exported = exported_metrics()
    targets = exported.values[("capi_stream_quality_target", "target")]
    for rule in _rules():
        if rule["alert"] not in QUALITY_TARGETS:
            continue
        names = promql_names(rule["expr"])
        used = [m.value for s in names.selectors if s.metric == "capi_stream_quality_target"
                for m in s.matchers if m.label == "target"]
        assert used == [QUALITY_TARGETS[rule["alert"]]], rule["alert"]
        assert set(used) <= targets
        assert rule["labels"]["severity"] == "ticket", rule["alert"]


def test_the_destination_alert_covers_every_unhealthy_state_the_code_exports() -> None:
    """Every state but flowing, throttled and draining alerts (halted and parked now; failing too once the
    code has it)."""
    exported = exported_metrics()
    states = exported.values[("capi_stream_destination_state", "state")]
    rule = next(r for r in _rules() if r["alert"] == "CapiStreamDestinationDown")
    (selector,) = promql_names(rule["expr"]).selectors
    (matcher,) = [m for m in selector.matchers if m.label == "state"]
    assert matcher.op == "!~"
    healthy = set(matcher.value.split("|"))
    assert healthy == {"flowing", "throttled", "draining"} <= states
    assert {"halted", "parked"} <= states - healthy


def test_the_name_check_rejects_what_the_code_does_not_export() -> None:
    """The check itself can fail: a misspelled metric, a label the metric lacks, an unknown state."""
    exported = exported_metrics()
    assert unknown_names("rate(capi_stream_consumd_total[5m])", exported) == ["metric capi_stream_consumd_total"]
    assert unknown_names('capi_stream_consumer_lag{reason="x"}', exported) == [
        "label reason of capi_stream_consumer_lag"]
    assert unknown_names("sum by (destination) (capi_stream_consumed_total)", exported) == [
        "grouping label destination"]
    problems = unknown_names('capi_stream_destination_state{state=~"halted|stalled"} == 1', exported)
    assert len(problems) == 1
    assert 'state="stalled"' in problems[0]
    assert unknown_names('{__name__="capi_stream_gone"}', exported) == ["metric capi_stream_gone"]


def test_a_missing_promtool_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tests.support import deploy as deploy_support

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="promtool is not installed"):
        deploy_support.promtool()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        deploy_support.promtool()
