"""The baselines the learn flow is measured against, on the same events and models.

* the bare River loop: each model predicts, then learns, with an ADWIN on each model's
  0/1 error, in one Python loop with no Kafka and no Bytewax; and the same loop on the
  flow's own model path (:class:`KernelModels`), the floor under the flow's model work;
* a naive per-event Bytewax flow as the common examples write it: Bytewax's own
  ``KafkaSource`` and ``KafkaSink`` one message at a time, ``json`` for (de)serialisation,
  and one ``stateful_map`` that predicts and learns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.run import cli_main
from river import drift

from bench.harness import timed
from models.evaluation import predicted_label
from models.kernels import learn_and_scale, learn_logreg, plain_logreg, proba_logreg
from models.sharing import group, scaler_and_final
from models.specs import build_model


@dataclass
class Models:
    """The models of one run: a champion and challengers, each with a drift detector."""

    models: list[Any]
    detectors: list[Any] = field(default_factory=list)

    @classmethod
    def build(cls, specs: tuple[str, ...], task: str, seed: int) -> Models:
        """Fresh models of ``specs`` with one ADWIN each."""
        models = [build_model(spec, task, seed) for spec in specs]
        return cls(models, [drift.ADWIN() for _ in models])

    def step(self, x: dict[str, Any], y: Any) -> dict[Any, float]:
        """Test then train every model on one labelled event; the champion's prediction."""
        served: dict[Any, float] = {}
        for i, (model, detector) in enumerate(zip(self.models, self.detectors, strict=True)):
            proba = model.predict_proba_one(x)
            detector.update(0.0 if predicted_label(proba) == y else 1.0)
            model.learn_one(x, y)
            served = proba if i == 0 else served
        return served


class KernelModels:
    """:class:`Models` of ``StandardScaler | LogisticRegression`` pipelines stepped as the
    learn flow steps them: one shared scaler (:mod:`models.sharing`) and River's arithmetic
    through :mod:`models.kernels`. Every model predicts before any learns, as they must when
    they share a scaler; the models and detectors end exactly as :meth:`Models.step` leaves
    them."""

    def __init__(self, models: Models) -> None:
        parts = [scaler_and_final(model) for model in models.models]
        if not all(p is not None and plain_logreg(p[1]) for p in parts):
            raise ValueError("the kernel loop takes StandardScaler | LogisticRegression only")
        self.groups = group(enumerate(models.models))
        self.detectors = models.detectors

    def step(self, x: dict[str, Any], y: Any) -> dict[Any, float]:
        """Test then train every model on one labelled event; the champion's prediction."""
        served: dict[Any, float] = {}
        for scaler, members in self.groups:
            xt = scaler.transform_one(x)
            for i, final in members:
                proba: dict[Any, float] = proba_logreg(final, xt)
                self.detectors[i].update(0.0 if predicted_label(proba) == y else 1.0)
                served = proba if i == 0 else served
            xt = learn_and_scale(scaler, x)
            for _, final in members:
                learn_logreg(final, xt, y)
        return served


def bare_loop(samples: list[tuple[dict[str, Any], Any]], models: Models | KernelModels) -> float:
    """Seconds for a bare loop of ``models`` (River's calls, or the kernels) over ``samples``."""
    step = models.step
    with timed() as t:
        for x, y in samples:
            step(x, y)
    return t.seconds


def naive_flow(bootstrap: str, source: str, sink: str, models: Models) -> Dataflow:
    """Events (JSON with an inline label) from ``source`` to predictions on ``sink``."""
    flow = Dataflow("naive")
    messages = op.input("kafka-in", flow, KafkaSource([bootstrap], [source], tail=False))
    events = op.map("parse", messages, _parse)

    def learn(state: Models | None, event: dict[str, Any]) -> tuple[Models, bytes]:
        state = state or models
        proba = state.step(event["features"], event["label"])
        return state, json.dumps({"id": event["id"], "proba": proba}).encode()

    predictions = op.stateful_map("learn", events, learn)
    out = op.map("to-kafka", predictions, lambda kv: KafkaSinkMessage(None, kv[1]))
    op.output("kafka-out", out, KafkaSink([bootstrap], sink))
    return flow


def _parse(msg: Any) -> tuple[str, dict[str, Any]]:
    """One message to ``(key, event)``: the source raises on errors, so it is a message."""
    return "all", json.loads(msg.value)


def run_naive(bootstrap: str, source: str, sink: str, models: Models) -> float:
    """Seconds for the naive flow to read ``source`` to its end, in this process."""
    with timed() as t:
        cli_main(naive_flow(bootstrap, source, sink, models))
    return t.seconds
