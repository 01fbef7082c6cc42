"""A real Prometheus scrapes a running learn flow and gRPC server on loopback: its queries
count every event, show the champion's metrics, a drift event, the served version and the
learn flow's alerted counters at 0, and riverrun's alert rules evaluate on the live series."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from models.registry import Registry
from models.status import read_status
from riverrun.children import Child
from riverrun.local import free_port
from tests.helpers import LearnProcess, count_messages, produce_stream, wait_for
from tests.prom import PrometheusServer

EVENTS = 4000


def test_prometheus_counts_every_event_of_a_running_flow(
    make_settings: Any, tmp_path: Path
) -> None:
    port, serve_metrics = free_port(), free_port()
    s = make_settings(metrics_port=port, serve_port=free_port(), serve_metrics_port=serve_metrics)
    produce_stream(s, EVENTS, "p", dataset="agrawal-switch", drift_every=EVENTS // 2)
    targets = {
        "riverrun-learn": [f"127.0.0.1:{port}"],
        "riverrun-serve": [f"127.0.0.1:{serve_metrics}"],
    }
    with (
        LearnProcess(s) as flow,
        Child(s, "serve") as server,
        PrometheusServer(tmp_path, targets) as prom,
    ):
        wait_for(lambda: count_messages(s, s.topic_predictions) == EVENTS, 120, "predictions")
        wait_for(
            lambda: prom.value('sum(riverrun_events_in_total{job="riverrun-learn"})') == EVENTS,
            60,
            "Prometheus to count every event",
        )
        assert prom.value('up{job="riverrun-learn"}') == 1
        wait_for(
            lambda: (prom.value('sum(riverrun_drift_events_total{kind="concept"})') or 0) >= 1,
            60,
            "the concept drift at the middle of the stream",
        )
        registry = Registry.connect(s.redis_url, s.registry_key)
        served = f'riverrun_served_model_version{{model="{s.model_name}", role="champion"}}'
        wait_for(
            lambda: prom.value(served) in {v.version for v in registry.versions(s.model_name)},
            60,
            "the server's champion version",
        )

        client = redis.Redis.from_url(s.redis_url)
        accuracy = (
            f'riverrun_model_metric{{model="{s.model_name}", role="champion", '
            'metric="accuracy", window="cumulative"}'
        )

        def same_accuracy_as_the_flow_reports() -> bool:
            status = read_status(client, s.model_name)
            reported = status["models"][0]["metrics"]["accuracy"] if status else None
            return reported is not None and prom.value(accuracy) == reported

        wait_for(same_accuracy_as_the_flow_reports, 30, "the champion's accuracy")
        # Exported at 0 before anything goes wrong: the alert rules see a first refusal or
        # failed checkpoint as an increase.
        for counter in ("riverrun_snapshots_refused_total", "riverrun_snapshot_failures_total"):
            assert prom.value(f'{counter}{{model="{s.model_name}"}}') == 0, counter

        def rules_evaluated() -> list[dict[str, Any]]:
            rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
            return rules if all(r["health"] != "unknown" for r in rules) else []

        rules = wait_for(rules_evaluated, 30, "the alert rules to be evaluated")
        assert {r["name"]: r["health"] for r in rules} == {r["name"]: "ok" for r in rules}
        assert flow.stop() == 0, flow.stderr()
        assert server.stop() == 0, server.stderr()
