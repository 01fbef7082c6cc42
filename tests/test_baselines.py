"""The benchmark's bare loops measure the same work: the kernel loop (the flow's model path)
leaves the models and drift detectors exactly as River's own loop does."""

from __future__ import annotations

import re

import pytest

from bench.baselines import KernelModels, Models
from models.datasets import open_stream


def _state(models: Models) -> str:
    """Every learned number of both pipelines and what each ADWIN holds, exactly."""
    parts = []
    for model, detector in zip(models.models, models.detectors, strict=True):
        scaler, lr = model.steps.values()
        parts.append(
            repr(
                (
                    sorted(scaler.means.items()),
                    sorted(scaler.vars.items()),
                    sorted(lr.weights.items()),
                    lr.intercept,
                    detector.total,
                    detector.width,
                    detector.drift_detected,
                )
            )
        )
    return "\n".join(parts)


def test_kernel_loop_learns_exactly_what_the_river_loop_learns() -> None:
    samples = list(open_stream("agrawal-drift", seed=7, events=3000).samples)
    river, kernel = (Models.build(("logreg", "logreg"), "binary", 7) for _ in range(2))
    fast = KernelModels(kernel)
    served = [river.step(x, y) for x, y in samples]
    assert [fast.step(x, y) for x, y in samples] == served
    assert _state(kernel) == _state(river)
    assert kernel.models[0].steps["StandardScaler"] is kernel.models[1].steps["StandardScaler"]


def test_kernel_loop_refuses_models_the_kernels_do_not_run_and_leaves_them_alone() -> None:
    only = re.escape("StandardScaler | LogisticRegression only")
    with pytest.raises(ValueError, match=only):
        KernelModels(Models.build(("logreg", "hoeffding"), "binary", 7))
    models = Models.build(("logreg", "logreg"), "binary", 7)
    models.models[1].steps["LogisticRegression"].l2 = 0.1  # a penalty: River's path only
    with pytest.raises(ValueError, match=only):
        KernelModels(models)
    first, second = (m.steps["StandardScaler"] for m in models.models)
    assert first is not second, "a refused pair keeps its own scalers"
