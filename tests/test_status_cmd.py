"""``riverrun status`` shows what a learn flow last reported: as text, or as the JSON it wrote."""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis

from flows.produce import ProduceRequest, produce
from models.status import read_status
from riverrun.local import LocalStack
from riverrun.status_cmd import text
from tests.helpers import one_line, run_cli, run_flow_to_end

EVENTS = 600


def test_status_shows_the_counts_every_models_metrics_and_the_contest(
    make_settings: Any, stack: LocalStack
) -> None:
    s = make_settings(challengers=("logreg",), ab_fraction=0.3)
    req = ProduceRequest("phishing", EVENTS, seed=s.seed, id_prefix="st")
    produce(req, s.bootstrap_servers, s.topic_events, s.topic_labels, progress=False)
    run_flow_to_end(s)
    env = {**stack.env(), "RIVERRUN_MODEL_NAME": s.model_name}

    done = run_cli(env, "status", "--json")
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report == read_status(redis.Redis.from_url(s.redis_url), s.model_name)
    assert report["events"] == report["labelled"] == EVENTS
    assert 0 <= time.time() - report["written_at"] < 300

    lines = run_cli(env, "status").stdout.splitlines()
    assert lines[0].startswith(f"model {s.model_name}, written ")
    assert lines[1] == (
        f"events {EVENTS}, labelled {EVENTS}, pending 0, expired 0, unknown labels 0, "
        "model errors 0"
    )
    champion, challenger = report["models"]
    rows = {line.split()[1]: line.split() for line in lines[4:6]}
    for model in (champion, challenger):
        row = rows[model["alias"]]
        assert row[0] == f"logreg@v{model['version']}" and row[2] == f"{EVENTS:,}"
        assert row[3] == f"{model['metrics']['accuracy']:.4f}"
    arms = report["arms"]
    assert arms["champion"]["n"] + arms["challenger"]["n"] == EVENTS
    assert (
        "A/B: the challenger serves a fraction 0.3 of entities; served by the champion: "
        f"accuracy={arms['champion']['accuracy']:.4f}"
    ) in lines[6]
    decision = report["contest"]["challenger"]
    assert f"challenger: not promoted: {decision['reason']}" in lines, "an identical rival"
    assert lines[0].endswith(" s ago)")


def test_status_of_a_model_no_flow_reported_on_or_of_an_unreachable_redis_is_one_line(
    stack: LocalStack,
) -> None:
    unknown = run_cli({**stack.env(), "RIVERRUN_MODEL_NAME": "nobody-reports"}, "status")
    assert one_line(unknown).startswith(
        "riverrun status: error: no status for model 'nobody-reports': no learn flow has "
        "reported on it to redis://127.0.0.1:"
    )
    down = run_cli({"RIVERRUN_REDIS_URL": "redis://127.0.0.1:1/0"}, "status")
    assert "127.0.0.1:1" in one_line(down)


def test_a_status_no_flow_wrote_is_one_line_and_json_still_shows_it(
    stack: LocalStack, make_settings: Any
) -> None:
    """Whatever else wrote the status key, the command says so in one line (it raised)."""
    s = make_settings()
    client = redis.Redis.from_url(s.redis_url)
    env = {**stack.env(), "RIVERRUN_MODEL_NAME": s.model_name}
    unshowable = orjson.dumps({"events": 1, "labelled": 1, "models": [{"alias": "champion"}]})
    for raw, message in [
        (b"not json", "is not JSON: "),
        (b"[1, 2]", "is no JSON object"),
        (b'{"events": 1}', "has no number for 'labelled'"),
        (unshowable, "is not one a learn flow writes (KeyError: 'spec'); --json shows it"),
    ]:
        client.set(f"riverrun:status:{s.model_name}", raw)
        assert message in one_line(run_cli(env, "status")), raw
    shown = run_cli(env, "status", "--json")
    assert shown.returncode == 0 and orjson.loads(shown.stdout) == orjson.loads(unshowable)


NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
CHAMPION = {"alias": "champion", "spec": "logreg", "version": 3}


def _status(**changes: Any) -> dict[str, Any]:
    """A status as a flow writes it: a champion, a challenger that scored nothing yet, a
    split, the contest and one promotion."""
    scored = {"accuracy": 0.9, "log_loss": 0.3, "n": 1200.0}
    nothing = {"accuracy": 0.0, "log_loss": 0.0, "n": 0.0}
    return {
        "events": 1234,
        "labelled": 1200,
        "pending": 34,
        "expired": 0,
        "unknown_labels": 1,
        "model_errors": 0,
        "models": [
            {**CHAMPION, "metrics": scored},
            {"alias": "challenger", "spec": "arf", "version": 4, "metrics": nothing},
        ],
        "ab_fraction": 0.25,
        "arms": {"champion": {**scored, "accuracy": 0.91}, "challenger": nothing},
        "contest": {"challenger": {"promote": False, "reason": "0 paired events"}},
        "promotions": [
            {
                "at_event": 500,
                "from": "logreg@v1",
                "to": "logreg@v3",
                "evidence": {"mean_difference": 0.05, "n": 1000, "p_value": 0.001},
            }
        ],
        "written_at": NOW - 5,
        **changes,
    }


def test_status_text_shows_every_section_and_no_metrics_for_what_scored_nothing() -> None:
    lines = text("m", _status(), NOW).splitlines()
    assert lines[0] == "model m, written 2027-01-15 07:59:55 UTC (5 s ago)"
    assert lines[1] == (
        "events 1,234, labelled 1,200, pending 34, expired 0, unknown labels 1, model errors 0"
    )
    assert lines[4].split() == ["logreg@v3", "champion", "1,200", "0.9000", "0.3000"]
    assert lines[5].split() == ["arf@v4", "challenger", "0", "-", "-"]
    assert lines[6] == (
        "A/B: the challenger serves a fraction 0.25 of entities; served by the champion: "
        "accuracy=0.9100, log_loss=0.3000; by the challenger: -"
    )
    assert lines[7] == "challenger: not promoted: 0 paired events"
    assert lines[8] == (
        "promoted logreg@v3 over logreg@v1 at event 500: loss lower by 0.0500 over 1,000 "
        "paired events (p=0.001)"
    )
    assert len(lines) == 9


def test_status_text_of_an_older_flow_leaves_out_what_it_did_not_write() -> None:
    old = {"events": 10, "labelled": 5, "models": [{**CHAMPION, "metrics": {"mae": 1.5, "n": 5.0}}]}
    lines = text("m", old, NOW).splitlines()
    assert lines[:3] == ["model m", "events 10, labelled 5", ""]
    assert lines[4].split() == ["logreg@v3", "champion", "5", "1.5000"] and len(lines) == 5


def test_status_text_says_when_a_split_has_no_challenger_and_when_the_clocks_disagree() -> None:
    ahead = _status(models=[{**CHAMPION, "metrics": {"n": 0.0}}], written_at=NOW + 60)
    lines = text("m", ahead, NOW).splitlines()
    assert lines[0].endswith("(the writer's clock is 60 s ahead of this one)")
    assert (
        "A/B: a fraction 0.25 is set, but there is no challenger: the champion serves all" in lines
    )
