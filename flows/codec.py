"""Bytes on Kafka to events and labels, and predictions and dead letters back to bytes.

An event is a JSON object ``{"id", "time", "entity", "features", "label"?}``; a label
message is ``{"kind": "label", "id", "label", "time"?}``. Anything else becomes a
dead letter carrying the original bytes, the reason and where it was read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson

from flows.kafka_io import Out, Raw
from models.schema import (
    Event,
    InvalidInput,
    LabelMessage,
    check_features,
    check_label,
    check_time,
)

_DUMPS_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


@dataclass(slots=True)
class Parsed:
    """One source batch after parsing: the good records in order, and the rejects."""

    records: list[Event | LabelMessage] = field(default_factory=list)
    dead: list[Out] = field(default_factory=list)


def dead_letter(raw: Raw, reason: str, detail: str) -> Out:
    """The dead-letter message for ``raw``: its original key and bytes, reason in headers."""
    return Out(
        raw.key,
        raw.value,
        [
            ("reason", reason.encode()),
            ("detail", detail.encode()),
            ("source.topic", raw.topic.encode()),
            ("source.partition", str(raw.partition).encode()),
            ("source.offset", str(raw.offset).encode()),
        ],
    )


def _loads(value: bytes) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        # orjson is strict; the stdlib accepts NaN and Infinity, which deserve their own
        # reason ("non_finite") rather than "malformed_json". Only bad input pays this.
        try:
            obj = json.loads(value)
            # The stdlib also accepts lone UTF-16 surrogates ("\ud800"), which no UTF-8
            # output can hold: an id, entity or class holding one would fail every message
            # written about it, so such input goes no further than this.
            json.dumps(obj, ensure_ascii=False).encode()
        except (ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
            raise InvalidInput("malformed_json", f"not valid JSON: {exc}") from None
        return obj


def _text(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if isinstance(value, str) and value:
        return value
    if value is None:
        raise InvalidInput("missing_field", f"field {name!r} is missing", name)
    raise InvalidInput("bad_field", f"field {name!r} must be a non-empty string", name)


def _time(obj: dict[str, Any], raw: Raw) -> float:
    value = obj.get("time")
    if value is None:
        return raw.timestamp_ms / 1000.0
    return check_time(value)


class Parser:
    """Turns raw messages into events and labels, checking everything a model relies on."""

    def __init__(self, task: str, max_bytes: int) -> None:
        self.task = task
        self.max_bytes = max_bytes

    def parse(self, raw: Raw) -> Event | LabelMessage:
        """Parse one message or raise :class:`InvalidInput` saying why it is rejected."""
        if len(raw.value) > self.max_bytes:
            raise InvalidInput(
                "oversize", f"message of {len(raw.value)} bytes exceeds {self.max_bytes}"
            )
        obj = _loads(raw.value)
        if not isinstance(obj, dict):
            raise InvalidInput("not_an_object", "message must be a JSON object")
        kind = obj.get("kind", "event")
        if kind == "label":
            return self._label(obj, raw)
        if kind != "event":
            raise InvalidInput("bad_field", "field 'kind' must be 'event' or 'label'", "kind")
        return self._event(obj, raw)

    def _label(self, obj: dict[str, Any], raw: Raw) -> LabelMessage:
        if "label" not in obj:
            raise InvalidInput("missing_field", "field 'label' is missing", "label")
        label = check_label(self.task, obj["label"])
        return LabelMessage(_text(obj, "id"), label, _time(obj, raw), raw)

    def _event(self, obj: dict[str, Any], raw: Raw) -> Event:
        event_id = _text(obj, "id")
        if "features" not in obj:
            raise InvalidInput("missing_field", "field 'features' is missing", "features")
        features = check_features(obj["features"])
        label = None if obj.get("label") is None else check_label(self.task, obj["label"])
        entity = obj.get("entity")
        if entity is None:
            entity = raw.key.decode(errors="replace") if raw.key else ""
        elif not isinstance(entity, str):
            raise InvalidInput("bad_field", "field 'entity' must be a string", "entity")
        return Event(event_id, _time(obj, raw), entity, features, label, raw)

    def parse_batch(self, batch: list[Raw]) -> Parsed:
        """Parse a batch in order; rejects become dead letters."""
        out = Parsed()
        records, dead = out.records, out.dead
        parse = self.parse
        for raw in batch:
            try:
                records.append(parse(raw))
            except InvalidInput as exc:
                dead.append(dead_letter(raw, exc.reason, str(exc)))
        return out


def encode(payload: dict[str, Any]) -> bytes:
    """JSON bytes of an output record (non-string keys such as ``true`` become strings)."""
    return orjson.dumps(payload, option=_DUMPS_OPTIONS)
