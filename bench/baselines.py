"""The baselines the learn flow is measured against, on the same events and models.

* the bare River loop: each model predicts, then learns, with an ADWIN on each model's
  0/1 error, in one Python loop with no Kafka and no Bytewax; and the same loop on the
  flow's own model path (:class:`KernelModels`), the floor under the flow's model work;
* that model path inside a plain Kafka loop (:func:`kafka_loop`): the events read and the
  predictions and shadow predictions written as the flow does, with nothing else, the
  ceiling over any flow of these models on this machine;
* a naive per-event Bytewax flow as the common examples write it: Bytewax's own
  ``KafkaSource`` and ``KafkaSink`` one message at a time, ``json`` for (de)serialisation,
  and one ``stateful_map`` that predicts and learns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, cast

import bytewax.operators as op
import orjson
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.run import cli_main
from confluent_kafka import TopicPartition
from river import drift

from bench.harness import timed
from flows.codec import encode
from flows.kafka_io import Delivery, Out, consumer, end_offsets
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

    def step(self, x: dict[str, Any], y: Any) -> list[dict[Any, float]]:
        """Test then train every model on one labelled event; every model's prediction."""
        probas = []
        for model, detector in zip(self.models, self.detectors, strict=True):
            proba = model.predict_proba_one(x)
            detector.update(0.0 if predicted_label(proba) == y else 1.0)
            model.learn_one(x, y)
            probas.append(proba)
        return probas


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

    def step(self, x: dict[str, Any], y: Any) -> list[dict[Any, float]]:
        """Test then train every model on one labelled event; every model's prediction."""
        probas: list[dict[Any, float]] = [{}] * len(self.detectors)  # one per model
        for scaler, members in self.groups:
            xt = scaler.transform_one(x)
            for i, final in members:
                proba: dict[Any, float] = proba_logreg(final, xt)
                self.detectors[i].update(0.0 if predicted_label(proba) == y else 1.0)
                probas[i] = proba
            xt = learn_and_scale(scaler, x)
            for _, final in members:
                learn_logreg(final, xt, y)
        return probas


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
        proba = state.step(event["features"], event["label"])[0]
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


def kafka_loop(bootstrap: str, source: str, sinks: list[str], models: KernelModels) -> float:
    """Seconds for a plain loop that reads ``source`` (events with inline labels) to its end
    and writes each model's prediction of each event to its sink in ``sinks`` (the
    champion's first), orjson both ways, a batch of up to 1,000 messages at a time: Kafka
    and the model path with no Bytewax, validation, metrics, contest or snapshots."""
    ends = {p: end for p, end in end_offsets(bootstrap, source).items() if end > 0}
    reader, writer = consumer(bootstrap), Delivery(bootstrap)
    reader.assign([TopicPartition(source, p, 0) for p in ends])
    step, loads = models.step, orjson.loads
    roles = ["champion"] + ["challenger"] * (len(sinks) - 1)
    described = [
        {"model": "kafka-loop", "alias": sink, "version": 1, "spec": "logreg", "role": role}
        for sink, role in zip(sinks, roles, strict=True)
    ]
    with timed() as t:
        try:
            while ends:
                outs: list[list[Out]] = [[] for _ in sinks]
                for msg in reader.consume(1000, 0.1):
                    if msg.error() is not None:
                        raise RuntimeError(f"cannot read {source}: {msg.error()}")
                    event = loads(cast(bytes, msg.value()))
                    probas = step(event["features"], event["label"])
                    fields = {"id": event["id"], "entity": event["entity"], "time": event["time"]}
                    for out, model, proba in zip(outs, described, probas, strict=True):
                        label = predicted_label(proba)
                        payload = {**model, **fields, "prediction": label, "proba": proba}
                        out.append(Out(msg.key(), encode(payload)))
                    part = cast(int, msg.partition())
                    if cast(int, msg.offset()) + 1 >= ends.get(part, 0):
                        ends.pop(part, None)
                for sink, out in zip(sinks, outs, strict=True):
                    writer.send_all(sink, out)
            writer.flush()
        finally:
            reader.close()
    return t.seconds
