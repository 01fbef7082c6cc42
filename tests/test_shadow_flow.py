"""Challengers in shadow and promotion through Kafka and Redis; the A/B split."""

from __future__ import annotations

from collections import Counter
from typing import Any

import redis

from flows.produce import ProduceRequest, produce
from models.ab import serving_arm
from models.registry import Registry
from models.status import read_status
from tests.helpers import read_topic, run_flow_to_end

ARF_EVENTS = 6000  # arf wins once 1,000 paired events are in (at 2,000 here), then serves


def _run(s: Any, dataset: str, events: int) -> dict[str, Any]:
    req = ProduceRequest(dataset, events, seed=s.seed, id_prefix="s", entities=50)
    produce(req, s.bootstrap_servers, s.topic_events, s.topic_labels, progress=False)
    run_flow_to_end(s)
    status = read_status(redis.Redis.from_url(s.redis_url), s.model_name)
    assert status is not None
    return status


def test_arf_challenger_is_promoted_over_logreg_on_a_nonlinear_stream(make_settings: Any) -> None:
    s = make_settings(challengers=("arf",), snapshot_every=10**9, snapshot_interval=3600.0)
    status = _run(s, "agrawal", ARF_EVENTS)

    (promotion,) = status["promotions"]
    assert promotion["at_event"] < ARF_EVENTS // 2
    assert promotion["from"].startswith("logreg@") and promotion["to"].startswith("arf@")
    evidence = promotion["evidence"]
    assert evidence["promote"] and evidence["p_value"] < 0.01 and evidence["n"] >= 1000

    served = [m.json() for m in read_topic(s, s.topic_predictions)]
    assert [p["id"] for p in served] == [f"s-{i}" for i in range(ARF_EVENTS)]
    specs = [p["spec"] for p in served]
    swap = specs.index("arf")
    assert set(specs[:swap]) == {"logreg"} and set(specs[swap:]) == {"arf"}
    assert abs(swap - promotion["at_event"]) <= 1000, "served by arf right after the swap"

    shadow = [m.json() for m in read_topic(s, s.topic_shadow)]
    assert [p["id"] for p in shadow] == [f"s-{i}" for i in range(ARF_EVENTS)]
    assert {p["spec"] for p in shadow[:swap]} == {"arf"}
    assert {p["spec"] for p in shadow[swap:]} == {"logreg"}, "the old champion stays in shadow"
    assert {p["role"] for p in shadow} == {"challenger"}

    reg = Registry.connect(s.redis_url, s.registry_key)
    promotions = [m for m in reg.history(s.model_name) if m.reason.startswith("arf beat")]
    assert len(promotions) == 1 and promotions[0].action == "promote"
    assert promotions[0].evidence["p_value"] == evidence["p_value"]
    champion = reg.info(s.model_name, reg.alias(s.model_name, "champion"))
    challenger = reg.info(s.model_name, reg.alias(s.model_name, "challenger"))
    assert (champion.spec, challenger.spec) == ("arf", "logreg")
    arf = next(m for m in status["models"] if m["spec"] == "arf")
    logreg = next(m for m in status["models"] if m["spec"] == "logreg")
    assert arf["role"] == "champion" and arf["metrics"]["accuracy"] > logreg["metrics"]["accuracy"]


def test_ab_split_serves_a_stable_fraction_of_entities_by_the_challenger(
    make_settings: Any,
) -> None:
    s = make_settings(challengers=("hoeffding",), ab_fraction=0.3, auto_promote=False)
    status = _run(s, "sea-drift", 3000)
    served = [m.json() for m in read_topic(s, s.topic_predictions)]
    shadow = [m.json() for m in read_topic(s, s.topic_shadow)]
    assert len(served) == len(shadow) == 3000
    for p in served:
        assert p["role"] == serving_arm(p["entity"], 0.3), p
        assert p["spec"] == ("hoeffding" if p["role"] == "challenger" else "logreg")
    by_entity: dict[str, set[str]] = {}
    for p in served:
        by_entity.setdefault(p["entity"], set()).add(p["role"])
    assert all(len(roles) == 1 for roles in by_entity.values()), "an entity stays in its arm"
    roles = Counter(p["role"] for p in served)
    assert 0.1 < roles["challenger"] / 3000 < 0.5
    assert {p["id"] for p in shadow} == {p["id"] for p in served}
    arms = status["arms"]
    assert arms["challenger"]["n"] == roles["challenger"]
    assert arms["champion"]["n"] == roles["champion"]
    reg = Registry.connect(s.redis_url, s.registry_key)
    assert reg.ab_fraction(s.model_name) == 0.3
