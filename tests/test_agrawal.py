"""models.agrawal draws exactly River's Agrawal samples: values, types, feature order."""

from __future__ import annotations

import itertools

import pytest
from river.datasets import synth

from models.agrawal import Agrawal
from models.datasets import open_stream


@pytest.mark.parametrize("function", range(10))
@pytest.mark.parametrize(("perturbation", "balance"), [(0.0, False), (0.2, False), (0.1, True)])
def test_the_same_samples_as_river(function: int, perturbation: float, balance: bool) -> None:
    for seed in (1, 42):
        kwargs = {
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


def test_iterating_again_starts_the_stream_over() -> None:
    gen = Agrawal(classification_function=3, seed=5)
    first = list(itertools.islice(gen, 50))
    assert list(itertools.islice(gen, 50)) == first


def test_agrawal_streams_use_it() -> None:
    stream = open_stream("agrawal-drift", seed=3, events=30, drift_every=10)
    river = itertools.chain.from_iterable(
        itertools.islice(synth.Agrawal(classification_function=f, seed=3 + k), 10)
        for k, f in enumerate((0, 2, 5))  # each concept is seeded seed + its index
    )
    assert [x for x, _ in stream.samples] == [{str(k): v for k, v in x.items()} for x, _ in river]
