"""The producer behind every sink says when a message was not delivered."""

from __future__ import annotations

import pytest

from flows.kafka_io import Delivery, KafkaUnavailable, Out


def test_an_undelivered_message_fails_the_flush_with_the_reason() -> None:
    delivery = Delivery("127.0.0.1:1", **{"message.timeout.ms": 300, "log_level": 0})
    delivery.send("events", Out(b"k", b"{}"))
    with pytest.raises(KafkaUnavailable, match=r"could not write to Kafka: .*timed out"):
        delivery.flush(timeout=20)
    assert delivery.errors == []  # reported once
