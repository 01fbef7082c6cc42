"""A River classifier that records what it learns, for tests that check the label join."""

from __future__ import annotations

from typing import Any

from river import base

LEARNED: list[tuple[dict[str, Any], Any]] = []


class Recorder(base.Classifier):
    """Predicts from feature ``v`` and remembers every ``learn_one`` call in ``LEARNED``."""

    def learn_one(self, x: dict, y: Any) -> None:
        LEARNED.append((dict(x), y))

    def predict_proba_one(self, x: dict) -> dict[bool, float]:
        p = min(max(float(x.get("v", 0.5)), 0.0), 1.0)
        return {True: p, False: 1.0 - p}


def make() -> Recorder:
    """The factory a spec names: ``tests.recorder:make``."""
    return Recorder()
