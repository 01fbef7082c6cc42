"""Drift detection: quality on known drifts, data drift by feature, alarms on the topic."""

from __future__ import annotations

import itertools
import pickle
import random
from typing import Any

import pytest

from flows.produce import ProduceRequest, produce
from models.drift import DriftWatch, ErrorWatch, PSIWatch
from models.drift_quality import measure
from models.features import EntityFeatures, FeatureSpec
from tests.helpers import read_topic, run_flow_to_end


def test_default_detector_catches_every_abrupt_drift_and_stays_quiet_without() -> None:
    drifting = measure("agrawal-switch", "logreg", range(10), events=25_000, drift_every=5000)
    assert drifting.drifts == 40 and drifting.missed == 0
    assert max(drifting.delays) < 2000
    control = measure("agrawal-switch", "logreg", range(10), events=10_000, drift_every=10**9)
    assert control.drifts == 0 and control.events == 100_000
    assert control.false_alarms <= 1, "at most one alarm per 100,000 events without drift"


@pytest.mark.parametrize("detector", ["adwin", "page_hinkley"])
def test_a_falling_error_is_no_alarm(detector: str) -> None:
    watch = ErrorWatch(detector)
    rng = random.Random(0)
    fired = [
        i for i in range(6000) if watch.update(float(rng.random() < (0.5 if i < 3000 else 0.1)))
    ]
    assert fired == []
    rising = [i for i in range(6000) if watch.update(float(rng.random() < 0.6))]
    assert rising and rising[0] < 300


def test_psi_names_the_feature_that_moved() -> None:
    psi = PSIWatch(window=2000)
    rng = random.Random(1)
    moved = []
    for i in range(8000):
        shift = 3.0 if i >= 4000 else 0.0
        x = {"steady": rng.gauss(0, 1), "moving": rng.gauss(shift, 1), "flag": float(i % 2)}
        moved += [(i, name) for name, _score in psi.update(x)]
    assert moved == [(5999, "moving")], "one alarm, for the moving feature, then a new reference"


def test_psi_leaves_an_entitys_growing_count_alone() -> None:
    """An entity's count grows by construction: PSI flagged it at every window, forever."""
    entities = EntityFeatures(FeatureSpec.parse(["count", "since_last"]))
    watch = DriftWatch("off", data_window=2000)
    rng = random.Random(3)
    for i in range(20_000):
        x = {"steady": rng.gauss(0, 1), "moving": rng.gauss(3.0 * (i >= 12_000), 1)}
        watch.features(entities.update(f"e{rng.randrange(100)}", i * 0.01, x), i, f"e{i}", i)
    assert [(s.kind, s.features) for s in watch.signals] == [("data", ("moving",))]


def test_a_watch_from_a_snapshot_older_than_its_ignore_field_goes_on() -> None:
    """A recovery snapshot of an older riverrun has no ``ignore``: its first sampled event
    raised AttributeError inside the learn step."""
    old = PSIWatch(window=2000)
    del old.__dict__["ignore"]
    restored = pickle.loads(pickle.dumps(old))
    assert [restored.update({"a": 1.0, "entity_count": 3.0}) for _ in range(4)] == [[]] * 4
    assert restored.ignore == frozenset({"entity_count"})


def test_psi_windows_need_not_be_a_multiple_of_the_sampling() -> None:
    psi = PSIWatch(window=2001)  # one event in four is sampled
    rng = random.Random(1)
    moved = [i for i in range(8000) if psi.update({"moving": rng.gauss(3.0 * (i >= 4500), 1)})]
    assert moved == [6002]


def test_alarms_of_one_source_keep_their_distance() -> None:
    watch = DriftWatch("adwin", min_gap=5000, data_window=0)
    rng = random.Random(2)
    for i in range(12_000):
        p = 0.05 if (i // 2000) % 2 == 0 else 0.6  # the error jumps up every 4,000 events
        watch.error(1, "champion", float(rng.random() < p), i, f"e{i}", float(i))
    positions = [s.position for s in watch.signals]
    assert len(positions) >= 2
    assert all(b - a >= 5000 for a, b in itertools.pairwise(positions))


def test_flow_writes_drift_events_to_the_drift_topic(make_settings: Any) -> None:
    s = make_settings(drift_min_gap=100_000)
    req = ProduceRequest("agrawal-switch", 12_000, seed=3, drift_every=6000, id_prefix="d")
    produce(req, s.bootstrap_servers, s.topic_events, s.topic_labels, progress=False)
    run_flow_to_end(s)
    events = [m.json() for m in read_topic(s, s.topic_drift)]
    concept = [e for e in events if e["kind"] == "concept" and e["source"] == "champion"]
    assert len(concept) == 1, "one alarm per source: the minimum gap holds"
    alarm = concept[0]
    assert 6000 < alarm["position"] <= 8000
    assert alarm["model"] == s.model_name and alarm["spec"] == "logreg"
    assert alarm["detector"] == "adwin" and alarm["version"] >= 1
    assert alarm["event_id"] == f"d-{alarm['position'] - 1}"
    # A retrain of this drift starts right after the event that raised it (one message per
    # event here), not at the end of the batch it came in.
    assert alarm["positions"] == {f"{s.topic_events}-0": alarm["position"]}
    assert 0 < alarm["statistic"] <= 1
