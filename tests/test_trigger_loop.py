"""The loop closes: drift → retrain → challenger → promotion, through Kafka and Redis, and
the champion serves better after the drift than the same run with triggers off."""

from __future__ import annotations

from typing import Any

from bench.triggers import SCENARIO, marks, run_scenario


def test_drift_retrain_and_promotion_lift_the_champion_after_the_drift(
    make_settings: Any,
) -> None:
    on = make_settings(trigger_drift_wait=800, trigger_cooldown=60.0, **SCENARIO)
    off = make_settings(topic_events=on.topic_events, topic_labels=on.topic_labels, **SCENARIO)
    scenario = run_scenario(on, off)

    audit = scenario.on.audit
    drift = next(i for i, m in enumerate(audit) if m.action == "trigger-retrain")
    assert "concept drift on the champion" in audit[drift].reason
    retrained = next((i for i, m in enumerate(audit) if m.actor == "retrain"), -1)
    assert retrained >= 0, [m.reason for m in audit if m.actor == "trigger"]
    assert retrained > drift and audit[retrained].alias == "challenger-retrain"
    promoted = next(
        i for i, m in enumerate(audit) if m.action == "promote" and m.from_version and i > retrained
    )
    assert audit[promoted].evidence["p_value"] < on.promote_alpha
    assert not any(m.actor == "retrain" for m in scenario.off.audit)
    points = marks(scenario.on)
    assert points["drift"][0] < points["retrain"][0] < points["promotion"][-1]

    with_triggers = scenario.accuracy_after_drift(scenario.on)
    without = scenario.accuracy_after_drift(scenario.off)
    print(
        f"accuracy over the 5,000 events after the drift: {with_triggers:.4f} with triggers, "
        f"{without:.4f} without"
    )
    assert with_triggers > without + 0.02, (with_triggers, without)
