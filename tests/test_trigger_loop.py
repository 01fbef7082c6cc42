"""The loop closes: drift → retrain → challenger → promotion, through Kafka and Redis, and
the champion serves better after the drift than the same run with triggers off."""

from __future__ import annotations

import threading
from typing import Any

from flows.produce import ProduceRequest, produce
from models.registry import Registry
from tests.helpers import LearnProcess, RiverrunProcess, count_messages, read_topic, wait_for

DRIFT_AT = 10_000
EVENTS = 15_000


def _accuracy_after_drift(s: Any, truth: dict[str, bool]) -> float:
    served = [m.json() for m in read_topic(s, s.topic_predictions)]
    window = [p for p in served if DRIFT_AT <= int(p["id"].rpartition("-")[2]) < EVENTS]
    assert len(window) == EVENTS - DRIFT_AT
    return sum(p["prediction"] == truth[p["id"]] for p in window) / len(window)


def test_drift_retrain_and_promotion_lift_the_champion_after_the_drift(
    make_settings: Any,
) -> None:
    common = {
        "model_spec": "hoeffding",
        "promote_min_samples": 300,
        "promote_window": 1000,
        "promote_cooldown": 500,
        "snapshot_interval": 1.0,
        "data_drift_window": 0,
    }
    on = make_settings(trigger_drift_wait=800, trigger_cooldown=60.0, **common)
    off = make_settings(topic_events=on.topic_events, topic_labels=on.topic_labels, **common)
    # History at full speed, then 400 events/s from shortly before the drift.
    req = ProduceRequest(
        "agrawal-switch",
        EVENTS,
        seed=11,
        drift_every=DRIFT_AT,
        rate=400.0,
        burst=DRIFT_AT - 1000,
        id_prefix="loop",
    )
    producer = threading.Thread(
        target=produce,
        args=(req, on.bootstrap_servers, on.topic_events, on.topic_labels),
        kwargs={"progress": False},
    )
    with (
        LearnProcess(on) as learn_on,
        LearnProcess(off) as learn_off,
        RiverrunProcess(on, "trigger") as trigger,
    ):
        producer.start()
        producer.join()
        for s in (on, off):
            wait_for(
                lambda s=s: count_messages(s, s.topic_predictions) >= EVENTS,
                60,
                f"every prediction of {s.model_name}",
            )
        assert learn_on.alive() and learn_off.alive() and trigger.alive()
        assert trigger.stop() == 0, trigger.stderr()
        assert learn_on.stop() == 0 and learn_off.stop() == 0

    reg = Registry.connect(on.redis_url, on.registry_key)
    audit = reg.history(on.model_name)
    kinds = [(m.action, m.actor) for m in audit]
    drift = next(i for i, m in enumerate(audit) if m.action == "trigger-retrain")
    assert "concept drift on the champion" in audit[drift].reason
    retrained = next(i for i, m in enumerate(audit) if m.actor == "retrain")
    assert retrained > drift and audit[retrained].alias == "challenger"
    promoted = next(
        i for i, m in enumerate(audit) if m.action == "promote" and m.to_version and i > retrained
    )
    assert audit[promoted].evidence["p_value"] < on.promote_alpha, kinds
    new_champion = reg.info(on.model_name, audit[promoted].to_version)  # type: ignore[arg-type]
    assert new_champion.tags.get("promoted") == "true"
    assert reg.history(off.model_name) and not any(
        m.actor == "retrain" for m in reg.history(off.model_name)
    )

    events = [m.json() for m in read_topic(on, on.topic_events)]
    truth = {e["id"]: e["label"] for e in events}
    with_triggers, without = _accuracy_after_drift(on, truth), _accuracy_after_drift(off, truth)
    print(
        f"accuracy over the 5,000 events after the drift: {with_triggers:.4f} with triggers, "
        f"{without:.4f} without"
    )
    assert with_triggers > without + 0.02, (with_triggers, without)
