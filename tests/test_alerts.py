"""The alert rules are valid, read only metrics riverrun exports, and pass their promtool unit
tests, which cover every alert both firing and staying quiet."""

from __future__ import annotations

from collections import defaultdict

from tests.prom import PROMETHEUS_DIR, assert_tool_ok, defined_metrics, load_yaml, metric_names

RULES = PROMETHEUS_DIR / "alerts.yml"
RULE_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
SCRAPES = PROMETHEUS_DIR / "prometheus.yml"


def _alerts() -> list[dict]:
    alerts = [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]
    assert alerts, f"{RULES} holds no alert rules"
    return alerts


def test_promtool_checks_the_rules() -> None:
    out = assert_tool_ok("promtool", "check", "rules", str(RULES))
    assert f"SUCCESS: {len(_alerts())} rules found" in out


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    assert_tool_ok("promtool", "test", "rules", RULE_TESTS.name, cwd=PROMETHEUS_DIR)


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases: dict[str, set[str]] = defaultdict(set)
    for group in load_yaml(RULE_TESTS)["tests"]:
        for case in group["alert_rule_test"]:
            cases[case["alertname"]].add("fires" if case["exp_alerts"] else "quiet")
    for alert in _alerts():
        assert cases[alert["alert"]] == {"fires", "quiet"}, alert["alert"]


def test_every_alert_has_severity_summary_and_description() -> None:
    for alert in _alerts():
        assert alert["labels"]["severity"] in ("critical", "warning"), alert["alert"]
        assert {"summary", "description"} <= set(alert["annotations"]), alert["alert"]


def test_rules_read_only_metrics_riverrun_exports() -> None:
    known = defined_metrics()
    for alert in _alerts():
        names = metric_names(alert["expr"])
        assert names and names <= known, (alert["alert"], names - known)


def test_jobs_found_by_service_discovery_alert_when_none_is_up() -> None:
    """A target that discovery drops has no ``up`` series, so ``up == 0`` never sees it."""
    exprs = " ".join(alert["expr"] for alert in _alerts())
    for scrape in load_yaml(SCRAPES)["scrape_configs"]:
        if "static_configs" not in scrape:
            assert f'absent(up{{job="{scrape["job_name"]}"}} == 1)' in exprs, scrape["job_name"]
