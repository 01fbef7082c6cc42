"""Model specs: named River pipelines, built for a task and a seed.

A spec is either a built-in name (``logreg``, ``hoeffding``, ``arf``, ``linreg``) or an
import path ``package.module:factory`` whose factory (called without arguments) returns a
River estimator or pipeline. Every model is checked when it is built: a River estimator with
``learn_one`` and the method the task predicts with, of the task's kind, and answering a
sample event with a prediction of the right shape, so a model that does not fit fails with
one clear line where it is named rather than deep inside a running flow.
"""

from __future__ import annotations

import copy
import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from river import base, compose, forest, linear_model, multiclass, preprocessing, tree

# A River estimator or pipeline: River's base classes do not declare predict/learn methods
# for type checkers, so models are typed loosely.
Model = Any


class SpecError(ValueError):
    """A spec that names no model, or a model that does not fit the task."""


@dataclass(frozen=True)
class ModelSpec:
    """A named way to build a fresh model for a task."""

    name: str
    tasks: tuple[str, ...]
    description: str
    build: Callable[[str, int], Model]


def _logreg(task: str, seed: int) -> Model:
    if task == "multiclass":
        return preprocessing.StandardScaler() | multiclass.OneVsRestClassifier(
            linear_model.LogisticRegression()
        )
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def _hoeffding(task: str, seed: int) -> Model:
    if task == "regression":
        return preprocessing.StandardScaler() | tree.HoeffdingTreeRegressor()
    return tree.HoeffdingTreeClassifier()


def _arf(task: str, seed: int) -> Model:
    if task == "regression":
        return forest.ARFRegressor(seed=seed)
    return forest.ARFClassifier(seed=seed)


def _linreg(task: str, seed: int) -> Model:
    return preprocessing.StandardScaler() | linear_model.LinearRegression()


SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "logreg",
            ("binary", "multiclass"),
            "StandardScaler | LogisticRegression (one-vs-rest for multiclass)",
            _logreg,
        ),
        ModelSpec(
            "hoeffding",
            ("binary", "multiclass", "regression"),
            "Hoeffding tree (classifier, or scaled regressor)",
            _hoeffding,
        ),
        ModelSpec(
            "arf",
            ("binary", "multiclass", "regression"),
            "Adaptive random forest, 10 trees",
            _arf,
        ),
        ModelSpec("linreg", ("regression",), "StandardScaler | LinearRegression", _linreg),
    )
}


def build_model(
    spec: str, task: str, seed: int, sample: Mapping[str, float] | None = None
) -> Model:
    """Build a fresh model from a spec name or a ``package.module:factory`` path, checked
    with :func:`check_model` on ``sample`` (an event's features) before it is returned."""
    if ":" in spec:
        model = _from_factory(spec)
    else:
        known = SPECS.get(spec)
        if known is None:
            raise SpecError(
                f"unknown model spec {spec!r}: use one of {', '.join(SPECS)} "
                "or an import path package.module:factory"
            )
        if task not in known.tasks:
            raise SpecError(
                f"model spec {spec!r} does not do {task} (it does {', '.join(known.tasks)})"
            )
        model = known.build(task, seed)
    check_model(model, task, spec, sample)
    return model


def _from_factory(spec: str) -> Model:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:  # the user's module: an ImportError, or whatever
        raise SpecError(f"model spec {spec!r}: cannot import {module_name!r}: {exc!r}") from None
    factory: Any = getattr(module, attr, None)
    if not callable(factory):
        raise SpecError(f"model spec {spec!r}: {module_name} has no callable {attr!r}")
    try:
        return factory()
    except (Exception, SystemExit) as exc:  # the user's code: report it, an exit too
        raise SpecError(f"model spec {spec!r}: the factory raised {exc!r}") from None


def check_model(model: Any, task: str, spec: str, sample: Mapping[str, float] | None) -> None:
    """Raise :class:`SpecError` unless ``model`` is a River estimator for ``task`` that
    predicts ``sample`` (``None``: an event without features, which a River model answers
    since features come and go in a stream). The prediction is made on a copy, so the
    model itself is left as it was."""
    check_estimator(model, task, spec)
    x = dict(sample or {})
    probe = copy.deepcopy(model)
    classify = task != "regression"
    try:
        y_pred = probe.predict_proba_one(x) if classify else probe.predict_one(x)
    except NotImplementedError:
        method = "predict_proba_one" if classify else "predict_one"
        raise SpecError(f"model spec {spec!r} does not implement {method}") from None
    except Exception as exc:  # the user's code: report it, whatever it raised
        raise SpecError(
            f"model spec {spec!r} raised {exc!r} predicting a sample event {x}"
        ) from None
    problem = _prediction_problem(y_pred, classify)
    if problem:
        raise SpecError(f"model spec {spec!r} predicted {y_pred!r} for a sample event: {problem}")


def _prediction_problem(y_pred: Any, classify: bool) -> str:
    """What is wrong with a prediction for the learner (empty when nothing is)."""
    if classify:
        if not isinstance(y_pred, Mapping):
            return "predict_proba_one must return a dict of class probabilities"
        if not all(_is_number(p) and 0.0 <= p <= 1.0 for p in y_pred.values()):
            return "class probabilities must be numbers within [0, 1]"
        return ""
    if not _is_number(y_pred):
        return "predict_one must return a finite number"
    return ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_estimator(model: Any, task: str, spec: str) -> None:
    """Raise :class:`SpecError` unless ``model`` is a River estimator of ``task``'s kind,
    with ``learn_one`` and the method that task predicts with."""
    if not isinstance(model, base.Estimator):
        raise SpecError(
            f"model spec {spec!r} returned {type(model).__name__}, not a River estimator "
            "(river.base.Estimator) or pipeline"
        )
    final: Any = model._last_step if isinstance(model, compose.Pipeline) else model
    if task == "regression" and not isinstance(final, base.Regressor):
        raise SpecError(f"model spec {spec!r} is not a regressor, but the task is regression")
    if task != "regression" and not isinstance(final, base.Classifier):
        raise SpecError(f"model spec {spec!r} is not a classifier, but the task is {task}")
    if task == "multiclass" and not final._multiclass:
        raise SpecError(f"model spec {spec!r} is a binary classifier, but the task is multiclass")
    method = "predict_one" if task == "regression" else "predict_proba_one"
    for needed in ("learn_one", method):
        if not callable(getattr(model, needed, None)):
            raise SpecError(f"model spec {spec!r} ({type(model).__name__}) has no {needed}")
