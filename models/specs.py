"""Model specs: named River pipelines, built for a task and a seed.

A spec is either a built-in name (``logreg``, ``hoeffding``, ``arf``, ``linreg``) or an
import path ``package.module:factory`` whose factory returns a River estimator.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
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


def build_model(spec: str, task: str, seed: int) -> Model:
    """Build a fresh model from a spec name or a ``package.module:factory`` path."""
    if ":" in spec:
        return _from_factory(spec, task)
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
    return known.build(task, seed)


def _from_factory(spec: str, task: str) -> Model:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(f"model spec {spec!r}: cannot import {module_name!r}: {exc}") from None
    factory: Any = getattr(module, attr, None)
    if not callable(factory):
        raise SpecError(f"model spec {spec!r}: {module_name} has no callable {attr!r}")
    try:
        model = factory()
    except Exception as exc:  # the user's code: report it, whatever it raised
        raise SpecError(f"model spec {spec!r}: the factory raised {exc!r}") from None
    check_estimator(model, task, spec)
    return model


def check_estimator(model: Any, task: str, spec: str) -> None:
    """Raise :class:`SpecError` unless ``model`` is a River estimator for ``task``."""
    if not isinstance(model, base.Estimator) or not hasattr(model, "learn_one"):
        raise SpecError(
            f"model spec {spec!r} returned {type(model).__name__}, not a River estimator "
            "with learn_one"
        )
    final: Any = model._last_step if isinstance(model, compose.Pipeline) else model
    if task == "regression" and not isinstance(final, base.Regressor):
        raise SpecError(f"model spec {spec!r} is not a regressor, but the task is regression")
    if task != "regression" and not isinstance(final, base.Classifier):
        raise SpecError(f"model spec {spec!r} is not a classifier, but the task is {task}")
    if task == "multiclass" and not final._multiclass:
        raise SpecError(f"model spec {spec!r} is a binary classifier, but the task is multiclass")
