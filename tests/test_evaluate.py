"""``riverrun evaluate``: the learn flow's numbers, offline, on files, Kafka ranges and datasets."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
import redis
from river import evaluate as river_evaluate
from river import metrics

from flows.files import SourceError, read_file
from flows.kafka_io import ensure_topics, producer, reach
from flows.produce import ProduceRequest, produce
from models.datasets import open_stream
from models.schema import InvalidInput
from models.specs import build_model
from models.status import read_status
from riverrun.cli import main
from riverrun.evaluate_cmd import format_table
from tests.helpers import event, one_line, read_topic, run_cli, run_flow_to_end


def _evaluate(tmp_path: Path, *argv: str, settings: Any = None) -> dict[str, Any]:
    """Run ``riverrun evaluate`` in this process and return its JSON results."""
    out = tmp_path / f"results-{len(list(tmp_path.glob('results-*')))}.json"
    kafka = []
    if settings is not None:
        kafka = [
            "--bootstrap-servers",
            settings.bootstrap_servers,
            "--topic-events",
            settings.topic_events,
            "--topic-labels",
            settings.topic_labels,
        ]
    assert main(["evaluate", *argv, *kafka, "--json", str(out), "--quiet"]) == 0
    return orjson.loads(out.read_bytes())


def _assert_same_metrics(report: dict[str, Any], flow: dict[str, dict[str, float]]) -> None:
    got = {m["spec"]: m["metrics"] for m in report["models"]}
    assert got.keys() == flow.keys()
    for spec, metrics_ in flow.items():
        assert got[spec] == pytest.approx(metrics_, abs=1e-12), spec


@pytest.mark.parametrize("delay", [0, 25], ids=["inline", "delayed"])
def test_evaluate_equals_the_learn_flow_through_kafka(
    make_settings: Any, tmp_path: Path, delay: int
) -> None:
    s = make_settings(challengers=("hoeffding",), auto_promote=False, rolling_window=200)
    req = ProduceRequest("phishing", None, seed=s.seed, delay_labels=delay, id_prefix="k")
    produce(req, s.bootstrap_servers, s.topic_events, s.topic_labels, progress=False)
    run_flow_to_end(s)
    status = read_status(redis.Redis.from_url(s.redis_url), s.model_name)
    assert status is not None and status["labelled"] == 1250
    flow = {m["spec"]: m["metrics"] for m in status["models"]}
    assert set(flow) == {"logreg", "hoeffding"}

    models = ["--model", "logreg", "--model", "hoeffding", "--rolling-window", "200"]
    from_kafka = _evaluate(tmp_path, *models, "--source", "kafka", settings=s)
    assert from_kafka["events"] == from_kafka["labelled"] == 1250
    _assert_same_metrics(from_kafka, flow)

    # The same stream as a dataset, with the delay simulated offline, and as an events file.
    delayed = ["--delay", str(delay)] if delay else []
    from_dataset = _evaluate(tmp_path, *models, "--source", "phishing", *delayed)
    _assert_same_metrics(from_dataset, flow)
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"\n".join(m.value for m in read_topic(s, s.topic_events)))
    from_file = _evaluate(tmp_path, *models, "--source", str(events_file))
    _assert_same_metrics(from_file, flow)


def test_evaluate_computes_the_entity_features_the_learn_flow_does(
    make_settings: Any, tmp_path: Path
) -> None:
    """Evaluate left the entity aggregates out, so its numbers were not the flow's, and a
    warm start from Kafka learned a model without the features the flow gives."""
    entity = ("count", "since_last", "mean:https")
    s = make_settings(entity_features=entity, entity_ttl=0.03)  # events 1 ms apart
    req = ProduceRequest("phishing", None, seed=s.seed, id_prefix="ef", entities=20)
    produce(req, s.bootstrap_servers, s.topic_events, s.topic_labels, progress=False)
    run_flow_to_end(s)
    status = read_status(redis.Redis.from_url(s.redis_url), s.model_name)
    assert status is not None and status["labelled"] == 1250
    flow = {m["spec"]: m["metrics"] for m in status["models"]}
    features = ["--entity-features", ",".join(entity), "--entity-ttl", "0.03"]
    with_them = _evaluate(tmp_path, "--model", "logreg", "--source", "kafka", *features, settings=s)
    _assert_same_metrics(with_them, flow)
    without = _evaluate(tmp_path, "--model", "logreg", "--source", "kafka", settings=s)
    assert without["models"][0]["metrics"]["log_loss"] != pytest.approx(
        flow["logreg"]["log_loss"], abs=1e-6
    ), "the aggregates make a difference here"

    pushed = run_cli(
        s.to_env(), "registry", "push", s.model_name, "--spec", "logreg", "--quiet", "--json",
        "--warm-start", "kafka",
    )  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    learned = orjson.loads(pushed.stdout)["version"]["features"]
    assert {"entity_count", "entity_since_last", "entity_mean_https"} <= set(learned)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_tabular_files_give_river_progressive_val_score(tmp_path: Path, suffix: str) -> None:
    rows = [{**x, "label": y} for x, y in open_stream("phishing", seed=42, events=None).samples]
    frame = pd.DataFrame(rows)
    path = tmp_path / f"phishing{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path)
    else:
        path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows))
    report = _evaluate(tmp_path, "--model", "logreg", "--source", str(path), "--delay", "10")
    expected = river_evaluate.progressive_val_score(
        open_stream("phishing", seed=42, events=None).samples,
        build_model("logreg", "binary", 42),
        metrics.LogLoss(),
        delay=10,
    ).get()
    (model,) = report["models"]
    assert model["metrics"]["log_loss"] == pytest.approx(expected, abs=1e-9)
    assert report["labelled"] == 1250 and model["events_per_second"] > 0


def test_bad_rows_are_counted_like_dead_letters(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    lines = [event(i, {"a": float(i % 7), "b": 1.0}, i % 2 == 0) for i in range(40)]
    lines[5] = b"{not json"
    lines[9] = event(9, {"a": "seven", "b": 1.0}, True)
    lines[12] = event(12, {"b": 1.0}, True)  # "a" is missing
    lines.append(orjson.dumps({"kind": "label", "id": "e3", "label": True}))  # a second label
    path.write_bytes(b"\n".join(lines))
    report = _evaluate(tmp_path, "--model", "logreg", "--source", str(path))
    assert report["rejected"] == {"malformed_json": 1, "bad_feature": 1, "missing_feature": 1}
    assert report["events"] == 37 and report["labelled"] == 37
    assert report["unknown_labels"] == 1, "a label whose event was already learned is unknown"


def test_a_kafka_range_by_time_or_offsets(make_settings: Any, tmp_path: Path) -> None:
    s = make_settings()
    ensure_topics(s.bootstrap_servers, [s.topic_events], 1)
    samples = list(open_stream("sea-drift", seed=3, events=600).samples)
    out = producer(s.bootstrap_servers)
    t0 = 1_700_000_000_000
    for i, (x, y) in enumerate(samples):
        stamp = t0 + (0 if i < 300 else 1_000_000) + i  # the second half 1,000 s later
        out.produce(s.topic_events, event(i, x, y, entity=f"u{i % 9}"), timestamp=stamp)
    out.flush()
    logreg = ["--model", "logreg", "--source", "kafka"]
    since = _evaluate(tmp_path, *logreg, "--since", str(t0 / 1000 + 500), settings=s)
    offsets = _evaluate(tmp_path, *logreg, "--start-offset", "300", settings=s)
    first = _evaluate(tmp_path, *logreg, "--until", "2023-11-14T22:13:30", settings=s)
    expected = river_evaluate.progressive_val_score(
        samples[300:], build_model("logreg", "binary", s.seed), metrics.Accuracy()
    ).get()
    for report in (since, offsets):
        assert report["events"] == 300
        assert report["models"][0]["metrics"]["accuracy"] == pytest.approx(expected, abs=1e-12)
    assert first["events"] == 300


def test_offsets_bound_the_events_topic_and_its_labels_are_read_whole(
    make_settings: Any, tmp_path: Path
) -> None:
    """The offsets cut the labels topic too, where they say nothing of which events its
    labels are for: most events of the range went unlabelled."""
    s = make_settings()
    ensure_topics(s.bootstrap_servers, [s.topic_events, s.topic_labels], 1)
    samples = list(open_stream("sea-drift", seed=3, events=600).samples)
    out = producer(s.bootstrap_servers)
    t0 = 1_700_000_000_000
    for i, (x, _) in enumerate(samples):
        out.produce(s.topic_events, event(i, x), timestamp=t0 + i)
    order = list(range(len(samples)))
    random.Random(5).shuffle(order)  # labels come in their own order, after the events
    for j, i in enumerate(order):
        label = {"kind": "label", "id": f"e{i}", "label": samples[i][1]}
        out.produce(s.topic_labels, orjson.dumps(label), timestamp=t0 + 1000 + j)
    out.flush()
    bounds = ["--start-offset", "300", "--stop-offset", "400"]
    report = _evaluate(tmp_path, "--model", "logreg", "--source", "kafka", *bounds, settings=s)
    assert (report["events"], report["labelled"]) == (100, 100)
    assert report["unknown_labels"] == 500, "the labels of the events outside the range"


def test_gates_exit_1_when_a_model_is_worse_and_refuse_the_wrong_direction(
    tmp_path: Path,
) -> None:
    base = ["evaluate", "--model", "logreg", "--source", "phishing", "--quiet"]
    passed = run_cli(
        {}, *base, "--fail-under", "accuracy=0.8", "--fail-over", "rolling_log_loss=0.5"
    )
    assert passed.returncode == 0, passed.stderr
    assert "logreg" in passed.stdout and "events/s" in passed.stdout
    failed = run_cli({}, *base, "--fail-under", "accuracy=0.95")
    assert failed.returncode == 1
    assert "gate failed: logreg: accuracy 0.89" in failed.stderr
    wrong = run_cli({}, *base, "--fail-under", "log_loss=0.5")
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == (
        "riverrun evaluate: error: log_loss is lower-is-better: use --fail-over log_loss=0.5"
    )


def test_evaluate_refuses_a_factory_that_returns_no_river_estimator(tmp_path: Path) -> None:
    (tmp_path / "dsnotriver.py").write_text("def make():\n    return object()\n")
    models = ["--model", "logreg", "--model", "dsnotriver:make"]
    done = run_cli(
        {"PYTHONPATH": str(tmp_path)}, "evaluate", *models, "--source", "phishing", "--quiet"
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "riverrun evaluate: error: model spec 'dsnotriver:make' returned object, "
        "not a River estimator (river.base.Estimator) or pipeline"
    )


def test_a_binary_label_column_may_mix_words_and_digits(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_text("a,label\n1.0,true\n2.0,0\n3.0,False\n4.0,1\n5.0,\n6.0,maybe\n")
    refused: list[Any] = []
    events = list(read_file(path, "binary", 1_000_000, refused.append))
    assert [e.label for e in events] == [True, False, False, True, None]  # type: ignore[union-attr]
    assert [exc.reason for exc in refused] == ["bad_label"]


def _unreadable(tmp_path: Path, kind: str) -> Path:
    """A source of ``kind`` that its reader cannot read."""
    if kind == "empty csv":
        (path := tmp_path / "empty.csv").write_bytes(b"")
    elif kind == "latin-1 csv":
        (path := tmp_path / "latin.csv").write_bytes(b"a,label\n\xff,1\n")
    elif kind == "fake parquet":
        (path := tmp_path / "fake.parquet").write_bytes(b"not parquet at all")
    else:  # a folder whose files disagree on a column's type
        path = tmp_path / "folder"
        path.mkdir()
        pd.DataFrame({"a": [1.0], "label": [True]}).to_parquet(path / "1.parquet")
        pd.DataFrame({"a": [1.0], "label": ["yes"]}).to_parquet(path / "2.parquet")
    return path


@pytest.mark.parametrize("kind", ["empty csv", "latin-1 csv", "fake parquet", "mixed folder"])
def test_a_file_its_reader_cannot_read_is_a_source_error(tmp_path: Path, kind: str) -> None:
    path = _unreadable(tmp_path, kind)
    with pytest.raises(SourceError, match=f"^{re.escape(repr(str(path)))}: cannot be read as"):
        list(read_file(path, "binary", 1_000_000, lambda exc: None))


def test_evaluate_refuses_an_unreadable_file_in_one_line(tmp_path: Path) -> None:
    path = _unreadable(tmp_path, "fake parquet")
    line = one_line(run_cli({}, "evaluate", "--model", "logreg", "--source", str(path), "--quiet"))
    assert line.startswith(f"riverrun evaluate: error: {str(path)!r}: cannot be read as parquet")


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        ("", " holds no event"),
        ("not json\n", " holds no event that reads: not valid JSON: Expecting value"),
        (
            '{"id": "a", "time": 1.0, "features": {"x": 1.0}}\n',
            ": no event was labelled, nothing to score",
        ),
    ],
    ids=["empty", "unreadable", "unlabelled"],
)
def test_evaluate_refuses_a_source_with_nothing_to_score_in_one_line(
    tmp_path: Path, lines: str, says: str
) -> None:
    (path := tmp_path / "events.jsonl").write_text(lines)
    line = one_line(run_cli({}, "evaluate", "--model", "logreg", "--source", str(path), "--quiet"))
    assert line.startswith(f"riverrun evaluate: error: file {path}{says}"), line


def test_plot_draws_rolling_metrics_of_every_model(tmp_path: Path) -> None:
    png = tmp_path / "rolling.png"
    models = ["--model", "linreg", "--model", "hoeffding"]
    report = _evaluate(tmp_path, *models, "--source", "trumpapproval", "--plot", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    series = report["series"]
    assert set(series) == {"linreg", "hoeffding"}
    assert series["linreg"]["labelled"][-1] == 1001
    assert set(series["linreg"]) == {"labelled", "time", "rolling_mae", "rolling_rmse"}


def test_a_misspelt_events_topic_is_refused_and_not_created(make_settings: Any) -> None:
    s = make_settings()
    typo = f"{s.topic_events}-typo"
    env = {**s.to_env(), "RIVERRUN_TOPIC_EVENTS": typo}
    line = one_line(run_cli(env, "evaluate", "--model", "logreg", "--source", "kafka", "--quiet"))
    assert line == (
        f"riverrun evaluate: error: Kafka topic {typo!r} does not exist on {s.bootstrap_servers}"
    )
    assert typo not in reach(s.bootstrap_servers, 10)[1], "a misspelt topic is not created"


def test_a_delay_past_the_label_ttl_in_rows_still_equals_rivers_score(tmp_path: Path) -> None:
    """Rows without times were a second apart, so a delay of 3,600 rows or more expired
    every label (with the default TTL) and the score was another's; they are now a
    millisecond apart, as ``produce`` spaces a stream."""
    report = _evaluate(
        tmp_path, "--model", "logreg", "--source", "agrawal", "--events", "6000", "--delay", "4000"
    )
    expected = river_evaluate.progressive_val_score(
        open_stream("agrawal", seed=42, events=6000).samples,
        build_model("logreg", "binary", 42),
        metrics.Accuracy(),
        delay=4000,
    ).get()
    (model,) = report["models"]
    assert (report["labelled"], report["expired"]) == (6000, 0)
    assert model["metrics"]["accuracy"] == pytest.approx(expected, abs=1e-12)


def test_one_bad_csv_cell_refuses_its_row_alone_and_ids_stay_text(tmp_path: Path) -> None:
    """pandas read a whole chunk's column as text for one word in it: all 10,000 rows of the
    chunk were refused. Ids stay text (``007`` is not ``7``), and spaces after the commas
    are no part of a name."""
    rows = ["id, a, label"] + [f"{i:03d}, {i % 7}, {i % 2}" for i in range(12_000)]
    rows[11_000] = "x, ?, 1"
    rows += ["7, 1.5, 0"]  # beside "007", another event
    path = tmp_path / "messy.csv"
    path.write_text("\n".join(rows) + "\n")
    report = _evaluate(tmp_path, "--model", "logreg", "--source", str(path), "--delay", "2")
    assert report["rejected"] == {"bad_feature": 1}
    assert (report["events"], report["labelled"]) == (12_000, 12_000)


def test_a_ragged_csv_row_is_refused_alone_and_the_file_read_on(tmp_path: Path) -> None:
    """pandas stops at a row with more cells than the header: the whole file was refused
    ("cannot be read as csv") for one stray comma, 12,000 rows in."""
    rows = ["id,a,label"] + [f"{i},{i % 7},{i % 2}" for i in range(12_000)]
    ragged = (10, 50, 11_000)  # two in the first chunk: pandas tells them in one warning
    for i in ragged:
        rows[i + 1] = f"{i},1,5,1"  # a stray comma: four cells under three names
    path = tmp_path / "ragged.csv"
    path.write_text("\n".join(rows) + "\n")
    refused: list[InvalidInput] = []
    ids = [e.id for e in read_file(path, "binary", 1_000_000, refused.append)]
    assert ids == [str(i) for i in range(12_000) if i not in ragged]
    assert [(r.reason, str(r)) for r in refused] == [
        ("bad_row", f"line {i + 2} has 4 cells, the header 3") for i in ragged
    ]
    report = _evaluate(tmp_path, "--model", "logreg", "--source", str(path))
    assert report["rejected"] == {"bad_row": 3}
    assert (report["events"], report["labelled"]) == (11_997, 11_997)


def test_the_table_shows_no_metrics_for_a_model_that_scored_nothing() -> None:
    """Its zeros read as a perfect log loss; the table now says ``-``, and counts the events
    still waiting for a label, so that its counts add up."""
    metrics = {"accuracy": 0.0, "log_loss": 0.0, "n": 0.0}
    report = {
        "source": "s",
        "events": 5,
        "labelled": 3,
        "pending": 2,
        "rejected": {},
        "expired": 0,
        "unknown_labels": 0,
        "models": [
            {"name": "broken", "metrics": metrics, "events_per_second": 1.0},
            {
                "name": "ok",
                "metrics": {**metrics, "accuracy": 0.5, "n": 3.0},
                "events_per_second": 1.0,
            },
        ],
    }
    lines = format_table(report).splitlines()
    assert "labelled 3   pending 2   rejected 0" in lines[1]
    assert lines[-2].split() == ["broken", "-", "-", "1"]
    assert lines[-1].split() == ["ok", "0.5000", "0.0000", "1"]


def test_a_model_that_fails_every_event_leaves_the_others_curves_whole(tmp_path: Path) -> None:
    """Every event one model's code fails on is counted as refused; the feed used to stop
    there, so the other model's rolling metrics were sampled once in 3,000 events."""
    path = tmp_path / "high.csv"
    # the first event passes the spec's check; the model's code fails on every later one
    path.write_text("v,label\n0.5,1\n" + "".join(f"0.95,{i % 2}\n" for i in range(2999)))
    report = _evaluate(
        tmp_path, "--model", "logreg", "--model", "tests.recorder:flaky", "--source", str(path)
    )
    assert report["rejected"] == {"model_error": 2999}
    points = report["series"]["logreg"]["labelled"]
    assert len(points) > 10 and points[-1] == 3000
