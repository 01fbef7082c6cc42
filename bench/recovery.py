"""Snapshot and recovery cost of the learn flow: what one epoch's state snapshot takes, and
how soon a flow killed mid-stream predicts again after its restart (against a cold start)."""

from __future__ import annotations

import time

from bench.child import wait_until
from bench.harness import Report, best_of, timed
from bench.throughput import CHALLENGER, CHAMPION, produce_stream, produced
from flows.kafka_io import end_offsets
from models.datasets import open_stream
from models.evaluation import Prequential
from models.learner import OnlineLearner, Slot
from models.schema import Event, LabelMessage
from models.signing import check_key, dumps_signed
from models.specs import build_model
from riverrun.children import Child
from riverrun.recovery import partitions
from riverrun.settings import Settings


def snapshot_cost(settings: Settings, *, events: int, delay: int, dataset: str) -> dict[str, float]:
    """Milliseconds and kilobytes of the learn step's signed snapshot after ``events`` events
    whose labels come ``delay`` events late (so ``delay`` joins are pending)."""
    stream = open_stream(dataset, seed=settings.seed, events=events)
    slots = [
        Slot(spec, build_model(spec, stream.task, settings.seed), Prequential(stream.task, 1000))
        for spec in (CHAMPION, CHALLENGER)
    ]
    learner = OnlineLearner(stream.task, slots)
    labels: list[LabelMessage] = []
    for i, (x, y) in enumerate(stream.samples):
        learner.on_event(Event(f"e{i}", float(i), "e", x))
        labels.append(LabelMessage(f"e{i}", y, float(i)))
        if len(labels) > delay:
            learner.on_label(labels.pop(0))
    key = check_key(settings.registry_key)
    blob = dumps_signed(learner, key)

    def once() -> float:
        with timed() as t:
            dumps_signed(learner, key)
        return t.seconds

    return {"snapshot_ms": best_of(5, once) * 1000, "snapshot_kb": len(blob) / 1024}


def recovery(settings: Settings, *, events: int, dataset: str = "agrawal") -> Report:
    """Seconds from start to first prediction, cold and after a SIGKILL half-way through."""
    s = produced(settings, events, dataset, "rec", follow=True)

    def predictions() -> int:
        return sum(end_offsets(s.bootstrap_servers, s.topic_predictions).values())

    began = time.monotonic()
    with Child(s, "learn") as child:
        cold = wait_until(lambda: predictions() > 0, "a first prediction") - began
        wait_until(lambda: predictions() >= events // 2, "half the predictions")
        child.process.kill()  # SIGKILL: any process of its own dies with it
        child.process.wait()
    killed_at = predictions()
    # More events wait for the restart, so it has something new to predict even if the
    # killed run had reached the end of the first ones.
    produce_stream(s, events + events // 4, dataset, skip=events)
    began = time.monotonic()
    with Child(s, "learn"):
        resumed = wait_until(lambda: predictions() > killed_at, "a prediction after restart")
        wait_until(lambda: predictions() >= killed_at + events // 4, "the flow to go on")
    path = s.recovery_path
    state_kb = sum(p.stat().st_size for p in partitions(path)) / 1024 if path else 0.0
    report = Report("snapshots and recovery", {"events": events, "dataset": dataset})
    report.add(
        cold_start_to_first_prediction_s=cold,
        restart_to_first_new_prediction_s=resumed - began,
        recovery_partitions_kb=state_kb,
        epoch_interval_s=s.epoch_interval,
        **snapshot_cost(settings, events=events, delay=1000, dataset=dataset),
    )
    return report
