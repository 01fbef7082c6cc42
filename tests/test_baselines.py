"""The benchmark's bare loops measure the same work: the kernel loop (the flow's model path)
leaves the models and drift detectors exactly as River's own loop does, and the plain Kafka
loop around it writes every model's prediction of every event, through the real broker."""

from __future__ import annotations

import re
from collections.abc import Callable

import orjson
import pytest

from bench.baselines import KernelModels, Models, kafka_loop
from flows.codec import encode
from models.datasets import open_stream
from riverrun.settings import Settings
from tests.helpers import produce_stream, read_topic


def _state(models: Models) -> str:
    """Every learned number of both pipelines and what each ADWIN holds, exactly."""
    parts = []
    for model, detector in zip(models.models, models.detectors, strict=True):
        scaler, lr = model.steps.values()
        parts.append(
            repr(
                (
                    sorted(scaler.means.items()),
                    sorted(scaler.vars.items()),
                    sorted(lr.weights.items()),
                    lr.intercept,
                    detector.total,
                    detector.width,
                    detector.drift_detected,
                )
            )
        )
    return "\n".join(parts)


def test_kernel_loop_learns_exactly_what_the_river_loop_learns() -> None:
    samples = list(open_stream("agrawal-drift", seed=7, events=3000).samples)
    river, kernel = (Models.build(("logreg", "logreg"), "binary", 7) for _ in range(2))
    fast = KernelModels(kernel)
    served = [river.step(x, y) for x, y in samples]
    assert [fast.step(x, y) for x, y in samples] == served
    assert _state(kernel) == _state(river)
    assert kernel.models[0].steps["StandardScaler"] is kernel.models[1].steps["StandardScaler"]


def test_kernel_loop_refuses_models_the_kernels_do_not_run_and_leaves_them_alone() -> None:
    only = re.escape("StandardScaler | LogisticRegression only")
    with pytest.raises(ValueError, match=only):
        KernelModels(Models.build(("logreg", "hoeffding"), "binary", 7))
    models = Models.build(("logreg", "logreg"), "binary", 7)
    models.models[1].steps["LogisticRegression"].l2 = 0.1  # a penalty: River's path only
    with pytest.raises(ValueError, match=only):
        KernelModels(models)
    first, second = (m.steps["StandardScaler"] for m in models.models)
    assert first is not second, "a refused pair keeps its own scalers"


def test_kafka_loop_writes_each_models_prediction_of_every_event(
    make_settings: Callable[..., Settings],
) -> None:
    s = make_settings(task="binary")
    produce_stream(s, 1500, "kl", dataset="agrawal")
    samples = list(open_stream("agrawal", seed=s.seed, events=1500).samples)
    river = Models.build(("logreg", "logreg"), "binary", s.seed)
    expected = {f"kl-{i}": river.step(x, y) for i, (x, y) in enumerate(samples)}
    models = KernelModels(Models.build(("logreg", "logreg"), "binary", s.seed))
    sinks = [s.topic_predictions, s.topic_shadow]
    assert kafka_loop(s.bootstrap_servers, s.topic_events, sinks, models) > 0
    for i, sink in enumerate(sinks):
        written = [m.json() for m in read_topic(s, sink)]
        assert sorted(w["id"] for w in written) == sorted(expected), f"one per event on {sink}"
        for w in written:
            assert w["proba"] == orjson.loads(encode(expected[w["id"]][i])), w["id"]
            assert w["role"] == ("champion" if i == 0 else "challenger")
