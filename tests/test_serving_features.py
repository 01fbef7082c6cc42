"""Serving features = learning features: for the same event, the gRPC server (entity state
read from Redis, then EntityFeatures.peek) predicts what the learn flow predicts."""

from __future__ import annotations

import random
from typing import Any

import pytest

from models.feature_store import FeatureStore
from models.features import EntityFeatures, FeatureSpec
from models.specs import build_model
from tests.helpers import event, read_topic, run_flow_to_end, write_raw
from tests.serving import publish, running

ITEMS = ("count", "since_last", "mean:x")
ENTITIES = [f"user-{i}" for i in range(10)]
T0 = 1_000_000.0


def _stream(n: int, seed: int) -> list[tuple[str, dict[str, float], bool]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        entity = ENTITIES[i % len(ENTITIES)]
        x = {"x": rng.uniform(0, 10) + ENTITIES.index(entity), "y": rng.uniform(-1, 1)}
        out.append((entity, x, x["x"] + 3 * x["y"] > 7))
    return out


def _trained_on_entity_features() -> Any:
    """A logreg that learned from events with the entity aggregates, as the flow adds them."""
    features = EntityFeatures(FeatureSpec.parse(ITEMS))
    model = build_model("logreg", "binary", 0)
    for i, (entity, x, y) in enumerate(_stream(2000, seed=1)):
        model.learn_one(features.update(entity, T0 - 10_000 + i * 3.0, x), y)
    return model


@pytest.mark.parametrize("ttl", [0.0, 350.0])
def test_server_predicts_what_the_flow_predicts_for_the_same_event(
    make_settings: Any, ttl: float
) -> None:
    """With an entity TTL, the entities idle for longer than it at their next event (the last
    three here) are new to both."""
    s = make_settings(entity_features=ITEMS, entity_ttl=ttl)
    publish(s, _trained_on_entity_features())
    history = _stream(200, seed=2)
    write_raw(
        s,
        s.topic_events,
        [
            (entity.encode(), event(i, x, entity=entity, prefix="h", t0=T0))
            for i, (entity, x, _) in enumerate(history)
        ],
    )
    run_flow_to_end(s)  # no labels: the champion only predicts, and the store fills up
    assert FeatureStore.connect(s.redis_url, s.model_name).read_spec() == FeatureSpec.parse(ITEMS)

    # The next event of every entity, scored by the server first...
    upcoming = [
        (e, {"x": 4.0 + k, "y": 0.5 - k / 10}, T0 + 500 + 7 * k) for k, e in enumerate(ENTITIES)
    ]
    with running(s) as (_, client):
        assert list(client.get_model().entity_features) == list(ITEMS)
        served = {
            f"n{k}": client.predict(x, entity=e, id=f"n{k}", time=t).proba["true"]
            for k, (e, x, t) in enumerate(upcoming)
        }
        packed = client.predict_packed(
            ["x", "y"],
            [[x["x"], x["y"]] for _, x, _ in upcoming],  # type: ignore[arg-type]
            entities=[e for e, _, _ in upcoming],
            times=[t for _, _, t in upcoming],
        )
        as_new = [
            client.predict(x, entity="never-seen", time=t).proba["true"] == served[f"n{k}"]
            for k, (_, x, t) in enumerate(upcoming)
        ]
    assert as_new == [bool(ttl) and k >= 7 for k in range(len(upcoming))]

    # ...then by the flow, which replays the same history and reaches the same states.
    write_raw(
        s,
        s.topic_events,
        [
            (e.encode(), event(0, x, entity=e, prefix=f"n{k}-", t0=t))
            for k, (e, x, t) in enumerate(upcoming)
        ],
    )
    run_flow_to_end(s)
    flow = {m.json()["id"].replace("-0", ""): m.json() for m in read_topic(s, s.topic_predictions)}
    for k in range(len(upcoming)):
        by_flow = flow[f"n{k}"]["proba"]["true"]
        assert abs(served[f"n{k}"] - by_flow) <= 1e-12, (k, served[f"n{k}"], by_flow)
        assert abs(packed.proba[k, 1] - by_flow) <= 1e-12
    assert len(set(served.values())) == len(upcoming), "the features made a difference"
