"""Named, seeded streams of ``(features, label)``: River's bundled datasets and synthetic
generators with concept drift at known positions.

Producers, the demo, offline evaluation and the benchmarks all draw their data here, so
"the same stream" means the same thing to each of them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from river import datasets
from river.datasets import synth

from models.agrawal import Agrawal

Sample = tuple[dict[str, Any], Any]
DRIFT_EVERY = 12_500  # events between a paced dataset's drifts, unless asked otherwise


class DatasetError(ValueError):
    """An unknown dataset name or an impossible request of one."""


@dataclass(frozen=True)
class Stream:
    """A stream to draw: its samples, its task, and where its concept changes."""

    name: str
    task: str
    samples: Iterator[Sample]
    drifts: tuple[int, ...]
    size: int | None


@dataclass(frozen=True)
class DatasetSpec:
    """How to draw a named stream for a seed, a length and a drift period."""

    name: str
    task: str
    description: str
    size: int | None
    abrupt: bool
    make: Callable[[int, int], Iterator[Sample]]  # (seed, drift_every) -> samples
    paced: bool = False  # drift_every places its drifts (else it is no use with this one)


def _bundled(cls: Callable[[], Any]) -> Callable[[int, int], Iterator[Sample]]:
    def make(seed: int, drift_every: int) -> Iterator[Sample]:
        return iter(cls())

    return make


def _abrupt(concepts: list[Callable[[int], Any]]) -> Callable[[int, int], Iterator[Sample]]:
    """Switch to the next concept every ``drift_every`` events, cycling through them."""

    def make(seed: int, drift_every: int) -> Iterator[Sample]:
        for k in itertools.count():
            source = concepts[k % len(concepts)](seed + k)
            yield from itertools.islice(source, drift_every)

    return make


def _steady(concept: Callable[[int], Any]) -> Callable[[int, int], Iterator[Sample]]:
    def make(seed: int, drift_every: int) -> Iterator[Sample]:
        return iter(concept(seed))

    return make


def _agrawal(function: int) -> Callable[[int], Any]:
    return lambda seed: Agrawal(classification_function=function, seed=seed)


def _sea(variant: int) -> Callable[[int], Any]:
    return lambda seed: synth.SEA(variant=variant, noise=0.05, seed=seed)


def _gradual(seed: int, drift_every: int) -> Iterator[Sample]:
    stream = synth.ConceptDriftStream(
        stream=synth.SEA(variant=0, seed=seed),
        drift_stream=synth.SEA(variant=2, seed=seed + 1),
        position=drift_every,
        width=max(drift_every // 10, 1000),
        seed=seed,
    )
    return iter(stream)


def _hyperplane(seed: int, drift_every: int) -> Iterator[Sample]:
    return iter(synth.Hyperplane(seed=seed, n_features=10, n_drift_features=5, mag_change=0.001))


DATASETS: dict[str, DatasetSpec] = {
    d.name: d
    for d in (
        DatasetSpec(
            "phishing",
            "binary",
            "River's Phishing websites (1,250)",
            1250,
            False,
            _bundled(datasets.Phishing),
        ),
        DatasetSpec(
            "bananas",
            "binary",
            "River's Bananas, 2 features (5,300)",
            5300,
            False,
            _bundled(datasets.Bananas),
        ),
        DatasetSpec(
            "imagesegments",
            "multiclass",
            "River's ImageSegments, 7 classes (2,310)",
            2310,
            False,
            _bundled(datasets.ImageSegments),
        ),
        DatasetSpec(
            "trumpapproval",
            "regression",
            "River's TrumpApproval (1,001)",
            1001,
            False,
            _bundled(datasets.TrumpApproval),
        ),
        DatasetSpec(
            "agrawal",
            "binary",
            "Agrawal function 2: non-linear, no drift",
            None,
            False,
            _steady(_agrawal(2)),
        ),
        DatasetSpec(
            "agrawal-drift",
            "binary",
            "Agrawal, abrupt drift every --drift-every events (functions 0, 2, 5, 8)",
            None,
            True,
            _abrupt([_agrawal(f) for f in (0, 2, 5, 8)]),
            paced=True,
        ),
        DatasetSpec(
            "agrawal-switch",
            "binary",
            "Agrawal, abrupt drift every --drift-every events between functions 4 and 6",
            None,
            True,
            _abrupt([_agrawal(f) for f in (4, 6)]),
            paced=True,
        ),
        DatasetSpec(
            "sea-drift",
            "binary",
            "SEA (5% noise), abrupt drift every --drift-every events (variants 0-3)",
            None,
            True,
            _abrupt([_sea(v) for v in (0, 1, 2, 3)]),
            paced=True,
        ),
        DatasetSpec(
            "sea-gradual",
            "binary",
            "River's ConceptDriftStream: SEA 0 to SEA 2 centred on --drift-every",
            None,
            False,
            _gradual,
            paced=True,
        ),
        DatasetSpec(
            "hyperplane",
            "binary",
            "Rotating hyperplane: continuous gradual drift",
            None,
            False,
            _hyperplane,
        ),
    )
}


def open_stream(
    name: str, *, seed: int, events: int | None, drift_every: int | None = None
) -> Stream:
    """Draw ``events`` samples (all of a bundled dataset when ``None``) of a named stream,
    whose drifts, if it is paced, come every ``drift_every`` events (:data:`DRIFT_EVERY`)."""
    spec = DATASETS.get(name)
    if spec is None:
        raise DatasetError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}")
    if drift_every is not None and not spec.paced:
        paced = ", ".join(d.name for d in DATASETS.values() if d.paced)
        raise DatasetError(f"{name} has no drifts to place: --drift-every is for {paced}")
    if drift_every is None:
        drift_every = DRIFT_EVERY
    if drift_every < 1:
        raise DatasetError("drift_every must be at least 1")
    if events is None:
        if spec.size is None:
            raise DatasetError(f"{name} is endless: give a number of events")
        events = spec.size
    if spec.size is not None:
        events = min(events, spec.size)
    drifts = tuple(range(drift_every, events, drift_every)) if spec.abrupt else ()
    samples = itertools.islice(spec.make(seed, drift_every), events)
    return Stream(name, spec.task, _as_json(samples, spec.task), drifts, events)


def _as_json(samples: Iterator[Sample], task: str) -> Iterator[Sample]:
    """Samples as they look after a trip through JSON: feature names are strings (SEA
    numbers its features), and binary labels are booleans (Agrawal says 0/1)."""
    binary = task == "binary"
    for x, y in samples:
        yield {str(k): v for k, v in x.items()}, bool(y) if binary else y
