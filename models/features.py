"""Incremental per-entity features: aggregates over each entity's past events.

The learn flow keeps one :class:`EntityFeatures` per Kafka partition as keyed Bytewax
state (an entity's events share a partition, since producers key them by entity), and
the gRPC server applies the same :meth:`EntityFeatures.peek` to the values the flow
writes to Redis, so serving and learning compute features the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from time import time as _clock

from models.schema import FUTURE_TOLERANCE


class FeatureSpecError(ValueError):
    """An entity feature that is not ``count``, ``since_last`` or ``mean:FIELD``."""


@dataclass(frozen=True)
class FeatureSpec:
    """Which aggregates to compute: ``count``, ``since_last`` and ``mean:FIELD`` items."""

    count: bool = False
    since_last: bool = False
    mean_of: tuple[str, ...] = ()

    @classmethod
    def parse(cls, items: Iterable[str]) -> FeatureSpec:
        """Parse ``("count", "since_last", "mean:amount")``-style items."""
        count = since_last = False
        mean_of: list[str] = []
        for item in items:
            if item == "count":
                count = True
            elif item == "since_last":
                since_last = True
            elif item.startswith("mean:") and len(item) > 5:
                mean_of.append(item[5:])
            else:
                raise FeatureSpecError(
                    f"unknown entity feature {item!r}: use count, since_last or mean:FIELD"
                )
        return cls(count, since_last, tuple(mean_of))

    def items(self) -> tuple[str, ...]:
        """The spec as :meth:`parse` reads it back.

        >>> FeatureSpec.parse(["mean:amount", "count"]).items()
        ('count', 'mean:amount')
        """
        flags = ("count",) * self.count + ("since_last",) * self.since_last
        return flags + tuple(f"mean:{name}" for name in self.mean_of)

    def __bool__(self) -> bool:
        return self.count or self.since_last or bool(self.mean_of)


# Aggregates whose distribution moves by construction: an entity's count only grows (until
# a TTL restarts it), so a data-drift check would flag it at every window.
GROWING = frozenset({"entity_count"})

# Per entity: [events seen, time of the last event, sum of each mean_of field...]
EntityState = list[float]


class EntityFeatures:
    """Running aggregates per entity, added to each event's features.

    The features of an event include the event itself (its count is 1 on first sight) and
    ``since_last`` is 0 for an entity's first event. With a ``ttl``, an entity idle for
    longer than it (in event time, to the latest event) starts afresh at its next event, and
    :meth:`expire` frees its state: the state then holds the entities of the last ``ttl``
    seconds, not every one ever seen. Where a stream's batches end changes nothing.

    >>> f = EntityFeatures(FeatureSpec.parse(["count", "since_last", "mean:amount"]), ttl=60)
    >>> f.update("alice", 10.0, {"amount": 4.0})
    {'amount': 4.0, 'entity_count': 1.0, 'entity_since_last': 0.0, 'entity_mean_amount': 4.0}
    >>> f.update("alice", 12.5, {"amount": 2.0})["entity_since_last"]
    2.5
    >>> _ = f.update("bob", 100.0, {"amount": 1.0})
    >>> f.expire(), sorted(f.entities)
    (['alice'], ['bob'])
    """

    # Defaults of a state pickled before entities could expire: kept for ever.
    ttl = 0.0
    latest = -math.inf  # the latest event time seen (within FUTURE_TOLERANCE of the clock)
    swept = -math.inf  # ``latest`` at the last sweep

    def __init__(self, spec: FeatureSpec, ttl: float = 0.0) -> None:
        self.spec = spec
        self.entities: dict[str, EntityState] = {}
        self.ttl = ttl

    def update(self, entity: str, time: float, features: dict[str, float]) -> dict[str, float]:
        """Fold the event into its entity's state and return its features with the aggregates."""
        if time > self.latest:  # only a new latest time can be too far ahead: ask the clock
            if time > _clock() + FUTURE_TOLERANCE:
                return features  # the learner refuses it: it changes no entity's state
            self.latest = time
        ttl = self.ttl
        state = self.entities.get(entity)
        if state is None or (ttl and state[1] < self.latest - ttl):  # new, or expired
            state = [0.0, time] + [0.0] * len(self.spec.mean_of)
            self.entities[entity] = state
        since_last = time - state[1]
        state[0] += 1.0
        state[1] = time
        for i, name in enumerate(self.spec.mean_of):
            state[2 + i] += float(features.get(name, 0.0))
        return self._augment(features, state, since_last)

    def expire(self) -> list[str]:
        """Forget the entities whose last event is over ``ttl`` seconds older than the latest
        one, and return them; the whole state is swept at most four times per ``ttl``."""
        if not self.ttl or self.latest - self.swept < self.ttl / 4:
            return []
        self.swept = self.latest
        limit = self.latest - self.ttl
        gone = [entity for entity, state in self.entities.items() if state[1] < limit]
        for entity in gone:
            del self.entities[entity]
        return gone

    def peek(self, state: EntityState | None, time: float, features: dict[str, float]) -> dict:
        """The features an event would get from ``state``, without changing anything.

        This is what a server computes for a request: the entity's stored state plus the
        request itself, as if the request were the entity's next event (a state idle for
        over ``ttl`` before it has expired, as in the flow).
        """
        if state is None or (self.ttl and state[1] < time - self.ttl):
            state = [0.0, time] + [0.0] * len(self.spec.mean_of)
        after = [state[0] + 1.0, time] + [
            total + float(features.get(name, 0.0))
            for total, name in zip(state[2:], self.spec.mean_of, strict=True)
        ]
        return self._augment(features, after, time - state[1])

    def _augment(
        self, features: dict[str, float], state: EntityState, since_last: float
    ) -> dict[str, float]:
        spec = self.spec
        out = dict(features)
        if spec.count:
            out["entity_count"] = state[0]
        if spec.since_last:
            out["entity_since_last"] = since_last
        for i, name in enumerate(spec.mean_of):
            out[f"entity_mean_{name}"] = state[2 + i] / state[0]
        return out
