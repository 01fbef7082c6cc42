"""Reads Bytewax 0.21 recovery partitions in tests: the snapshot the next start resumes from.

Bytewax pickles each state snapshot; nothing here unpickles: the pickle's opcodes are
read (an offset is an int, the learn step's state is our signed bytes, checked by
:func:`~models.signing.loads_signed` before it is unpickled).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.signing import loads_signed
from riverrun.recovery import query_partitions, snapshot_value

SOURCE_STEP = "riverrun-learn.kafka-in"
LEARN_STEP = "riverrun-learn.learn"


@dataclass
class ResumePoint:
    """Where the next execution resumes: its epoch and the state snapshots it will load."""

    epoch: int
    states: dict[tuple[str, str], bytes]

    def offset(self, part: str) -> int | None:
        """The source offset snapshotted for ``part`` (``"0-topic"``), if any."""
        blob = self.states.get((SOURCE_STEP, part))
        return None if blob is None else int(snapshot_value(blob))

    def learner(self, model: str, key: str | bytes) -> Any:
        """The learn step's :class:`~models.learner.OnlineLearner`, if its signature checks."""
        raw = key.encode() if isinstance(key, str) else key
        return loads_signed(snapshot_value(self.states[(LEARN_STEP, model)]), raw)


def resume_point(path: Path) -> ResumePoint:
    """The resume epoch (the slowest worker's frontier in the last execution) and, per state
    key, the newest snapshot taken before it."""
    rows = query_partitions(path, "SELECT ex_num, worker_index, worker_frontier FROM fronts")
    executions = query_partitions(path, "SELECT ex_num, worker_count, resume_epoch FROM exs")
    last = max(ex for ex, _count, _epoch in executions)
    count, began = next((c, e) for ex, c, e in executions if ex == last)
    fronts = {worker: front for ex, worker, front in rows if ex == last}
    epoch = min(fronts.values()) if len(fronts) == count else began
    snaps = query_partitions(path, "SELECT step_id, state_key, snap_epoch, ser_change FROM snaps")
    newest: dict[tuple[str, str], tuple[int, bytes]] = {}
    for step, key, snap_epoch, blob in sorted(snaps, key=lambda row: row[2]):
        if snap_epoch < epoch:
            newest[(step, key)] = (snap_epoch, blob)
    return ResumePoint(epoch, {k: blob for k, (_e, blob) in newest.items()})


def executions(path: Path) -> list[tuple[int, int]]:
    """``(execution, resume epoch)`` of every start recorded so far."""
    return sorted(set(query_partitions(path, "SELECT ex_num, resume_epoch FROM exs")))
