"""Bytewax recovery of the learn flow: where its partitions live, created on first start, and
checked before Bytewax reads them.

Model state, detector state, pending joins and Kafka offsets are Bytewax state of one
dataflow, snapshotted together every ``epoch_interval`` in ``settings.recovery_path``;
the same ``riverrun learn`` started again resumes from the last snapshot there. Bytewax
unpickles every snapshot it resumes from, so :func:`check_snapshots` first reads each one's
opcodes (nothing is unpickled) and refuses any that is not a plain offset or riverrun's
signed state.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickletools
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bytewax.recovery import RecoveryConfig, init_db_dir

from models.features import EntityFeatures, FeatureSpec
from models.signing import check_key, loads_signed, verify
from riverrun.settings import Settings, env_name

# A snapshot pickle may hold one None, int or bytes, with nothing around it but framing.
_FRAMING = frozenset({"PROTO", "FRAME", "MEMOIZE", "BINPUT", "LONG_BINPUT", "STOP"})
_PLAIN = frozenset(
    {"NONE", "BININT", "BININT1", "BININT2", "LONG1", "LONG4"}
    | {"SHORT_BINBYTES", "BINBYTES", "BINBYTES8"}
)
_SNAPSHOTS = (
    "SELECT step_id, state_key, snap_epoch, ser_change FROM snaps WHERE ser_change NOT NULL"
)
_LAST_FEATURES = (  # one partition's newest entity-feature state (every key has one spec)
    "SELECT ser_change FROM snaps WHERE step_id = 'riverrun-learn.features' "
    "AND ser_change NOT NULL ORDER BY snap_epoch DESC LIMIT 1"
)
_ANY_LEARNER = (  # whether the learn step kept a state: a flow ran, with or without features
    "SELECT 1 FROM snaps WHERE step_id = 'riverrun-learn.learn' AND ser_change NOT NULL LIMIT 1"
)


def partitions(path: Path) -> list[Path]:
    """The recovery partitions in ``path`` (none if it does not exist)."""
    return sorted(path.glob("part-*.sqlite3"))


@contextlib.contextmanager
def holding_recovery(settings: Settings) -> Iterator[None]:
    """Hold the model's recovery folder for the block (a lock file beside it, with this
    process's pid): a second flow on one state would write every prediction twice, and
    the two would fight over the registry's aliases. The lock goes with the process."""
    path = settings.recovery_path
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.parent / f".{path.name}.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise RecoveryStateError(
                f"another riverrun learn (pid {holder}) runs from {path}: stop it first, or "
                f"give this one another {env_name('model_name')} or "
                f"{env_name('recovery_dir')}"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield


def prepare_recovery(settings: Settings) -> bool:
    """Create the partitions on first start (one per process); ``True`` if some exist already
    (and every snapshot in them passes :func:`check_snapshots`), so the flow resumes from them."""
    path = settings.recovery_path
    if path is None:
        return False
    if partitions(path):
        key = check_key(settings.registry_key)
        check_snapshots(path, key)
        check_entity_features(path, key, FeatureSpec.parse(settings.entity_features))
        return True
    _create_partitions(path, settings.processes)
    return False


def _create_partitions(path: Path, processes: int) -> None:
    """Create ``path`` with its partitions all at once: they are made in a sibling folder
    that is renamed into place, so a start killed half-way leaves none (it would leave a
    partial set, taken for state to resume from, that Bytewax refuses at every start)."""
    if path.exists():
        try:
            path.rmdir()  # an empty folder is taken over; anything else stays the user's
        except OSError:
            raise RecoveryStateError(
                f"recovery folder {path} holds no recovery partitions but other files: "
                "move them away, or set another RIVERRUN_RECOVERY_DIR"
            ) from None
    making = path.with_name(f".{path.name}.creating")
    shutil.rmtree(making, ignore_errors=True)  # what a start killed before the rename left
    making.mkdir(parents=True, mode=0o700)  # private: Bytewax unpickles from it
    init_db_dir(making, processes)
    making.rename(path)


def recovery_config(settings: Settings) -> RecoveryConfig | None:
    """Bytewax's recovery configuration for the settings (after :func:`prepare_recovery`)."""
    path = settings.recovery_path
    return None if path is None else RecoveryConfig(path)


def snapshot_value(pickled: bytes) -> int | bytes | None:
    """The one None, int or bytes of a Bytewax snapshot pickle, read from its opcodes (never
    unpickled); ``ValueError`` for a pickle that holds anything else.

    >>> import pickle
    >>> [snapshot_value(pickle.dumps(v)) for v in (None, 42, -2, 2**70)]
    [None, 42, -2, 1180591620717411303424]
    >>> len(snapshot_value(pickle.dumps(b"s" * 70_000)))  # past a pickle frame
    70000
    >>> snapshot_value(pickle.dumps(print))
    Traceback (most recent call last):
    ...
    ValueError: it holds more than an offset or bytes (opcode SHORT_BINUNICODE)
    """
    values = []
    for op, arg, _pos in pickletools.genops(pickled):
        if op.name in _PLAIN:
            values.append(arg)
        elif op.name not in _FRAMING:
            raise ValueError(f"it holds more than an offset or bytes (opcode {op.name})")
    if len(values) != 1:
        raise ValueError(f"it holds {len(values)} values, not one")
    return values[0]


class RecoveryStateError(ValueError):
    """A recovery directory holding a snapshot that riverrun did not write, or a partition
    that cannot be read: refused, the message says what to do."""


def check_snapshots(path: Path, key: bytes) -> None:
    """Check every snapshot in the recovery partitions at ``path``: each must be a plain
    offset (or nothing), or bytes signed with ``key``. Raise :class:`RecoveryStateError`
    naming the first that is not, before Bytewax would unpickle it."""
    for step, state_key, epoch, blob in query_partitions(path, _SNAPSHOTS):
        try:
            value = snapshot_value(blob)
            if isinstance(value, bytes):
                verify(value, key)
        except ValueError as exc:  # SignatureError is one
            raise RecoveryStateError(
                f"recovery state in {path} refused, nothing unpickled: the snapshot of "
                f"{step} for {state_key!r} (epoch {epoch}) fails its check: {exc}; "
                f"delete {path} to start over from the registry's champion"
            ) from None


def check_entity_features(path: Path, key: bytes, asked: FeatureSpec) -> None:
    """:class:`RecoveryStateError` if the entity features kept at ``path`` (checked by
    :func:`check_snapshots`) are not those ``asked`` for: resumed, their state would be
    published under the new spec, and the models would miss the features they learned."""
    kept = None
    for (blob,) in partition_rows(path, _LAST_FEATURES):  # every key has one spec: the first
        value = snapshot_value(blob)
        if isinstance(value, bytes):
            features: EntityFeatures = loads_signed(value, key)
            kept = features.spec
            break
    if kept is None and next(partition_rows(path, _ANY_LEARNER), None) is not None:
        kept = FeatureSpec()  # a flow without entity features kept its state
    if kept is not None and kept != asked:
        named, new = (",".join(spec.items()) or "(none)" for spec in (kept, asked))
        raise RecoveryStateError(
            f"the recovery state in {path} keeps the entity features {named}, not "
            f"{env_name('entity_features')}={new}: set it back, or delete {path} to "
            "start over from the registry's champion (which learned the old features)"
        )


def query_partitions(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` from every recovery partition at ``path`` (:func:`partition_rows`)."""
    return list(partition_rows(path, sql))


def partition_rows(path: Path, sql: str) -> Iterator[tuple[Any, ...]]:
    """Rows of ``sql`` from each recovery partition at ``path`` in turn, read as they are
    asked for (none from a partition whose tables Bytewax has yet to make);
    :class:`RecoveryStateError` naming a partition that SQLite cannot read (not a database,
    damaged, locked, unreadable)."""
    for part in partitions(path):
        read_only = f"{part.absolute().as_uri()}?mode=ro"  # nothing written, not even the log
        try:
            with contextlib.closing(sqlite3.connect(read_only, uri=True, timeout=10)) as db:
                rows = db.execute(sql).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                continue
            raise RecoveryStateError(  # locked or unreadable: nothing to delete for that
                f"recovery partition {part} cannot be read ({exc}); check that no other "
                f"`riverrun learn` uses {path} and that this user may read it"
            ) from None
        except sqlite3.DatabaseError as exc:  # not a database, or a damaged one
            raise RecoveryStateError(
                f"recovery partition {part} cannot be read ({exc}), nothing unpickled; "
                f"delete {path} to start over from the registry's champion"
            ) from None
        yield from rows
