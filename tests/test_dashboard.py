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
