"""The learn flow's status: to Redis now and then (never stopping the flow if Redis is
down), and to this process's Prometheus metrics at the same pace."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from models.learner import OnlineLearner
from models.status import write_status
from riverrun.metrics import (
    EXPIRED,
    LABELLED,
    LEARN_SECONDS,
    MODEL_METRIC,
    MODEL_VERSION,
    PENDING,
    PREDICT_SECONDS,
    PREDICTIONS,
)
from riverrun.settings import Settings

log = logging.getLogger(__name__)


class StatusReporter:
    """Writes the learner's status to Redis and its figures to Prometheus, every interval."""

    def __init__(self, settings: Settings, learner: OnlineLearner) -> None:
        self.settings = settings
        self.client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=1, socket_connect_timeout=1
        )
        self.next_at = 0.0
        self.failures = 0
        # what the counters already hold: a learner restored from recovery brings counts this
        # process did not make, and adding them at once would read as a burst of work
        self._seen: dict[str, int] = {
            "labelled": learner.counts.labelled,
            "expired": learner.counts.expired,
            **{f"p{slot.uid}": slot.predicted for slot in learner.slots},
        }
        self._series: set[tuple[Any, ...]] = set()

    def maybe_write(self, learner: OnlineLearner, *, force: bool = False) -> None:
        """Report if the status interval has passed (or ``force``)."""
        now = time.monotonic()
        if not force and now < self.next_at:
            return
        self.next_at = now + self.settings.status_interval
        report = learner.report()
        self._export(learner, report)
        report["written_at"] = time.time()  # the wall-clock time of this write
        try:
            write_status(self.client, self.settings.model_name, report)
        except redis.RedisError as exc:
            self.failures += 1
            if self.failures == 1 or self.failures % 100 == 0:
                log.warning("cannot write status to Redis (%d failures): %s", self.failures, exc)

    def _grow(self, counter_key: str, total: int) -> int:
        """How much ``total`` grew since the last report (counters only go up)."""
        delta = total - self._seen.get(counter_key, 0)
        self._seen[counter_key] = total
        return max(delta, 0)

    def _export(self, learner: OnlineLearner, report: dict) -> None:
        name = self.settings.model_name
        timings, learner.timings = learner.timings, []
        for kind, role, seconds in timings:
            (PREDICT_SECONDS if kind == "predict" else LEARN_SECONDS).labels(name, role).observe(
                seconds
            )
        PENDING.labels(name).set(len(learner.pending))
        LABELLED.labels(name).inc(self._grow("labelled", learner.counts.labelled))
        EXPIRED.labels(name).inc(self._grow("expired", learner.counts.expired))
        series: set[tuple[Any, ...]] = set()
        for slot, model in zip(learner.slots, report["models"], strict=True):
            PREDICTIONS.labels(name, slot.role).inc(self._grow(f"p{slot.uid}", slot.predicted))
            if slot.version:
                ids = (name, slot.alias, slot.role, slot.spec)
                MODEL_VERSION.labels(*ids).set(slot.version)
                series.add((MODEL_VERSION, *ids))
            metrics = model["metrics"]
            if not metrics["n"]:  # scored nothing yet: no 0% accuracy, no perfect 0 loss
                continue
            for metric, value in metrics.items():
                if metric == "n":
                    continue
                window = "rolling" if metric.startswith("rolling_") else "cumulative"
                labels = (
                    name,
                    slot.alias,
                    slot.role,
                    slot.spec,
                    metric.removeprefix("rolling_"),
                    window,
                )
                MODEL_METRIC.labels(*labels).set(value)
                series.add((MODEL_METRIC, *labels))
        for gauge, *gone in self._series - series:  # a role or model no longer run here
            gauge.remove(*gone)
        self._series = series
