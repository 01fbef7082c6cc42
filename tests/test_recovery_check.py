"""A recovery directory whose snapshots are not riverrun's is refused before Bytewax would
unpickle them: one line, exit 2, nothing run, nothing changed (real broker, real Redis)."""

from __future__ import annotations

import contextlib
import pickle
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from bytewax.recovery import init_db_dir

from riverrun import recovery
from riverrun.recovery import partitions
from riverrun.settings import Settings
from tests.helpers import (
    LearnProcess,
    one_line,
    produce_stream,
    run_cli,
    run_flow_to_end,
    wait_for,
)
from tests.recovery_db import LEARN_STEP, resume_point


class Trap:
    """A pickle that, once unpickled, creates the file ``path``: what an attacker would plant."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (str(self.path), "w")


def _replace_learn_state(path: Path, pickled: bytes) -> None:
    """Put ``pickled`` in place of every snapshot of the learn step."""
    for part in partitions(path):
        with contextlib.closing(sqlite3.connect(part)) as db, db:
            db.execute("UPDATE snaps SET ser_change = ? WHERE step_id = ?", (pickled, LEARN_STEP))


def _contents(path: Path) -> dict[str, str]:
    """Every partition's tables and rows, as SQL (the files themselves change when SQLite
    folds its write-ahead log in)."""
    out = {}
    for part in partitions(path):
        with contextlib.closing(sqlite3.connect(part)) as db:
            out[part.name] = "\n".join(db.iterdump())
    return out


def _with_recovery(make_settings: Any, tmp_path: Path, **overrides: Any) -> tuple[Settings, Path]:
    """Settings with a recovery folder of this test's own, and that folder (not made yet)."""
    s: Settings = make_settings(recovery_dir=str(tmp_path / "recovery"), **overrides)
    assert s.recovery_path is not None
    return s, s.recovery_path


@pytest.mark.parametrize(
    ("planted", "reason"),
    [
        ("trap", "holds more than an offset or bytes"),
        ("unsigned", "unsigned snapshot"),
        ("other key", "signature does not match"),
    ],
)
def test_a_recovery_dir_with_foreign_snapshots_is_refused_before_anything_is_unpickled(
    make_settings: Any, tmp_path: Path, planted: str, reason: str
) -> None:
    s: Settings = make_settings(recovery_dir=str(tmp_path / "recovery"), epoch_interval=0.2)
    produce_stream(s, 300, "e")
    run_flow_to_end(s)
    path = s.recovery_path
    assert path is not None and (LEARN_STEP, s.model_name) in resume_point(path).states

    marker = tmp_path / "unpickled"
    if planted == "trap":
        _replace_learn_state(path, pickle.dumps(Trap(marker)))
    elif planted == "unsigned":
        _replace_learn_state(path, pickle.dumps(pickle.dumps({"champion": "mine"})))
    else:  # the genuine state, checked with a key it was not signed with
        s = s.override({"registry_key": "another key, 16 bytes or more"})
    before = _contents(path)

    line = one_line(run_cli(s.to_env(), "learn"))
    assert line.startswith(f"riverrun learn: error: recovery state in {path} refused")
    assert reason in line and f"delete {path}" in line
    assert not marker.exists(), "the planted pickle ran"
    assert _contents(path) == before, "the recovery directory changed"


def test_a_partition_that_is_no_database_is_refused_in_one_line(
    make_settings: Any, tmp_path: Path
) -> None:
    s, path = _with_recovery(make_settings, tmp_path)
    path.mkdir(parents=True)
    garbage = path / "part-0.sqlite3"
    planted = bytes(range(256)) * 64  # no SQLite header: "file is not a database"
    garbage.write_bytes(planted)

    line = one_line(run_cli(s.to_env(), "learn"))
    assert line.startswith(
        f"riverrun learn: error: recovery partition {garbage} cannot be read "
        "(file is not a database)"
    )
    assert f"delete {path} to start over" in line
    assert garbage.read_bytes() == planted and [p.name for p in path.iterdir()] == [garbage.name]


def test_a_first_start_killed_while_creating_partitions_leaves_none(
    make_settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Partitions appear all at once: a start killed half-way leaves no partial set, which
    would be taken for state to resume from and refused by Bytewax at every start."""
    s, path = _with_recovery(make_settings, tmp_path, processes=2)

    def killed_half_way(folder: Path, count: int) -> None:
        init_db_dir(folder, 1)  # part-0 made, part-1 not
        raise KeyboardInterrupt

    monkeypatch.setattr(recovery, "init_db_dir", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        recovery.prepare_recovery(s)
    monkeypatch.undo()
    assert partitions(path) == [], "no partial set of partitions"
    assert recovery.prepare_recovery(s) is False, "the next start is a first start"
    assert [p.name for p in partitions(path)] == ["part-0.sqlite3", "part-1.sqlite3"]
    assert recovery.prepare_recovery(s) is True, "and the one after resumes"


def test_a_recovery_folder_holding_other_files_is_refused_in_one_line(
    make_settings: Any, tmp_path: Path
) -> None:
    s, path = _with_recovery(make_settings, tmp_path)
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("mine")
    line = one_line(run_cli(s.to_env(), "learn"))
    assert line == (
        f"riverrun learn: error: recovery folder {path} holds no recovery partitions but "
        "other files: move them away, or set another RIVERRUN_RECOVERY_DIR"
    )
    assert (path / "notes.txt").read_text() == "mine"


def test_a_resume_with_other_entity_features_is_refused_in_one_line(
    make_settings: Any, tmp_path: Path
) -> None:
    """The kept per-entity state is of the features the flow started with: resumed under
    another list, it was published to the servers under the new list's layout (they then
    refused every request), and the models missed the features they had learned."""
    s, path = _with_recovery(
        make_settings, tmp_path, epoch_interval=0.2, entity_features=("count", "mean:0")
    )
    produce_stream(s, 300, "e")
    run_flow_to_end(s)
    before = _contents(path)
    for asked, named in ((("count", "mean:1"), "count,mean:1"), ((), "(none)")):
        line = one_line(run_cli(s.override({"entity_features": asked}).to_env(), "learn"))
        assert line == (
            f"riverrun learn: error: the recovery state in {path} keeps the entity features "
            f"count,mean:0, not RIVERRUN_ENTITY_FEATURES={named}: set it back, or delete {path} "
            "to start over from the registry's champion (which learned the old features)"
        )
        assert _contents(path) == before, "the recovery directory changed"
    resumed = run_cli(s.to_env(), "learn")  # the same features: it resumes
    assert resumed.returncode == 0, resumed.stderr


def test_a_resume_with_entity_features_where_there_were_none_is_refused(
    make_settings: Any, tmp_path: Path
) -> None:
    """A flow without entity features keeps no state of theirs: the check looks at the
    learner's state then, which it kept."""
    s, path = _with_recovery(make_settings, tmp_path, epoch_interval=0.2)
    produce_stream(s, 300, "e")
    run_flow_to_end(s)
    line = one_line(run_cli(s.override({"entity_features": ("count",)}).to_env(), "learn"))
    assert line.startswith(
        f"riverrun learn: error: the recovery state in {path} keeps the entity features "
        "(none), not RIVERRUN_ENTITY_FEATURES=count: set it back"
    )


def test_a_second_flow_on_one_recovery_folder_is_refused_in_one_line(
    make_settings: Any, tmp_path: Path
) -> None:
    """Two flows resuming one state wrote every prediction twice and fought over the
    registry; the second is now refused, naming the first, and the lock goes with it."""
    s, path = _with_recovery(make_settings, tmp_path)
    lock = path.parent / f".{path.name}.lock"
    with LearnProcess(s) as first:
        pid = str(first.process.pid)
        wait_for(lambda: lock.exists() and lock.read_text().strip() == pid, 30, "the lock")
        line = one_line(run_cli(s.to_env(), "learn"))
        assert line == (
            f"riverrun learn: error: another riverrun learn (pid {pid}) runs from {path}: stop "
            "it first, or give this one another RIVERRUN_MODEL_NAME or RIVERRUN_RECOVERY_DIR"
        )
        assert first.alive()
    assert first.process.returncode == 0, first.stderr()
    again = run_cli(s.override({"follow": False}).to_env(), "learn")
    assert again.returncode == 0, again.stderr
