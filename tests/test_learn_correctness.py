"""Through Kafka, the champion's prequential metrics equal River's progressive_val_score."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from river import evaluate, metrics

from flows.produce import ProduceRequest, produce
from models.datasets import open_stream
from models.features import EntityFeatures, FeatureSpec
from models.specs import build_model
from models.status import read_status
from tests.helpers import read_topic, run_flow_to_end

CASES = {
    "phishing": ("binary", "logreg", {"accuracy": metrics.Accuracy, "log_loss": metrics.LogLoss}),
    "trumpapproval": ("regression", "linreg", {"mae": metrics.MAE, "rmse": metrics.RMSE}),
}


def _run(make_settings: Any, dataset: str, delay: int, **overrides: Any) -> tuple[Any, dict]:
    task, spec, _ = CASES[dataset]
    s = make_settings(task=task, model_spec=spec, **overrides)
    req = ProduceRequest(
        dataset, None, seed=s.seed, delay_labels=delay, id_prefix="ev", start_time=1_700_000_000.0
    )
    produce(req, s.bootstrap_servers, s.topic_events, s.topic_labels, progress=False)
    run_flow_to_end(s)
    status = read_status(redis.Redis.from_url(s.redis_url), s.model_name)
    assert status is not None, "the flow wrote no status"
    return s, status


@pytest.mark.parametrize("delay", [0, 30], ids=["inline", "delayed"])
@pytest.mark.parametrize("dataset", sorted(CASES))
def test_metrics_equal_progressive_val_score(make_settings: Any, dataset: str, delay: int) -> None:
    task, spec, metric_classes = CASES[dataset]
    s, status = _run(make_settings, dataset, delay)
    champion = status["models"][0]
    n = open_stream(dataset, seed=s.seed, events=None).size
    assert status["labelled"] == n and champion["learned"] == n
    for name, metric_class in metric_classes.items():
        expected = evaluate.progressive_val_score(
            open_stream(dataset, seed=s.seed, events=None).samples,
            build_model(spec, task, s.seed),
            metric_class(),
            delay=delay or None,
        ).get()
        assert champion["metrics"][name] == pytest.approx(expected, abs=1e-9), name


def test_predictions_are_the_models_test_then_train_outputs(make_settings: Any) -> None:
    """Each event's served prediction is what River's model said before learning it."""
    s, _ = _run(make_settings, "phishing", 0)
    model = build_model("logreg", "binary", s.seed)
    expected = []
    for x, y in open_stream("phishing", seed=s.seed, events=None).samples:
        expected.append(model.predict_proba_one(x))
        model.learn_one(x, y)
    got = [m.json() for m in read_topic(s, s.topic_predictions)]
    assert [g["id"] for g in got] == [f"ev-{i}" for i in range(len(expected))]
    for g, e in zip(got, expected, strict=True):
        assert g["proba"]["true"] == pytest.approx(e[True], abs=1e-12)
        assert g["prediction"] == (e[True] > e[False])
        assert (g["model"], g["role"], g["spec"]) == (s.model_name, "champion", "logreg")


def test_entity_features_match_a_sequential_reference(make_settings: Any) -> None:
    """With per-entity features on, the flow equals River fed the same aggregates in order."""
    items = ("count", "since_last", "mean:gallup")
    s, status = _run(make_settings, "trumpapproval", 10, entity_features=items)
    events = [m.json() for m in read_topic(s, s.topic_events)]
    labels = {e["id"]: e["label"] for e in events if e.get("kind") == "label"}
    features = EntityFeatures(FeatureSpec.parse(items))
    dataset = [
        (features.update(e["entity"], e["time"], e["features"]), labels[e["id"]])
        for e in events
        if e.get("kind") != "label"
    ]
    assert "entity_mean_gallup" in dataset[5][0]
    expected = evaluate.progressive_val_score(
        dataset, build_model("linreg", "regression", s.seed), metrics.MAE(), delay=10
    ).get()
    assert status["models"][0]["metrics"]["mae"] == pytest.approx(expected, abs=1e-9)
