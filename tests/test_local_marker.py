"""``riverrun local up`` is known by the lock it holds on its marker, not by the pid in it:
a marker left by a killed ``up`` names a pid that may be someone else's by now, and
``local down`` must never signal that process; bad markers and broken set-ups are one
line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from riverrun.local import LauncherError
from riverrun.local_marker import holding_marker, marker_path
from tests.helpers import Lines, one_line, process_alive, run_cli

HOLDER = """
import sys
from riverrun.local_marker import holding_marker
with holding_marker() as path:
    print(path, flush=True)
    sys.stdin.read()
"""


def _marker(tmp_path: Path, text: str) -> Path:
    marker = tmp_path / Path(str(marker_path())).name
    marker.write_text(text)
    return marker


def test_down_never_signals_the_pid_of_a_stale_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        marker = _marker(tmp_path, str(bystander.pid))  # up was killed; its pid reused
        line = one_line(run_cli({"XDG_RUNTIME_DIR": str(tmp_path)}, "local", "down"))
        assert line == "riverrun local: error: no local stack is running"
        assert process_alive(bystander.pid) and not marker.exists()
        _marker(tmp_path, str(bystander.pid))
        with holding_marker() as path:  # and up is not refused for it
            assert path.read_text() == str(os.getpid())
        assert not path.exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_a_second_up_is_refused_and_down_stops_the_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert Lines(holder.stdout).next(30, "the holder's marker") == f"{marker_path()}\n"
        refused = rf"already runs \(pid {holder.pid}\)"
        with pytest.raises(LauncherError, match=refused), holding_marker():
            pass
        done = run_cli(env, "local", "down")
        assert done.returncode == 0 and done.stdout == "local stack stopped\n", done.stderr
        assert holder.wait(30) == -15  # SIGTERM: this holder has no handler
        with holding_marker():  # the killed holder's marker is stale: a new up may start
            pass
    finally:
        holder.kill()
        holder.wait()


def test_a_damaged_marker_held_by_nobody_is_stale_not_a_crash(tmp_path: Path) -> None:
    _marker(tmp_path, "garbage")
    line = one_line(run_cli({"XDG_RUNTIME_DIR": str(tmp_path)}, "local", "down"))
    assert line == "riverrun local: error: no local stack is running"


def test_a_marker_folder_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": "", "HOME": str(tmp_path / "afile")}
    (tmp_path / "afile").write_text("")
    line = one_line(run_cli(env, "local", "down"))
    assert line.startswith("riverrun local: error: cannot keep the local stack's marker in ")


def test_a_missing_broker_binary_is_one_line_and_leaves_no_folder(tmp_path: Path) -> None:
    env = {
        "XDG_RUNTIME_DIR": str(tmp_path),
        "CALF_TANSU_BIN": str(tmp_path / "nosuch"),
        "TMPDIR": str(tmp_path),  # where local up makes its work folder
    }
    line = one_line(run_cli(env, "local", "up"))
    assert line.startswith("riverrun local: error: no Tansu broker binary: CALF_TANSU_BIN=")
    assert not list(tmp_path.glob("riverrun-local-*")), "an empty work folder left behind"
