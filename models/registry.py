"""The model registry in Redis: immutable versions, aliases moved by compare-and-set, an
audit stream of every move, announcements on pub/sub, rollback and retention.

Layout under ``riverrun:registry:{model}``: ``next`` (version counter), ``versions``
(sorted set), ``v:{N}`` (metadata JSON), ``blob:{N}`` (signed pickle), ``aliases``
(hash), ``history`` (previous champions, newest first), ``audit`` (stream) and
``refused`` (counter). Moves are announced on ``riverrun:registry:events``.

A signed pickle says the registry key made it, not which model and version it is. So each
version's metadata carries a ``binding``: an HMAC over every other field of it, with the
model and version it is registered as and the SHA-256 of its snapshot among them, under a
key derived from the registry key (so that a binding never passes for a signature). A load
takes the model and version from the keys it reads, not from the JSON, and refuses a
version whose binding does not match them (its metadata and snapshot copied from another
version or model, or edited) or that has none (registered before bindings). Version
numbers are not given twice while the counter or a newer version survives; aliases are not
signed, so whoever can write to Redis can still point one at an older version.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.metadata
import itertools
import math
import pickle
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import orjson
import redis

from models.signing import SignatureError, check_key, dumps_signed, mac, verify

PREFIX = "riverrun:registry"
BINDING_PURPOSE = b"riverrun registry binding v1"
CHANNEL = f"{PREFIX}:events"
ANY = "*"  # expected version that matches whatever the alias points at
AUDIT_MAXLEN = 100_000
HISTORY_MAX = 100

# Moves an alias atomically: compare, set, remember the previous champion, audit, announce.
_MOVE = """
local aliases, versions, history, audit = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local alias, expected, to, action = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local current = redis.call('HGET', aliases, alias) or ''
if expected ~= '*' and expected ~= current then return {'conflict', current, '', ''} end
if action == 'rollback' then
  to = redis.call('LINDEX', history, 0)
  if not to then return {'nohistory', current, '', ''} end
end
if to ~= '' and not redis.call('ZSCORE', versions, to) then
  return {'noversion', current, to, ''}
end
if to == '' then redis.call('HDEL', aliases, alias) else redis.call('HSET', aliases, alias, to) end
if alias == 'champion' then
  if action == 'promote' and current ~= '' and current ~= to then
    redis.call('LPUSH', history, current)
    redis.call('LTRIM', history, 0, tonumber(ARGV[11]) - 1)
  elseif action == 'rollback' then
    redis.call('LPOP', history)
  end
end
local id = redis.call('XADD', audit, 'MAXLEN', '~', ARGV[10], '*', 'alias', alias,
  'from', current, 'to', to, 'action', action, 'actor', ARGV[5], 'reason', ARGV[6],
  'evidence', ARGV[7], 'at', ARGV[8])
redis.call('PUBLISH', ARGV[9], cjson.encode({model = ARGV[12], alias = alias, from = current,
  to = to, action = action, id = id}))
return {'ok', current, to, id}
"""


def _expected(version: int | str | None) -> str:
    """``expected`` as the move script takes it: ``ANY``, "" for no alias, or the version."""
    return ANY if version == ANY else ("" if version is None else str(version))


class RegistryError(RuntimeError):
    """A registry request that cannot be done; the message says why."""


def check_model_name(name: str) -> str:
    """``name`` if it can name a model: not empty, with no '/', not '.' or '..' (it names
    the model's recovery folder too); :class:`RegistryError` otherwise.

    >>> check_model_name("fraud/v2")
    Traceback (most recent call last):
    ...
    models.registry.RegistryError: 'fraud/v2': expected a model name that can be a folder \
name (not empty, no '/', not '.' or '..')
    """
    if not name or name in (".", "..") or "/" in name:
        raise RegistryError(
            f"{name!r}: expected a model name that can be a folder name (not empty, no '/', "
            "not '.' or '..')"
        )
    return name


class NotFound(RegistryError, LookupError):
    """No such model, version or alias."""


class Conflict(RegistryError):
    """An alias did not point at the version the caller expected: someone else moved it."""

    def __init__(self, message: str, current: int | None) -> None:
        super().__init__(message)
        self.current = current


@dataclass(frozen=True)
class VersionInfo:
    """Everything the registry knows about one immutable version; ``binding`` seals the
    rest to it (see the module's docstring), ``""`` if it was registered before bindings."""

    model: str
    version: int
    spec: str
    task: str
    params: dict[str, Any]
    metrics: dict[str, float]
    events_seen: int
    positions: dict[str, int]
    parent: int | None
    code_version: str
    created_at: float
    tags: dict[str, str]
    size: int
    sha256: str
    features: list[str] | None = None  # what the flow checked events against, if known
    binding: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for JSON."""
        return asdict(self)


@dataclass(frozen=True)
class AliasMove:
    """One entry of the audit stream."""

    id: str
    alias: str
    from_version: int | None
    to_version: int | None
    action: str
    actor: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)
    at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for JSON."""
        return asdict(self)


def _info(model: str, version: int, raw: bytes | None) -> VersionInfo:
    """A version's metadata as stored under ``model`` and ``version`` (which name it, not
    the JSON, so that its binding is checked against them): a clear error if it is missing
    or unreadable."""
    if raw is None:
        raise NotFound(f"model {model!r} has no version {version}")
    try:
        return VersionInfo(**{**orjson.loads(raw), "model": model, "version": version})
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise RegistryError(
            f"model {model!r} v{version}: its metadata is unreadable: {exc}"
        ) from None


def _bound_fields(info: VersionInfo) -> bytes:
    """Every field but the binding, as canonical JSON: the same bytes at registration and
    after a round trip through Redis."""
    fields = info.to_dict()
    del fields["binding"]
    return orjson.dumps(fields, default=str, option=orjson.OPT_SORT_KEYS)


def _move(entry_id: bytes, fields: dict[bytes, bytes]) -> AliasMove:
    """An audit stream entry as an :class:`AliasMove`; :class:`RegistryError` for one
    riverrun did not write (a field missing or unreadable, as an entry added by hand)."""
    try:
        f = {k.decode(): v.decode() for k, v in fields.items()}
        return AliasMove(
            entry_id.decode(),
            f["alias"],
            _version(f["from"]),
            _version(f["to"]),
            f["action"],
            f["actor"],
            f["reason"],
            orjson.loads(f["evidence"]),
            float(f["at"]),
        )
    except (KeyError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are too
        what = f"no field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise RegistryError(
            f"the registry's audit entry {entry_id.decode(errors='replace')} is not one "
            f"riverrun writes ({what})"
        ) from None


def _version(raw: bytes | str | None) -> int | None:
    """A version number as stored (``None`` for none): :class:`RegistryError` for anything
    else, such as a value written into Redis by hand."""
    if raw is None or raw in (b"", ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise RegistryError(f"the registry holds {raw!r} where a version number goes") from None


def _code_version() -> str:
    try:
        return importlib.metadata.version("riverrun")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Registry:
    """Versions and aliases of models in Redis.

    ``key`` signs every snapshot; ``keep`` is how many recent versions (and recent alias
    moves) retention protects, besides every version an alias or the champion history
    points at.
    """

    def __init__(
        self, client: redis.Redis, key: str | bytes, *, keep: int = 20, code_version: str = ""
    ) -> None:
        # redis-py types every reply as a union of sync and async results; treat it as Any.
        self.client: Any = client
        self.key = check_key(key)
        # bindings under a key of their own, so that no binding can pass for a signature
        self.binding_key = mac(BINDING_PURPOSE, self.key)
        self.keep = keep
        self.code_version = code_version or _code_version()
        self._move = client.register_script(_MOVE)

    @classmethod
    def connect(
        cls, url: str, key: str | bytes, *, keep: int = 20, timeout: float = 5.0
    ) -> Registry:
        """A registry on the Redis at ``url``."""
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return cls(client, key, keep=keep)

    def _k(self, model: str, *parts: object) -> str:
        return ":".join([PREFIX, model, *map(str, parts)])

    # -- versions --------------------------------------------------------------------------

    def register(
        self,
        model: str,
        obj: Any,
        *,
        spec: str,
        task: str,
        metrics: Mapping[str, float] | None = None,
        events_seen: int = 0,
        positions: Mapping[str, int] | None = None,
        parent: int | None = None,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        signed: bytes | None = None,
        features: Iterable[str] | None = None,
    ) -> VersionInfo:
        """Store ``obj`` (signed) as the next version of ``model``; it is never rewritten.

        ``signed`` may carry the already signed pickle of ``obj`` (made off the hot path);
        ``features`` are those every event had to carry while it learned, which servers
        then ask of every request.
        """
        check_model_name(model)
        blob = signed if signed is not None else dumps_signed(obj, self.key)
        version = self._next_version(model)
        info = VersionInfo(
            model=model,
            version=version,
            spec=spec,
            task=task,
            params=dict(params if params is not None else model_params(obj)),
            metrics=dict(metrics or {}),
            events_seen=events_seen,
            positions=dict(positions or {}),
            parent=parent,
            code_version=self.code_version,
            created_at=time.time(),
            tags=dict(tags or {}),
            size=len(blob),
            sha256=hashlib.sha256(blob).hexdigest(),
            features=None if features is None else sorted(features),
        )
        info = _info(model, version, orjson.dumps(info.to_dict(), default=str))  # as stored
        info = replace(info, binding=self._binding(info))
        with self.client.pipeline(transaction=True) as tx:
            tx.set(self._k(model, "v", version), orjson.dumps(info.to_dict()), nx=True)
            tx.set(self._k(model, "blob", version), blob, nx=True)
            tx.zadd(self._k(model, "versions"), {str(version): version})
            tx.sadd(f"{PREFIX}:models", model)
            stored_info, stored_blob, *_ = tx.execute()
        if not (stored_info and stored_blob):
            raise RegistryError(
                f"model {model!r} v{version} already exists in Redis, so it was not registered: "
                "its version counter went back (Redis restored from an older copy, or edited)"
            )
        return info

    def _next_version(self, model: str) -> int:
        """The counter's next number, raised past the newest version stored should the
        counter have gone back (Redis restored or edited): a number is never given twice
        while the counter or a newer version survives."""
        version = int(self.client.incr(self._k(model, "next")))
        newest = self.client.zrange(self._k(model, "versions"), -1, -1)
        if newest and int(newest[0]) >= version:
            return int(self.client.incrby(self._k(model, "next"), int(newest[0]) + 1 - version))
        return version

    def info(self, model: str, version: int) -> VersionInfo:
        """Metadata of one version."""
        return _info(model, version, self.client.get(self._k(model, "v", version)))

    def _numbers(self, model: str) -> list[int]:
        """The version numbers stored for ``model``, oldest first."""
        return [int(v) for v in self.client.zrange(self._k(model, "versions"), 0, -1)]

    def versions(self, model: str) -> list[VersionInfo]:
        """Metadata of every stored version of ``model``, oldest first."""
        numbers = self._numbers(model)
        if not numbers:
            return []
        raws = self.client.mget([self._k(model, "v", n) for n in numbers])
        return [_info(model, n, r) for n, r in zip(numbers, raws, strict=True) if r is not None]

    def models(self) -> list[str]:
        """Names of every model in the registry."""
        return sorted(m.decode() for m in self.client.smembers(f"{PREFIX}:models"))

    def load(self, model: str, version: int) -> Any:
        """The model object of a version (see :meth:`load_version`)."""
        return self.load_version(model, version)[1]

    def load_version(self, model: str, version: int) -> tuple[VersionInfo, Any]:
        """Metadata and model object of a version, unpickled only if its bytes are the ones
        registered for it and their signature checks.

        A refused snapshot is counted (``refused``) and audited before the error is raised.
        """
        raw_info, blob = self.client.mget(
            self._k(model, "v", version), self._k(model, "blob", version)
        )
        if raw_info is None or blob is None:
            raise NotFound(f"model {model!r} has no version {version}")
        info = _info(model, version, raw_info)
        try:
            return info, pickle.loads(self._checked_payload(info, blob))
        except SignatureError as exc:
            self._refused(model, version, str(exc))
            raise

    def _binding(self, info: VersionInfo) -> str:
        """The key's HMAC over ``info``'s fields: ties its snapshot's digest and metadata to
        the model and version it is registered as."""
        return mac(_bound_fields(info), self.binding_key).hex()

    def _check_binding(self, info: VersionInfo) -> None:
        """Refuse ``info`` unless it is the metadata registered as its model and version."""
        if not info.binding:
            raise SignatureError(
                f"{info.model!r} v{info.version} was registered before snapshots were bound to "
                "their model and version: refused; register the model again (riverrun "
                "registry push, then promote it)"
            )
        # str(): the stored JSON may hold anything there; bytes: compare_digest wants ASCII
        if not hmac.compare_digest(str(info.binding).encode(), self._binding(info).encode()):
            raise SignatureError(
                f"the metadata of {info.model!r} v{info.version} is not the one registered as "
                "that model and version (copied from another version or model, or edited), or "
                "the registry key is not the one it was registered with: refused"
            )

    def _checked_payload(self, info: VersionInfo, blob: bytes) -> bytes:
        """The pickle inside ``blob`` if ``info`` is bound to its model and version, ``blob``
        is the snapshot it names (not another version's signed bytes put in its place) and
        its signature checks."""
        self._check_binding(info)
        payload = verify(blob, self.key)
        if hashlib.sha256(blob).hexdigest() != info.sha256:
            raise SignatureError(
                f"snapshot bytes are not those registered for v{info.version}: refused"
            )
        return payload

    def _refused(self, model: str, version: int, why: str) -> None:
        with self.client.pipeline(transaction=True) as tx:
            tx.incr(self._k(model, "refused"))
            self._append_audit(tx, model, "refused", "registry", why, {}, from_version=version)
            tx.execute()

    def audit(
        self, model: str, action: str, actor: str, reason: str, evidence: Mapping[str, Any]
    ) -> None:
        """Append a decision that moves no alias (a trigger, a retrain) to the audit stream."""
        self._append_audit(self.client, model, action, actor, reason, evidence)

    def _append_audit(
        self,
        client: Any,
        model: str,
        action: str,
        actor: str,
        reason: str,
        evidence: Mapping[str, Any],
        *,
        from_version: int | None = None,
        alias: str = "",
    ) -> None:
        fields = {
            "alias": alias,
            "from": "" if from_version is None else str(from_version),
            "to": "",
            "action": action,
            "actor": actor,
            "reason": reason,
            "evidence": orjson.dumps(dict(evidence), default=str).decode(),
            "at": repr(time.time()),
        }
        client.xadd(self._k(model, "audit"), fields, maxlen=AUDIT_MAXLEN, approximate=True)

    def refused_count(self, model: str) -> int:
        """How many snapshots of ``model`` were refused for a bad signature."""
        return int(self.client.get(self._k(model, "refused")) or 0)

    def verify(self, model: str) -> list[tuple[int, str | None]]:
        """Check every version's metadata, binding and signature without unpickling:
        ``(version, error or None)``."""
        out: list[tuple[int, str | None]] = []
        for number in self._numbers(model):
            try:
                self.check_version(model, number)
                out.append((number, None))
            except NotFound:
                out.append((number, "its metadata is missing"))
            except (SignatureError, RegistryError) as exc:
                out.append((number, str(exc)))
        return out

    def check_version(self, model: str, version: int) -> VersionInfo:
        """A version's metadata once its binding and signature check, without unpickling
        (before an alias is moved to it by hand); :class:`NotFound` if there is no such
        version, :class:`SignatureError` or :class:`RegistryError` saying what fails."""
        raw_info, blob = self.client.mget(
            self._k(model, "v", version), self._k(model, "blob", version)
        )
        info = _info(model, version, raw_info)
        if blob is None:
            raise SignatureError("snapshot bytes are missing")
        self._checked_payload(info, blob)
        return info

    def check_champion(self, model: str, version: int, current: int | None) -> None:
        """Refuse (:class:`RegistryError`) to make ``version`` the champion in the place of
        ``current`` if every flow and server would refuse to load it (its snapshot does not
        check) or it does another task than ``current``: a move by hand or by a trigger."""
        try:
            info = self.check_version(model, version)
        except SignatureError as exc:
            raise RegistryError(
                f"model {model!r} v{version} cannot be the champion: {exc} "
                f"(riverrun registry verify {model} checks every version)"
            ) from None
        if current is not None and current != version:
            task = self.info(model, current).task
            if info.task != task:
                raise RegistryError(
                    f"model {model!r} v{version} does {info.task}, and its champion "
                    f"v{current} does {task}: a model keeps its task (push one that does {task})"
                )

    def check_rollback(self, model: str, current: int | None) -> None:
        """:meth:`check_champion` for the version a rollback from ``current`` would make the
        champion (none if there is no previous champion: the rollback says why)."""
        previous = self.champion_history(model)
        if previous:
            self.check_champion(model, previous[0], current)

    # -- aliases ---------------------------------------------------------------------------

    def aliases(self, model: str) -> dict[str, int]:
        """Every alias of ``model`` and the version it points at."""
        raw = self.client.hgetall(self._k(model, "aliases"))
        versions = {k.decode(): _version(v) for k, v in raw.items()}
        return {alias: v for alias, v in versions.items() if v}

    def alias(self, model: str, alias: str) -> int | None:
        """The version ``alias`` points at, or ``None``."""
        return _version(self.client.hget(self._k(model, "aliases"), alias))

    def load_alias(self, model: str, alias: str) -> tuple[VersionInfo, Any] | None:
        """Metadata and model object of the version ``alias`` points at, if any."""
        version = self.alias(model, alias)
        if version is None:
            return None
        return self.load_version(model, version)

    def move_alias(
        self,
        model: str,
        alias: str,
        to_version: int | None,
        *,
        expected: int | str | None = ANY,
        actor: str,
        reason: str,
        evidence: Mapping[str, Any] | None = None,
        action: str = "promote",
    ) -> AliasMove:
        """Point ``alias`` at ``to_version`` (``None`` removes it) if it points at ``expected``.

        ``expected=None`` means "the alias must not exist yet"; ``ANY`` skips the check.
        Raises :class:`Conflict` when someone else moved it first. ``action`` is
        ``promote`` (a new champion: the old one becomes a rollback target), ``checkpoint``
        (a newer snapshot of the same model) or ``set``.
        """
        to = "" if to_version is None else str(to_version)
        return self._run_move(
            model, alias, _expected(expected), to, action, actor, reason, evidence
        )

    def rollback(
        self, model: str, *, actor: str, reason: str, expected: int | str | None = ANY
    ) -> AliasMove:
        """Move ``champion`` back to the previous champion (if it points at ``expected``),
        audited like any move."""
        return self._run_move(
            model, "champion", _expected(expected), "", "rollback", actor, reason, None
        )

    def _run_move(
        self,
        model: str,
        alias: str,
        expected: str,
        to: str,
        action: str,
        actor: str,
        reason: str,
        evidence: Mapping[str, Any] | None,
    ) -> AliasMove:
        at = time.time()
        evidence_json = orjson.dumps(dict(evidence or {}), default=str).decode()
        keys = [self._k(model, p) for p in ("aliases", "versions", "history", "audit")]
        args: list[str | int] = [
            alias,
            expected,
            to,
            action,
            actor,
            reason,
            evidence_json,
            repr(at),
            CHANNEL,
            AUDIT_MAXLEN,
            HISTORY_MAX,
            model,
        ]
        status, current, target, entry = (
            x.decode() if isinstance(x, bytes) else x for x in self._move(keys=keys, args=args)
        )
        if status == "conflict":
            raise Conflict(
                f"{model} {alias} points at {current or 'nothing'}, not {expected or 'nothing'}: "
                "someone else moved it",
                _version(current),
            )
        if status == "nohistory":
            raise RegistryError(f"{model} has no previous champion to roll back to")
        if status == "noversion":
            raise NotFound(f"model {model!r} has no version {target}")
        return AliasMove(
            entry,
            alias,
            _version(current),
            _version(target),
            action,
            actor,
            reason,
            dict(evidence or {}),
            at,
        )

    def set_ab_fraction(self, model: str, fraction: float, *, actor: str, reason: str) -> float:
        """Serve ``fraction`` of entities (by key hash) with the challenger; audited, announced.
        Returns the fraction before, as audited."""
        if not 0.0 <= fraction <= 1.0:
            raise RegistryError(f"A/B fraction must be within [0, 1], not {fraction}")
        try:
            previous = self.ab_fraction(model)
        except RegistryError:  # unreadable: this sets it right
            previous = math.nan
        with self.client.pipeline(transaction=True) as tx:
            tx.set(self._k(model, "ab"), repr(fraction))
            evidence = {"from": previous, "to": fraction}
            self._append_audit(tx, model, "ab", actor, reason, evidence, alias="ab")
            tx.publish(
                CHANNEL,
                orjson.dumps({"model": model, "alias": "ab", "action": "ab", "fraction": fraction}),
            )
            tx.execute()
        return previous

    def ab_fraction(self, model: str) -> float:
        """The fraction of entities the challenger serves (0 when no split is set)."""
        raw = self.client.get(self._k(model, "ab"))
        if raw is None:
            return 0.0
        try:
            fraction = float(raw)
        except ValueError:
            fraction = math.nan
        if not 0.0 <= fraction <= 1.0:  # NaN too
            raise RegistryError(
                f"the A/B split of {model!r} holds {raw!r}, not a fraction within [0, 1]: set "
                f"it again (riverrun registry ab {model} FRACTION)"
            )
        return fraction

    def ab_split_set(self, model: str) -> bool:
        """Whether anyone ever set ``model``'s split, to 0 included."""
        return bool(self.client.exists(self._k(model, "ab")))

    def history(self, model: str, count: int = 1000) -> list[AliasMove]:
        """The last ``count`` audit entries of ``model``, oldest first (any ``count``: the
        stream keeps about ``AUDIT_MAXLEN``, and Redis refuses a count past a 64-bit one)."""
        count = min(count, 2 * AUDIT_MAXLEN)
        entries = self.client.xrevrange(self._k(model, "audit"), count=count)
        return [_move(entry_id, fields) for entry_id, fields in reversed(entries)]

    def newest_moves(self, model: str, limit: int, page: int = 100) -> Iterator[AliasMove]:
        """Up to ``limit`` audit entries of ``model``, newest first, read ``page`` at a time:
        a search that stops at a recent entry reads a page, not the whole stream."""
        key, top, read = self._k(model, "audit"), "+", 0
        while read < limit:
            entries = self.client.xrevrange(key, max=top, count=page)
            if top != "+":
                entries = entries[1:]  # ``max`` is inclusive: that one ended the last page
            if not entries:
                return
            for entry_id, fields in entries[: limit - read]:
                yield _move(entry_id, fields)
            read += len(entries)
            top = entries[-1][0]

    def same_model(self, model: str, alias: str, version: int, limit: int = 1000) -> int | None:
        """The version ``alias`` points at now if it is the model it pointed at as ``version``,
        moved since by its own checkpoints only (newer snapshots of one model), else
        ``None`` (a promotion, rollback or set since, or ``version`` not among the last
        ``limit`` audit entries)."""
        current = self.alias(model, alias)
        if current == version:
            return current
        for move in self.newest_moves(model, limit):
            if move.alias != alias:
                continue
            if move.action != "checkpoint":
                return None
            if move.from_version == version:
                return current
        return None

    def champion_history(self, model: str) -> list[int]:
        """Previous champions, newest first: where ``rollback`` goes next."""
        versions = map(_version, self.client.lrange(self._k(model, "history"), 0, -1))
        return [v for v in versions if v is not None]

    # -- retention -------------------------------------------------------------------------

    def prune(self, model: str) -> list[int]:
        """Delete versions nothing protects; returns the versions removed.

        Protected: the last ``keep`` versions, every version an alias points at, every
        version named by the last ``keep`` alias moves, and every rollback target.

        Aliases, audit and versions are watched from before they are read until the delete:
        an alias moved meanwhile (to a version that looked unprotected) means reading again.
        """
        watched = [self._k(model, key) for key in ("aliases", "audit", "versions")]
        with self.client.pipeline(transaction=True) as tx:
            while True:
                tx.watch(*watched)
                doomed = self._unprotected(model)
                if not doomed:
                    tx.unwatch()
                    return doomed
                tx.multi()
                tx.zrem(self._k(model, "versions"), *map(str, doomed))
                for n in doomed:
                    tx.delete(self._k(model, "v", n), self._k(model, "blob", n))
                try:
                    tx.execute()
                except redis.WatchError:
                    continue
                return doomed

    def _unprotected(self, model: str) -> list[int]:
        """The versions :meth:`prune` may delete now."""
        numbers = self._numbers(model)
        protected = set(numbers[-self.keep :])
        protected.update(self.aliases(model).values())
        protected.update(self.champion_history(model))
        moves = (  # newest first, paged: audit entries of triggers and A/B splits move none
            m
            for m in self.newest_moves(model, AUDIT_MAXLEN)
            if m.action != "refused" and (m.from_version or m.to_version)
        )
        for move in itertools.islice(moves, self.keep):
            protected.update(v for v in (move.from_version, move.to_version) if v is not None)
        return [n for n in numbers if n not in protected]


def announcement(message: Any) -> dict[str, Any] | None:
    """The object a pub/sub message on :data:`CHANNEL` carries; ``None`` for anything else
    (subscribe confirmations, or junk someone else published there)."""
    if not message:
        return None
    try:
        data = orjson.loads(message["data"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return data if isinstance(data, dict) else None


def model_params(obj: Any) -> dict[str, Any]:
    """A River model's parameters as JSON-able data (``{}`` for other objects)."""
    get = getattr(obj, "_get_params", None)
    if get is None:
        return {}
    try:
        return orjson.loads(orjson.dumps(get(), default=str))
    except (TypeError, orjson.JSONEncodeError):
        return {}
