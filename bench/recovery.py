"""Snapshot and recovery cost of the learn flow: what one epoch's state snapshot takes, and
how soon a flow killed mid-stream predicts again after its restart (against a cold start)."""

from __future__ import annotations

import time

import redis

from bench.child import wait_until
from bench.harness import Report, best_of, timed
from bench.kafka_time import Stamp, stamps
from bench.throughput import CHALLENGER, CHAMPION, produce_stream, produced
from flows.kafka_io import end_offsets, ensure_topics
from flows.registry_sync import challenger_alias, learner_of
from models.datasets import open_stream
from models.evaluation import Prequential
from models.learner import Slot
from models.schema import Event, LabelMessage
from models.signing import check_key, dumps_signed
from models.specs import build_model
from models.status import read_status
from riverrun.children import Child
from riverrun.recovery import partitions
from riverrun.runner import learn_topics
from riverrun.settings import Settings


def snapshot_cost(settings: Settings, *, events: int, delay: int, dataset: str) -> dict[str, float]:
    """Milliseconds and kilobytes of the learn step's signed snapshot after ``events`` events
    whose labels come ``delay`` events late (so ``delay`` joins are pending)."""
    stream = open_stream(dataset, seed=settings.seed, events=events)
    s = settings.override({"task": stream.task})
    slots = [
        Slot(spec, build_model(spec, s.task, s.seed), Prequential(s.task, s.rolling_window), alias)
        for spec, alias in ((CHAMPION, "champion"), (CHALLENGER, challenger_alias(0)))
    ]
    learner = learner_of(s, slots)
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
    """Seconds from start to the first prediction on the topic (its Kafka timestamp), cold
    and after a SIGKILL half-way through: the first prediction of an event the killed run
    had not predicted, since a restart first repeats those after its last snapshot."""
    s = produced(settings, events, dataset, "rec", follow=True)
    ensure_topics(s.bootstrap_servers, learn_topics(s), s.partitions)

    def predictions() -> int:
        return sum(end_offsets(s.bootstrap_servers, s.topic_predictions).values())

    began = time.time()
    with Child(s, "learn") as child:
        wait_until(lambda: predictions() >= events // 2, "half the predictions", children=(child,))
        child.process.kill()  # SIGKILL: any process of its own dies with it
        child.process.wait()
    killed_at = end_offsets(s.bootstrap_servers, s.topic_predictions)
    before = stamps(s.bootstrap_servers, s.topic_predictions)  # the killed run's
    known = {p.id for p in before}
    # More events wait for the restart, so it has something new to predict even if the
    # killed run had reached the end of the first ones.
    total = events + events // 4
    produce_stream(s, total, dataset, skip=events)
    restarted = time.time()
    client = redis.Redis.from_url(s.redis_url)
    since_kill: list[Stamp] = []

    def went_on() -> bool:  # a restart first repeats the events after its last snapshot
        status = read_status(client, s.model_name)
        return status is not None and status["events"] >= total

    def all_predicted() -> bool:  # the status is written before its batch's predictions are sent
        since_kill[:] = stamps(s.bootstrap_servers, s.topic_predictions, since=killed_at)
        return len(known.union(p.id for p in since_kill)) >= total

    with Child(s, "learn") as child:
        wait_until(went_on, "the flow to learn the new events", children=(child,))
        wait_until(all_predicted, "every event's prediction", 0.2, children=(child,))
    first_new = min(p.ms for p in since_kill if p.id not in known)
    path = s.recovery_path
    state_kb = sum(p.stat().st_size for p in partitions(path)) / 1024 if path else 0.0
    report = Report("snapshots and recovery", {"events": events, "dataset": dataset})
    report.add(
        cold_start_to_first_prediction_s=min(p.ms for p in before) / 1000 - began,
        restart_to_first_new_prediction_s=first_new / 1000 - restarted,
        recovery_partitions_kb=state_kb,
        epoch_interval_s=s.epoch_interval,
        **snapshot_cost(settings, events=events, delay=1000, dataset=dataset),
    )
    return report
