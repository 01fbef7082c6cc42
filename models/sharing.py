"""One standard scaler for several models: ``StandardScaler | model`` pipelines whose scalers
are in the same state (a champion and challengers started together see the same events)
share one scaler object, which learns and transforms once per event instead of once per
model. The results are exactly those of separate pipelines; the scaler is the costliest
step of a linear pipeline, so this nearly halves the work of two of them. A group of one
is a pipeline alone, split so that its steps can run through :mod:`models.kernels`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from river import compose, preprocessing


def scaler_and_final(model: Any) -> tuple[preprocessing.StandardScaler, Any] | None:
    """``(scaler, final step)`` of a two-step ``StandardScaler | model`` pipeline, else None."""
    if not isinstance(model, compose.Pipeline) or len(model.steps) != 2:
        return None
    first, final = model.steps.values()
    if type(first) is not preprocessing.StandardScaler:
        return None
    return first, final


def same_state(a: preprocessing.StandardScaler, b: preprocessing.StandardScaler) -> bool:
    """Whether two scalers would transform and learn identically from here on."""
    return a is b or (a.with_std == b.with_std and vars(a) == vars(b))


def share(model: Any, scaler: preprocessing.StandardScaler) -> None:
    """Make ``model``'s pipeline use ``scaler`` as its first step."""
    name = next(iter(model.steps))
    model.steps[name] = scaler
    model._build_plan()


def group(models: Iterable[tuple[int, Any]]) -> list[tuple[Any, list[tuple[int, Any]]]]:
    """The ``(key, model)`` pipelines, grouped by the state of their scalers, each group now
    sharing one scaler: ``[(scaler, [(key, final step), ...]), ...]``; other models are left
    out."""
    groups: list[tuple[Any, list[tuple[int, Any]]]] = []
    for key, model in models:
        parts = scaler_and_final(model)
        if parts is None:
            continue
        scaler, final = parts
        home = next((g for g in groups if same_state(g[0], scaler)), None)
        if home is None:
            groups.append((scaler, [(key, final)]))
        else:
            share(model, home[0])
            home[1].append((key, final))
    return groups
