"""The offline store: labelled examples back as Parquet, one row each, never a broken file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest

from models.datasets import open_stream
from models.learner import LabelledRow
from models.offline_store import OfflineStore
from models.registry import Registry
from tests.helpers import (
    LearnProcess,
    child_env,
    count_messages,
    event,
    read_topic,
    run_flow_to_end,
    wait_for,
    write_raw,
)

HOUR = 1_699_999_200.0  # 2023-11-14 22:00:00 UTC


def _duckdb(sql: str) -> tuple[Any, ...]:
    """The first row of a DuckDB query."""
    (row,) = duckdb.connect().execute(sql).fetchall()
    return row


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.parquet") if not p.name.startswith("."))


def _write_events(s: Any, first: int, stop: int) -> None:
    """Write events ``first`` to ``stop - 1`` of a seeded stream, labels inline, from HOUR on."""
    samples = open_stream("sea-drift", seed=6, events=stop).samples
    messages = [(b"k", event(i, *xy, t0=HOUR)) for i, xy in enumerate(samples) if i >= first]
    write_raw(s, s.topic_events, messages)


def _every_file_reads(folder: Path) -> int:
    """Read every visible file whole; return the rows they hold."""
    return sum(pq.read_table(path).num_rows for path in _visible(folder))


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("T", "t")


def _frozen_mid_write(pid: int, store: Path) -> bool:
    """Stop process ``pid`` (SIGSTOP) and look at ``store``: if it holds a visible file and
    one being written, leave the process stopped and say so; else let it go on."""
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: _stopped(pid), 10, f"process {pid} to stop", 0.001)
    if _visible(store) and list(store.rglob(".part-*.tmp")):
        return True
    os.kill(pid, signal.SIGCONT)
    return False


def _kill_mid_write(process: subprocess.Popen[Any], store: Path, timeout: float) -> None:
    """SIGKILL ``process`` at a moment when it has written a file and is writing another."""
    try:
        wait_for(
            lambda: _frozen_mid_write(process.pid, store),
            timeout,
            "a moment with a file written and one being written",
            0.002,
        )
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)


def test_the_flow_writes_one_row_per_labelled_event_readable_by_pandas_and_duckdb(
    make_settings: Any, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    s = make_settings(
        challengers=("hoeffding",),
        auto_promote=False,
        offline_store_dir=str(store),
        offline_store_max_bytes=20_000,
    )
    samples = list(open_stream("sea-drift", seed=5, events=3000).samples)
    messages = [
        (b"u", event(i, x, y if i % 3 else None, entity=f"u{i % 7}", t0=HOUR - 1500))
        for i, (x, y) in enumerate(samples)
    ]
    # Every third label comes 40 events late; bad input and orphan labels are not learned.
    late = [
        (b"u", orjson.dumps({"kind": "label", "id": f"e{i}", "label": samples[i][1]}))
        for i in range(0, 3000, 3)
    ]
    for k, label in enumerate(late):
        messages.insert(min(3 * k + 40 + k, len(messages)), label)
    messages += [
        (b"u", b"{broken"),
        (b"u", orjson.dumps({"kind": "label", "id": "nobody", "label": True})),
    ]
    write_raw(s, s.topic_events, messages)
    run_flow_to_end(s)

    frame = pd.read_parquet(store)
    assert len(frame) == 3000 and frame["id"].is_unique
    assert set(frame["id"]) == {f"e{i}" for i in range(3000)}
    assert len(_visible(store)) > 2, "rotated by size"
    assert not [p for p in store.rglob("*") if p.name.startswith(".")], "no temporary file left"
    total, distinct, hours = _duckdb(
        f"SELECT count(*), count(DISTINCT id), count(DISTINCT hour) FROM read_parquet("
        f"'{store}/**/*.parquet', hive_partitioning = true)"
    )
    assert (total, distinct, hours) == (3000, 3000, 2), "partitioned by hour of event time"

    row = frame.set_index("id").loc["e1234"]
    x, y = samples[1234]
    assert {k: row[k] for k in x} == pytest.approx(x) and row["label"] == y
    assert row["time"] == HOUR - 1500 + 1234 and row["entity"] == "u2"
    predictions = {p["alias"]: p for p in row["predictions"]}
    assert set(predictions) == {"champion", "challenger"}
    served = next(m.json() for m in read_topic(s, s.topic_predictions) if m.json()["id"] == "e1234")
    champion = predictions["champion"]
    assert (champion["spec"], champion["version"]) == ("logreg", served["version"])
    assert dict(champion["proba"])["true"] == pytest.approx(served["proba"]["true"], abs=1e-12)
    assert champion["prediction"] == served["prediction"]
    reg = Registry.connect(s.redis_url, s.registry_key)
    assert reg.info(s.model_name, predictions["challenger"]["version"]).spec == "hoeffding"


def test_a_flow_killed_while_writing_leaves_no_corrupt_file(
    make_settings: Any, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    s = make_settings(offline_store_dir=str(store), offline_store_max_seconds=0.05)
    with LearnProcess(s) as flow:
        writer = threading.Thread(target=_write_events, args=(s, 0, 20_000), daemon=True)
        writer.start()
        _kill_mid_write(flow.process, store, 60)
    writer.join(60)
    assert _every_file_reads(store) == len(pd.read_parquet(store)) > 0
    leftovers = [p for p in store.rglob("*") if p.is_file() and p not in _visible(store)]
    assert leftovers, "killed while a file was being written"
    assert all(p.name.startswith(".part-") and p.name.endswith(".tmp") for p in leftovers)
    OfflineStore(store, "binary")  # the next store in this folder clears what was left
    assert not [p for p in store.rglob("*.tmp")]


def test_a_flow_stopped_by_a_signal_writes_the_rows_it_holds(
    make_settings: Any, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    s = make_settings(offline_store_dir=str(store), offline_store_max_seconds=3600.0)
    with LearnProcess(s) as flow:
        _write_events(s, 0, 300)
        wait_for(lambda: count_messages(s, s.topic_predictions) == 300, 60, "300 predictions")
        assert not _visible(store), "rows wait for the hour's file to fill or age"
        assert flow.stop() == 0
    assert sorted(pd.read_parquet(store)["id"]) == sorted(f"e{i}" for i in range(300))


ROWS = 20_000  # in each file the writer writes
WRITER = """
import sys
from pathlib import Path
from models.learner import LabelledRow
from models.offline_store import OfflineStore

store = OfflineStore(Path(sys.argv[1]), "regression", max_bytes=1)
features = {f"x{j}": float(j) for j in range(50)}
rows = [LabelledRow(str(i), 1.7e9 + i / 1000, "a", features, 1.5, [("champion", "linreg", 1, 1.0)])
        for i in range(int(sys.argv[2]))]
while True:
    store.take(list(rows))
"""


def test_a_writer_killed_mid_file_leaves_only_a_hidden_temporary_file(tmp_path: Path) -> None:
    store = tmp_path / "store"
    env = child_env(PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    argv = [sys.executable, "-c", textwrap.dedent(WRITER), str(store), str(ROWS)]
    writer = subprocess.Popen(argv, env=env)
    _kill_mid_write(writer, store, 60)
    (temp,) = store.rglob(".part-*.tmp")
    assert temp.name.endswith(f".{writer.pid}.tmp"), "hidden, named by its writer"
    files = _visible(store)  # each take() of the writer's rows, all of one hour, is one file
    assert files and all(pq.read_table(p).num_rows == ROWS for p in files), "only whole files"
    assert _duckdb(f"SELECT count(*) FROM '{store}/**/*.parquet'")[0] == ROWS * len(files)
    OfflineStore(store, "regression")
    assert not temp.exists()


def test_files_rotate_by_time_and_hold_each_hour_apart(tmp_path: Path) -> None:
    now = [0.0]
    store = OfflineStore(tmp_path, "multiclass", max_seconds=10.0, clock=lambda: now[0])
    rows = [
        LabelledRow(f"r{i}", HOUR - 30 + 20 * i, "e", {"a": i, "id": 1.0}, i, []) for i in range(3)
    ]
    store.take(rows)
    assert rows == [] and not _visible(tmp_path), "rows wait until the time is up"
    now[0] = 10.0
    written = store.rotate()
    assert len(written) == 2 and store.rows_written == 3
    early, late = (pq.read_table(p).to_pylist() for p in sorted(written))
    assert [r["id"] for r in early] == ["r0", "r1"] and [r["id"] for r in late] == ["r2"]
    assert late[0] == {
        "id": "r2",
        "time": HOUR + 10,
        "entity": "e",
        "label": "2",
        "a": 2.0,
        "feature_id": 1.0,
        "predictions": [],
    }


@pytest.mark.parametrize(("features", "models"), [(3, 1), (20, 2), (100, 2), (8, 4)])
def test_rows_wait_until_what_they_take_in_memory_reaches_the_budget(
    tmp_path: Path, features: int, models: int
) -> None:
    """The budget counted the bytes a row takes in a file: rows held ten times it in memory
    (about 15 GiB at worst with the defaults)."""
    budget = 2 << 20

    def row(i: int) -> LabelledRow:
        x = {f"f{j}": i + j / 7 for j in range(features)}
        predictions = [(f"c{k}", "logreg", 3, {True: 0.3, False: 0.7}) for k in range(models)]
        return LabelledRow(f"model-{i}", HOUR + i, f"user{i % 50}", x, i % 2 == 0, predictions)

    tracemalloc.start()
    rows = [row(i) for i in range(2000)]
    per_row = tracemalloc.get_traced_memory()[0] / len(rows)
    tracemalloc.stop()
    store = OfflineStore(tmp_path, "binary", max_bytes=budget)
    taken = 0
    while not _visible(tmp_path):
        store.take([row(taken)])
        taken += 1
    held = taken * per_row
    assert budget / 1.5 < held < budget * 1.5, f"{held / budget:.2f} of the budget in memory"


def test_features_named_like_columns_or_folders_keep_their_values(tmp_path: Path) -> None:
    store = OfflineStore(tmp_path, "binary", max_bytes=1)
    features = {"id": 1.0, "feature_id": 2.0, "hour": 3.0, "date": 4.0, "x": 5.0}
    store.take([LabelledRow("r0", 1_700_000_000.0, "e", features, True, [])])
    store.close()
    frame = pd.read_parquet(tmp_path)  # the folders' date and hour come too
    row = frame.iloc[0]
    assert (row["id"], str(row["hour"]), str(row["date"])) == ("r0", "22", "2023-11-14")
    columns = ("feature_id", "feature_feature_id", "feature_hour", "feature_date", "x")
    assert [row[c] for c in columns] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_a_features_column_is_the_same_in_every_file(tmp_path: Path) -> None:
    """The column of a feature named like a fixed one used to depend on the other features of
    its file: ``feature_id`` held feature ``id`` in one file and feature ``feature_id`` in the
    next. Read as the README reads the store, each column keeps one meaning."""
    store = OfflineStore(tmp_path, "binary", max_bytes=1)
    first, then = {"id": 1.0, "feature_1": 4.0}, {"id": 2.0, "feature_id": 3.0, "feature_1": 5.0}
    store.take([LabelledRow("r0", 1_700_000_000.0, "e", first, True, [])])
    store.take([LabelledRow("r1", 1_700_003_600.0, "e", then, True, [])])
    store.close()
    frame = duckdb.sql(
        "SELECT id, feature_id, feature_feature_id, feature_1 FROM "
        f"read_parquet('{tmp_path}/**/*.parquet', hive_partitioning=true, union_by_name=true) "
        "ORDER BY id"
    ).fetchall()
    assert frame == [("r0", 1.0, None, 4.0), ("r1", 2.0, 3.0, 5.0)], "feature_1 keeps its name"


def test_ints_past_64_bits_are_written_as_the_doubles_they_are(tmp_path: Path) -> None:
    """The flow takes any int within the feature limit (a JSON number): Arrow refused one past
    64 bits, and the flow stopped."""
    store = OfflineStore(tmp_path, "regression", max_bytes=1)
    features = {"x": 2**63, "y": 3}
    store.take([LabelledRow("r0", 1_700_000_000.0, "e", features, 2**70, [])])
    store.close()
    assert store.rows_written == 1 and store.rows_dropped == 0
    row = pd.read_parquet(tmp_path).iloc[0]
    assert (row["x"], row["y"], row["label"]) == (2.0**63, 3.0, 2.0**70)
