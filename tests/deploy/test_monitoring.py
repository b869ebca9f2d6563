"""The alerts and the dashboard: promtool accepts the rules and their unit tests fire every alert, and every query
names metrics the services really export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.deploy.chartkit import (
    NAMESPACE,
    RELEASE,
    ROOT,
    metric_families,
    metrics_in,
    one,
    render,
    run_tool,
    series_names,
)

RULE_TESTS = ROOT / "deploy" / "prometheus" / "rules.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "tubelens-pipeline.json"
ALERTS = {
    "TubelensConsumerLagHigh",
    "TubelensDeadLetters",
    "TubelensHandlerErrorRatio",
    "TubelensGrpcErrorRatio",
    "TubelensInferenceErrorRatio",
    "TubelensModelStale",
    "TubelensModelSwapFailed",
}


def rule_groups(settings: dict | None = None) -> list[dict]:
    docs = render("default", {"metrics.prometheusRule.enabled": True, **(settings or {})})
    return one(docs, "PrometheusRule", RELEASE)["spec"]["groups"]


def rules_beside_their_tests(tmp_path: Path, groups: list[dict]) -> Path:
    """The rendered groups as the rule file the unit tests name, next to a copy of them."""
    (tmp_path / "tubelens.rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    return tmp_path


def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    folder = rules_beside_their_tests(tmp_path, rule_groups())
    done = run_tool("promtool", "check", "rules", "tubelens.rules.yaml", cwd=folder)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


def test_the_unit_tests_fire_every_alert(tmp_path: Path) -> None:
    folder = rules_beside_their_tests(tmp_path, rule_groups())
    done = run_tool("promtool", "test", "rules", RULE_TESTS.name, cwd=folder)
    assert done.returncode == 0, done.stdout + done.stderr
    fired = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert fired == ALERTS == {rule["alert"] for group in rule_groups() for rule in group["rules"]}


def test_the_unit_tests_fail_when_a_threshold_moves(tmp_path: Path) -> None:
    """The thresholds come from values; the tests pin the defaults, so a rule that no longer fires is caught."""
    folder = rules_beside_their_tests(tmp_path, rule_groups({"metrics.prometheusRule.consumerLag.messages": 5000}))
    done = run_tool("promtool", "test", "rules", RULE_TESTS.name, cwd=folder)
    assert done.returncode != 0 and "TubelensConsumerLagHigh" in done.stdout + done.stderr


def test_alerts_are_scoped_to_the_release_namespace() -> None:
    assert NAMESPACE == "tubelens"  # the series in rules.test.yaml carry namespace="tubelens"
    for group in rule_groups():
        for rule in group["rules"]:
            for metric in metrics_in(rule["expr"]):
                assert f'{metric}{{namespace="tubelens"' in rule["expr"].replace(" ", ""), (rule["alert"], metric)


def test_rules_and_dashboard_use_only_metrics_the_code_defines() -> None:
    families = metric_families()
    # The families this page leans on must be there at all (a rename in the code fails here first).
    assert {
        "tubelens_bus_consumer_lag_messages",
        "tubelens_bus_messages_dead_lettered",
        "tubelens_grpc_requests",
        "tubelens_predictor_default_version_info",
        "tubelens_trainer_last_run_timestamp_seconds",
        "tubelens_embedding_images_embedded",
    } <= set(families)
    known = series_names(families)
    used = {metric for group in rule_groups() for rule in group["rules"] for metric in metrics_in(rule["expr"])}
    used |= {metric for expr in dashboard_exprs() for metric in metrics_in(expr)}
    assert used and not used - known, sorted(used - known)


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    exprs += [var["definition"] for var in dashboard["templating"]["list"] if "definition" in var]
    return exprs


def test_the_dashboard_shows_the_pipeline() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "tubelens-pipeline" and dashboard["schemaVersion"] >= 36
    panels = {panel["title"]: panel for panel in dashboard["panels"] if panel["type"] != "row"}
    required = {
        "Events handled per stage": "tubelens_bus_messages_processed_total",
        "Dead letters per minute": "tubelens_bus_messages_dead_lettered_total",
        "Consumer lag": "tubelens_bus_consumer_lag_messages",
        "Embeddings per second": "tubelens_embedding_images_embedded_total",
        "Predictor latency": "tubelens_predictor_request_duration_seconds_bucket",
        "Model version served": "tubelens_predictor_default_version_info",
    }
    for title, metric in required.items():
        assert title in panels, title
        assert any(metric in target["expr"] for target in panels[title]["targets"]), title
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels.values():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert 'namespace="$namespace"' in target["expr"], panel["title"]


@pytest.mark.parametrize("expr", ["sum(rate(tubelens_bus_messages_processed_total[5m]))", "tubelens_nope_total"])
def test_the_metric_check_tells_real_names_from_made_up_ones(expr: str) -> None:
    known = series_names(metric_families())
    assert (metrics_in(expr) <= known) is ("nope" not in expr)
