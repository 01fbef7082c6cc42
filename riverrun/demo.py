"""``riverrun demo``: the whole loop on a local broker and Redis, ending with a report.

It starts the local stack, produces a drifting synthetic stream, runs the learn flow to
the end of it with a progress bar, prints a short table and writes the same as JSON.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis
from tqdm import tqdm

from flows.kafka_io import end_offsets
from flows.produce import ProduceRequest, produce
from models.datasets import open_stream
from models.status import read_status
from riverrun.local import local_stack
from riverrun.runner import run_learn
from riverrun.settings import Settings


@dataclass(frozen=True)
class DemoRequest:
    """The stream the demo runs on, and where to write its report."""

    dataset: str = "agrawal-drift"
    events: int | None = 50_000
    delay_labels: int = 0
    drift_every: int = 12_500
    report_path: str | None = None


def run_demo(req: DemoRequest, settings: Settings) -> int:
    """Run the demo; returns the exit status."""
    task = open_stream(req.dataset, seed=settings.seed, events=1).task
    with local_stack() as stack:
        s = Settings.from_env(stack.env()).override(
            {
                "model_name": "demo",
                "model_spec": settings.model_spec,
                "challengers": settings.challengers or ("arf",),
                "seed": settings.seed,
                "entity_features": settings.entity_features or ("count", "since_last"),
                "rolling_window": settings.rolling_window,
                "task": task,
                "follow": False,
                "status_interval": 0.5,
                "metrics_port": 0,
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
        _learn_with_progress(s, summary.events)
        report = collect_report(s)
    report["dataset"] = {"name": req.dataset, "events": summary.events, "drifts": summary.drifts}
    print(format_report(report))
    if req.report_path:
        Path(req.report_path).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        print(f"report written to {req.report_path}")
    return 0


def _learn_with_progress(settings: Settings, total: int) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    done = threading.Event()

    def follow() -> None:
        with tqdm(total=total, unit="ev", desc="learn") as bar:
            while not done.wait(0.3):
                status = read_status(client, settings.model_name)
                if status:
                    bar.update(status["events"] - bar.n)
            status = read_status(client, settings.model_name)
            bar.update((status["events"] if status else 0) - bar.n)

    watcher = threading.Thread(target=follow, daemon=True)
    watcher.start()
    try:
        run_learn(settings)
    finally:
        done.set()
        watcher.join()


def collect_report(settings: Settings) -> dict[str, Any]:
    """Counts from the topics and the flow's last status, as the report's JSON."""
    boot = settings.bootstrap_servers

    def count(topic: str) -> int:
        return sum(end_offsets(boot, topic).values())

    status = read_status(redis.Redis.from_url(settings.redis_url), settings.model_name) or {}
    models: dict[str, Any] = {}
    for m in status.get("models", []):
        name = m["spec"]
        while name in models:  # two models of one spec (an A/A test): number the second
            name = f"{m['spec']}#{len(models) + 1}"
        models[name] = {"role": m["role"], "version": m["version"], "metrics": m["metrics"]}
    return {
        "events_in": count(settings.topic_events),
        "predictions_out": count(settings.topic_predictions),
        "deadletter": count(settings.topic_deadletter),
        "labelled": status.get("labelled", 0),
        "models": models,
        "promotions": status.get("promotions", []),
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
    rows = [(name, m["role"], m["metrics"]) for name, m in report["models"].items()]
    if rows:
        keys = [k for k in rows[0][2] if k != "n"]
        lines.append("model".ljust(22) + "role".ljust(12) + "".join(k.rjust(18) for k in keys))
        for name, role, metrics in rows:
            lines.append(
                name.ljust(22) + role.ljust(12) + "".join(f"{metrics[k]:>18.4f}" for k in keys)
            )
    for p in report["promotions"]:
        e = p["evidence"]
        lines.append(
            f"promoted {p['to']} over {p['from']} at event {p['at_event']:,}: loss lower by "
            f"{e['mean_difference']:.4f} over {e['n']:,} paired events (p={e['p_value']:.2g})"
        )
    return "\n".join(lines)
