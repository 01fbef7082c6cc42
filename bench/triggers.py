"""Triggers on against triggers off, on one drifting stream: the same events feed two learn
flows at once, one with the trigger service, and their served accuracy is compared."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import redis

from bench.child import wait_until
from bench.harness import Report
from flows.kafka_io import ensure_topics, read_values
from flows.produce import ProduceRequest, produce
from models.registry import AliasMove, Registry
from models.status import read_status
from riverrun.children import Child
from riverrun.runner import learn_topics
from riverrun.settings import Settings

DRIFT_AT = 10_000
HOLD_AT = DRIFT_AT + 1500
EVENTS = 15_000
WINDOW = 500
SCENARIO = {
    "model_spec": "hoeffding",
    "promote_min_samples": 300,
    "promote_window": 1000,
    "promote_cooldown": 500,
    "snapshot_interval": 1.0,
    "data_drift_window": 0,
    "follow": True,
}


@dataclass
class Run:
    """What one flow served, and what its registry audit and drift topic say."""

    settings: Settings
    served: list[dict[str, Any]]
    audit: list[AliasMove]
    drift: list[dict[str, Any]]


@dataclass
class Scenario:
    """Both runs and the true labels."""

    on: Run
    off: Run
    truth: dict[str, bool]

    def accuracy_after_drift(self, run: Run) -> float:
        """Served accuracy over the ``EVENTS - DRIFT_AT`` events after the drift."""
        window = [p for p in run.served if DRIFT_AT <= _index(p["id"]) < EVENTS]
        return sum(p["prediction"] == self.truth[p["id"]] for p in window) / len(window)

    def rolling(self, run: Run) -> list[float]:
        """Served accuracy over the last ``WINDOW`` events, after every event."""
        hits = [p["prediction"] == self.truth[p["id"]] for p in sorted(run.served, key=_key)]
        out, total = [], 0
        for i, hit in enumerate(hits):
            total += hit - (hits[i - WINDOW] if i >= WINDOW else 0)
            out.append(total / min(i + 1, WINDOW))
        return out


def _index(event_id: str) -> int:
    return int(event_id.rpartition("-")[2])


def _key(p: dict[str, Any]) -> int:
    return _index(p["id"])


def run_scenario(on: Settings, off: Settings, timeout: float = 120) -> Scenario:
    """Produce the stream once, run both flows and the trigger service, collect the results.

    ``on`` and ``off`` must share the events and labels topics and differ in model name
    and output topics. The stream comes in two parts: up to ``HOLD_AT`` (history at full
    speed, then 400 events/s across the drift), then, once the triggered retrain is
    registered (or ``timeout`` passed), the rest at 400 events/s. Both flows see the same
    stream; the pause only keeps a slow machine from finishing the stream before the
    retrain can matter.
    """
    req = ProduceRequest(
        "agrawal-switch",
        HOLD_AT,
        seed=11,
        drift_every=DRIFT_AT,
        rate=400.0,
        burst=DRIFT_AT - 1000,
        id_prefix="loop",
    )
    rest = replace(req, events=EVENTS, skip=HOLD_AT, burst=0)
    for s in (on, off):
        ensure_topics(s.bootstrap_servers, learn_topics(s), s.partitions)
    client = redis.Redis.from_url(on.redis_url)
    registry = Registry.connect(on.redis_url, on.registry_key)
    with Child(on, "learn") as learn_on, Child(off, "learn") as learn_off:
        with Child(on, "trigger") as trigger:
            children = (learn_on, learn_off, trigger)
            produce(req, on.bootstrap_servers, on.topic_events, on.topic_labels, progress=False)
            with contextlib.suppress(TimeoutError):  # no retrain: go on, the audit says why
                wait_until(
                    lambda: any(m.actor == "retrain" for m in registry.history(on.model_name)),
                    "a triggered retrain",
                    0.2,
                    children=children,
                    timeout=timeout,
                )
            produce(rest, on.bootstrap_servers, on.topic_events, on.topic_labels, progress=False)
            wait_until(
                lambda: all(
                    (read_status(client, s.model_name) or {}).get("events", 0) >= EVENTS
                    for s in (on, off)
                ),
                "both flows to predict every event",
                0.2,
                children=children,
                timeout=timeout,
            )
            trigger.stop()
        learn_on.stop()
        learn_off.stop()
    truth = {
        e["id"]: e["label"]
        for e in map(orjson.loads, read_values(on.bootstrap_servers, on.topic_events))
    }
    return Scenario(_collect(on), _collect(off), truth)


def _collect(s: Settings) -> Run:
    registry = Registry.connect(s.redis_url, s.registry_key)
    served = [orjson.loads(v) for v in read_values(s.bootstrap_servers, s.topic_predictions)]
    drift = [orjson.loads(v) for v in read_values(s.bootstrap_servers, s.topic_drift)]
    return Run(s, served, registry.history(s.model_name), drift)


def marks(run: Run) -> dict[str, list[int]]:
    """Event positions of the champion's concept drifts, retrains and promotions."""
    topic = f"{run.settings.topic_events}-0"
    retrained = [m for m in run.audit if m.actor == "retrain"]
    promoted = {m.to_version for m in run.audit if m.action == "promote" and m.from_version}
    first_served: dict[int, int] = {}
    for p in sorted(run.served, key=_key):
        first_served.setdefault(p["version"], _index(p["id"]))
    return {
        "drift": [
            d["position"] for d in run.drift if d["kind"] == "concept" and d["source"] == "champion"
        ],
        "retrain": [m.evidence["stop"][topic] for m in retrained],
        "promotion": sorted(first_served[v] for v in promoted if v in first_served),
    }


def triggers_effect(settings: Settings, out_dir: Path) -> Report:
    """Run the scenario; plot rolling accuracy with and without triggers; table and JSON."""
    on = _isolated(settings, "trig-on", trigger_drift_wait=800, trigger_cooldown=60.0)
    off = _isolated(settings, "trig-off").override(
        {"topic_events": on.topic_events, "topic_labels": on.topic_labels}
    )
    scenario = run_scenario(on, off)
    series = {
        "with triggers": scenario.rolling(scenario.on),
        "without triggers": scenario.rolling(scenario.off),
    }
    points = marks(scenario.on)
    plot = out_dir / "triggers.png"
    _plot(series, points, plot)
    report = Report(
        "triggers on a drifting stream",
        {
            "dataset": "agrawal-switch",
            "events": EVENTS,
            "drift_at": DRIFT_AT,
            "window": WINDOW,
            "marks": points,
            "plot": str(plot),
            "rolling_accuracy": {k: v[::100] for k, v in series.items()},
        },
    )
    for name, run in (("with triggers", scenario.on), ("without triggers", scenario.off)):
        report.add(setup=name, accuracy_after_drift=scenario.accuracy_after_drift(run))
    return report


def _isolated(settings: Settings, tag: str, **extra: Any) -> Settings:
    topics = ("events", "labels", "predictions", "shadow", "deadletter", "drift")
    return settings.override(
        {**{f"topic_{t}": f"{tag}-{t}" for t in topics}, "model_name": tag, **SCENARIO, **extra}
    )


def _plot(series: dict[str, list[float]], points: dict[str, list[int]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for name, values in series.items():
        ax.plot(range(len(values)), values, label=name, linewidth=1.2)
    styles = {"drift": ("red", "--"), "retrain": ("purple", ":"), "promotion": ("green", "-.")}
    for kind, positions in points.items():
        color, style = styles[kind]
        for k, x in enumerate(positions):
            ax.axvline(x, color=color, linestyle=style, label=kind if k == 0 else None)
    ax.axvline(DRIFT_AT, color="black", linewidth=0.6, label="true drift")
    ax.set(xlabel="event", ylabel=f"served accuracy (last {WINDOW} events)", ylim=(0.4, 1.0))
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
