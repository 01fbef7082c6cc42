"""The online learner alone: test-then-train order, joins, early labels, expiry, bounds."""

from __future__ import annotations

import math
import pickle
import time

import pytest
from river import linear_model

from models.drift import DriftWatch
from models.evaluation import Prequential, RollingMean
from models.learner import OnlineLearner, Pending, Slot
from models.schema import Event, InvalidInput, LabelMessage
from tests.recorder import LEARNED, Recorder


def _learner(**kw: object) -> OnlineLearner:
    slot = Slot("lin", linear_model.LinearRegression(), Prequential("regression", 10))
    return OnlineLearner("regression", [slot], **kw)  # type: ignore[arg-type]


def _event(i: int, t: float, label: float | None = None) -> Event:
    return Event(f"e{i}", t, "a", {"x": float(i)}, label)


def test_label_before_any_event_waits_for_its_event() -> None:
    lr = _learner(label_ttl=10.0)
    assert lr.on_label(LabelMessage("e1", 3.0, 100.0)) is None
    assert lr.expire() == []
    lr.on_event(_event(1, 100.0))
    assert lr.counts.labelled == 1 and not lr.orphans and not lr.pending


def test_early_label_expires_after_ttl_of_event_time() -> None:
    lr = _learner(label_ttl=10.0)
    lr.on_label(LabelMessage("ghost", 1.0, 100.0))
    lr.on_event(_event(1, 105.0))
    assert lr.expire() == []
    lr.on_event(_event(2, 111.0))
    assert [label.id for label in lr.expire()] == ["ghost"]
    assert lr.counts.unknown_labels == 1


def test_an_early_label_from_the_far_future_is_refused_and_holds_up_no_expiry() -> None:
    """It waited label_ttl from its own time, so for ever, and expire() (in arrival order)
    stopped at it: no early label behind it was ever given up."""
    lr = _learner(label_ttl=10.0, max_pending=2)
    lr.on_event(_event(1, 100.0))
    lr.on_label(LabelMessage("ghost-a", 1.0, 100.0))
    lr.on_label(LabelMessage("ghost-b", 1.0, 100.0))
    with pytest.raises(InvalidInput, match="more than a day ahead of this machine's clock"):
        lr.on_label(LabelMessage("ghost-future", 1.0, 253_402_300_799.0))
    assert list(lr.orphans) == ["ghost-a", "ghost-b"], "refused, it made none give way"
    lr.on_event(_event(2, 200.0))
    assert [label.id for label in lr.expire()] == ["ghost-a", "ghost-b"] and not lr.orphans


def test_an_event_from_the_far_future_is_refused_and_expires_nothing() -> None:
    lr = _learner(label_ttl=7200.0)
    now = time.time()
    lr.on_event(_event(1, now))
    with pytest.raises(InvalidInput, match="more than a day ahead of this machine's clock"):
        lr.on_event(_event(2, now + 30 * 86_400))  # a producer's clock set a month ahead
    lr.on_event(_event(3, now + 3600))  # an hour ahead: a clock that drifts a little
    assert lr.on_label(LabelMessage("e1", 1.0, now)) is None
    assert lr.counts.labelled == 1 and lr.counts.expired == 0 and lr.counts.events == 2


def test_second_early_label_for_one_event_is_rejected() -> None:
    lr = _learner()
    first, second = LabelMessage("e1", 1.0, 0.0), LabelMessage("e1", 2.0, 0.0)
    assert lr.on_label(first) is None
    with pytest.raises(InvalidInput, match=r"^a label for event 'e1' already waits$") as refused:
        lr.on_label(second)
    assert refused.value.reason == "duplicate_label"


def test_pending_predictions_expire_and_are_bounded() -> None:
    lr = _learner(label_ttl=5.0, max_pending=3)
    for i in range(3):
        lr.on_event(_event(i, float(i)))
    lr.on_event(_event(3, 6.0))  # e0 is now older than the TTL
    lr.expire()
    assert list(lr.pending) == ["e1", "e2", "e3"] and lr.counts.expired == 1
    lr.on_event(_event(4, 6.5))  # over max_pending: the oldest goes
    lr.expire()
    assert list(lr.pending) == ["e2", "e3", "e4"] and lr.counts.expired == 2
    lr.on_label(LabelMessage("e0", 1.0, 0.0))  # too late: it waits, then is unclaimed
    assert [label.id for label in lr.drain_orphans()] == ["e0"]


def test_a_label_joins_by_event_time_whenever_expiry_runs() -> None:
    """Which labels join depends on event time alone, not on when expire() last ran (where
    batches end), nor on the order in which predictions were made."""
    lr = _learner(label_ttl=15.0)
    lr.on_event(_event(1, 10.0))
    lr.on_event(_event(2, 0.0))  # older than e1, though it came later
    lr.on_event(_event(3, 20.0))  # e2 is now past the TTL, e1 is not
    lr.expire()  # stops at e1, still in time
    assert lr.on_label(LabelMessage("e2", 1.0, 20.0)) is None
    assert lr.counts.labelled == 0 and lr.counts.expired == 1
    lr.on_event(_event(4, 26.0))  # e1 is now past it too; expire() has not run
    assert lr.on_label(LabelMessage("e1", 1.0, 26.0)) is None
    assert lr.counts.labelled == 0 and lr.counts.expired == 2
    assert lr.on_label(LabelMessage("e3", 1.0, 26.0)) is None
    assert lr.counts.labelled == 1
    assert sorted(label.id for label in lr.drain_orphans()) == ["e1", "e2"]


def _run(records: list[Event | LabelMessage], expire_every: int | None) -> tuple[object, ...]:
    """What a learner made of ``records``: refusals, joins, counts and unclaimed labels."""
    lr = _learner(label_ttl=10.0, max_pending=3)
    refused, unclaimed = [], []
    for i, rec in enumerate(records):
        try:
            if isinstance(rec, Event):
                lr.on_event(rec)
            else:
                lr.on_label(rec)
        except InvalidInput as exc:
            refused.append((i, exc.reason))
        if expire_every and i % expire_every == 0:
            unclaimed += [label.id for label in lr.expire()]
    unclaimed += [label.id for label in lr.expire() + lr.drain_orphans()]
    c = lr.counts
    return refused, sorted(unclaimed), c.labelled, c.expired, c.unknown_labels, sorted(lr.pending)


def test_joins_refusals_and_unclaimed_labels_do_not_depend_on_when_expiry_runs() -> None:
    def label(i: str, t: float) -> LabelMessage:
        return LabelMessage(i, 1.0, t)

    records: list[Event | LabelMessage] = [
        Event("x", 0.0, "a", {"x": 1.0}),
        Event("y", 5.0, "a", {"x": 1.0}),
        label("z", 5.0),  # early
        Event("w", 20.0, "a", {"x": 1.0}),  # x, y and the early z are now past the TTL
        Event("x", 21.0, "a", {"x": 2.0}),  # the expired x is no duplicate
        label("y", 21.0),  # too late: unclaimed
        label("z", 21.0),  # takes the expired early z's place
        label("q", 21.0),
        label("r", 21.0),
        label("s", 21.0),  # over max_pending early labels: the oldest give way (y, then z)
        Event("z", 22.0, "a", {"x": 1.0}),  # its label gave way: it waits
        label("x", 22.0),  # joins the second x
        label("x", 22.0),  # its event was learned: waits as an early label
        label("x", 22.0),  # a second early label for x
        Event("w", 23.0, "a", {"x": 1.0}),  # still waiting: a duplicate
    ]
    every_record, at_the_end = _run(records, 1), _run(records, None)
    assert every_record == at_the_end
    refused, unclaimed, labelled, expired, unknown, pending = at_the_end
    assert refused == [(13, "duplicate_label"), (14, "duplicate_event")]
    assert unclaimed == ["q", "r", "s", "x", "y", "z", "z"] and unknown == 7, (
        "the refused x is a duplicate"
    )
    assert (labelled, expired, pending) == (1, 2, ["w", "z"])


def test_an_expired_early_label_does_not_join_its_late_event() -> None:
    lr = _learner(label_ttl=5.0)
    lr.on_label(LabelMessage("e9", 1.0, 0.0))
    lr.on_event(_event(1, 10.0))  # the early label is past the TTL; expire() has not run
    lr.on_event(_event(9, 10.0))
    assert lr.counts.labelled == 0 and list(lr.pending) == ["e1", "e9"]
    assert [label.id for label in lr.expire()] == ["e9"]


def test_max_pending_holds_as_predictions_are_added() -> None:
    lr = _learner(max_pending=2)
    for i in range(5):
        lr.on_event(_event(i, float(i)))
        assert len(lr.pending) <= 2
    assert list(lr.pending) == ["e3", "e4"] and lr.counts.expired == 3


def test_an_event_id_already_waiting_is_refused_and_the_first_kept() -> None:
    lr = _learner()
    lr.on_event(_event(1, 0.0))
    with pytest.raises(InvalidInput, match="event 'e1' already waits") as refused:
        lr.on_event(Event("e1", 1.0, "a", {"x": 99.0}))
    assert refused.value.reason == "duplicate_event"
    assert lr.pending["e1"].features == {"x": 1.0} and lr.counts.events == 1
    assert lr.champion.predicted == 1


def test_missing_features_are_those_of_the_first_event_learned() -> None:
    lr = _learner()
    lr.on_event(Event("u", 0.0, "a", {"x": 1.0, "debug": 1.0}))  # never learned: sets nothing
    lr.on_event(Event("v", 0.0, "a", {"x": 1.0}))
    lr.on_event(Event("w", 0.0, "a", {"x": 1.0, "y": 2.0}, 1.0))  # learned: sets the schema
    with pytest.raises(InvalidInput, match="missing feature") as refused:
        lr.on_event(Event("z", 0.0, "a", {"x": 1.0}))
    assert refused.value.reason == "missing_feature"
    assert "z" not in lr.pending and lr.counts.events == 3, "a refused event is not counted"
    lr.on_event(Event("z", 0.0, "a", {"y": 1.0, "x": 1.0, "debug": 2.0}))  # extra features do
    assert lr.pending["z"].features == {"y": 1.0, "x": 1.0, "debug": 2.0}
    assert lr.counts.events == 4 and lr.champion.predicted == 4


def test_a_champion_set_elsewhere_starts_the_contest_over() -> None:
    """Evidence against the old champion says nothing about the new one, and a swap made
    elsewhere starts the cool-down as the learner's own do."""
    challenger = Slot("lin", linear_model.LinearRegression(), Prequential("regression", 10))
    lr = _learner()
    lr.put_challenger(challenger)
    for i in range(50):
        lr.on_event(_event(i, float(i), label=2.0 * i))
    assert len(lr.contest.paired[challenger.uid]) == 50 and lr.report()["cooling_down"] is False
    lr.replace_champion(Slot("lin", linear_model.LinearRegression(), Prequential("regression", 10)))
    assert len(lr.contest.paired[challenger.uid]) == 0
    assert lr.contest.cooling_down(lr.counts.labelled) and lr.candidate() is None
    assert lr.report()["cooling_down"] is True, "the status tells the trigger service"


def test_prediction_comes_before_learning_and_uses_prediction_time_features() -> None:
    lr = _learner()
    preds, served = lr.on_event(_event(1, 0.0, label=2.0))
    assert preds[lr.champion.uid] == 0.0  # an untrained model's answer, not a trained one's
    assert served is lr.champion
    assert lr.champion.learned == 1 and lr.champion.metrics.n == 1
    # A late label joins the features and the prediction its event had, not a later one's.
    LEARNED.clear()
    rec = OnlineLearner("binary", [Slot("rec", Recorder(), Prequential("binary", 10))])
    rec.on_event(Event("e1", 0.0, "a", {"v": 0.25}))
    rec.on_event(Event("e2", 1.0, "a", {"v": 0.75}))
    assert LEARNED == [] and rec.on_label(LabelMessage("e1", True, 2.0)) is None
    assert LEARNED == [({"v": 0.25}, True)]
    assert math.isclose(rec.champion.metrics.report()["log_loss"], -math.log(0.25))


def test_models_sharing_a_scaler_learn_exactly_as_separate_pipelines() -> None:
    from models.datasets import open_stream
    from models.specs import build_model

    slots = [
        Slot("logreg", build_model("logreg", "binary", 0), Prequential("binary", 50)),
        Slot("logreg", build_model("logreg", "binary", 0), Prequential("binary", 50), "challenger"),
    ]
    lr = OnlineLearner("binary", slots)
    separate = [build_model("logreg", "binary", 0), build_model("logreg", "binary", 0)]
    for i, (x, y) in enumerate(open_stream("agrawal", seed=3, events=2000).samples):
        got, _ = lr.on_event(Event(str(i), float(i), "a", x, y))
        expected = [m.predict_proba_one(x) for m in separate]
        assert [got[s.uid] for s in lr.slots] == expected
        for m in separate:
            m.learn_one(x, y)
    champion, challenger = (s.model for s in lr.slots)
    assert champion["StandardScaler"] is challenger["StandardScaler"], "one scaler, shared"
    for slot, plain in zip(lr.slots, separate, strict=True):
        alone = pickle.loads(pickle.dumps(slot.model))  # a snapshot stands on its own
        assert alone["LogisticRegression"].weights == plain["LogisticRegression"].weights
        assert alone["StandardScaler"].means == plain["StandardScaler"].means


def test_a_model_whose_scaler_learned_elsewhere_keeps_its_own() -> None:
    from models.specs import build_model

    trained = build_model("logreg", "binary", 0)
    trained.learn_one({"a": 1.0}, True)
    fresh = [build_model("logreg", "binary", 0) for _ in range(2)]
    lr = OnlineLearner(
        "binary",
        [
            Slot("logreg", fresh[0], Prequential("binary", 5)),
            Slot("logreg", fresh[1], Prequential("binary", 5), "challenger"),
        ],
    )
    assert len(lr._groups) == 1
    lr.put_challenger(Slot("logreg", trained, Prequential("binary", 5), "challenger-2"))
    shared, own = lr._groups
    assert [uid for uid, _ in shared[1]] == [s.uid for s in lr.slots[:2]]
    assert own[0] is trained["StandardScaler"] is not fresh[0]["StandardScaler"]
    lr.remove_challenger(lr.slots[1].alias)
    assert [len(members) for _, members in lr._groups] == [1, 1] and lr._alone == []


def test_a_prediction_pending_in_a_snapshot_of_the_last_version_still_joins() -> None:
    """A pending prediction pickled before it had its ``where`` field (the Kafka place of
    its event) is restored without it, and its label still joins, drift watch on."""
    lr = OnlineLearner(
        "binary",
        [Slot("lr", linear_model.LogisticRegression(), Prequential("binary", 10))],
        drift=DriftWatch("adwin", 10, 0),
    )
    lr.on_event(Event("e1", 1.0, "a", {"x": 1.0}))
    old = lr.pending["e1"]
    before = object.__new__(Pending)  # as pickle restores one from the earlier fields only
    for name in ("time", "entity", "features", "predictions", "served"):
        object.__setattr__(before, name, getattr(old, name))
    lr.pending["e1"] = before
    restored = pickle.loads(pickle.dumps(lr))
    assert restored.on_label(LabelMessage("e1", True, 1.0)) is None
    assert restored.counts.labelled == 1


def test_rolling_metrics_stay_right_after_a_huge_error_or_a_nan_leaves_the_window() -> None:
    """Subtracting a huge squared error back out of a running sum leaves its rounding,
    which read zero or below (and ``math.sqrt`` raised); a NaN left the sum NaN until the
    window next turned over."""
    for bad in (3.2e8, math.nan):
        metrics = Prequential("regression", window=4)
        for y_pred in (bad, 2.5, 0.0, 0.0, 0.0):  # the last drops the first
            metrics.update(0.0, y_pred)
        report = metrics.report()
        assert report["rolling_mae"] == 2.5 / 4, bad
        assert math.isclose(report["rolling_rmse"], math.sqrt(2.5 * 2.5 / 4)), bad


def test_rolling_means_resume_from_a_snapshot_taken_before_they_kept_their_largest_value() -> None:
    old = (None, {"window": 2, "_values": [1.024e17, 6.25], "_i": 0, "_sum": 1.024e17 + 6.25})
    rolling = RollingMean.__new__(RollingMean)
    rolling.__setstate__(old)
    rolling.update(0.0)  # drops 1.024e17, and the running sum loses the 6.25 with it
    assert rolling.get() == 3.125
    restored = pickle.loads(pickle.dumps(rolling))
    restored.update(1.0)
    restored.update(2.0)  # the window turned over: a running sum again
    assert restored.get() == 1.5
