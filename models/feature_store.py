"""The online feature store: each entity's latest aggregate state in Redis.

The learn flow writes the state of every entity a batch touched (one pipeline per batch)
and the gRPC server reads the state of the entity in a request, then applies the same
:meth:`~models.features.EntityFeatures.peek` as the flow, so serving and learning compute
features the same way.

Layout under ``riverrun:features:{model}``: ``spec`` (JSON list of the feature items) and
``state:{fingerprint}`` (hash: entity to packed little-endian doubles). The spec's
fingerprint is part of the state key, so a flow restarted with other features starts a
fresh hash and a reader never decodes one layout with another.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
import redis

from models.features import EntityState, FeatureSpec

PREFIX = "riverrun:features"
MAX_BACKOFF = 30.0


def fingerprint(spec: FeatureSpec) -> str:
    """A short stable name of the state layout ``spec`` implies."""
    return hashlib.blake2b(",".join(spec.items()).encode(), digest_size=6).hexdigest()


def encode_state(state: EntityState) -> bytes:
    """The state as packed little-endian doubles (exact, and compact)."""
    return struct.pack(f"<{len(state)}d", *state)


def decode_state(raw: bytes, spec: FeatureSpec) -> EntityState | None:
    """The state in ``raw``, or ``None`` if its length does not fit ``spec``."""
    if len(raw) != 8 * (2 + len(spec.mean_of)):
        return None
    return list(struct.unpack(f"<{len(raw) // 8}d", raw))


class FeatureStore:
    """Reads and writes the entity states and feature spec of one model."""

    def __init__(self, client: redis.Redis, model: str) -> None:
        # redis-py types every reply as a union of sync and async results; treat it as Any.
        self.client: Any = client
        self.model = model
        self.spec_key = f"{PREFIX}:{model}:spec"
        self.ttl_key = f"{PREFIX}:{model}:ttl"

    @classmethod
    def connect(cls, url: str, model: str, *, timeout: float = 1.0) -> FeatureStore:
        """A store on the Redis at ``url``."""
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return cls(client, model)

    def state_key(self, spec: FeatureSpec) -> str:
        """The hash holding the states of entities under ``spec``."""
        return f"{PREFIX}:{self.model}:state:{fingerprint(spec)}"

    def write(
        self,
        spec: FeatureSpec,
        states: Mapping[str, EntityState],
        forget: Iterable[str] = (),
        ttl: float = 0.0,
    ) -> None:
        """Store the spec and the entity TTL the flow keeps, ``states``, and drop the entities
        to ``forget``, in one round trip."""
        forget = list(forget)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.set(self.spec_key, orjson.dumps(spec.items()))
            pipe.set(self.ttl_key, orjson.dumps(ttl))
            if states:
                pipe.hset(
                    self.state_key(spec),
                    mapping={entity: encode_state(state) for entity, state in states.items()},
                )
            if forget:
                pipe.hdel(self.state_key(spec), *forget)
            pipe.execute()

    def forget_spec(self) -> None:
        """Say that the learn flow keeps no entity features (any more), with an empty spec,
        and drop the states it kept: servers and retrains then compute none, and a flow that
        keeps them again starts with no stale state."""
        spec = self.read_spec()
        stale = [self.state_key(spec)] if spec else []
        with self.client.pipeline(transaction=False) as pipe:
            pipe.delete(self.ttl_key, *stale)
            pipe.set(self.spec_key, orjson.dumps([]))
            pipe.execute()

    def read_spec(self) -> FeatureSpec | None:
        """The spec the learn flow last wrote (empty if it keeps no entity features), or
        ``None`` if no flow of the model has said."""
        raw = self.client.get(self.spec_key)
        return None if raw is None else FeatureSpec.parse(orjson.loads(raw))

    def read_ttl(self) -> float:
        """The entity TTL the learn flow last wrote (0: entities are kept for ever)."""
        raw = self.client.get(self.ttl_key)
        return 0.0 if raw is None else float(orjson.loads(raw))

    def read(self, spec: FeatureSpec, entity: str) -> EntityState | None:
        """The entity's latest state, or ``None`` if the flow has not seen it."""
        raw = self.client.hget(self.state_key(spec), entity)
        return None if raw is None else decode_state(raw, spec)

    def read_many(self, spec: FeatureSpec, entities: list[str]) -> list[EntityState | None]:
        """The latest states of ``entities``, in one round trip."""
        raws = self.client.hmget(self.state_key(spec), entities) if entities else []
        return [None if raw is None else decode_state(raw, spec) for raw in raws]


class FeatureWriter:
    """Writes the states of the entities each batch touched, and never raises.

    A failed write keeps its entities for the next one (which writes their newest state)
    and backs off, doubling up to :data:`MAX_BACKOFF` seconds, so a Redis outage costs the
    flow one timeout now and then, not one per batch.
    """

    def __init__(
        self,
        store: FeatureStore,
        spec: FeatureSpec,
        clock: Callable[[], float] = time.monotonic,
        ttl: float = 0.0,
    ) -> None:
        self.store = store
        self.spec = spec
        self.ttl = ttl
        self.clock = clock
        self.dirty: set[str] = set()
        self.gone: set[str] = set()  # entities the flow forgot, still to drop from Redis
        self.failures = 0
        self.backoff = 0.0
        self.retry_at = 0.0

    def write(
        self,
        states: Mapping[str, EntityState],
        touched: Iterable[str],
        gone: Iterable[str] = (),
        *,
        force: bool = False,
    ) -> bool:
        """Write the touched (and still unwritten) entities and drop those ``gone`` (and still
        stored); ``False`` if the write failed.

        While backing off nothing is tried (unless ``force``) and ``True`` is returned.
        """
        self.dirty.update(touched)
        self.gone.update(gone)
        if not (self.dirty or self.gone) or (not force and self.clock() < self.retry_at):
            return True
        try:
            self.store.write(
                self.spec,
                {e: states[e] for e in self.dirty if e in states},
                [e for e in self.gone if e not in states],  # unless it came back meanwhile
                self.ttl,
            )
        except redis.RedisError:
            self.failures += 1
            self.backoff = min(max(self.backoff * 2, 0.5), MAX_BACKOFF)
            self.retry_at = self.clock() + self.backoff
            return False
        self.dirty.clear()
        self.gone.clear()
        self.backoff = 0.0
        return True
