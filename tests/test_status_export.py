"""The learn flow's Prometheus figures: a model that has scored nothing shows no metric (no
0% accuracy to page on, no perfect 0 loss), and a checkpoint's new version moves the
version gauge without starting new metric series."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from flows.registry_sync import learner_of
from flows.status import StatusReporter
from models.evaluation import Prequential
from models.learner import Slot
from models.specs import build_model


def _samples(name: str, model: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of metric family ``name`` for ``model``, by their labels."""
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in REGISTRY.collect()
        if family.name == name
        for sample in family.samples
        if sample.labels.get("model") == model
    }


def test_unscored_models_show_no_metric_and_checkpoints_start_no_series(
    make_settings: Any,
) -> None:
    s = make_settings()
    slots = [
        Slot("logreg", build_model("logreg", "binary", 0), Prequential("binary", 100)),
        Slot("logreg", build_model("logreg", "binary", 0), Prequential("binary", 100), "b"),
    ]
    slots[0].version, slots[1].version = 3, 4
    learner = learner_of(s, slots)
    reporter = StatusReporter(s, learner)
    name = s.model_name

    reporter.maybe_write(learner, force=True)
    assert _samples("riverrun_model_metric", name) == {}
    versions = _samples("riverrun_model_version", name)
    assert sorted(versions.values()) == [3.0, 4.0]

    slots[0].metrics.update(True, {True: 0.9, False: 0.1})  # the champion scores one
    reporter.maybe_write(learner, force=True)
    scored = _samples("riverrun_model_metric", name)
    assert {dict(labels)["role"] for labels in scored} == {"champion"}
    rolling_accuracy = (
        ("alias", "champion"),
        ("metric", "accuracy"),
        ("model", name),
        ("role", "champion"),
        ("spec", "logreg"),
        ("window", "rolling"),
    )
    assert scored[rolling_accuracy] == 1.0

    slots[0].version = 5  # a checkpoint
    slots[0].metrics.update(False, {True: 0.9, False: 0.1})
    reporter.maybe_write(learner, force=True)
    assert set(_samples("riverrun_model_metric", name)) == set(scored)
    assert _samples("riverrun_model_metric", name)[rolling_accuracy] == 0.5
    assert sorted(_samples("riverrun_model_version", name).values()) == [4.0, 5.0]


def test_two_challengers_of_one_spec_keep_their_own_series(make_settings: Any) -> None:
    s = make_settings()
    slots = [
        Slot(spec, build_model("logreg", "binary", 0), Prequential("binary", 100), alias)
        for spec, alias in (("logreg", "champion"), ("logreg", "b"), ("logreg", "c"))
    ]
    slots[1].metrics.update(True, {True: 0.9, False: 0.1})
    slots[2].metrics.update(True, {True: 0.1, False: 0.9})
    learner = learner_of(s, slots)
    StatusReporter(s, learner).maybe_write(learner, force=True)
    accuracy = {
        dict(labels)["alias"]: value
        for labels, value in _samples("riverrun_model_metric", s.model_name).items()
        if dict(labels)["metric"] == "accuracy" and dict(labels)["window"] == "rolling"
    }
    assert accuracy == {"b": 1.0, "c": 0.0}
