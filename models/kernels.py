"""River's ``StandardScaler`` and ``LogisticRegression`` arithmetic without River's per-call
overhead, for the flow's hot path.

A learn step of ``StandardScaler | LogisticRegression`` goes through a dozen River calls
(pipeline plan, learn mode, loss, clamp, gradient vector, optimizer, scheduler). These
functions do the same floating-point operations in the same order on the same objects,
so the models stay River models (snapshots, registry, gRPC) and their state is bit for bit
what River's own ``learn_one`` leaves. They apply only where that holds: a plain scaler
(no window) and a plain logistic regression (SGD, log loss, no penalty, zero init), as
:func:`plain_scaler` and :func:`plain_logreg` tell; anything else goes through River.
"""

from __future__ import annotations

import math
from typing import Any

from river import linear_model, optim, preprocessing, utils

Features = dict[Any, float]


def plain_scaler(scaler: Any) -> bool:
    """Whether :func:`learn_and_scale` does exactly what ``scaler`` would."""
    return (
        type(scaler) is preprocessing.StandardScaler
        and scaler.with_std
        and scaler.window_size is None
    )


def learn_and_scale(scaler: preprocessing.StandardScaler, x: Features) -> Features:
    """``scaler.learn_one(x)`` then ``scaler.transform_one(x)``: in one loop if the scaler
    is plain, else by River's two calls."""
    if not plain_scaler(scaler):
        scaler.learn_one(x)
        return scaler.transform_one(x)
    counts, means, vars_ = scaler.counts, scaler.means, scaler.vars
    scaled = {}
    for i, xi in x.items():
        n = counts[i] + 1
        counts[i] = n
        old = means[i]
        mean = old + (xi - old) / n
        means[i] = mean
        var = vars_[i]
        var += ((xi - old) * (xi - mean) - var) / n
        vars_[i] = var
        scaled[i] = (xi - mean) / var**0.5 if var else 0.0
    return scaled


def plain_logreg(model: Any) -> bool:
    """Whether :func:`learn_logreg` and :func:`proba_logreg` do exactly what ``model`` would."""
    return (
        type(model) is linear_model.LogisticRegression
        and type(model.optimizer) is optim.SGD
        and type(model.loss) is optim.losses.Log
        and type(model.initializer) is optim.initializers.Zeros
        and model.l1 == 0.0
        and model.l2 == 0.0
    )


def proba_logreg(model: linear_model.LogisticRegression, x: Features) -> dict[bool, float]:
    """``model.predict_proba_one(x)``, River's sigmoid included (0 and 1 past ±30)."""
    z = model._weights.dot(x) + model.intercept
    p: float = 0 if z < -30 else 1 if z > 30 else 1 / (1 + math.exp(-z))
    return {False: 1.0 - p, True: p}


def learn_logreg(model: linear_model.LogisticRegression, x: Features, y: Any) -> None:
    """``model.learn_one(x, y)``: one SGD step on the log loss."""
    loss, optimizer, weights = model.loss, model.optimizer, model._weights
    if y == 0:
        sign, weight = -1, loss.weight_neg
    else:
        sign, weight = int(y), loss.weight_pos
    z = (weights.dot(x) + model.intercept) * sign
    if z > 18.0:
        grad = weight * math.exp(-z) * -sign
    elif z < -18.0:
        grad = weight * -sign
    else:
        grad = weight * -sign / (math.exp(z) + 1.0)
    clip = model.clip_gradient
    # River's clamp, float(max(min(grad, clip), -clip)), in its order (NaN kept), no calls
    grad = clip if clip < grad else grad
    grad = float(-clip if -clip > grad else grad)
    n = optimizer.n_iterations
    model.intercept -= model.intercept_lr.get(n) * grad
    weights.isub_scaled(utils.VectorDict.from_scaled(x, grad), optimizer.lr.get(n))
    optimizer.n_iterations = n + 1
