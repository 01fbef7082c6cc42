"""Labels from the Feedback RPC to the labels topic, where the learn flow joins them.

A label is written as ``{"kind": "label", "id", "label", "time"}`` keyed by event id,
exactly what the flow reads from the labels topic, and the RPC answers only once Kafka
has acknowledged it. The producer is created on first use, so a server whose callers
never send feedback needs no Kafka.

librdkafka's own lines go to the ``riverrun.serve.kafka`` logger at DEBUG, not to stderr:
the publisher says once, as a warning, when labels stop reaching Kafka (naming
librdkafka's last error) and once when one gets through again, and once for each kind of
error with which Kafka refused a label (a topic it will not take, say).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from models.schema import Label

DELIVERY_TIMEOUT = 10.0
KAFKA_LOGGER = "riverrun.serve.kafka"
# delivery errors that mean Kafka was not reached, rather than that it refused the label
UNREACHED = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._RESOLVE,
    }
)

log = logging.getLogger(__name__)


def label_message(event_id: str, label: Label, at: float) -> bytes:
    """The bytes written for a label: what the learn flow reads from the labels topic."""
    return orjson.dumps({"kind": "label", "id": event_id, "label": label, "time": at})


class PublishError(RuntimeError):
    """The label could not be written to Kafka; the message says why."""


class Unacknowledged(PublishError):
    """Kafka had not acknowledged the label when the wait ended: it may still be written."""


class KafkaLog:
    """librdkafka's lines to ``riverrun.serve.kafka`` at DEBUG, keeping the last error's text."""

    def __init__(self) -> None:
        self.logger = logging.getLogger(KAFKA_LOGGER)
        self.last_error = ""

    def log(self, level: int, msg: str, *args: object) -> None:
        """One line, as confluent-kafka hands it over from ``poll()`` and ``flush()``."""
        if level >= logging.ERROR:  # its text without the "[thrd:...]: " it starts with
            self.last_error = re.sub(r"^\[thrd:[^\]]*\]: ", "", str(args[-1]) if args else msg)
        self.logger.debug(msg, *args)


class LabelPublisher:
    """Writes labels to one topic and waits for each acknowledgement."""

    def __init__(self, bootstrap: str, topic: str, timeout: float = DELIVERY_TIMEOUT) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.timeout = timeout
        self._producer: Producer | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._kafka_log = KafkaLog()
        self._unreached = False  # said that Kafka is unreachable, not yet that it is back
        self._refusals: set[int] = set()  # the error codes of refusals already said
        self._said = threading.Lock()

    def _get(self) -> Producer:
        with self._lock:
            if self._producer is None:
                self._producer = Producer(
                    {
                        "bootstrap.servers": self.bootstrap,
                        "linger.ms": 1,
                        "message.timeout.ms": int(self.timeout * 1000),
                        "logger": self._kafka_log,
                    }
                )
                threading.Thread(target=self._poll, name="label-deliveries", daemon=True).start()
            return self._producer

    def _poll(self) -> None:
        producer = self._producer
        assert producer is not None
        while not self._closed.is_set():
            producer.poll(0.05)

    def _note(self, err: KafkaError | None) -> None:
        """Say once that Kafka is unreachable when a delivery fails so, and once when back;
        say each other kind of failure (Kafka refused the label) the first time it comes."""
        with self._said:
            if err is None:
                self._kafka_log.last_error = ""  # a later failure names only errors after it
                self._refusals.clear()  # a refusal that comes back after a success is said
                if self._unreached:
                    self._unreached = False
                    log.warning("Kafka at %s is reachable again", self.bootstrap)
            elif err.code() in UNREACHED and not self._unreached:
                self._unreached = True
                log.warning(
                    "Kafka at %s is unreachable: labels for topic %r fail and Feedback answers "
                    "UNAVAILABLE until one gets through; librdkafka's last error: %s",
                    self.bootstrap,
                    self.topic,
                    self._kafka_log.last_error or err.str(),
                )
            elif err.code() not in UNREACHED and err.code() not in self._refusals:
                self._refusals.add(err.code())
                log.warning(
                    "Kafka at %s refused a label for topic %r: %s; Feedback answers UNAVAILABLE "
                    "for each such label (said once for each kind of refusal)",
                    self.bootstrap,
                    self.topic,
                    err.str(),
                )

    def publish(
        self, event_id: str, value: bytes, within: float | None = None
    ) -> tuple[str, int, int]:
        """Write one label message (:func:`label_message`) keyed by ``event_id``; returns
        ``(topic, partition, offset)`` once Kafka has it, waiting at most ``within`` seconds
        if given (the caller's deadline), else the delivery timeout and a second.
        :class:`Unacknowledged` if the caller's deadline ends the wait (the label may still be
        written), :class:`PublishError` if it was not written."""
        done = threading.Event()
        outcome: dict[str, Any] = {}

        def delivered(err: KafkaError | None, msg: Message) -> None:
            self._note(err)
            outcome["err"], outcome["msg"] = err, msg
            done.set()

        try:
            self._get().produce(self.topic, value, event_id.encode(), on_delivery=delivered)
        except (BufferError, KafkaException) as exc:
            raise PublishError(
                f"cannot queue the label for Kafka topic {self.topic!r}: {exc}"
            ) from None
        if within is not None and within < self.timeout + 1.0:
            if not done.wait(within):  # the caller's deadline, while Kafka may yet take it
                raise Unacknowledged(
                    f"Kafka had not acknowledged the label before the call's deadline "
                    f"({within:.1f} s); it may still be written"
                )
        elif not done.wait(self.timeout + 1.0):  # past its message timeout: expired
            raise PublishError(f"Kafka did not acknowledge the label within {self.timeout:.0f} s")
        err, msg = outcome["err"], outcome["msg"]
        if err is not None:
            raise PublishError(f"cannot write the label to Kafka topic {self.topic!r}: {err}")
        return msg.topic(), msg.partition(), msg.offset()

    def close(self) -> None:
        """Deliver what is queued, then stop."""
        self._closed.set()
        if self._producer is not None:
            self._producer.flush(self.timeout)
