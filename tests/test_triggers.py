"""Each trigger policy, with deduplication and the cool-down."""

from __future__ import annotations

from typing import Any

import pytest

from models.triggers import (
    SLUMP_MIN_SCORED,
    STALE_STATUS,
    BadDriftEvent,
    TriggerConfigError,
    TriggerPolicy,
    Triggers,
    check_drift_event,
)


def _status(
    labelled: int, rolling_accuracy: float = 0.9, *, scored: int = 1000, **contest: Any
) -> dict[str, Any]:
    metrics = {"rolling_accuracy": rolling_accuracy, "n": float(scored)}
    return {
        "labelled": labelled,
        "positions": {"events-0": labelled},
        "models": [{"role": "champion", "version": 3, "metrics": metrics}],
        "contest": contest,
    }


def _drift(position: int, source: str = "champion", kind: str = "concept") -> dict[str, Any]:
    return {
        "kind": kind,
        "source": source,
        "position": position,
        "detector": "adwin",
        "statistic": 0.4,
        "positions": {"events-0": position},
    }


def test_concept_drift_retrains_once_enough_data_arrived_since() -> None:
    t = Triggers(TriggerPolicy(drift_wait=500, cooldown=0))
    t.drift_event(_drift(1000, source="challenger"))
    t.drift_event(_drift(1000, kind="data"))
    assert t.decide(_status(5000), 0.0) == [], "only the champion's concept drift counts"
    t.drift_event(_drift(1000))
    assert t.decide(_status(1400), 1.0) == []
    (action,) = t.decide(_status(1500), 2.0)
    assert action.kind == "retrain" and action.positions == {"events-0": 1000}
    assert action.until == {"events-0": 1500}, "up to where the flow is, not beyond"
    assert "concept drift" in action.reason
    assert t.decide(_status(9000), 3.0) == [], "one retrain per drift"


def test_off_means_off() -> None:
    t = Triggers(TriggerPolicy(on_drift=False))
    t.drift_event(_drift(10))
    assert t.decide(_status(10_000, rolling_accuracy=0.1), 1e6) == []


def test_one_retrain_at_a_time_then_a_cooldown() -> None:
    t = Triggers(TriggerPolicy(drift_wait=0, cooldown=100.0))
    t.drift_event(_drift(10))
    (first,) = t.decide(_status(20), 0.0)
    assert first.kind == "retrain"
    t.retrain_started(0.0)
    t.drift_event(_drift(30))
    assert t.decide(_status(50), 10.0) == [], "a retrain is still running"
    t.retrain_ended(20.0)
    assert t.decide(_status(60), 110.0) == [], "cooling down for 100 s after the end"
    (second,) = t.decide(_status(70), 121.0)
    assert second.kind == "retrain" and second.positions == {"events-0": 30}


def test_fresh_data_retrains_every_n_labelled_events() -> None:
    t = Triggers(TriggerPolicy(on_drift=False, fresh_every=1000, cooldown=0, lookback=60.0))
    assert t.decide(_status(500), 0.0) == []
    assert t.decide(_status(1400), 1.0) == []
    (action,) = t.decide(_status(1500), 2.0)
    assert action.kind == "retrain" and action.since == 60.0
    assert t.decide(_status(2400), 3.0) == []
    assert len(t.decide(_status(2500), 4.0)) == 1


def test_schedule_retrains_every_t_seconds() -> None:
    t = Triggers(TriggerPolicy(on_drift=False, schedule_every=100.0, cooldown=0))
    assert t.decide(_status(0), 1000.0) == []
    assert t.decide(_status(0), 1099.0) == []
    assert [a.kind for a in t.decide(_status(0), 1100.0)] == ["retrain"]
    assert t.decide(_status(0), 1150.0) == []


@pytest.mark.parametrize("action", ["retrain", "rollback"])
def test_a_slump_that_lasts_triggers_its_action(action: str) -> None:
    t = Triggers(
        TriggerPolicy(
            on_drift=False, slump_action=action, slump_threshold=0.7, slump_for=60.0, cooldown=0
        )
    )
    assert t.decide(_status(100, 0.6), 0.0) == []
    assert t.decide(_status(200, 0.9), 30.0) == [], "a recovery resets the clock"
    assert t.decide(_status(300, 0.6), 40.0) == []
    assert t.decide(_status(400, 0.6), 99.0) == []
    (decided,) = t.decide(_status(500, 0.6), 100.0)
    assert decided.kind == action and "rolling_accuracy 0.6000" in decided.reason


def test_a_slump_promotes_only_a_challenger_the_promotion_policy_would_promote() -> None:
    t = Triggers(TriggerPolicy(on_drift=False, slump_action="promote", slump_for=0.0))
    worse = {"promote": False, "mean_difference": -0.1, "p_value": 0.9}
    assert t.decide(_status(100, 0.5, challenger=worse), 0.0) == []
    untested = {"promote": False, "gate": "non_finite", "mean_difference": 0.2, "p_value": 0.001}
    assert t.decide(_status(100, 0.5, challenger=untested), 0.5) == [], "a failed gate"
    better = {"promote": True, "mean_difference": 0.2, "p_value": 0.001}
    (action,) = t.decide(_status(100, 0.5, challenger=worse, **{"challenger-2": better}), 1.0)
    assert action.kind == "promote" and action.alias == "challenger-2"
    assert action.evidence["champion_version"] == 3, "it acts on the champion it saw slump"


def test_a_slump_promotion_waits_for_the_flows_promotion_cooldown() -> None:
    """The contest's decisions leave the cool-down out: a slump promoted a challenger within
    promote_cooldown labelled events of the last swap, which the flow itself never does."""
    t = Triggers(TriggerPolicy(on_drift=False, slump_action="promote", slump_for=0.0))
    better = {"promote": True, "mean_difference": 0.2, "p_value": 0.001}
    cooling = {**_status(100, 0.5, challenger=better), "cooling_down": True}
    assert t.decide(cooling, 0.0) == []
    (action,) = t.decide({**cooling, "cooling_down": False}, 1.0)
    assert action.kind == "promote" and action.alias == "challenger"


def test_a_contest_whose_figures_are_nan_is_no_evidence_for_a_slump_promotion() -> None:
    """A status writes NaN as null: comparing null with 0 raised TypeError out of decide,
    and stopped the trigger service."""
    t = Triggers(TriggerPolicy(on_drift=False, slump_action="promote", slump_for=0.0))
    nan = {"promote": True, "mean_difference": None, "p_value": None}
    assert t.decide(_status(100, 0.5, challenger=nan), 0.0) == []


def test_a_drift_retrain_that_failed_is_tried_again_after_the_cooldown() -> None:
    t = Triggers(TriggerPolicy(drift_wait=0, cooldown=100))
    t.drift_event(_drift(1000))
    (first,) = t.decide(_status(1000), 0.0)
    t.retrain_started(0.0)
    t.retrain_ended(50.0, first)  # it failed: Kafka was away, say
    assert t.decide(_status(1100), 60.0) == [], "the cool-down first"
    (again,) = t.decide(_status(1200), 151.0)
    assert again.kind == "retrain" and again.evidence == first.evidence
    t.retrain_started(151.0)
    t.retrain_ended(200.0)  # it registered its model: the drift is answered
    assert t.decide(_status(1300), 1000.0) == []


def test_a_drift_whose_retrain_keeps_failing_is_given_up_and_a_newer_one_is_not_held_up() -> None:
    """It was tried after every cool-down, for ever, and no later drift was ever retrained
    (an armed drift stayed, and it kept being armed again)."""
    t = Triggers(TriggerPolicy(drift_wait=0, cooldown=100))
    t.drift_event(_drift(1000))
    now, tries = 0.0, []
    for labelled in range(1100, 1600, 100):
        actions = t.decide(_status(labelled), now)
        if actions:
            (action,) = actions
            t.retrain_started(now)
            tries.append(t.retrain_ended(now + 1, action))  # it failed
        now += 101
    assert tries == [True, True, False], "three tries, then given up"
    assert t.drift is None and t.drift_tries is None
    t.drift_event(_drift(2000))
    (again,) = t.decide(_status(2100), now)
    assert again.positions == {"events-0": 2000}


def test_a_drift_after_a_failed_retrain_is_tried_in_its_place() -> None:
    t = Triggers(TriggerPolicy(drift_wait=0, cooldown=100))
    t.drift_event(_drift(1000))
    (first,) = t.decide(_status(1000), 0.0)
    t.retrain_started(0.0)
    assert t.retrain_ended(1.0, first) is True
    t.drift_event(_drift(1500))  # a newer drift: the failed one's range may be what fails
    (again,) = t.decide(_status(1600), 200.0)
    assert again.positions == {"events-0": 1500}


@pytest.mark.parametrize("kind", ["fresh", "schedule"])
def test_a_fresh_or_scheduled_retrain_that_could_not_start_comes_after_the_cooldown(
    kind: str,
) -> None:
    """Its mark had moved on, so it came only a whole period later (a day, for a daily
    schedule), while its audit entry said "next try after the cool-down"."""
    policy = (
        TriggerPolicy(on_drift=False, fresh_every=1000, cooldown=60)
        if kind == "fresh"
        else TriggerPolicy(on_drift=False, schedule_every=86_400, cooldown=60)
    )
    t = Triggers(policy)
    assert t.decide(_status(0), 0.0) == []
    (action,) = t.decide(_status(1000), 86_400.0)
    assert action.policy == kind
    assert t.retry(action, 86_400.0) is True  # another service holds the retrain lock
    assert t.decide(_status(1100), 86_430.0) == [], "the cool-down first"
    (again,) = t.decide(_status(1200), 86_461.0)
    assert again.policy == kind


def test_a_slump_retrain_due_in_a_cooldown_comes_when_it_ends() -> None:
    """It was decided, dropped unaudited, and its slump's clock started over."""
    t = Triggers(TriggerPolicy(on_drift=False, slump_action="retrain", slump_for=60.0))
    t.retrain_started(0.0)
    t.retrain_ended(1.0)  # another trigger's retrain: cooling down until 301
    assert t.decide(_status(100, 0.5), 10.0) == []
    assert t.decide(_status(200, 0.5), 80.0) == [], "due, but in the cool-down"
    assert [a.kind for a in t.decide(_status(300, 0.5), 302.0)] == ["retrain"]


def test_a_status_the_flow_stopped_rewriting_is_no_slump() -> None:
    """Its metrics are frozen: a stopped flow's last status acted on for ever rolled back."""
    t = Triggers(TriggerPolicy(on_drift=False, slump_action="rollback", slump_for=60.0))
    stale = {**_status(100, 0.5), "written_at": 0.0}
    assert t.decide(stale, 10.0) == []
    assert t.decide(stale, 10.0 + STALE_STATUS + 1) == [] and t.slump_since is None
    assert t.decide(stale, 10_000.0) == [], "however long it was bad"
    live = {**_status(200, 0.5), "written_at": 10_000.0}
    assert t.decide(live, 10_001.0) == [], "a live slump starts its own clock"
    assert [a.kind for a in t.decide({**live, "written_at": 10_060.0}, 10_061.0)] == ["rollback"]


def test_a_champion_whose_metric_is_nan_is_slumping() -> None:
    """NaN (written as null) compares as no slump: a regressor answering NaN stayed."""
    t = Triggers(TriggerPolicy(on_drift=False, slump_action="rollback", slump_for=0.0))
    nan = _status(200)
    nan["models"][0]["metrics"]["rolling_accuracy"] = None
    (action,) = t.decide(nan, 1.0)
    assert action.kind == "rollback" and "rolling_accuracy null (NaN or infinite)" in action.reason
    other = _status(300)
    del other["models"][0]["metrics"]["rolling_accuracy"]  # a metric the status lacks: no slump
    assert t.decide(other, 1000.0) == []


def test_a_champion_scored_on_too_few_events_is_not_slumping() -> None:
    t = Triggers(TriggerPolicy(on_drift=False, slump_action="rollback", slump_for=0.0))
    assert t.decide(_status(0, 0.0, scored=0), 0.0) == [], "not scored yet: no metric"
    assert t.decide(_status(99, 0.0, scored=SLUMP_MIN_SCORED - 1), 1.0) == []
    assert [a.kind for a in t.decide(_status(100, 0.0, scored=SLUMP_MIN_SCORED), 2.0)] == [
        "rollback"
    ]


def test_slump_rollbacks_wait_for_the_cooldown() -> None:
    t = Triggers(
        TriggerPolicy(on_drift=False, slump_action="rollback", slump_for=60.0, cooldown=300.0)
    )
    assert t.decide(_status(100, 0.5), 0.0) == []
    assert [a.kind for a in t.decide(_status(100, 0.5), 60.0)] == ["rollback"]
    for now in (121.0, 182.0, 243.0, 300.0, 359.0):  # still slumping, still cooling
        assert t.decide(_status(100, 0.5), now) == [], now
    assert [a.kind for a in t.decide(_status(100, 0.5), 421.0)] == ["rollback"]


def test_a_flow_that_started_over_drops_marks_it_will_never_reach() -> None:
    t = Triggers(TriggerPolicy(drift_wait=1000, cooldown=0, fresh_every=5000))
    t.drift_event(_drift(40_000))
    assert t.decide(_status(39_000), 0.0) == []
    assert t.drift is not None, "a drift past the last status (a moment old) stays armed"
    assert t.decide(_status(300), 1.0) == [], "counts went back: the drift at 40,000 is stale"
    assert t.drift is None and t.fresh_from == 300
    t.drift_event(_drift(300))
    (action,) = t.decide(_status(1300), 2.0)
    assert action.kind == "retrain" and action.positions == {"events-0": 300}


def test_a_retrain_that_could_not_start_waits_for_the_cooldown() -> None:
    t = Triggers(TriggerPolicy(drift_wait=0, cooldown=100.0))
    t.drift_event(_drift(10))
    (action,) = t.decide(_status(20), 0.0)
    t.retry(action, 0.0)  # another service holds the retrain lock
    assert t.decide(_status(30), 1.0) == [] and t.decide(_status(40), 99.0) == []
    (again,) = t.decide(_status(50), 100.0)
    assert again.kind == "retrain" and again.positions == {"events-0": 10}, "still armed"


def test_losses_slump_upwards_and_bad_actions_are_refused() -> None:
    policy = TriggerPolicy(slump_metric="rolling_log_loss", slump_threshold=0.5)
    assert policy.slumping(0.6) and not policy.slumping(0.4)
    with pytest.raises(TriggerConfigError, match="slump action 'panic'"):
        TriggerPolicy(slump_action="panic")
    with pytest.raises(TriggerConfigError, match="slump metric 'rolling_f1': use one of acc"):
        TriggerPolicy(slump_metric="rolling_f1")
    assert TriggerPolicy(slump_metric="rolling_rmse").slumping(2.0)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"detected_at": "now"}, "detected_at"),
        ({"detected_at": None}, "detected_at"),
        ({"position": float("nan")}, "position"),
        ({"position": True}, "position"),
        ({"statistic": "0.4"}, "statistic"),
        ({"positions": [["events-0", 1]]}, "positions"),
        ({"positions": {"events-0": 1.5}}, "positions"),
    ],
)
def test_a_drift_event_the_policies_cannot_read_is_refused(
    change: dict[str, Any], field: str
) -> None:
    with pytest.raises(BadDriftEvent, match=f"field '{field}'"):
        check_drift_event({**_drift(10), **change})


def test_a_readable_drift_event_passes_whole_with_defaults_for_missing_fields() -> None:
    event = _drift(10)
    assert check_drift_event(event) is event
    assert check_drift_event({"kind": "data"}) == {"kind": "data"}
    with pytest.raises(BadDriftEvent, match="not a JSON object"):
        check_drift_event([event])
