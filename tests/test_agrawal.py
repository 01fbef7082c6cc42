"""models.agrawal draws exactly River's Agrawal samples: values, types, feature order."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from river.datasets import synth

from models.agrawal import Agrawal
from models.datasets import DRIFT_EVERY, DatasetError, open_stream


@pytest.mark.parametrize("function", range(10))
@pytest.mark.parametrize(("perturbation", "balance"), [(0.0, False), (0.2, False), (0.1, True)])
def test_the_same_samples_as_river(function: int, perturbation: float, balance: bool) -> None:
    for seed in (1, 42):
        kwargs: dict[str, Any] = {
            "classification_function": function,
            "seed": seed,
            "perturbation": perturbation,
            "balance_classes": balance,
        }
        ours = list(itertools.islice(Agrawal(**kwargs), 500))
        river = list(itertools.islice(synth.Agrawal(**kwargs), 500))
        assert [(list(x.items()), y) for x, y in ours] == [(list(x.items()), y) for x, y in river]
        assert [type(v) for x, _ in ours for v in x.values()] == [
            type(v) for x, _ in river for v in x.values()
        ]


def _draw_with_drift_and_two_iterators(gen: synth.Agrawal) -> list[tuple[dict, int]]:
    """Samples of ``gen`` with a drift mid-stream, then two iterators of it in turn."""
    first = iter(gen)
    drawn = list(itertools.islice(first, 30))
    gen.generate_drift()  # switches the classification function, drawing from gen._rng
    drawn += itertools.islice(first, 30)
    second = iter(gen)  # a new seeded _rng, which the first iterator draws from too
    for _ in range(20):
        drawn += [next(first), next(second)]
    return drawn


def test_drift_and_shared_iterators_draw_as_river_does() -> None:
    for perturbation in (0.0, 0.1):
        kwargs: dict[str, Any] = {
            "classification_function": 1,
            "seed": 9,
            "perturbation": perturbation,
        }
        ours = _draw_with_drift_and_two_iterators(Agrawal(**kwargs))
        assert ours == _draw_with_drift_and_two_iterators(synth.Agrawal(**kwargs))


def test_agrawal_streams_use_it(monkeypatch: pytest.MonkeyPatch) -> None:
    concepts: list[int] = []
    draw = Agrawal.__iter__

    def noted(self: Agrawal) -> Iterator[tuple[dict[str, Any], int]]:
        concepts.append(self.classification_function)
        return draw(self)

    monkeypatch.setattr(Agrawal, "__iter__", noted)
    stream = open_stream("agrawal-drift", seed=3, events=30, drift_every=10)
    river = itertools.chain.from_iterable(
        itertools.islice(synth.Agrawal(classification_function=f, seed=3 + k), 10)
        for k, f in enumerate((0, 2, 5))  # each concept is seeded seed + its index
    )
    assert [x for x, _ in stream.samples] == [{str(k): v for k, v in x.items()} for x, _ in river]
    assert concepts == [0, 2, 5], "drawn by models.agrawal, not River's slower generator"


def test_a_paced_stream_drifts_every_drift_every_events_unless_told_otherwise() -> None:
    assert open_stream("agrawal-drift", seed=3, events=30_000).drifts == (DRIFT_EVERY, 25_000)
    assert open_stream("agrawal-drift", seed=3, events=30, drift_every=10).drifts == (10, 20)
    assert open_stream("agrawal", seed=3, events=30).drifts == ()
    with pytest.raises(DatasetError, match="agrawal has no drifts to place"):
        open_stream("agrawal", seed=3, events=30, drift_every=10)
