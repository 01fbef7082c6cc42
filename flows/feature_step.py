"""The ``features`` step: per-entity aggregates for the entities of one source partition,
and their latest state written to the online feature store for the gRPC server."""

from __future__ import annotations

from collections.abc import Iterable

from bytewax.operators import StatefulBatchLogic

from models.feature_store import FeatureWriter
from models.features import EntityFeatures, FeatureSpec
from models.schema import Event, Record
from models.signing import dumps_signed
from riverrun.metrics import FEATURE_STORE_FAILURES


def fold_features(features: EntityFeatures, records: Iterable[Record]) -> list[str]:
    """Replace each event's features with its entity's aggregates after the event; the
    entities touched, in order."""
    update = features.update
    touched = []
    for rec in records:
        if type(rec) is Event:
            rec.features = update(rec.entity, rec.time, rec.features)
            touched.append(rec.entity)
    return touched


class ByPartition:
    """Entity aggregates kept apart per source partition (``topic-partition``), as the
    learn flow's features step keeps them, for a replay or an evaluation that reads every
    partition in one place: each partition's entities expire on its own clock."""

    def __init__(self, spec: FeatureSpec, ttl: float) -> None:
        self.spec = spec
        self.ttl = ttl
        self.parts: dict[str, EntityFeatures] = {}

    def fold(self, part: str, records: list[Record]) -> list[Record]:
        """The partition's records with their entity features (see :func:`fold_features`)."""
        features = self.parts.get(part)
        if features is None:
            features = self.parts[part] = EntityFeatures(self.spec, self.ttl)
        fold_features(features, records)
        features.expire()
        return records


class FeatureLogic(StatefulBatchLogic[list[Record], list[Record], bytes]):
    """Per-entity aggregates for the entities of one source partition."""

    def __init__(self, features: EntityFeatures, key: bytes, writer: FeatureWriter | None) -> None:
        self.features = features
        self.key = key
        self.writer = writer

    def on_batch(self, values: list[list[Record]]) -> tuple[list[list[Record]], bool]:
        """Replace each event's features with its entity's aggregates after the event."""
        touched = [entity for records in values for entity in fold_features(self.features, records)]
        self._store(touched, self.features.expire())
        return values, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[list[Record]], bool]:
        """Write the last entity states to the feature store before the input ends."""
        self._store((), (), force=True)
        return [], StatefulBatchLogic.RETAIN

    def _store(self, touched: Iterable[str], gone: Iterable[str], *, force: bool = False) -> None:
        if self.writer is not None and not self.writer.write(
            self.features.entities, touched, gone, force=force
        ):
            FEATURE_STORE_FAILURES.labels(self.writer.store.model).inc()

    def snapshot(self) -> bytes:
        """The signed aggregates, for Bytewax recovery."""
        return dumps_signed(self.features, self.key)
