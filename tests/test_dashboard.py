"""The Grafana dashboard parses, its queries are valid PromQL over metrics riverrun exports,
and it shows what operators need, with promotions and drift as annotations."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.prom import DEPLOY, assert_tool_ok, defined_metrics, load_yaml, metric_names

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "riverrun.json"
LABEL_VALUES = re.compile(r"label_values\((.+),\s*\w+\)")
# Samples of an annotated counter from minute 0, of its target's `up`, and whether the
# annotation marks it at 11m: a counter that grew from 0 at 10m; one that appeared at its
# first increment at 10m; an old one that a Prometheus restarted at 10m sees first then.
ANNOTATION_CASES = (
    ("0x10 1x10", "1x20", True),
    ("_x10 1x10", "1x20", True),
    ("_x10 4x10", "_x10 1x10", False),
)


def _dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _annotations() -> list[dict[str, Any]]:
    return [a for a in _dashboard()["annotations"]["list"] if "expr" in a]


def _exprs() -> list[str]:
    exprs = [t["expr"] for p in _panels() for t in p["targets"]]
    exprs += [a["expr"] for a in _annotations()]
    for var in _dashboard()["templating"]["list"]:
        match = LABEL_VALUES.fullmatch(var["query"]["query"])
        assert match, var["query"]
        exprs.append(match.group(1))
    return exprs


def _as_promql(expr: str) -> str:
    """Grafana's variables replaced: intervals by a duration, the others by a value."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: "1m" if m[1].startswith("__") else "x", expr)


def test_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query_{i}", "expr": _as_promql(e)} for i, e in enumerate(_exprs())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert_tool_ok("promtool", "check", "rules", str(path))


def test_queries_read_only_metrics_riverrun_exports() -> None:
    known = defined_metrics()
    for expr in _exprs():
        names = metric_names(expr)
        assert names and names <= known, (expr, names - known)


def test_annotations_mark_new_increments_not_old_counters(tmp_path: Path) -> None:
    """An annotation marks a counter that grew, or that appeared while its target was
    scraped (promotions and drift are counted from their first increment), but not an old
    counter that a restarted Prometheus sees for the first time."""
    target = 'job="riverrun-learn",instance="learn:9800"'
    labels = f'{{model="x",kind="concept",source="champion",{target}}}'
    tests = []
    for annotation in _annotations():
        expr = _as_promql(annotation["expr"])
        (counter,) = metric_names(expr) - {"up"}
        for counted, scraped, marked in ANNOTATION_CASES:
            tests.append(
                {
                    "interval": "1m",
                    "input_series": [
                        {"series": f"up{{{target}}}", "values": scraped},
                        {"series": counter + labels, "values": counted},
                    ],
                    "promql_expr_test": [
                        {
                            "expr": f"count({expr})",
                            "eval_time": "11m",
                            "exp_samples": [{"labels": "{}", "value": 1}] if marked else [],
                        }
                    ],
                }
            )
    path = tmp_path / "annotations_test.yml"
    path.write_text(yaml.safe_dump({"rule_files": [], "tests": tests}))
    assert_tool_ok("promtool", "test", "rules", str(path))


def test_shows_throughput_models_latency_lag_and_dead_letters() -> None:
    shown = set().union(*(metric_names(t["expr"]) for p in _panels() for t in p["targets"]))
    assert {
        "riverrun_events_in_total",
        "riverrun_predictions_total",
        "riverrun_model_metric",
        "riverrun_predict_seconds_bucket",
        "riverrun_grpc_request_seconds_bucket",
        "riverrun_consumer_lag_messages",
        "riverrun_deadletters_total",
    } <= shown
    annotated = set().union(*(metric_names(a["expr"]) for a in _annotations()))
    assert {"riverrun_promotions_total", "riverrun_drift_events_total"} <= annotated


def test_panels_use_the_provisioned_data_source_and_do_not_overlap() -> None:
    source = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    uid = source["datasources"][0]["uid"]
    cells: dict[tuple[int, int], str] = {}
    for panel in _dashboard()["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == uid, panel["title"]
            assert all(t["datasource"]["uid"] == uid for t in panel["targets"]), panel["title"]
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
    assert all(a["datasource"]["uid"] == uid for a in _annotations())
