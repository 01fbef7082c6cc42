"""Scorers give River's numbers: the vectorised linear path to 1e-12, anything else exactly."""

from __future__ import annotations

import itertools
import tracemalloc
from typing import Any

import numpy as np
import pytest

from models.datasets import open_stream
from models.evaluation import predicted_label
from models.scorers import LinearScorer, RiverScorer, compile_scorer
from models.specs import build_model

TOLERANCE = 1e-12


def _trained(spec: str, dataset: str, events: int = 400) -> tuple[Any, str, list[dict]]:
    stream = open_stream(dataset, seed=3, events=events)
    model = build_model(spec, stream.task, 3)
    rows = []
    for x, y in stream.samples:
        model.learn_one(x, y)
        rows.append(x)
    return model, stream.task, rows


def _probe_rows(rows: list[dict], seed: int = 0) -> list[dict]:
    """Rows as they came, scaled far out (to hit the sigmoid's clamps), and shuffled values."""
    rng = np.random.default_rng(seed)
    names = sorted(rows[0])
    out = [dict(r) for r in rows[:100]]
    out += [{k: v * 1000.0 for k, v in r.items()} for r in rows[:50]]
    out += [{n: float(rng.normal(0, 50)) for n in names} for _ in range(50)]
    return out


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE * max(1.0, abs(b))


@pytest.mark.parametrize(("spec", "dataset"), [("logreg", "phishing"), ("linreg", "trumpapproval")])
def test_linear_scorer_matches_river_row_by_row_and_by_matrix(spec: str, dataset: str) -> None:
    model, task, rows = _trained(spec, dataset)
    scorer = compile_scorer(model, task)
    assert isinstance(scorer, LinearScorer) and scorer.vectorised
    assert scorer.features == frozenset(rows[0])
    probes = _probe_rows(rows)
    names = sorted(rows[0])
    answers = scorer.predict_matrix(names, np.array([[x[n] for n in names] for x in probes]))
    by_rows = scorer.predict_rows(probes)
    for i, x in enumerate(probes):
        if task == "regression":
            expected = model.predict_one(x)
            assert _close(scorer.predict_one(x), expected)  # type: ignore[arg-type]
            assert _close(answers.values[i], expected) and _close(by_rows.values[i], expected)
            continue
        expected = model.predict_proba_one(x)
        one = scorer.predict_one(x)
        assert one.keys() == expected.keys()  # type: ignore[union-attr]
        for k, cls in enumerate(answers.classes):
            assert _close(one[cls], expected[cls])  # type: ignore[index]
            assert _close(answers.proba[i, k], expected[cls])
            assert _close(by_rows.proba[i, k], expected[cls])
        assert answers.classes[answers.predicted[i]] == model.predict_one(x)
    if task != "regression":
        clamped = answers.proba[:, 1]
        assert (clamped == 0.0).any() and (clamped == 1.0).any(), "probes reach the clamps"


def test_linear_scorer_skips_missing_and_ignores_unknown_features_like_river() -> None:
    model, task, rows = _trained("logreg", "phishing")
    scorer = compile_scorer(model, task)
    names = sorted(rows[0])
    for x, drop in zip(rows[:40], itertools.cycle(names), strict=False):
        partial = {k: v for k, v in x.items() if k != drop} | {"never_seen": 3.0}
        expected = model.predict_proba_one(partial)
        assert _close(scorer.predict_one(partial)[True], expected[True])  # type: ignore[index]
        answers = scorer.predict_rows([partial])
        assert _close(answers.proba[0, 1], expected[True])


@pytest.mark.parametrize(
    ("spec", "dataset"),
    [("hoeffding", "phishing"), ("logreg", "imagesegments"), ("hoeffding", "trumpapproval")],
)
def test_other_models_are_scored_by_river_itself(spec: str, dataset: str) -> None:
    model, task, rows = _trained(spec, dataset, events=300)
    scorer = compile_scorer(model, task)
    assert isinstance(scorer, RiverScorer) and not scorer.vectorised
    probes = rows[:60]
    answers = scorer.predict_rows(probes)
    for i, x in enumerate(probes):
        if task == "regression":
            assert answers.values[i] == model.predict_one(x)
            continue
        expected = model.predict_proba_one(x)
        assert scorer.predict_one(x) == expected
        got = {c: answers.proba[i, k] for k, c in enumerate(answers.classes)}
        assert {c: got[c] for c in expected} == expected
        assert answers.classes[answers.predicted[i]] == predicted_label(expected)


class _Even:
    """A classifier that reads nothing: the test measures the scorer's own memory."""

    def predict_proba_one(self, x: dict[str, float]) -> dict[bool, float]:
        return {False: 0.5, True: 0.5}


def test_a_row_by_row_model_scores_a_large_matrix_a_few_rows_at_a_time() -> None:
    """Every row's dict was built before the first prediction: a 10,000 x 800 packed request
    to a tree took 0.9 GB."""
    names = [f"f{i}" for i in range(200)]
    matrix = np.zeros((10_000, len(names)))
    scorer = RiverScorer(_Even(), "binary")
    tracemalloc.start()
    try:
        answers = scorer.predict_matrix(names, matrix)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert answers.proba.shape == (10_000, 2)
    assert peak < 30_000_000, f"{peak:,} bytes at the peak"
