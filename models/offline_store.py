"""The offline store: every labelled example the learn flow learned from, as Parquet files
partitioned by hour of event time, for data scientists to start from (pandas, DuckDB, or
``riverrun evaluate --source DIR``).

Layout: ``DIR/date=YYYY-MM-DD/hour=HH/part-<written>-<random>.parquet`` (UTC). One row per
labelled example: ``id``, ``time`` (event time, epoch seconds), ``entity``, ``label``, one
``float64`` column per feature as the models saw it at prediction time (a feature named
like one of these columns, ``date`` or ``hour``, or like one with ``feature_`` before it,
is stored as ``feature_<name>``, the same in every file), and ``predictions``: a list of
``{alias, spec, version, prediction, proba}``, one per model, ``proba`` mapping class
names (``"true"``, ``"false"``, ...) to probabilities (null for regression).

Rows wait in memory per partition until about ``max_bytes`` of data or ``max_seconds``
have gathered, then go to disk in one file, written under a hidden temporary name and
renamed into place, so a reader never sees a half-written file. Readers skip names that
start with ``.``; temporary files left by a killed process are removed by the next store
that opens the folder.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import os
import secrets
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from models.evaluation import predicted_label
from models.learner import LabelledRow

log = logging.getLogger(__name__)

FIXED = ("id", "time", "entity", "label", "predictions")
PARTITION_COLUMNS = ("date", "hour")  # from the folders' names, as Hive partitions
MAX_PARTITIONS = 24  # most hours buffered at once: a replay writes the oldest first
LABEL_TYPES = {"binary": pa.bool_(), "multiclass": pa.string(), "regression": pa.float64()}


@dataclass
class _Buffer:
    rows: list[LabelledRow] = field(default_factory=list)
    bytes: int = 0
    since: float = 0.0


class OfflineStore:
    """Buffers labelled rows per hour of event time and writes them as Parquet files."""

    def __init__(
        self,
        directory: Path,
        task: str,
        *,
        max_bytes: int = 64 << 20,
        max_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.task = task
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.clock = clock
        self.files_written = 0
        self.rows_written = 0
        self.rows_dropped = 0
        self._buffers: dict[str, _Buffer] = {}
        self._schema_of = _prediction_schema(task)
        directory.mkdir(parents=True, exist_ok=True)
        _remove_orphans(directory)
        atexit.register(self.close)  # a flow stopped by a signal still writes what it holds

    def take(self, rows: list[LabelledRow]) -> None:
        """Buffer ``rows`` (emptying the list), then write partitions that are full or old."""
        now = self.clock()
        for row in rows:
            key = _partition(row.time)
            buf = self._buffers.get(key)
            if buf is None:
                buf = self._buffers[key] = _Buffer(since=now)
            buf.rows.append(row)
            buf.bytes += _row_bytes(row)
        rows.clear()
        self.rotate()

    def rotate(self, *, force: bool = False) -> list[Path]:
        """Write every partition that reached ``max_bytes`` or ``max_seconds`` (every one
        with ``force``), and the oldest ones past :data:`MAX_PARTITIONS`."""
        now = self.clock()
        due = [
            key
            for key, buf in self._buffers.items()
            if force or buf.bytes >= self.max_bytes or now - buf.since >= self.max_seconds
        ]
        extra = len(self._buffers) - len(due) - MAX_PARTITIONS
        if extra > 0:
            due += [k for k in sorted(self._buffers) if k not in due][:extra]
        written = []
        for key in due:
            rows = self._buffers.pop(key).rows
            try:
                written.append(self._write(key, rows))
            except (OSError, pa.ArrowException) as exc:  # a full disk never stops the flow
                self.rows_dropped += len(rows)
                log.error("offline store: %d rows of %s not written: %s", len(rows), key, exc)
        return written

    def close(self) -> list[Path]:
        """Write everything still buffered."""
        return self.rotate(force=True)

    def _write(self, key: str, rows: list[LabelledRow]) -> Path:
        folder = self.directory / key
        folder.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        final = folder / f"part-{stamp}-{secrets.token_hex(4)}.parquet"
        temp = folder / f".{final.name}.{os.getpid()}.tmp"
        try:
            pq.write_table(self._table(rows), temp, compression="zstd")
            with temp.open("rb") as written:
                os.fsync(written.fileno())
            os.replace(temp, final)
        finally:
            temp.unlink(missing_ok=True)
        self.files_written += 1
        self.rows_written += len(rows)
        return final

    def _table(self, rows: list[LabelledRow]) -> pa.Table:
        names = sorted({name for row in rows for name in row.features})
        columns: dict[str, pa.Array] = {
            "id": pa.array([r.id for r in rows], pa.string()),
            "time": pa.array([r.time for r in rows], pa.float64()),
            "entity": pa.array([r.entity for r in rows], pa.string()),
            "label": pa.array([self._label(r.label) for r in rows], LABEL_TYPES[self.task]),
        }
        for name, column in _feature_columns(names).items():
            values = [r.features.get(name) for r in rows]  # ints past 64 bits included
            columns[column] = pa.array([v if v is None else float(v) for v in values], pa.float64())
        columns["predictions"] = pa.array(
            [[self._prediction(p) for p in r.predictions] for r in rows],
            pa.list_(self._schema_of),
        )
        return pa.table(columns)

    def _label(self, label: Any) -> Any:
        if self.task == "regression":
            return float(label)  # an int label may be past 64 bits
        return str(label) if self.task == "multiclass" else label

    def _prediction(self, entry: tuple[str, str, int, Any]) -> dict[str, Any]:
        alias, spec, version, y_pred = entry
        out: dict[str, Any] = {"alias": alias, "spec": spec, "version": version}
        if self.task == "regression":
            out["prediction"], out["proba"] = y_pred, None
            return out
        label = predicted_label(y_pred)
        out["prediction"] = None if label is None else self._label(label)
        out["proba"] = {_class_name(k): float(v) for k, v in y_pred.items()}
        return out


def _feature_columns(names: list[str]) -> dict[str, str]:
    """The column of each feature: its name, or ``feature_<name>`` for a name that is a fixed
    column or a folder's ``date`` or ``hour`` (which readers of the folders add as columns),
    preceded by any number of ``feature_``. The rule looks at the name alone, so a column
    means one feature in every file, and no two features share one.

    >>> _feature_columns(["feature_id", "hour", "id", "f_1"])  # doctest: +NORMALIZE_WHITESPACE
    {'feature_id': 'feature_feature_id', 'hour': 'feature_hour', 'id': 'feature_id',
     'f_1': 'f_1'}
    """
    return {name: f"feature_{name}" if _reserved(name) else name for name in names}


def feature_of(column: str) -> str:
    """The feature a store's column holds: the inverse of the store's naming.

    >>> [feature_of(c) for c in ("feature_id", "feature_feature_id", "feature_1", "x")]
    ['id', 'feature_id', 'feature_1', 'x']
    """
    name = column.removeprefix("feature_")
    return name if name != column and _reserved(name) else column


def _reserved(name: str) -> bool:
    """Whether ``name``, less any ``feature_`` before it, is a fixed or a folder's column."""
    while name.startswith("feature_"):
        name = name[len("feature_") :]
    return name in FIXED or name in PARTITION_COLUMNS


def _prediction_schema(task: str) -> pa.StructType:
    return pa.struct(
        [
            ("alias", pa.string()),
            ("spec", pa.string()),
            ("version", pa.int64()),
            ("prediction", LABEL_TYPES[task]),
            ("proba", pa.map_(pa.string(), pa.float64())),
        ]
    )


def _class_name(label: Hashable) -> str:
    """A class as the predictions topic names it: ``true``/``false``, or the label as text."""
    if isinstance(label, bool):
        return "true" if label else "false"
    return str(label)


def _partition(event_time: float) -> str:
    """``date=YYYY-MM-DD/hour=HH`` of an event time (UTC).

    >>> _partition(1_700_000_000.0)
    'date=2023-11-14/hour=22'
    """
    when = dt.datetime.fromtimestamp(event_time, dt.UTC)
    return f"date={when.year:04d}-{when:%m-%d}/hour={when:%H}"  # %Y drops year 1's zeros


def _row_bytes(row: LabelledRow) -> int:
    """About how many bytes a buffered row takes in memory (its features' dict, its
    predictions' tuples and probability dicts, as tracemalloc counts them on CPython 3.11):
    ten times what it takes in a file, which the budget used to count."""
    text = len(row.id) + len(row.entity)
    return 450 + text + 110 * len(row.features) + 350 * len(row.predictions)


def _remove_orphans(directory: Path) -> None:
    """Delete temporary files whose writing process is gone (killed mid-write)."""
    for temp in directory.rglob(".part-*.tmp"):
        pid = temp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            log.warning("removing %s, left by process %s", temp, pid)
            temp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
