"""``riverrun demo``: the whole loop on a local broker and Redis, ending with a report.

It starts the local stack, produces a drifting synthetic stream, runs the learn flow and
the trigger service on it (each its own process, as in production) with a progress bar
until every event is predicted, prints a short table and writes the same as JSON.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis
from tqdm import tqdm

from flows.kafka_io import end_offsets, ensure_topics, read_values
from flows.produce import STREAM_EVENTS, ProduceRequest, produce
from flows.trigger_service import caught_up
from models.datasets import open_stream
from models.registry import Registry
from models.specs import SpecError
from models.status import read_status
from riverrun.children import Child
from riverrun.local import local_stack
from riverrun.runner import check_learn_settings, learn_topics
from riverrun.settings import Settings
from riverrun.shown import models_table, promotion_text


class DemoError(RuntimeError):
    """A part of the demo stopped on its own; the message says which."""


@dataclass(frozen=True)
class DemoRequest:
    """The stream the demo runs on, and where to write its report."""

    dataset: str = "agrawal-drift"
    events: int | None = STREAM_EVENTS
    delay_labels: int = 0
    drift_every: int | None = None  # a paced dataset's, else DRIFT_EVERY
    report_path: str | None = None


def run_demo(req: DemoRequest, settings: Settings) -> int:
    """Run the demo; returns the exit status."""
    chosen = {
        "model_spec": settings.model_spec,
        "challengers": settings.challengers or ("arf",),
        "seed": settings.seed,
        "entity_features": settings.entity_features or ("count", "since_last"),
        "rolling_window": settings.rolling_window,
        "task": open_stream(
            req.dataset, seed=settings.seed, events=1, drift_every=req.drift_every
        ).task,
    }
    try:  # refused now, not after the stack starts
        check_learn_settings(settings.override(chosen))
    except SpecError as exc:
        raise SpecError(f"{exc}; the {req.dataset} stream is {chosen['task']}") from None
    with local_stack() as stack:
        s = Settings.from_env(stack.env()).override(
            {
                **chosen,
                "model_name": "demo",
                "status_interval": 0.5,
                "metrics_port": 0,
                "trigger_metrics_port": 0,
                "trigger_cooldown": 10.0,
                "recovery_dir": "",
            }
        )
        summary = produce(
            ProduceRequest(
                req.dataset,
                req.events,
                seed=s.seed,
                delay_labels=req.delay_labels,
                drift_every=req.drift_every,
            ),
            s.bootstrap_servers,
            s.topic_events,
            s.topic_labels,
        )
        ensure_topics(s.bootstrap_servers, learn_topics(s), s.partitions)
        with Child(s, "learn") as learn, Child(s, "trigger") as trigger:
            _follow_to_the_end(s, summary.events, {"learn": learn, "trigger": trigger})
        report = collect_report(s, summary.events)
    report["dataset"] = {"name": req.dataset, "events": summary.events, "drifts": summary.drifts}
    print(format_report(report))
    if req.report_path:
        Path(req.report_path).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        print(f"report written to {req.report_path}")
    return 0


def _follow_to_the_end(settings: Settings, total: int, children: dict[str, Child]) -> None:
    """Show progress until every event is predicted and the triggers have acted on the
    flow's last status, any retrain they started done."""
    client = redis.Redis.from_url(settings.redis_url)
    with tqdm(total=total, unit="ev", desc="learn") as bar:
        while True:
            for command, child in children.items():
                if not child.alive():
                    raise DemoError(
                        f"`riverrun {command}` stopped: {child.stderr().strip()[-300:]}"
                    )
            status = read_status(client, settings.model_name) or {"events": 0, "labelled": 0}
            bar.update(status["events"] - bar.n)
            if status["events"] >= total and caught_up(
                client, settings.model_name, status["labelled"]
            ):
                return
            time.sleep(0.3)


def collect_report(settings: Settings, events: int) -> dict[str, Any]:
    """The ``events`` produced, counts from the topics and the flow's last status, as the
    report's JSON."""
    boot = settings.bootstrap_servers

    def count(topic: str) -> int:
        return sum(end_offsets(boot, topic).values())

    status = read_status(redis.Redis.from_url(settings.redis_url), settings.model_name) or {}
    models = {
        m["alias"]: {k: m[k] for k in ("spec", "role", "version", "metrics")}
        for m in status.get("models", [])
    }
    drift = [orjson.loads(v) for v in read_values(boot, settings.topic_drift)]
    registry = Registry.connect(settings.redis_url, settings.registry_key)
    retrains = [
        {
            "version": move.to_version,
            "alias": move.alias,
            "reason": move.reason,
            "spec": move.evidence.get("spec"),  # the version itself may be pruned since
        }
        for move in registry.history(settings.model_name)
        if move.actor == "retrain" and move.to_version is not None
    ]
    return {
        "events_in": events,  # the events topic also carries the delayed labels
        "predictions_out": count(settings.topic_predictions),
        "deadletter": count(settings.topic_deadletter),
        "labelled": status.get("labelled", 0),
        "models": models,
        "promotions": status.get("promotions", []),
        "drift_events": [
            {
                k: e.get(k)
                for k in (
                    "kind",
                    "source",
                    "detector",
                    "position",
                    "statistic",
                    "features",
                    "event_id",
                )
            }
            for e in drift
        ],
        "retrains": retrains,
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as a short human-readable table."""
    lines = [
        f"events in        {report['events_in']:>10,}",
        f"predictions out  {report['predictions_out']:>10,}",
        f"dead letters     {report['deadletter']:>10,}",
        f"labelled         {report['labelled']:>10,}",
        "",
    ]
    lines += models_table(
        (f"{m['spec']}@v{m['version']}", alias, m["metrics"])
        for alias, m in report["models"].items()
    )
    lines.append("")
    for d in report["drift_events"]:
        what = ", ".join(d["features"]) if d["kind"] == "data" else d["source"]
        lines.append(f"{d['kind']} drift ({d['detector']}) on {what} at event {d['position']:,}")
    for r in report["retrains"]:
        lines.append(f"retrained {r['spec']}@v{r['version']} as {r['alias']}: {r['reason']}")
    lines += [promotion_text(p) for p in report["promotions"]]
    return "\n".join(lines)
