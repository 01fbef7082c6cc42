"""Learn-flow throughput through Kafka against the bare River loop on the same events."""

from __future__ import annotations

from typing import Any

from bench.harness import Report, timed
from flows.produce import ProduceRequest, produce
from models.datasets import open_stream
from models.specs import build_model
from riverrun.runner import run_learn
from riverrun.settings import Settings


def bare_loop(samples: list[tuple[dict[str, Any], Any]], spec: str, task: str, seed: int) -> float:
    """Seconds for ``predict_proba_one`` then ``learn_one`` over every sample, no Kafka."""
    model = build_model(spec, task, seed)
    predict = model.predict_proba_one if task != "regression" else model.predict_one
    learn = model.learn_one
    with timed() as t:
        for x, y in samples:
            predict(x)
            learn(x, y)
    return t.seconds


def isolated(settings: Settings, tag: str) -> Settings:
    """Settings whose topics and model name belong to one benchmark run only."""
    topics = ("events", "labels", "predictions", "shadow", "deadletter", "drift")
    return settings.override(
        {**{f"topic_{t}": f"{tag}-{t}" for t in topics}, "model_name": tag, "follow": False}
    )


def flow_run(settings: Settings, events: int, dataset: str, tag: str) -> float:
    """Seconds for the learn flow to read ``events`` produced events and write predictions."""
    s = isolated(settings, tag)
    produce(
        ProduceRequest(dataset, events, seed=s.seed, id_prefix=tag),
        s.bootstrap_servers,
        s.topic_events,
        s.topic_labels,
        progress=False,
    )
    with timed() as t:
        run_learn(s)
    return t.seconds


def throughput(settings: Settings, *, events: int, dataset: str = "agrawal-drift") -> Report:
    """Events/s of the learn flow (``logreg``) and of the bare loop, and their ratio."""
    stream = open_stream(dataset, seed=settings.seed, events=events)
    samples = list(stream.samples)
    spec, task = "logreg", stream.task
    bare = bare_loop(samples, spec, task, settings.seed)
    flow = flow_run(settings.override({"model_spec": spec, "task": task}), events, dataset, "tp")
    report = Report("learn-flow throughput", {"events": events, "dataset": dataset, "model": spec})
    report.add(setup="bare River loop (no Kafka)", events_per_s=events / bare, ratio=1.0)
    report.add(setup="learn flow through Kafka", events_per_s=events / flow, ratio=bare / flow)
    return report


def challenger_cost(settings: Settings, *, events: int, dataset: str = "agrawal-drift") -> Report:
    """Learn-flow events/s with 0, 1 and 3 ``logreg`` challengers, relative to none."""
    task = open_stream(dataset, seed=settings.seed, events=1).task
    base = settings.override({"model_spec": "logreg", "task": task, "auto_promote": False})
    report = Report("cost of challengers", {"events": events, "dataset": dataset})
    alone = 0.0
    for n in (0, 1, 3):
        s = base.override({"challengers": ("logreg",) * n})
        seconds = flow_run(s, events, dataset, f"cc{n}")
        alone = alone or seconds
        report.add(challengers=n, events_per_s=events / seconds, vs_champion_alone=alone / seconds)
    return report
