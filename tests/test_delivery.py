"""The producer behind every sink: it writes what it is given, and says when a message was
not delivered."""

from __future__ import annotations

import gc
import pickle
import weakref
from collections.abc import Callable

import pytest

from flows.kafka_io import Delivery, KafkaBatchSink, KafkaUnavailable, Out, ensure_topics
from riverrun.settings import Settings
from tests.helpers import read_topic


def test_an_undelivered_message_fails_the_flush_with_the_reason() -> None:
    delivery = Delivery("127.0.0.1:1", **{"message.timeout.ms": 300, "log_level": 0})
    delivery.send("events", Out(b"k", b"{}"))
    with pytest.raises(KafkaUnavailable, match=r"could not write to Kafka: .*timed out"):
        delivery.flush(timeout=20)
    assert delivery.errors == []  # reported once


def test_a_dropped_delivery_frees_its_producer_at_once() -> None:
    # A reference cycle through the producer's callback kept the producer, and its
    # connections, until the next garbage collection: after a demo, that logged connection
    # failures once the local broker had stopped.
    gc.disable()
    try:
        delivery = Delivery("127.0.0.1:1", log_level=0)
        gone = weakref.ref(delivery)
        del delivery
        assert gone() is None
    finally:
        gc.enable()


def test_send_all_writes_every_message_in_order_with_its_key_and_headers(
    make_settings: Callable[..., Settings],
) -> None:
    s = make_settings(partitions=1)
    ensure_topics(s.bootstrap_servers, [s.topic_predictions], 1)
    outs = [Out(f"k{i}".encode(), f"v{i}".encode()) for i in range(500)]
    outs[7] = Out(b"k7", b"v7", [("reason", b"bad_json")])
    delivery = Delivery(s.bootstrap_servers)
    delivery.send_all(s.topic_predictions, outs)
    delivery.flush()
    back = read_topic(s, s.topic_predictions)
    assert [(m.key, m.value) for m in back] == [(o.key, o.value) for o in outs]
    assert back[7].headers == {"reason": b"bad_json"}
    assert all(m.headers == {} for i, m in enumerate(back) if i != 7)


def test_the_sink_queues_batches_and_waits_for_their_delivery_at_the_epoch_snapshot() -> None:
    sink = KafkaBatchSink("127.0.0.1:1", "events", {"message.timeout.ms": 300, "log_level": 0})
    part = sink.build_part("predictions-out", sink.list_parts()[0], None)
    part.write_batch([[Out(b"k", b"{}")], [Out(b"k", b"[]")]])  # queued: no broker needed yet
    with pytest.raises(KafkaUnavailable, match=r"could not write to Kafka: .*timed out"):
        part.snapshot()  # the epoch cannot be committed with a message undelivered


def test_messages_survive_the_trip_between_bytewax_processes() -> None:
    outs = [Out(b"k", b"v"), Out(None, b"", [("reason", b"oversize")])]
    assert pickle.loads(pickle.dumps(outs)) == outs
