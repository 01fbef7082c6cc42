"""The ``features`` step: per-entity aggregates for the entities of one source partition."""

from __future__ import annotations

from bytewax.operators import StatefulBatchLogic

from models.features import EntityFeatures
from models.schema import Event, LabelMessage
from models.signing import dumps_signed

Record = Event | LabelMessage


class FeatureLogic(StatefulBatchLogic[list[Record], list[Record], bytes]):
    """Per-entity aggregates for the entities of one source partition."""

    def __init__(self, features: EntityFeatures, key: bytes) -> None:
        self.features = features
        self.key = key

    def on_batch(self, values: list[list[Record]]) -> tuple[list[list[Record]], bool]:
        update = self.features.update
        for records in values:
            for rec in records:
                if type(rec) is Event:
                    rec.features = update(rec.entity, rec.time, rec.features)
        return values, StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return dumps_signed(self.features, self.key)
