"""Scorers: a loaded model's predictions for one row or a whole matrix, with River's numbers.

River predicts one dict at a time (about 10 µs a row). For the linear shapes riverrun
ships (``StandardScaler | LogisticRegression``, ``StandardScaler | LinearRegression``,
and either model alone) :class:`LinearScorer` computes the same numbers from the model's
frozen parameters: row by row in plain Python, or a whole matrix at once with numpy.
Every other model is scored by :class:`RiverScorer`, row by row under a lock. A served
model never learns, so its parameters can be copied once when it is loaded.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from river import compose, linear_model, multiclass, optim, preprocessing

from models.evaluation import predicted_label

Features = dict[str, float]
ROWS_AT_ONCE = 256  # rows of a matrix turned into Python lists at once, for a row-by-row model
Prediction = dict[Hashable, float] | float  # class probabilities, or a regressor's value


class NoClassYet(ValueError):
    """A classifier that has learned no class yet has no probabilities for a row: the packed
    form has no way to say "no prediction", as the map form does."""


@dataclass(frozen=True)
class Answers:
    """Predictions for the rows of a matrix.

    Classifiers fill ``classes``, ``proba`` (rows x classes) and ``predicted`` (an index
    into ``classes`` per row); regressors fill ``values``.
    """

    classes: tuple[Hashable, ...]
    proba: np.ndarray
    predicted: np.ndarray
    values: np.ndarray


class Scorer:
    """What the server needs of a model: its inputs, one-row and matrix predictions."""

    #: The features the model learned from (a request must carry them), or ``None`` when
    #: the model cannot tell.
    features: frozenset[str] | None = None
    vectorised = False

    def __init__(self, task: str) -> None:
        self.task = task
        self.classify = task != "regression"

    def predict_one(self, x: Features) -> Prediction:
        """Class probabilities (classifiers) or the predicted value (regressors) of ``x``."""
        raise NotImplementedError

    def predict_matrix(self, names: list[str], matrix: np.ndarray) -> Answers:
        """Predictions for each row of ``matrix``, whose columns are ``names``: one row's
        dict at a time (all at once, 10,000 rows of 800 features took 0.9 GB)."""
        rows = (
            dict(zip(names, row, strict=True))
            for start in range(0, len(matrix), ROWS_AT_ONCE)
            for row in matrix[start : start + ROWS_AT_ONCE].tolist()
        )
        return self.predict_rows(rows)

    def predict_rows(self, rows: Iterable[Features]) -> Answers:
        """Predictions for each row, one :meth:`predict_one` at a time; :class:`NoClassYet`
        if a classifier has no probabilities for one (it has learned no class yet)."""
        preds = [self.predict_one(x) for x in rows]
        if not self.classify:
            return _regression(np.array(preds, dtype=float))
        if not all(preds):
            raise NoClassYet("it has learned no class yet, and predicts none")
        classes: dict[Hashable, int] = {False: 0, True: 1} if self.task == "binary" else {}
        for p in preds:
            for c in p:  # type: ignore[union-attr]
                classes.setdefault(c, len(classes))
        proba = np.zeros((len(preds), len(classes)))
        predicted = np.zeros(len(preds), dtype=np.uint32)
        for i, p in enumerate(preds):
            for c, v in p.items():  # type: ignore[union-attr]
                proba[i, classes[c]] = v
            best = predicted_label(p)  # type: ignore[arg-type]
            predicted[i] = classes[best] if best is not None else 0
        return Answers(tuple(classes), proba, predicted, np.empty(0))


class RiverScorer(Scorer):
    """Any River model, one row at a time; a lock keeps River's lazy caches consistent."""

    def __init__(self, model: Any, task: str) -> None:
        super().__init__(task)
        self.model = model
        self.features = learned_features(model)
        self._predict = model.predict_proba_one if self.classify else model.predict_one
        self._lock = threading.Lock()

    def predict_one(self, x: Features) -> Prediction:
        """The River model's own answer, under a lock (River models are not thread-safe)."""
        if self.features is not None:  # River adds unseen names to its state: keep them out
            x = {k: v for k, v in x.items() if k in self.features}
        with self._lock:
            return self._predict(x)


class LinearScorer(Scorer):
    """A linear model, optionally after a standard scaler, from its frozen parameters.

    River computes ``(x - mean) / var ** 0.5`` (0 where the variance is 0), then
    ``weights . z + intercept``, then the sigmoid (0 below -30, 1 above 30) for the
    logistic model; so does this, to the last bit or so (summation order aside).
    """

    vectorised = True

    def __init__(self, scaler: Any, linear: Any, task: str) -> None:
        super().__init__(task)
        weights: dict[str, float] = linear.weights
        means: dict[str, float] = dict(scaler.means) if scaler is not None else {}
        variances: dict[str, float] = dict(scaler.vars) if scaler is not None else {}
        learned = set(scaler.counts) if scaler is not None else set(weights)
        self.features = frozenset(learned)
        self.names = sorted(learned | set(weights))
        self.scaled = scaler is not None
        self.intercept = float(linear.intercept)
        self.mean = np.array([means.get(n, 0.0) for n in self.names])
        var = np.array([variances.get(n, 0.0) for n in self.names])
        self.zero = var == 0.0 if self.scaled else np.zeros(len(self.names), dtype=bool)
        self.std = np.where(self.zero, 1.0, var**0.5) if self.scaled else np.ones(len(var))
        self.weight = np.array([weights.get(n, 0.0) for n in self.names])
        self._rows = [
            (n, float(m), float(s), bool(z), float(w))
            for n, m, s, z, w in zip(
                self.names, self.mean, self.std, self.zero, self.weight, strict=True
            )
            if w != 0.0
        ]

    def _logit_one(self, x: Features) -> float:
        total = 0.0
        if self.scaled:
            for name, mean, std, zero, weight in self._rows:
                xi = x.get(name)
                if xi is not None and not zero:
                    total += weight * ((xi - mean) / std)
        else:
            for name, _m, _s, _z, weight in self._rows:
                xi = x.get(name)
                if xi is not None:
                    total += weight * xi
        return total + self.intercept

    def predict_one(self, x: Features) -> Prediction:
        """The compiled linear model's answer for one row, equal to River's."""
        raw = self._logit_one(x)
        if not self.classify:
            return raw
        p = _sigmoid(raw)
        return {False: 1.0 - p, True: p}

    def predict_matrix(self, names: list[str], matrix: np.ndarray) -> Answers:
        """All rows at once with numpy; a feature missing from ``names`` counts as absent."""
        index = {n: i for i, n in enumerate(names)}
        cols = [index.get(n, -1) for n in self.names]
        have = np.array([c >= 0 for c in cols], dtype=bool)
        x = matrix[:, [c for c in cols if c >= 0]]
        if self.scaled:
            z = (x - self.mean[have]) / self.std[have]
            z[:, self.zero[have]] = 0.0
        else:
            z = x
        raw = z @ self.weight[have] + self.intercept
        if not self.classify:
            return _regression(raw)
        with np.errstate(over="ignore"):
            p = 1.0 / (1.0 + np.exp(-raw))
        p[raw < -30] = 0.0
        p[raw > 30] = 1.0
        proba = np.column_stack((1.0 - p, p))
        predicted = (proba[:, 1] > proba[:, 0]).astype(np.uint32)
        return Answers((False, True), proba, predicted, np.empty(0))

    def predict_rows(self, rows: Iterable[Features]) -> Answers:
        """Vectorised when every row has every feature; row by row otherwise, as River does."""
        rows = list(rows)
        names = self.names
        matrix = np.array([[x.get(n, math.nan) for n in names] for x in rows], dtype=float)
        if np.isnan(matrix).any():  # a row lacks a feature: River skips it, so must we
            return super().predict_rows(rows)
        return self.predict_matrix(names, matrix.reshape(len(rows), len(names)))


def _sigmoid(x: float) -> float:
    """River's ``utils.math.sigmoid``."""
    if x < -30:
        return 0.0
    if x > 30:
        return 1.0
    return 1 / (1 + math.exp(-x))


def _regression(values: np.ndarray) -> Answers:
    return Answers((), np.empty((len(values), 0)), np.empty(0, dtype=np.uint32), values)


def _linear_parts(model: Any, task: str) -> tuple[Any, Any] | None:
    """``(scaler or None, linear model)`` if ``model`` is a shape :class:`LinearScorer` does."""
    steps = list(model.steps.values()) if isinstance(model, compose.Pipeline) else [model]
    scaler = None
    if len(steps) == 2 and type(steps[0]) is preprocessing.StandardScaler:
        scaler = steps.pop(0)
        if not scaler.with_std or scaler.window_size is not None:
            return None
    if len(steps) != 1:
        return None
    linear = steps[0]
    mean_func: Any
    if task == "binary" and type(linear) is linear_model.LogisticRegression:
        mean_func = optim.losses.BinaryLoss.mean_func
    elif task == "regression" and type(linear) is linear_model.LinearRegression:
        mean_func = optim.losses.RegressionLoss.mean_func
    else:
        return None
    if type(linear.loss).mean_func is not mean_func:
        return None
    return scaler, linear


def learned_features(model: Any) -> frozenset[str] | None:
    """The features a model has learned from, when its first step can tell."""
    first = next(iter(model.steps.values())) if isinstance(model, compose.Pipeline) else model
    if isinstance(first, preprocessing.StandardScaler):
        return frozenset(first.counts)
    if isinstance(first, linear_model.base.GLM):
        return frozenset(first.weights)
    if isinstance(first, multiclass.OneVsRestClassifier):
        names: set[str] = set()
        for clf in first.classifiers.values():
            found = learned_features(clf)
            if found is None:
                return None
            names |= found
        return frozenset(names)
    return None


def compile_scorer(model: Any, task: str) -> Scorer:
    """The fastest scorer that gives River's numbers for ``model``."""
    parts = _linear_parts(model, task)
    if parts is not None:
        return LinearScorer(parts[0], parts[1], task)
    return RiverScorer(model, task)
