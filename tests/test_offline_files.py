"""Recorded files as ``riverrun evaluate`` reads them: empty cells, ids, labels and times
the way pandas and pyarrow hand them over; bad cells counted by the flow's reasons."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest

from flows.files import read_file
from flows.kafka_io import ensure_topics, producer
from models.learner import LabelledRow
from models.offline_store import OfflineStore
from models.schema import Event, InvalidInput
from riverrun.cli import main
from tests.helpers import event, one_line, run_cli

JAN_1_2024 = 1_704_067_200.0


def _read(path: Path, task: str = "binary") -> tuple[list[Event], list[InvalidInput]]:
    """The events of a file and what was refused, in order."""
    refused: list[InvalidInput] = []
    events = [rec for rec in read_file(path, task, 1_000_000, refused.append)]
    assert all(type(e) is Event for e in events)
    return events, refused  # type: ignore[return-value]


def _evaluate(tmp_path: Path, *argv: str) -> dict[str, Any]:
    """``riverrun evaluate ARGV... --quiet`` in this process: its JSON results."""
    out = tmp_path / "results.json"
    assert main(["evaluate", *argv, "--json", str(out), "--quiet"]) == 0
    return orjson.loads(out.read_bytes())


def _save(frame: pd.DataFrame, path: Path) -> Path:
    """``frame`` written as pandas writes it, CSV or Parquet by the suffix."""
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_an_empty_label_cell_is_no_label_not_a_lost_chunk(tmp_path: Path, suffix: str) -> None:
    rng = random.Random(1)
    xs = [rng.random() for _ in range(300)]
    labels: list[int | None] = [int(x > 0.5) for x in xs]
    labels[7] = None  # pandas now holds the column as floats: 1.0, NaN, 0.0
    path = _save(pd.DataFrame({"x": xs, "label": labels}), tmp_path / f"gap{suffix}")
    report = _evaluate(tmp_path, "--model", "logreg", "--source", str(path))
    assert report["rejected"] == {}
    assert report["events"] == 300 and report["labelled"] == 299
    events, _ = _read(path)
    assert [e.label for e in events[5:9]] == [
        bool(labels[5]),
        bool(labels[6]),
        None,
        bool(labels[8]),
    ]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_whole_float_labels_are_the_integers_they_were(tmp_path: Path, suffix: str) -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "label": [2, None, 0, 7]})
    events, refused = _read(_save(frame, tmp_path / f"classes{suffix}"), "multiclass")
    assert [e.label for e in events] == [2, None, 0, 7] and not refused
    assert [type(e.label) for e in events if e.label is not None] == [int, int, int]


def test_a_csv_label_is_the_same_class_in_every_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("flows.files.CHUNK_ROWS", 10)  # the word lands in the third chunk
    written = [["0", "01", "1.0", "2"][i % 4] for i in range(30)]
    written[25] = "cat"  # pandas alone would read that chunk's labels as text: "01", "cat"
    (path := tmp_path / "classes.csv").write_text(
        "x,label\n" + "".join(f"{i},{label}\n" for i, label in enumerate(written))
    )
    events, refused = _read(path, "multiclass")
    assert [e.label for e in events] == [
        "cat" if label == "cat" else int(float(label)) for label in written
    ]
    assert not refused and {type(e.label) for e in events if e.label != "cat"} == {int}
    for task, labels in (("binary", [True, False, None]), ("regression", [1, 0, None])):
        (mixed := tmp_path / f"{task}.csv").write_text("x,label\n1,1.0\n2,0\n3,\n")
        assert [e.label for e in _read(mixed, task)[0]] == labels


def test_a_fraction_is_no_binary_label(tmp_path: Path) -> None:
    (path := tmp_path / "half.csv").write_text("x,label\n1,1\n2,\n3,0.5\n4,0\n")
    events, refused = _read(path)
    assert [e.label for e in events] == [True, None, False]
    assert [(exc.reason, str(exc)) for exc in refused] == [
        ("bad_label", "a binary label must be true, false, 0 or 1, got 0.5")
    ]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_missing_id_is_the_row_number_and_whole_float_ids_have_no_point(
    tmp_path: Path, suffix: str
) -> None:
    frame = pd.DataFrame(
        {
            "id": [100, None, 102, None],
            "entity": [7, None, 9, 9],
            "x": [1.0, 2.0, 3.0, 4.0],
            "label": [1, 0, 1, 0],
        }
    )
    events, refused = _read(_save(frame, tmp_path / f"ids{suffix}"))
    assert [e.id for e in events] == ["100", "1", "102", "3"] and not refused
    assert [e.entity for e in events] == ["7", "", "9", "9"]


def test_rows_with_missing_ids_are_all_learned(tmp_path: Path) -> None:
    lines = ["id,x,label"] + [f"{'' if i % 3 else i},{i % 5},{i % 2}" for i in range(60)]
    (path := tmp_path / "gaps.csv").write_text("\n".join(lines) + "\n")
    report = _evaluate(tmp_path, "--model", "logreg", "--source", str(path), "--delay", "5")
    assert report["rejected"] == {} and report["labelled"] == 60


def test_times_may_be_numbers_iso_text_or_timestamps(tmp_path: Path) -> None:
    (csv := tmp_path / "times.csv").write_text(
        "time,x,label\n1704067200,1,1\n2024-01-01T00:00:01Z,2,0\n2024-01-01 00:00:02,3,1\n"
    )
    events, refused = _read(csv)
    assert [e.time for e in events] == [JAN_1_2024, JAN_1_2024 + 1, JAN_1_2024 + 2]
    stamps = [datetime(2024, 1, 1, 0, 0, s) for s in range(3)]
    for times in (stamps, [s.replace(tzinfo=UTC) for s in stamps]):
        frame = pd.DataFrame({"time": times, "x": [1.0, 2.0, 3.0], "label": [1, 0, 1]})
        events, more = _read(_save(frame, tmp_path / "times.parquet"))
        assert [e.time for e in events] == [JAN_1_2024, JAN_1_2024 + 1, JAN_1_2024 + 2]
        refused += more
    assert not refused


def test_a_time_that_is_no_time_is_refused_as_the_flow_refuses_it(tmp_path: Path) -> None:
    rows = [
        '{"time": 1704067200, "x": 1, "label": 1}',
        '{"time": "soon", "x": 1, "label": 0}',
        '{"time": 1e300, "x": 1, "label": 1}',
        '{"time": null, "x": 1, "label": 0}',
        '{"time": true, "x": 1, "label": 0}',
        '{"time": 1704067201, "x": 2, "label": 0}',
    ]
    (path := tmp_path / "times.jsonl").write_text("\n".join(rows) + "\n")
    events, refused = _read(path)
    assert [e.time for e in events] == [JAN_1_2024, JAN_1_2024 + 1]
    assert [(exc.reason, exc.field) for exc in refused] == [("bad_field", "time")] * 4
    assert "got 'soon'" in str(refused[0]) and str(refused[2]) == "field 'time' is empty"
    frame = pd.DataFrame({"time": [JAN_1_2024, float("nan"), 1e300], "x": 1.0, "label": 1})
    _, refused = _read(_save(frame, tmp_path / "times.parquet"))
    assert [exc.reason for exc in refused] == ["bad_field", "bad_field"]


def test_evaluate_counts_rows_with_bad_times_and_scores_the_rest(tmp_path: Path) -> None:
    lines = ["time,x,label"] + [f"{1_700_000_000 + i},{i % 4},{i % 2}" for i in range(40)]
    lines[3] = "2023-11-14T22:13:22Z,1,1"  # text: pandas reads the whole column as text
    lines[10] = "soon,2,0"
    lines[20] = "1e300,3,1"  # would have expired every later prediction
    lines[30] = ",1,0"
    (path := tmp_path / "times.csv").write_text("\n".join(lines) + "\n")
    report = _evaluate(tmp_path, "--model", "logreg", "--source", str(path), "--delay", "3")
    assert report["rejected"] == {"bad_field": 3}
    assert report["labelled"] == 37 and report["expired"] == 0


def test_a_prediction_the_model_cannot_make_is_a_model_error_and_the_others_go_on(
    tmp_path: Path,
) -> None:
    rng = random.Random(4)
    rows = [(rng.random(), rng.random(), int(rng.random() < 0.5)) for _ in range(200)]
    rows[0] = (0.5, 0.5, 1)  # the model is built and checked on the first event
    lines = ["v,w,label"] + [f"{v},{w},{y}" for v, w, y in rows]
    (path := tmp_path / "flaky.csv").write_text("\n".join(lines) + "\n")
    too_high = sum(v > 0.9 for v, _, _ in rows)
    for models in (["logreg", "tests.recorder:flaky"], ["tests.recorder:flaky", "logreg"]):
        flags = [part for spec in models for part in ("--model", spec)]
        report = _evaluate(tmp_path, *flags, "--source", str(path))
        assert too_high > 0 and report["rejected"] == {"model_error": too_high}
        assert "flaky model: v is too high" in report["rejected_examples"]["model_error"]
        assert report["events"] == report["labelled"] == 200, "the stream's, whoever is first"
        ran = {m["name"]: m for m in report["models"]}
        assert ran["logreg"]["predicted"] == ran["logreg"]["learned"] == 200
        flaky = ran["tests.recorder:flaky"]
        assert flaky["predicted"] == flaky["learned"] == 200 - too_high


def test_nothing_to_score_says_why_rows_were_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (path := tmp_path / "bad.csv").write_text("time,x,label\n1,1,\n2,2,\nsoon,3,1\n")
    assert main(["evaluate", "--model", "logreg", "--source", str(path), "--quiet"]) == 2
    assert capsys.readouterr().err == (
        f"riverrun evaluate: error: file {path}: no event was labelled, nothing to score (1 "
        "rejected as bad_field, e.g. field 'time' must be epoch seconds or an ISO 8601 date "
        "and time, got 'soon')\n"
    )


def test_a_folder_is_read_as_parquet_files_as_the_help_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    help_text = re.sub(r"\s+", " ", capsys.readouterr().out)
    assert "a folder of Parquet files" in help_text and "a folder of them" not in help_text
    (folder := tmp_path / "csvs").mkdir()
    (folder / "a.csv").write_text("x,label\n1,1\n")
    assert main(["evaluate", "--model", "logreg", "--source", str(folder), "--quiet"]) == 2
    assert "no Parquet files in this folder" in capsys.readouterr().err


def _bar_ends_full(capsys: pytest.CaptureFixture[str], total: int) -> None:
    """The progress bar ``riverrun evaluate`` drew last ended at ``total`` of ``total``."""
    bar = capsys.readouterr().err.rsplit("\r", 1)[-1]
    assert re.search(rf"evaluate: 100%\|[^|]*\| {total}/{total} ", bar), bar


def test_a_file_bar_counts_refused_rows_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = pd.DataFrame({"time": [1.0, 1e300, 3.0, 4.0], "x": 1.0, "label": [1, 0, 1, 0]})
    path = _save(frame, tmp_path / "rows.parquet")
    assert main(["evaluate", "--model", "logreg", "--source", str(path), "--delay", "1"]) == 0
    _bar_ends_full(capsys, 4)


def test_a_kafka_bar_ends_full_with_labels_and_records_out_of_the_range(
    make_settings: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    s = make_settings()
    ensure_topics(s.bootstrap_servers, [s.topic_events, s.topic_labels], 1)
    out = producer(s.bootstrap_servers)
    t0 = 1_700_000_000_000
    for i in range(40):
        stamp = t0 + i * 1000
        out.produce(s.topic_events, event(i, {"x": float(i % 3)}), timestamp=stamp)
        label = orjson.dumps({"kind": "label", "id": f"e{i}", "label": i % 2 == 0})
        out.produce(s.topic_labels, label, timestamp=stamp + 500)
    out.flush()
    kafka = ["--bootstrap-servers", s.bootstrap_servers, "--topic-events", s.topic_events]
    kafka += ["--topic-labels", s.topic_labels, "--until", str(t0 / 1000 + 30)]
    assert main(["evaluate", "--model", "logreg", "--source", "kafka", *kafka]) == 0
    _bar_ends_full(capsys, 80)  # 30 events and 30 labels in the range, 20 records after it


def test_a_file_without_a_label_column_is_refused_naming_its_columns(tmp_path: Path) -> None:
    """It used to read every row as unlabelled: "no event was labelled", and no why."""
    (path := tmp_path / "nolabel.csv").write_text("a,b,Label\n1,2,1\n")
    done = run_cli({}, "evaluate", "--model", "logreg", "--source", str(path))
    assert one_line(done) == (
        f"riverrun evaluate: error: '{path}': no 'label' column (its columns: 'a', 'b', 'Label')"
    )


def test_a_parquet_folder_whose_files_disagree_on_int_and_double_is_read(tmp_path: Path) -> None:
    """pandas writes an int column with an empty cell as doubles: such a folder was refused
    ("Unable to merge: Field a has incompatible types: int64 vs double")."""
    pd.DataFrame({"a": [1, 2], "label": [1, 0]}).to_parquet(tmp_path / "a.parquet")
    pd.DataFrame({"a": [1.5, 2.5], "label": [1, 0]}).to_parquet(tmp_path / "b.parquet")
    events, refused = _read(tmp_path)
    assert [e.features["a"] for e in events] == [1.0, 2.0, 1.5, 2.5] and not refused


def test_a_byte_order_mark_before_the_first_json_line_is_no_part_of_it(tmp_path: Path) -> None:
    """A tabular first row behind a BOM was refused as an event without ``features``."""
    lines = [orjson.dumps({"id": f"r{i}", "a": float(i), "label": i % 2 == 0}) for i in range(3)]
    (path := tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n")
    events, refused = _read(path)
    assert [e.id for e in events] == ["r0", "r1", "r2"] and not refused


def test_the_offline_store_reads_back_as_the_flow_saw_it(tmp_path: Path) -> None:
    """A feature named like a store column comes back under its own name, and a multiclass
    label the store wrote as text comes back as the class it was: a model warm-started on
    the store used to learn ``feature_hour`` and classes "0", "1", "2", which no live event
    carries."""
    store = OfflineStore(tmp_path, "multiclass", max_bytes=1)
    features = {"hour": 3.0, "feature_1": 4.0, "x": 5.0}
    store.take([LabelledRow(f"r{k}", JAN_1_2024 + k, "e", features, k, []) for k in range(3)])
    store.close()
    events, refused = _read(tmp_path, "multiclass")
    assert [e.label for e in events] == [0, 1, 2] and not refused
    assert events[0].features == features
