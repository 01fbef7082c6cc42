"""Each process of a learn cluster serves its own /metrics, and their figures add up to what
went through Kafka."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from riverrun.metrics import MetricsPortError, serve_metrics
from tests.helpers import (
    LearnProcess,
    count_messages,
    free_ports,
    produce_stream,
    wait_for,
    write_raw,
)
from tests.prom import Samples, scrape, total

EVENTS = 3000
BAD = [b"{oops", b"[1, 2]", orjson.dumps({"id": "nofeatures", "time": 1.0}), b""]


def _sums(scrapes: list[Samples]) -> dict[str, float]:
    def across(name: str, **labels: str) -> float:
        return sum(total(x, name, **labels) for x in scrapes)

    return {
        "events in": across("riverrun_events_in_total"),
        "dead letters": across("riverrun_deadletters_total"),
        "champion predictions": across("riverrun_predictions_total", role="champion"),
        "labelled": across("riverrun_labelled_total"),
        "pending": across("riverrun_pending_predictions"),
        "lag": across("riverrun_consumer_lag_messages"),
    }


def test_metrics_of_two_processes_add_up_to_the_topics(make_settings: Any) -> None:
    port = free_ports(2)
    s = make_settings(partitions=3, metrics_port=port)
    produce_stream(s, EVENTS, "m")
    bad = [(f"bad-{i}".encode(), raw) for i, raw in enumerate(BAD * 3)]
    write_raw(s, s.topic_events, bad)

    with LearnProcess(s, "--processes", "2") as flow:
        wait_for(lambda: count_messages(s, s.topic_predictions) == EVENTS, 120, "predictions")
        wait_for(lambda: count_messages(s, s.topic_deadletter) == len(bad), 60, "every dead letter")
        # No event comes after the last one: the figures still catch up, since the learn
        # step reports on a timer too, not only when a batch comes.
        expected = {
            "events in": EVENTS + len(bad),
            "dead letters": len(bad),
            "champion predictions": EVENTS,
            "labelled": EVENTS,
            "pending": 0,
            "lag": 0,
        }
        scrapes: list[Samples] = []

        def adds_up() -> bool:
            scrapes[:] = [scrape(port), scrape(port + 1)]
            return _sums(scrapes) == expected

        wait_for(adds_up, 60, f"the sums of both /metrics to be {expected}")
        assert flow.stop() == 0, flow.stderr()

    assert all(scrapes), "both processes serve /metrics"
    partitions = [
        (labels["topic"], labels["partition"])
        for x in scrapes
        for labels, _ in x["riverrun_consumer_lag_messages"]
    ]
    assert sorted(partitions) == sorted(
        (topic, str(p)) for topic in (s.topic_events, s.topic_labels) for p in range(3)
    ), "each partition's lag is reported by exactly one process"
    learners = [x for x in scrapes if "riverrun_model_metric" in x]
    assert len(learners) == 1, "the model learns on one worker"


def test_an_address_that_does_not_resolve_is_blamed_not_the_port() -> None:
    with pytest.raises(MetricsPortError, match=r"no such address .*RIVERRUN_METRICS_HOST"):
        serve_metrics(free_ports(1), "nosuch.invalid")
