"""The producer: simulate_qa order for delayed labels, the labels topic, pacing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import orjson
import pytest
from river import stream

from flows.produce import ProduceRequest, messages, produce
from models.datasets import open_stream
from tests.helpers import count_messages, read_topic


def test_delayed_labels_follow_simulate_qa_order(make_settings: Any) -> None:
    s = make_settings()
    req = ProduceRequest("bananas", 300, seed=3, delay_labels=7, id_prefix="q")
    summary = produce(req, s.bootstrap_servers, s.topic_events, s.topic_labels, progress=False)
    assert (summary.events, summary.labels) == (300, 300)
    got = [(m.json().get("kind", "event"), m.json()["id"]) for m in read_topic(s, s.topic_events)]
    samples = open_stream("bananas", seed=3, events=300).samples
    expected = [
        ("event" if y is None else "label", f"q-{i}")
        for i, _x, y in stream.simulate_qa(samples, moment=None, delay=7)
    ]
    assert got == expected


def test_labels_topic_is_keyed_by_event_id(make_settings: Any) -> None:
    s = make_settings()
    req = ProduceRequest("phishing", 100, delay_labels=5, labels_topic=True, id_prefix="k")
    produce(req, s.bootstrap_servers, s.topic_events, s.topic_labels, progress=False)
    events = read_topic(s, s.topic_events)
    labels = read_topic(s, s.topic_labels)
    assert len(events) == 100 and all("label" not in m.json() for m in events)
    assert [m.key for m in labels] == [f"k-{i}".encode() for i in range(100)]
    assert all(m.json()["kind"] == "label" and isinstance(m.json()["label"], bool) for m in labels)
    assert all(m.key == m.json()["entity"].encode() for m in events)


def test_rate_paces_the_stream(make_settings: Any) -> None:
    s = make_settings()
    req = ProduceRequest("sea-drift", 40, rate=100.0, id_prefix="r")
    summary = produce(req, s.bootstrap_servers, s.topic_events, s.topic_labels, progress=False)
    assert summary.seconds >= 39 / 100.0
    times = [m.json()["time"] for m in read_topic(s, s.topic_events)]
    assert times[1] - times[0] == pytest.approx(0.01)


def test_without_a_start_time_the_first_live_event_is_stamped_now() -> None:
    """A burst is history and a resumed stream goes on from now: ``--skip 100000 --rate 1``
    used to stamp its events 100,000 s ahead, and the learn flow refused them."""
    req = ProduceRequest("agrawal", 100_010, seed=1, rate=1.0, burst=5, skip=100_000)
    stream = open_stream("agrawal", seed=1, events=req.events)
    before = time.time()
    times = [orjson.loads(m.value)["time"] for m in messages(req, stream, "p")]
    assert len(times) == 10 and times == sorted(times)
    assert before - 5 <= times[0] <= time.time() - 5 + 1e-6, "the burst: five seconds ago"
    assert times[5] - times[0] == pytest.approx(5.0), "then now, one a second"


def test_skip_resumes_the_same_stream(make_settings: Any) -> None:
    whole, parts = make_settings(), make_settings()
    for s, requests in (
        (whole, [ProduceRequest("sea-drift", 60, id_prefix="s", start_time=0.0)]),
        (
            parts,
            [
                ProduceRequest("sea-drift", 25, id_prefix="s", start_time=0.0),
                ProduceRequest("sea-drift", 60, id_prefix="s", start_time=0.0, skip=25),
            ],
        ),
    ):
        for req in requests:
            produce(req, s.bootstrap_servers, s.topic_events, s.topic_labels, progress=False)
    assert [m.value for m in read_topic(parts, parts.topic_events)] == [
        m.value for m in read_topic(whole, whole.topic_events)
    ]


@pytest.mark.parametrize(("dataset", "events"), [("phishing", 1250), ("sea-drift", 50_000)])
def test_produce_without_a_count_writes_a_bundled_dataset_whole_and_50000_of_a_stream(
    make_settings: Any, dataset: str, events: int
) -> None:
    s = make_settings()
    done = subprocess.run(
        [sys.executable, "-m", "riverrun.cli", "produce", "--dataset", dataset, "--quiet"],
        env={**os.environ, **s.to_env()},
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert count_messages(s, s.topic_events) == events
