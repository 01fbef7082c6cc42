"""Labels on their own topic join exactly once to the features seen at prediction time."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import orjson
import pytest
import redis
from river import evaluate, metrics

from flows.produce import ProduceRequest, produce
from models.datasets import open_stream
from models.features import EntityFeatures, FeatureSpec
from models.specs import build_model
from models.status import read_status
from tests import recorder
from tests.helpers import event, read_topic, run_flow_to_end, write_raw


def _label(i: int | str, value: bool) -> tuple[bytes, bytes]:
    eid = f"e{i}" if isinstance(i, int) else i
    return eid.encode(), orjson.dumps({"kind": "label", "id": eid, "label": value})


def test_labels_join_once_to_prediction_time_features(make_settings: Any) -> None:
    rng = random.Random(7)
    n = 60
    s = make_settings(
        model_spec="tests.recorder:make", entity_features=("count", "since_last"), label_ttl=1000.0
    )
    truth = {i: rng.random() < 0.5 for i in range(n)}
    feats = {i: {"i": float(i), "v": rng.random()} for i in range(n)}
    entity = {i: f"u{i % 4}" for i in range(n)}
    # Half the labels are written before any event exists; the rest arrive shuffled later.
    early = [_label(i, truth[i]) for i in range(0, n, 2)]
    late = [_label(i, truth[i]) for i in range(1, n, 2)]
    rng.shuffle(late)
    extra = [_label("never-seen", True)]
    write_raw(s, s.topic_labels, early)
    events = [(entity[i].encode(), event(i, feats[i], entity=entity[i])) for i in range(n)]
    # An event that is never labelled, far in the past: it expires once time moves on.
    events.insert(3, (b"u0", event(999, {"i": 999.0, "v": 0.5}, entity="u9", t0=0.0)))
    # A second label for e5, after its event in the same partition: it cannot come before
    # e5 is predicted, so whichever of e5's two labels comes second finds e5 learned.
    events.append((entity[5].encode(), _label(5, truth[5])[1]))
    write_raw(s, s.topic_events, events)
    write_raw(s, s.topic_labels, late + extra)

    recorder.LEARNED.clear()
    run_flow_to_end(s)

    learned = Counter(int(x["i"]) for x, _ in recorder.LEARNED)
    assert learned == Counter(range(n)), "every labelled event is learned exactly once"
    agg = EntityFeatures(FeatureSpec.parse(["count", "since_last"]))
    expected = {i: agg.update(entity[i], 1_000_000.0 + i, feats[i]) for i in range(n)}
    for x, y in recorder.LEARNED:
        i = int(x["i"])
        assert x == expected[i], f"event {i} learned with features other than at prediction"
        assert y is truth[i]

    dead = read_topic(s, s.topic_deadletter)
    # the second label of e5 waits, then finds no event (as does a label never joined)
    dead_ids = Counter((orjson.loads(m.value)["id"], m.headers["reason"]) for m in dead)
    assert dead_ids == Counter(
        {
            ("e5", b"unknown_event_id"): 1,
            ("never-seen", b"unknown_event_id"): 1,
        }
    )
    status = read_status(redis.Redis.from_url(s.redis_url), s.model_name)
    assert status is not None
    assert status["labelled"] == n and status["expired"] == 1


def test_a_backlog_of_events_waits_for_its_labels_on_their_own_topic(make_settings: Any) -> None:
    """Each partition was read as fast as it allowed: the whole backlog of events was
    predicted before a label was read (every prediction by a model that had learned
    nothing: a log loss of exactly ln 2), and event time ran ahead of the labels, expiring
    their waits. Read in step by record time, labels join within about a batch."""
    s = make_settings(label_ttl=0.5)  # events are 1 ms apart: 500 of them
    req = ProduceRequest(
        "phishing", None, seed=s.seed, delay_labels=30, labels_topic=True, start_time=1.7e9
    )
    produce(req, s.bootstrap_servers, s.topic_events, s.topic_labels, progress=False)
    run_flow_to_end(s)
    status = read_status(redis.Redis.from_url(s.redis_url), s.model_name)
    assert status is not None and status["labelled"] == 1250 and status["expired"] == 0
    assert read_topic(s, s.topic_deadletter) == []
    river = evaluate.progressive_val_score(
        open_stream("phishing", seed=s.seed, events=None).samples,
        build_model("logreg", "binary", s.seed),
        metrics.LogLoss(),
        delay=30,
    ).get()  # 0.341; 0.364 at a delay of 100, and ln 2 = 0.693 learning nothing
    assert status["models"][0]["metrics"]["log_loss"] == pytest.approx(river, abs=0.01)


def test_an_early_label_waits_across_a_stop_and_resume_of_a_bounded_run(
    make_settings: Any, tmp_path: Any
) -> None:
    """The end of a --no-follow run dead-lettered every early label as unknown_event_id,
    while the predictions waiting for theirs were kept: a label read in one run never met
    its event in the next, which resumes from recovery."""
    s = make_settings(recovery_dir=str(tmp_path / "recovery"))
    write_raw(s, s.topic_labels, [_label(1, True)])
    write_raw(s, s.topic_events, [(b"u", event(0, {"v": 0.5}, True))])
    run_flow_to_end(s)
    write_raw(s, s.topic_events, [(b"u", event(1, {"v": 0.7}))])
    run_flow_to_end(s)
    status = read_status(redis.Redis.from_url(s.redis_url), s.model_name)
    assert status is not None and status["labelled"] == 2
    assert read_topic(s, s.topic_deadletter) == []
