"""``riverrun status`` shows what a learn flow last reported: as text, or as the JSON it wrote."""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis

from flows.produce import ProduceRequest, produce
from models.status import read_status
from riverrun.local import LocalStack
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
    assert lines[0].startswith(f"model {s.model_name}, written ") and lines[0].endswith(" s ago")
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
