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


class Flaky(Recorder):
    """Like :class:`Recorder`, but its code fails on events whose ``v`` is above 0.9."""

    def predict_proba_one(self, x: dict) -> dict[bool, float]:
        if x.get("v", 0.0) > 0.9:
            raise ValueError("flaky model: v is too high")
        return super().predict_proba_one(x)


def flaky() -> Flaky:
    """The factory a spec names: ``tests.recorder:flaky``."""
    return Flaky()


class Clumsy(Recorder):
    """Like :class:`Recorder`, but its ``learn_one`` fails on events whose ``v`` is above 0.9."""

    def learn_one(self, x: dict, y: Any) -> None:
        if x.get("v", 0.0) > 0.9:
            raise ValueError("clumsy model: cannot learn v this high")
        super().learn_one(x, y)


def clumsy() -> Clumsy:
    """The factory a spec names: ``tests.recorder:clumsy``."""
    return Clumsy()
