"""The kernels leave River models in exactly the state River's own calls would."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from river import compose, linear_model, optim, preprocessing

from models.evaluation import Prequential
from models.kernels import (
    learn_and_scale,
    learn_logreg,
    plain_logreg,
    plain_scaler,
    proba_logreg,
)
from models.learner import OnlineLearner, Slot
from models.schema import Event


def _stream(seed: int, n: int) -> list[tuple[dict[str, float], Any]]:
    """Features on very different scales, one constant, one arriving late, rare outliers;
    labels as bools and as 0/1 ints. The outliers push the logit past River's ±18 branches."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        x = {
            "small": rng.gauss(0, 1e-3),
            "big": {n // 2: 1e12, n - 50: -1e12}.get(i, rng.gauss(5e5, 2e5)),
            "const": 3.0,
            "count": float(rng.randrange(20)),
        }
        if i > n // 3:
            x["late"] = rng.uniform(-50, 50)
        y = x["big"] + 1e5 * rng.gauss(0, 1) > 5e5
        out.append((x, y if i % 2 else int(y)))
    return out


def _state(pipeline: compose.Pipeline) -> str:
    """Every number the pipeline learned, exactly (``repr`` tells -0.0 from 0.0) and in order."""
    scaler, lr = pipeline.steps.values()
    learned = [scaler.counts, scaler.means, scaler.vars, lr._weights.to_dict()]
    return repr([[(k, v) for k, v in d.items()] for d in learned]) + repr(
        (lr.intercept, lr.optimizer.n_iterations)
    )


LOGREGS = {
    "default": lambda: linear_model.LogisticRegression(),
    "tuned": lambda: linear_model.LogisticRegression(
        optimizer=optim.SGD(optim.schedulers.InverseScaling(0.5)),
        loss=optim.losses.Log(weight_pos=2.0, weight_neg=0.5),
        intercept_lr=optim.schedulers.InverseScaling(0.1),
        clip_gradient=0.3,
    ),
    "odd": lambda: linear_model.LogisticRegression(intercept_init=0.5, clip_gradient=-1.0),
}


@pytest.mark.parametrize("kind", list(LOGREGS))
def test_kernels_predict_and_learn_bit_for_bit_as_river(kind: str) -> None:
    river = preprocessing.StandardScaler() | LOGREGS[kind]()
    fast = copy.deepcopy(river)
    scaler, lr = fast.steps.values()
    assert plain_scaler(scaler) and plain_logreg(lr)
    past_18 = 0
    for x, y in _stream(seed=7, n=3000):
        assert proba_logreg(lr, scaler.transform_one(x)) == river.predict_proba_one(x)
        past_18 += abs(lr._weights.dot(scaler.transform_one(x)) + lr.intercept) > 18
        river.learn_one(x, y)
        learn_logreg(lr, learn_and_scale(scaler, x), y)
    assert past_18 > 0, "the stream must reach River's saturated-gradient branches"
    assert _state(fast) == _state(river)


@pytest.mark.parametrize(
    "model",
    [
        linear_model.LogisticRegression(l2=0.1),
        linear_model.LogisticRegression(l1=0.1),
        linear_model.LogisticRegression(optimizer=optim.Adam()),
        linear_model.LogisticRegression(loss=optim.losses.Hinge()),
        linear_model.LogisticRegression(initializer=optim.initializers.Normal(seed=1)),
        linear_model.LinearRegression(),
    ],
    ids=["l2", "l1", "adam", "hinge", "normal-init", "linreg"],
)
def test_other_linear_models_are_left_to_river(model: Any) -> None:
    assert not plain_logreg(model)


def test_scalers_with_a_window_or_without_std_are_left_to_river() -> None:
    assert plain_scaler(preprocessing.StandardScaler())
    assert not plain_scaler(preprocessing.StandardScaler(with_std=False))
    assert not plain_scaler(preprocessing.StandardScaler(window_size=10))
    assert not plain_scaler(preprocessing.MinMaxScaler())


@pytest.mark.parametrize(
    "scaler", [{}, {"with_std": False}, {"window_size": 50}], ids=["plain", "no-std", "window"]
)
def test_learner_runs_plain_models_through_kernels_and_the_rest_through_river(
    scaler: dict[str, Any],
) -> None:
    def build(l2: float) -> compose.Pipeline:
        return preprocessing.StandardScaler(**scaler) | linear_model.LogisticRegression(l2=l2)

    specs = [0.0, 0.01, 0.0]
    slots = [
        Slot("logreg", build(l2), Prequential("binary", 50), alias)
        for l2, alias in zip(specs, ["champion", "challenger", "challenger-2"], strict=True)
    ]
    learner = OnlineLearner("binary", slots)
    assert learner._fast == {slots[0].uid, slots[2].uid}
    separate = [build(l2) for l2 in specs]
    for i, (x, y) in enumerate(_stream(seed=3, n=1500)):
        got, _ = learner.on_event(Event(str(i), float(i), "a", x, y))
        assert [got[s.uid] for s in slots] == [m.predict_proba_one(x) for m in separate]
        for m in separate:
            m.learn_one(x, y)
    assert [_state(s.model) for s in slots] == [_state(m) for m in separate]
