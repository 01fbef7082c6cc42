"""Every RPC of the scoring service through a real gRPC channel, against the session's Redis
and Kafka: answers with River's numbers, and each refusal with its status, field and count."""

from __future__ import annotations

import functools
import itertools
import logging
import math
import queue
import re
import socket
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import orjson
import pytest
import redis
from confluent_kafka import KafkaError
from prometheus_client import REGISTRY

from bench.echo import Echo
from flows.codec import Parser
from flows.kafka_io import Raw
from grpc_api import service
from grpc_api.client import ScoringClient
from grpc_api.feedback import LabelPublisher, PublishError
from grpc_api.follower import Follower
from grpc_api.proto import MAX_MESSAGE_BYTES, pb, rpc
from models.ab import serving_arm
from models.feature_store import FeatureStore
from models.features import FeatureSpec
from models.registry import Registry
from models.schema import InvalidInput, LabelMessage
from models.specs import build_model
from models.status import read_status
from riverrun.local import LocalStack, free_port, start_broker, start_redis
from tests.helpers import (
    event,
    produce_stream,
    read_topic,
    run_flow_to_end,
    wait_for,
    write_raw,
)
from tests.recorder import flaky
from tests.serving import (
    answer_or_none,
    field_of,
    publish,
    refusal,
    registry,
    requests_counted,
    running,
    trained,
)

TOLERANCE = 1e-12
Code = grpc.StatusCode
T0 = 1_700_000_000.0
# Event times the learn flow dead-letters ("field 'time' must be epoch seconds"): NaN,
# infinities and anything from 1e12 seconds (31,700 years) on either side of the epoch.
BAD_TIMES = (float("nan"), float("inf"), float("-inf"), 1e12, -1e12, 1e13, 1.8e308)
# ten days ahead of the clock: the flow dead-letters such an event ("more than a day ahead")
AHEAD = time.time() + 10 * 86_400
KAFKA_LOGGER = "riverrun.serve.kafka"  # librdkafka's lines, by the name operators filter on
RAW_LIBRDKAFKA = re.compile(r"^%\d\|")  # librdkafka's own format: %3|1700000000.123|FAIL|...


def _packed_at(times: list[float]) -> Any:
    """A call that scores the first rows packed, one for each of ``times``."""

    def call(client: ScoringClient, rows: list[dict[str, float]]) -> Any:
        names = sorted(rows[0])
        matrix = np.array([[rows[i][n] for n in names] for i in range(len(times))])
        return client.predict_packed(names, matrix, times=times)

    return call


def test_predict_answers_from_the_champion_with_rivers_numbers(make_settings: Any) -> None:
    s = make_settings()
    model, rows = trained()
    version = publish(s, model)
    before = requests_counted("Predict", "OK")
    with running(s) as (_, client):
        for i, x in enumerate(rows[:50]):
            answer = client.predict(x, id=f"e{i}", entity=f"u{i}")
            expected = model.predict_proba_one(x)
            assert (answer.id, answer.model, answer.version) == (f"e{i}", s.model_name, version)
            assert answer.arm == "champion" and answer.prediction == model.predict_one(x)
            assert answer.proba.keys() == {"true", "false"}
            assert abs(answer.proba["true"] - expected[True]) <= TOLERANCE
    assert requests_counted("Predict", "OK") == before + 50


def test_predict_batch_map_and_packed_forms_give_rivers_numbers(make_settings: Any) -> None:
    s = make_settings()
    clf, rows = trained()
    reg, reg_rows = trained("linreg", "trumpapproval", events=200)
    publish(s, clf)
    publish(s, reg, spec="linreg", task="regression", name=f"{s.model_name}-reg")
    with running(s, models=(s.model_name, f"{s.model_name}-reg")) as (_, client):
        answers = client.predict_batch(rows[:100])
        names = sorted(rows[0])
        packed = client.predict_packed(names, np.array([[x[n] for n in names] for x in rows]))
        assert packed.classes == ["false", "true"] and len(packed.proba) == len(rows)
        for i, x in enumerate(rows):
            expected = clf.predict_proba_one(x)[True]
            assert abs(packed.proba[i, 1] - expected) <= TOLERANCE
            assert packed.predicted[i] == str(clf.predict_one(x)).lower()
            if i < 100:
                assert abs(answers[i].proba["true"] - expected) <= TOLERANCE
        assert {who for who in packed.answered_by} == {(s.model_name, 1, "champion")}

        names = sorted(reg_rows[0])
        values = client.predict_packed(
            names, np.array([[x[n] for n in names] for x in reg_rows]), model=f"{s.model_name}-reg"
        ).values
        expected_values = np.array([reg.predict_one(x) for x in reg_rows])
        assert np.allclose(values, expected_values, rtol=TOLERANCE, atol=TOLERANCE)


def test_predict_stream_answers_in_order_and_goes_on_after_a_bad_event(
    make_settings: Any,
) -> None:
    s = make_settings()
    model, rows = trained()
    publish(s, model)
    bad = dict(rows[1], popup_window=float("nan"))
    events = [
        {"id": "ok-0", "features": rows[0]},
        {"id": "nan", "features": bad},
        {"id": "missing", "features": {"long_url": 1.0}},
        {"id": "unknown", "features": rows[2], "model": "no-such-model"},
        {"id": "ok-3", "features": rows[3]},
    ]
    ok_before = requests_counted("PredictStream", "OK")
    with running(s) as (_, client):
        replies = list(client.stream(events))
    assert [r.id for r in replies] == ["ok-0", "nan", "missing", "unknown", "ok-3"]
    assert [getattr(r, "code", "OK") for r in replies] == [
        "OK",
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "OK",
    ]
    assert replies[1].field == "popup_window"  # type: ignore[union-attr]
    assert "missing feature" in replies[2].message  # type: ignore[union-attr]
    assert abs(replies[4].proba["true"] - model.predict_proba_one(rows[3])[True]) <= TOLERANCE  # type: ignore[union-attr]
    assert requests_counted("PredictStream", "OK") == ok_before + 2


def test_a_stream_reply_too_large_to_send_is_refused_and_the_stream_goes_on(
    make_settings: Any,
) -> None:
    """gRPC ended the whole stream on a reply past its limit (an error naming a 40 MiB
    feature twice, a result holding a 34 MiB id twice): the requests after it got no answer,
    and the lost reply was counted as answered."""
    s = make_settings()
    model, rows = trained()
    publish(s, model)
    long_id = "i" * (34 * 1024 * 1024)
    events = [
        {"id": "a", "features": rows[0]},
        {"id": "b", "features": dict(rows[1], **{"x" * (40 * 1024 * 1024): float("nan")})},
        {"id": long_id, "features": rows[2]},
        {"id": "c", "features": rows[3]},
    ]
    before = {c: requests_counted("PredictStream", c) for c in ("OK", "RESOURCE_EXHAUSTED")}
    with running(s) as (_, client):
        replies = list(client.stream(events))
    assert [len(r.id) for r in replies] == [1, 1, len(long_id), 1]
    assert [getattr(r, "code", "OK") for r in replies] == [
        "OK",
        "INVALID_ARGUMENT",
        "RESOURCE_EXHAUSTED",
        "OK",
    ]
    assert replies[1].field.endswith("more characters)")  # type: ignore[union-attr]
    assert "send a shorter id" in replies[2].message  # type: ignore[union-attr]
    assert requests_counted("PredictStream", "OK") == before["OK"] + 2
    assert requests_counted("PredictStream", "RESOURCE_EXHAUSTED") == (
        before["RESOURCE_EXHAUSTED"] + 1
    )


def test_get_model_reports_both_arms_their_metrics_and_when_they_were_loaded(
    make_settings: Any,
) -> None:
    s = make_settings()
    model, _ = trained()
    reg = registry(s)
    champion = reg.register(
        s.model_name,
        model,
        spec="logreg",
        task="binary",
        metrics={"accuracy": 0.9, "log_loss": math.nan},  # stored as null
        events_seen=300,
    )
    reg.move_alias(s.model_name, "champion", champion.version, actor="t", reason="t")
    challenger = publish(s, trained("hoeffding")[0], alias="challenger", spec="hoeffding")
    reg.set_ab_fraction(s.model_name, 0.25, actor="t", reason="t")
    with running(s) as (_, client):
        got = client.get_model(s.model_name)
    assert (got.champion.version, got.champion.spec, got.champion.task) == (1, "logreg", "binary")
    assert got.champion.metrics["accuracy"] == 0.9 and math.isnan(got.champion.metrics["log_loss"])
    assert got.champion.events_seen == 300
    assert got.champion.vectorised and not got.challenger.vectorised
    assert got.challenger.version == challenger and got.ab_fraction == 0.25
    assert champion.created_at <= got.champion.loaded_at
    assert list(got.entity_features) == []


def test_serving_a_model_the_registry_does_not_know_is_warned_of(
    make_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    s = make_settings()
    publish(s, trained()[0])
    typo = f"{s.model_name}-typo"
    with running(s.override({"serve_models": (s.model_name, typo)})):
        pass
    warned = [r.getMessage() for r in caplog.records if "RIVERRUN_SERVE_MODELS" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith(
        f"RIVERRUN_SERVE_MODELS names models the registry does not know (yet): {typo};"
    )


def test_a_challenger_is_loaded_only_while_it_serves_a_share(make_settings: Any) -> None:
    s = make_settings()
    publish(s, trained()[0])
    challenger = publish(s, trained("hoeffding")[0], alias="challenger", spec="hoeffding")
    reg = registry(s)
    with running(s) as (server, client):
        assert client.get_model().challenger.version == 0, "none loaded at a fraction of 0"
        reg.set_ab_fraction(s.model_name, 0.5, actor="t", reason="t")
        wait_for(lambda: client.get_model().challenger.version == challenger, 10, "the load")
        reg.set_ab_fraction(s.model_name, 0.0, actor="t", reason="t")
        wait_for(lambda: server.follower.served[s.model_name].challenger is None, 10, "unload")


def test_a_b_split_answers_each_entity_from_its_arm(make_settings: Any) -> None:
    s = make_settings()
    champion, rows = trained()
    challenger, _ = trained("hoeffding")
    publish(s, champion)
    publish(s, challenger, alias="challenger", spec="hoeffding")
    entities = [f"user-{i}" for i in range(200)]
    names = sorted(rows[0])
    matrix = np.array([[rows[i][n] for n in names] for i in range(200)])
    with running(s) as (server, client):
        assert {client.predict(rows[0], entity=e).arm for e in entities[:20]} == {"champion"}
        registry(s).set_ab_fraction(s.model_name, 0.5, actor="test", reason="a/b")
        wait_for(
            lambda: server.follower.served[s.model_name].ab_fraction == 0.5,
            5,
            "the server to follow the A/B announcement",
        )
        packed = client.predict_packed(names, matrix, entities=entities)
        for i, entity in enumerate(entities):
            arm = serving_arm(entity, 0.5)
            model = champion if arm == "champion" else challenger
            answer = client.predict(rows[i], entity=entity)
            assert (answer.arm, answer.version) == (arm, 1 if arm == "champion" else 2)
            expected = model.predict_proba_one(rows[i]).get(True, 0.0)
            assert abs(answer.proba.get("true", 0.0) - expected) <= TOLERANCE
            assert packed.answered_by[i] == (s.model_name, answer.version, arm)
            assert abs(packed.proba[i, packed.classes.index("true")] - expected) <= TOLERANCE
    assert {a for _, _, a in packed.answered_by} == {"champion", "challenger"}


@pytest.mark.parametrize("split", [False, True], ids=["alone", "a/b beside a trained one"])
def test_a_classifier_that_learned_no_class_yet_is_unavailable_in_the_packed_form(
    make_settings: Any, split: bool
) -> None:
    """Its packed rows came back as no answer at all (taken for a regressor's), or, in an
    A/B split beside a model that has classes, as INTERNAL (an IndexError). The map form
    says "no prediction" (None), as River does."""
    s = make_settings()
    trained_tree, rows = trained("hoeffding", dataset="imagesegments")
    untrained = build_model("arf", "multiclass", 0)
    publish(s, trained_tree if split else untrained, spec="hoeffding", task="multiclass")
    if split:
        publish(s, untrained, alias="challenger", spec="arf", task="multiclass")
        registry(s).set_ab_fraction(s.model_name, 0.5, actor="test", reason="a/b")
    entities = [f"user-{i}" for i in range(20)]
    names = sorted(rows[0])
    matrix = np.array([[rows[i][n] for n in names] for i in range(20)])
    before = requests_counted("PredictBatch", "UNAVAILABLE")
    with running(s) as (server, client):
        wait_for(
            lambda: not split or server.follower.served[s.model_name].challenger is not None,
            10,
            "the A/B challenger to load",
        )
        error = refusal(lambda: client.predict_packed(names, matrix, entities=entities))
        assert error.code() == Code.UNAVAILABLE  # type: ignore[attr-defined]
        assert "has learned no class yet" in error.details()  # type: ignore[attr-defined]
        arm = "challenger" if split else "champion"
        entity = next(e for e in entities if serving_arm(e, 0.5 if split else 0.0) == arm)
        answer = client.predict(rows[0], entity=entity)
        assert (answer.arm, answer.prediction, answer.proba) == (arm, None, {})
    assert requests_counted("PredictBatch", "UNAVAILABLE") == before + 1


def test_feedback_goes_to_the_labels_topic_and_the_flow_learns_it(make_settings: Any) -> None:
    s = make_settings()
    publish(s, trained()[0])
    features = {"x": 1.0}
    write_raw(s, s.topic_events, [(b"a", event(0, features, prefix="fb"))])
    write_raw(s, s.topic_labels, [])
    with running(s) as (_, client):
        topic, partition, offset = client.feedback("fb0", True, time=1_000_000.5)
    assert (topic, partition, offset) == (s.topic_labels, 0, 0)
    [message] = read_topic(s, s.topic_labels)
    assert message.key == b"fb0"
    assert message.json() == {"kind": "label", "id": "fb0", "label": True, "time": 1_000_000.5}
    run_flow_to_end(s.override({"model_name": f"{s.model_name}-flow"}))
    status = read_status(redis.Redis.from_url(s.redis_url), f"{s.model_name}-flow")
    assert status is not None and status["labelled"] == 1 and status["unknown_labels"] == 0


def test_a_label_message_the_flow_would_refuse_as_oversize_is_refused(make_settings: Any) -> None:
    """The largest id the flow takes is published and parsed; one byte more is refused (the
    server follows the settings' limit: not the default here)."""
    s = make_settings(max_message_bytes=4096)
    publish(s, trained()[0])
    write_raw(s, s.topic_labels, [])
    empty = orjson.dumps({"kind": "label", "id": "", "label": True, "time": T0})
    longest = "é" + "x" * (s.max_message_bytes - len(empty) - 2)  # é is two bytes
    before = requests_counted("Feedback", "INVALID_ARGUMENT")
    with running(s) as (_, client):
        client.feedback(longest, True, time=T0)
        for extra in ("x", "é"):
            error = refusal(lambda i=longest + extra: client.feedback(i, True, time=T0))
            details = error.details()  # type: ignore[attr-defined]
            assert error.code() == Code.INVALID_ARGUMENT  # type: ignore[attr-defined]
            assert field_of(error) == "id"
            assert f"{s.max_message_bytes + len(extra.encode())} bytes" in details, details
    [message] = read_topic(s, s.topic_labels)
    assert len(message.value) == s.max_message_bytes
    raw = Raw(s.topic_labels, 0, 0, message.key, message.value, 0)
    parsed = Parser(s.task, s.max_message_bytes).parse(raw)
    assert isinstance(parsed, LabelMessage) and (parsed.id, parsed.time) == (longest, T0)
    assert requests_counted("Feedback", "INVALID_ARGUMENT") == before + 2


def test_an_oversize_label_message_blames_the_larger_of_id_and_label_in_bytes(
    make_settings: Any,
) -> None:
    s = make_settings(max_message_bytes=4096)
    model, _ = trained("hoeffding", "imagesegments", events=50)
    publish(s, model, spec="hoeffding", task="multiclass")
    with running(s) as (_, client):
        for event_id, label, blamed in (("é" * 1500, "x" * 2000, "id"), ("e", "é" * 2100, "label")):
            error = refusal(lambda i=event_id, y=label: client.feedback(i, y, time=T0))
            assert error.code() == Code.INVALID_ARGUMENT  # type: ignore[attr-defined]
            assert field_of(error) == blamed, (len(event_id), len(label))


@pytest.mark.parametrize("bad", BAD_TIMES)
def test_bad_event_times_are_refused_when_entity_features_use_them(
    make_settings: Any, bad: float
) -> None:
    """With entity features (since_last is computed from the time), a time the flow would
    refuse is refused, not turned into a NaN or absurd aggregate; good times are answered."""
    s = make_settings()
    model, rows = trained()
    publish(s, model)
    FeatureStore.connect(s.redis_url, s.model_name).write(
        FeatureSpec.parse(["count", "since_last"]), {}
    )
    names = sorted(rows[0])
    matrix = np.array([[rows[i][n] for n in names] for i in range(3)])
    with running(s) as (_, client):
        wait_for(lambda: client.get_model().entity_features, 5, "the entity features")
        assert client.predict(rows[0], entity="u1", time=T0).version == 1
        assert client.predict(rows[0], entity="u1").version == 1, "0: now"
        error = refusal(lambda: client.predict(rows[0], entity="u1", time=bad))
        assert error.code() == Code.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert field_of(error) == "time"
        assert "field 'time' must be epoch seconds" in error.details()  # type: ignore[attr-defined]
        answers = client.predict_packed(names, matrix, entities=["u1", "u2", "u3"], times=[T0] * 3)
        assert np.isfinite(answers.proba).all()
        error = refusal(
            lambda: client.predict_packed(
                names, matrix, entities=["u1", "u2", "u3"], times=[T0, bad, T0]
            )
        )
        assert error.code() == Code.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert field_of(error) == "packed.times"
        assert "packed row 1: field 'time'" in error.details()  # type: ignore[attr-defined]


def test_a_model_that_cannot_name_its_features_asks_for_those_the_flow_asked_for(
    make_settings: Any,
) -> None:
    """A tree does not say which features it learned from, but the flow that registered
    it refused events without its first event's: the server refuses such requests too."""
    s = make_settings(model_spec="hoeffding", challengers=())
    produce_stream(s, 300, "tree")
    run_flow_to_end(s)
    reg = registry(s)
    info = reg.info(s.model_name, reg.aliases(s.model_name)["champion"])
    assert info.spec == "hoeffding" and info.features == ["0", "1", "2"]
    whole = {"0": 1.0, "1": 2.0, "2": 3.0}
    with running(s) as (_, client):
        assert client.predict(whole).version == info.version
        for call, field in (
            (lambda: client.predict({"0": 1.0}), "1"),
            (lambda: client.predict_batch([whole, {"2": 1.0}]), "events[1].0"),
            (lambda: client.predict_packed(["0", "2"], np.ones((2, 2))), "1"),
        ):
            error = refusal(call)
            assert error.code() == Code.INVALID_ARGUMENT  # type: ignore[attr-defined]
            assert field_of(error) == field and "missing feature" in error.details()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("rpc", "call", "code", "field", "message"),
    [
        (
            "Predict",
            lambda c, r: c.predict(dict(r[0], long_url=float("nan"))),
            Code.INVALID_ARGUMENT,
            "long_url",
            "feature 'long_url' is nan",
        ),
        (
            "Predict",
            lambda c, r: c.predict(dict(r[0], long_url=float("inf"))),
            Code.INVALID_ARGUMENT,
            "long_url",
            "is inf",
        ),
        (
            "Predict",
            lambda c, r: c.predict({"long_url": 1.0}),
            Code.INVALID_ARGUMENT,
            "age_of_domain",
            "missing feature(s): 'age_of_domain'",
        ),
        (
            "PredictBatch",
            lambda c, r: c.predict_batch([r[0], {"long_url": 1.0}]),
            Code.INVALID_ARGUMENT,
            "events[1].age_of_domain",
            "events[1]: missing feature",
        ),
        (
            "PredictBatch",
            lambda c, r: c.predict_packed(["long_url"], np.ones((2, 1))),
            Code.INVALID_ARGUMENT,
            "age_of_domain",
            "missing feature",
        ),
        (
            "PredictBatch",
            lambda c, r: c.predict_packed(sorted(r[0]), np.array([[float("nan")] * len(r[0])])),
            Code.INVALID_ARGUMENT,
            "age_of_domain",
            "packed row 0: feature 'age_of_domain' is nan",
        ),
        (
            "PredictBatch",
            lambda c, r: c.stub.PredictBatch(
                pb.PredictBatchRequest(
                    packed=pb.PackedRows(feature_names=["a", "b"], values=[1.0, 2.0, 3.0])
                )
            ),
            Code.INVALID_ARGUMENT,
            "packed.values",
            "not a multiple of 2",
        ),
        (
            "PredictBatch",
            lambda c, r: c.predict_packed(["a", "a"], np.ones((1, 2))),
            Code.INVALID_ARGUMENT,
            "packed.feature_names",
            "distinct",
        ),
        (
            "PredictBatch",
            lambda c, r: c.predict_packed(["a"], np.ones((2, 1)), entities=["x"]),
            Code.INVALID_ARGUMENT,
            "packed.entities",
            "one per row",
        ),
        (
            "Feedback",
            lambda c, r: c.feedback("e1", "yes"),
            Code.INVALID_ARGUMENT,
            "label",
            "a binary label must be true, false, 0 or 1, got str",
        ),
        ("Feedback", lambda c, r: c.feedback("", True), Code.INVALID_ARGUMENT, "id", "missing"),
        (
            "Feedback",
            lambda c, r: c.stub.Feedback(pb.FeedbackRequest(id="e1", time=T0)),
            Code.INVALID_ARGUMENT,
            "label",
            "label: the label is missing",
        ),
        (
            "PredictBatch",
            lambda c, r: c.stub.PredictBatch(
                pb.PredictBatchRequest(
                    events=[pb.PredictRequest(features=r[0])],
                    packed=pb.PackedRows(feature_names=["a"], values=[1.0]),
                )
            ),
            Code.INVALID_ARGUMENT,
            "packed",
            "give events or packed rows, not both",
        ),
        (
            "PredictBatch",
            lambda c, r: c.stub.PredictBatch(
                pb.PredictBatchRequest(
                    events=[
                        pb.PredictRequest(features=r[0]),
                        pb.PredictRequest(features=r[1], model="other"),
                    ]
                )
            ),
            Code.INVALID_ARGUMENT,
            "events[1].model",
            "events[1].model is 'other', the batch's is ",
        ),
        *[
            (
                "Predict",
                lambda c, r, t=t: c.predict(r[0], time=t),
                Code.INVALID_ARGUMENT,
                "time",
                "field 'time' must be epoch seconds",
            )
            for t in BAD_TIMES
        ],
        (
            "PredictBatch",
            lambda c, r: c.stub.PredictBatch(
                pb.PredictBatchRequest(
                    events=[
                        pb.PredictRequest(features=r[0], time=T0),
                        pb.PredictRequest(features=r[1], time=float("-inf")),
                    ]
                )
            ),
            Code.INVALID_ARGUMENT,
            "events[1].time",
            "events[1]: field 'time' must be epoch seconds",
        ),
        (
            "PredictBatch",
            _packed_at([T0, T0, float("nan")]),
            Code.INVALID_ARGUMENT,
            "packed.times",
            "packed row 2: field 'time' must be epoch seconds",
        ),
        *[
            (
                "Feedback",
                lambda c, r, t=t: c.feedback("e1", True, time=t),
                Code.INVALID_ARGUMENT,
                "time",
                "field 'time' must be epoch seconds",
            )
            for t in BAD_TIMES
        ],
        (
            "Predict",
            lambda c, r: c.predict(r[0], time=AHEAD),
            Code.INVALID_ARGUMENT,
            "time",
            "more than a day ahead of this machine's clock",
        ),
        (
            "PredictBatch",
            _packed_at([T0, AHEAD, T0]),
            Code.INVALID_ARGUMENT,
            "packed.times",
            "packed row 1: field 'time' is",
        ),
        (
            "Feedback",
            lambda c, r: c.feedback("e1", True, time=AHEAD),
            Code.INVALID_ARGUMENT,
            "time",
            "more than a day ahead of this machine's clock",
        ),
        (
            "Feedback",
            lambda c, r: c.feedback("e" * 70_000, True),
            Code.INVALID_ARGUMENT,
            "id",
            "over the learn flow's limit of 65536 bytes",
        ),
        # names too long for gRPC's headers are cut, not turned into RESOURCE_EXHAUSTED
        (
            "Predict",
            lambda c, r: c.predict(dict(r[0], **{"x" * 9000: float("nan")})),
            Code.INVALID_ARGUMENT,
            "x" * 200 + "... (8800 more characters)",
            "feature 'xxxxx",
        ),
        (
            "Predict",
            lambda c, r: c.predict(r[0], model="m" * 9000),
            Code.NOT_FOUND,
            "model",
            "more characters)",
        ),
        (
            "PredictBatch",
            lambda c, r: c.predict_packed(["a"], np.ones((11, 1))),
            Code.RESOURCE_EXHAUSTED,
            "",
            "batch of 11 rows exceeds this server's limit of 10",
        ),
        (
            "PredictBatch",
            lambda c, r: c.predict_batch(r[:11]),
            Code.RESOURCE_EXHAUSTED,
            "",
            "exceeds this server's limit",
        ),
    ],
)
def test_bad_requests_get_a_status_naming_the_field_and_are_counted(
    make_settings: Any, rpc: str, call: Any, code: grpc.StatusCode, field: str, message: str
) -> None:
    _refused_and_counted(make_settings(serve_max_batch=10), rpc, call, code, field, message)


def _refused_and_counted(
    s: Any,
    rpc: str,
    call: Any,
    code: grpc.StatusCode,
    field: str,
    message: str,
    *,
    follow_all: bool = False,
) -> None:
    """``call(client, rows)`` is refused with ``code``, ``message`` and ``field``, counted
    once under ``rpc``, and the server goes on answering."""
    model, rows = trained()
    publish(s, model)
    before = requests_counted(rpc, code.name)
    with running(s, follow_all=follow_all) as (_, client):
        error = refusal(lambda: call(client, rows))
        assert error.code() == code  # type: ignore[attr-defined]
        assert message in error.details(), error.details()  # type: ignore[attr-defined]
        assert field_of(error) == field
        assert client.predict(rows[0]).version == 1, "the server goes on answering"
    assert requests_counted(rpc, code.name) == before + 1


@pytest.mark.parametrize(
    ("rpc", "call", "follow_all", "message"),
    [
        # A server that follows the whole registry knows which models exist...
        ("Predict", lambda c, r: c.predict(r[0], model="no-such"), True, "unknown model 'no-such'"),
        (
            "PredictBatch",
            lambda c, r: c.predict_batch(r[:2], model="no-such"),
            True,
            "unknown model 'no-such'",
        ),
        (
            "PredictBatch",
            lambda c, r: c.predict_batch([], model="no-such"),
            True,
            "unknown model 'no-such'",
        ),
        ("GetModel", lambda c, r: c.get_model("no-such"), True, "unknown model 'no-such'"),
        (
            "Feedback",
            lambda c, r: c.feedback("e1", True, model="no-such"),
            True,
            "unknown model 'no-such'",
        ),
        # ...one told which to serve (RIVERRUN_SERVE_MODELS) refuses every other.
        (
            "Predict",
            lambda c, r: c.predict(r[0], model="no-such"),
            False,
            "model 'no-such' is not served here",
        ),
        (
            "Feedback",
            lambda c, r: c.feedback("e1", True, model="no-such"),
            False,
            "model 'no-such' is not served here",
        ),
        (
            "PredictBatch",
            lambda c, r: c.predict_batch([], model="no-such"),
            False,
            "model 'no-such' is not served here",
        ),
    ],
)
def test_a_model_the_server_does_not_serve_is_not_found_naming_the_field(
    make_settings: Any, rpc: str, call: Any, follow_all: bool, message: str
) -> None:
    s = make_settings()
    _refused_and_counted(s, rpc, call, Code.NOT_FOUND, "model", message, follow_all=follow_all)


def test_no_champion_yet_is_unavailable_until_one_is_promoted(make_settings: Any) -> None:
    s = make_settings()
    model, rows = trained()
    info = registry(s).register(s.model_name, model, spec="logreg", task="binary")
    before = requests_counted("Predict", "UNAVAILABLE")
    with running(s) as (_, client):
        error = refusal(lambda: client.predict(rows[0]))
        assert error.code() == Code.UNAVAILABLE  # type: ignore[attr-defined]
        assert "has no champion yet" in error.details()  # type: ignore[attr-defined]
        registry(s).move_alias(s.model_name, "champion", info.version, actor="t", reason="t")
        wait_for(
            lambda: getattr(answer_or_none(client, rows[0]), "version", None) == info.version,
            5,
            "the first champion to answer",
        )
    assert requests_counted("Predict", "UNAVAILABLE") >= before + 1


def test_the_client_refuses_non_numeric_features_naming_them_and_takes_numpys_numbers(
    make_settings: Any,
) -> None:
    s = make_settings()
    model, rows = trained()
    publish(s, model)
    with running(s) as (_, client):
        with pytest.raises(InvalidInput) as info:
            client.predict({"long_url": "long"})
        assert info.value.field == "long_url" and "must be a number, got str" in str(info.value)
        for flat in (np.ones(3), np.ones((2, 3))):  # the server would have answered first
            with pytest.raises(InvalidInput, match=r"matrix: expected rows of 2 features"):
                client.predict_packed(["a", "b"], flat)
        # NumPy's numbers are numbers (a data frame's row), answered as the floats they are
        numpy_row = {
            k: np.float32(v) if i % 2 else np.float64(v) for i, (k, v) in enumerate(rows[0].items())
        }
        p_true = model.predict_proba_one({k: float(v) for k, v in numpy_row.items()})[True]
        assert client.predict(numpy_row).proba["true"] == pytest.approx(p_true, abs=1e-12)


def test_a_tampered_promotion_is_refused_and_the_old_champion_keeps_serving(
    make_settings: Any,
) -> None:
    s = make_settings()
    model, rows = trained()
    good = publish(s, model)
    reg = registry(s)
    bad = reg.register(s.model_name, model, spec="logreg", task="binary")
    reg.client.set(f"riverrun:registry:{s.model_name}:blob:{bad.version}", b"RRS1" + b"0" * 40)
    with running(s) as (server, client):
        reg.move_alias(s.model_name, "champion", bad.version, actor="t", reason="tampered")
        wait_for(lambda: reg.refused_count(s.model_name) == 1, 5, "the refusal")
        assert client.predict(rows[0]).version == good
        assert server.follower.served[s.model_name].champion.info.version == good  # type: ignore[union-attr]


def test_a_request_that_cannot_be_decoded_is_refused_and_counted(make_settings: Any) -> None:
    s = make_settings()
    model, rows = trained()
    publish(s, model)
    not_utf8 = b"\x0a\x02\xff\xfe"  # field 1 (a string in each request): not UTF-8
    with running(s) as (_, client):
        for rpc_name in ("Predict", "Feedback", "GetModel"):
            before = requests_counted(rpc_name, "INVALID_ARGUMENT")
            call = client.channel.unary_unary(f"/riverrun.v1.Scoring/{rpc_name}")
            for raw in (not_utf8, b"\xff\xff\xff"):
                with pytest.raises(grpc.RpcError) as error:
                    call(raw, timeout=10)
                assert error.value.code() == Code.INVALID_ARGUMENT
                assert "the request is not a valid riverrun.v1." in str(error.value.details())
            assert requests_counted(rpc_name, "INVALID_ARGUMENT") == before + 2
        stream = client.channel.stream_stream("/riverrun.v1.Scoring/PredictStream")
        good = pb.PredictRequest(id="ok", features=rows[0]).SerializeToString()
        replies = [pb.StreamReply.FromString(r) for r in stream(iter([not_utf8, good]), timeout=10)]
        assert replies[0].error.code == "INVALID_ARGUMENT" and replies[1].id == "ok"


def test_feedback_waiting_on_an_absent_kafka_leaves_threads_for_scoring(
    make_settings: Any,
) -> None:
    s = make_settings(serve_workers=4, bootstrap_servers="127.0.0.1:1")  # one Feedback waits
    model, rows = trained()
    publish(s, model)
    first: list[grpc.RpcError] = []
    with running(s) as (server, client):
        waiting = threading.Thread(
            target=lambda: first.append(refusal(lambda: client.feedback("e1", True)))
        )
        waiting.start()
        wait_for(lambda: server.publisher._producer, 10, "the first label to wait on Kafka")
        second = refusal(lambda: client.feedback("e2", True))
        assert second.code() == Code.UNAVAILABLE
        assert "all 1 of this server's places for labels waiting on Kafka are taken" in str(
            second.details()
        )
        assert client.predict(rows[0]).id == "", "a thread is left for scoring"
        waiting.join(30)
    assert first[0].code() in (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED)


def test_open_streams_leave_threads_for_scoring_and_health_checks(make_settings: Any) -> None:
    """An idle stream holds its thread: past the limit one is refused at once, where
    streams left open used to take every thread and Predict waited out its deadline."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    s = make_settings(serve_workers=4)  # a quarter of the threads may hold open streams
    model, rows = trained()
    publish(s, model)
    with running(s) as (_, client):
        stream = client.channel.stream_stream(
            "/riverrun.v1.Scoring/PredictStream",
            request_serializer=pb.PredictRequest.SerializeToString,
            response_deserializer=pb.StreamReply.FromString,
        )
        sends: queue.Queue[pb.PredictRequest | None] = queue.Queue()
        first = stream(iter(sends.get, None), timeout=60)
        sends.put(pb.PredictRequest(id="a", features=rows[0]))
        assert next(first).id == "a", "the first stream is open, holding its thread"
        before = requests_counted("PredictStream", "RESOURCE_EXHAUSTED")
        second = stream(iter([pb.PredictRequest(id="b", features=rows[0])]), timeout=10)
        with pytest.raises(grpc.RpcError) as error:
            list(second)
        assert error.value.code() == Code.RESOURCE_EXHAUSTED
        assert "all 1 of this server's places for open PredictStreams are taken" in str(
            error.value.details()
        )
        assert requests_counted("PredictStream", "RESOURCE_EXHAUSTED") == before + 1
        assert client.predict(rows[0], id="c").id == "c", "a thread is left for scoring"
        health = health_pb2_grpc.HealthStub(client.channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        first.cancel()  # the client gives up on it: its place is free again
        sends.put(None)  # and its request thread, waiting on the queue, ends

        def another_stream_answers() -> bool:
            try:
                return [r.id for r in stream(iter([pb.PredictRequest(id="d")]), timeout=10)] == [
                    "d"
                ]
            except grpc.RpcError:
                return False

        wait_for(another_stream_answers, 10, "a new stream in the cancelled one's place")
        wait_for(another_stream_answers, 10, "a new stream in the place of one that ended")


def test_a_server_on_an_ipv6_address_is_reached_from_the_same_settings(
    make_settings: Any,
) -> None:
    """``RIVERRUN_SERVE_HOST=::1`` is an address in brackets to gRPC, for the server and the
    client alike (it used to fail as "cannot listen on ::1:50051")."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:  # a container without IPv6: no server of any kind can listen there
        pytest.skip("this machine has no IPv6 loopback address")
    s = make_settings(serve_host="::1")
    model, rows = trained()
    publish(s, model)
    with running(s) as (server, _):
        assert server.target == f"[::1]:{server.port}"
        with ScoringClient.from_settings(s.override({"serve_port": server.port})) as client:
            assert client.predict(rows[0]).version == 1


class _FirstChallengerReadFails(Registry):
    """The session's registry, whose first read of one version fails as a Redis outage would
    (between the champion's load and the challenger's)."""

    def __init__(self, client: redis.Redis, key: str, version: int) -> None:
        super().__init__(client, key)
        self.version = version
        self.failed = False

    def load_version(self, model: str, version: int) -> Any:
        if version == self.version and not self.failed:
            self.failed = True
            raise redis.ConnectionError("a passing outage")
        return super().load_version(model, version)


def test_a_swap_is_counted_once_it_serves_not_again_after_a_read_failed_midway(
    make_settings: Any,
) -> None:
    """The champion loaded, then the challenger's read failed: nothing served changed, so
    nothing is counted until the retry serves both (the champion was counted twice)."""
    s = make_settings()
    champion = publish(s, trained()[0])
    challenger = publish(s, trained(seed=2)[0], alias="challenger")
    reg = registry(s)
    reg.set_ab_fraction(s.model_name, 0.5, actor="t", reason="t")
    flaky = _FirstChallengerReadFails(reg.client, s.registry_key, challenger)
    follower = Follower(flaky, reg.client, models=[s.model_name], sync_interval=60)

    def swaps() -> float | None:
        return REGISTRY.get_sample_value("riverrun_model_swaps_total", {"model": s.model_name})

    def served(role: str) -> float | None:
        labels = {"model": s.model_name, "role": role}
        return REGISTRY.get_sample_value("riverrun_served_model_version", labels)

    follower.start()
    try:
        wait_for(  # the metrics follow the versions served, just after them
            lambda: (
                getattr(follower.served.get(s.model_name), "challenger", None)
                and served("challenger") == challenger
            ),
            20,
            "both versions served after the failed read",
        )
        assert flaky.failed
        assert swaps() == 2, "one swap of each role"
        assert served("champion") == champion
    finally:
        follower.stop()


def test_a_champion_refused_from_the_start_is_refused_saying_why(make_settings: Any) -> None:
    s = make_settings()
    model, rows = trained()
    version = publish(s, model)
    reg = registry(s)
    reg.client.set(f"riverrun:registry:{s.model_name}:blob:{version}", b"RRS1" + b"0" * 40)
    with running(s) as (_, client):
        error = refusal(lambda: client.predict(rows[0]))
    assert error.code() == Code.FAILED_PRECONDITION
    assert f"its champion v{version} was refused: " in str(error.details())
    assert "signature" in str(error.details())


def test_a_version_number_reused_after_data_loss_serves_the_new_model(make_settings: Any) -> None:
    """Redis restarted empty and numbering starts over: a new v1 is not the v1 in memory,
    and a refusal of the old v1 does not stick to the new one."""
    s = make_settings()
    old, rows = trained(events=300)
    new, _ = trained(events=50, seed=2)
    bad = publish(s, old)
    reg = registry(s)
    reg.client.set(f"riverrun:registry:{s.model_name}:blob:{bad}", b"RRS1" + b"0" * 40)
    with running(s) as (_, client):
        assert refusal(lambda: client.predict(rows[0])).code() == Code.FAILED_PRECONDITION
        reg.client.delete(*reg.client.keys(f"riverrun:registry:{s.model_name}:*"))
        assert publish(s, old) == bad  # the same number, now readable
        wait_for(lambda: answer_or_none(client, rows[0]), 10, "the readable v1")
        reg.client.delete(*reg.client.keys(f"riverrun:registry:{s.model_name}:*"))
        assert publish(s, new) == bad  # the same number again, another model
        expected = new.predict_proba_one(rows[0])[True]

        def answers_as_new() -> bool:
            answer = answer_or_none(client, rows[0])
            return answer is not None and abs(answer.proba["true"] - expected) <= TOLERANCE

        wait_for(answers_as_new, 10, "the new v1's answers")


def test_unreadable_version_metadata_is_refused_and_stops_no_swap(make_settings: Any) -> None:
    s = make_settings()
    model, rows = trained()
    first = publish(s, model)
    reg = registry(s)
    reg.client.set(f"riverrun:registry:{s.model_name}:v:{first}", b"{not json")
    challenger = publish(s, trained("hoeffding")[0], alias="challenger", spec="hoeffding")
    reg.client.set(f"riverrun:registry:{s.model_name}:v:{challenger}", b"{not json")
    reg.set_ab_fraction(s.model_name, 0.5, actor="t", reason="t")
    with running(s) as (_, client):
        error = refusal(lambda: client.predict(rows[0]))
        assert error.code() == Code.FAILED_PRECONDITION
        assert f"its champion v{first} was refused: " in str(error.details())
        assert "its metadata is unreadable" in str(error.details())
        readable = publish(s, model)  # the challenger's metadata is still unreadable
        wait_for(
            lambda: getattr(answer_or_none(client, rows[0]), "version", None) == readable,
            10,
            "the new champion",
        )


def test_a_model_this_server_cannot_read_keeps_no_other_from_serving(make_settings: Any) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    s = make_settings()
    model, rows = trained()
    unreadable = f"0-{s.model_name}"  # re-read before the good one
    publish(s, model, name=unreadable)
    store = FeatureStore(redis.Redis.from_url(s.redis_url), unreadable)
    store.client.set(store.spec_key, b'["count", "ewm:amount"]')  # as newer code might write
    version = publish(s, model)
    with running(s, models=(unreadable, s.model_name)) as (_, client):
        assert client.predict(rows[0]).version == version
        health = health_pb2_grpc.HealthStub(client.channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_health_checking_and_reflection_are_served(make_settings: Any) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    s = make_settings()
    with running(s) as (server, client):
        assert server.target.startswith("127.0.0.1:"), "loopback by default"
        health = health_pb2_grpc.HealthStub(client.channel)
        for service in ("", "riverrun.v1.Scoring"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        services = ProtoReflectionDescriptorDatabase(client.channel).get_services()
        assert {"riverrun.v1.Scoring", "grpc.health.v1.Health"} <= set(services)
        described = ProtoReflectionDescriptorDatabase(client.channel).FindFileContainingSymbol(
            "riverrun.v1.Scoring"
        )
        assert described.name == "riverrun/v1/scoring.proto"


def test_a_redis_outage_leaves_loaded_models_serving(make_settings: Any, tmp_path: Any) -> None:
    server = start_redis(tmp_path)
    try:
        s = make_settings(redis_url=f"redis://127.0.0.1:{server.port}/0")
        model, rows = trained()
        publish(s, model)
        with_entities = f"{s.model_name}-entities"
        publish(s, model, name=with_entities)
        FeatureStore.connect(s.redis_url, with_entities).write(FeatureSpec.parse(["count"]), {})
        with running(s, follow_all=True) as (_, client):  # a Redis of this test's own
            wait_for(lambda: client.get_model(with_entities).entity_features, 5, "the spec")
            server.stop()
            assert client.predict(rows[0]).version == 1, "answered from memory"
            error = refusal(lambda: client.predict(rows[0], model=with_entities))
            assert error.code() == Code.UNAVAILABLE  # type: ignore[attr-defined]
            assert "the online feature store cannot be reached" in error.details()  # type: ignore[attr-defined]
            # a model not in memory: whether it exists at all is the registry's to say
            before = requests_counted("Predict", "UNAVAILABLE")
            error = refusal(lambda: client.predict(rows[0], model="no-such"))
            assert error.code() == Code.UNAVAILABLE  # type: ignore[attr-defined]
            assert error.details().startswith("the registry cannot be reached: ")  # type: ignore[attr-defined]
            assert field_of(error) == ""
            assert requests_counted("Predict", "UNAVAILABLE") == before + 1
            assert client.predict(rows[0]).version == 1, "still answered from memory"
    finally:
        server.stop()


def test_a_label_kafka_does_not_take_is_unavailable_saying_why(make_settings: Any) -> None:
    s = make_settings(bootstrap_servers="127.0.0.1:1")  # no broker there (any more)
    model, rows = trained()
    publish(s, model)
    before = requests_counted("Feedback", "UNAVAILABLE")
    with running(s) as (server, client):
        # gives up on Kafka well inside the client's 10 s, so that the client hears why
        server.publisher.timeout = 1.0
        error = refusal(lambda: client.feedback("e1", True, time=T0))
        assert error.code() == Code.UNAVAILABLE  # type: ignore[attr-defined]
        details = error.details()  # type: ignore[attr-defined]
        # librdkafka reports the expired label within about a second of its timeout, and
        # the publisher waits that long: either says why, and neither wrote the label
        assert details.startswith(
            f"cannot write the label to Kafka topic {s.topic_labels!r}: "
        ) or details == ("Kafka did not acknowledge the label within 1 s"), details
        assert field_of(error) == ""
        assert client.predict(rows[0]).version == 1, "scoring needs no Kafka"
    assert requests_counted("Feedback", "UNAVAILABLE") == before + 1


def test_a_label_kafka_does_not_take_in_the_callers_time_may_still_be_written_it_says(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server gives up on Kafka before the caller's deadline, so the caller hears why,
    and with DEADLINE_EXCEEDED, not UNAVAILABLE: the label is queued, and Kafka may still
    take it within the publisher's own timeout, so a retry might write it twice."""
    s = make_settings(bootstrap_servers="127.0.0.1:1")
    model, _ = trained()
    publish(s, model)
    monkeypatch.setattr(service, "DEADLINE_MARGIN", 2.0)  # its answer outruns gRPC's own
    with running(s) as (server, client):
        client.timeout = 5.0  # well inside the publisher's own 10 s, and past the margin
        assert server.publisher.timeout == 10.0
        error = refusal(lambda: client.feedback("e1", True, time=T0))
        assert error.code() == Code.DEADLINE_EXCEEDED, error  # type: ignore[attr-defined]
        details = error.details()  # type: ignore[attr-defined]
        assert details.startswith(
            "Kafka had not acknowledged the label before the call's deadline ("
        ), details
        assert details.endswith("; it may still be written"), details


def test_a_label_whose_deadline_leaves_no_time_to_wait_is_refused_unwritten(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deadline within the server's margin: refused before the label is queued, so the
    caller's retry (with more time) writes it once, where it used to be written and answered
    UNAVAILABLE."""
    s = make_settings()
    publish(s, trained()[0])
    write_raw(s, s.topic_labels, [])
    monkeypatch.setattr(service, "DEADLINE_MARGIN", 5.0)  # a margin slow machines keep too
    with running(s) as (_, client):
        client.timeout = 3.0  # within the 5 s the server keeps to answer
        error = refusal(lambda: client.feedback("short", True, time=T0))
        assert error.code() == Code.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
        assert error.details().endswith(": nothing was written")  # type: ignore[attr-defined]
        client.timeout = 10.0
        assert client.feedback("long", True, time=T0)[2] == 0, "the first label on the topic"
    assert [m.key for m in read_topic(s, s.topic_labels)] == [b"long"]


def test_an_unreachable_kafka_is_said_once_in_the_servers_log_not_in_librdkafkas_lines(
    make_settings: Any, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """While Feedback calls fail on an absent Kafka, librdkafka's lines go to the
    ``riverrun.serve.kafka`` logger, not to stderr, and the server says it once itself."""
    dead = f"127.0.0.1:{free_port()}"  # no broker there, and no other test's client either
    s = make_settings(bootstrap_servers=dead)
    model, _ = trained()
    publish(s, model)
    caplog.set_level(logging.DEBUG, logger=KAFKA_LOGGER)

    def raw_lines() -> list[str]:
        err = capfd.readouterr().err
        return [line for line in err.splitlines() if RAW_LIBRDKAFKA.match(line) and dead in line]

    def said() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "grpc_api.feedback"]

    with running(s) as (server, client):
        server.publisher.timeout = 1.0
        for event_id in ("e1", "e2"):
            error = refusal(functools.partial(client.feedback, event_id, True, time=T0))
            assert error.code() == Code.UNAVAILABLE  # type: ignore[attr-defined]
        assert raw_lines() == []
        wait_for(
            lambda: [
                r for r in caplog.records if r.name == KAFKA_LOGGER and dead in r.getMessage()
            ],
            10,
            "librdkafka's lines in the riverrun.serve.kafka logger",
        )
        producer = server.publisher._producer
        assert producer is not None
        wait_for(lambda: len(producer) == 0, 10, "both labels' delivery reports")
        wait_for(said, 10, "the server to say that Kafka is unreachable")
        assert raw_lines() == []
    (line,) = said()
    assert line.levelno == logging.WARNING
    assert line.getMessage().startswith(
        f"Kafka at {dead} is unreachable: labels for topic {s.topic_labels!r} fail and Feedback "
        "answers UNAVAILABLE until one gets through; librdkafka's last error: "
        f"{dead}/bootstrap: Connect to ipv4#{dead} failed: Connection refused"
    ), line.getMessage()


def test_kafka_unreachable_then_back_then_gone_again_through_a_real_broker(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """No broker at first, then one on that port, then none again: each change is said
    once, however many labels fail or get through meanwhile."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    publisher = LabelPublisher(address, "labels", timeout=1.0)

    def published(n: int) -> bool:
        try:
            publisher.publish(f"e{n}", b"{}")
        except PublishError:
            return False
        return True

    tries = itertools.count()
    broker = None
    try:
        with caplog.at_level(logging.WARNING, logger="grpc_api.feedback"):
            assert not published(next(tries)) and not published(next(tries))
            broker = start_broker(tmp_path, port)
            wait_for(lambda: published(next(tries)), 30, "a label through the new broker")
            assert published(next(tries))
            broker.stop()
            wait_for(lambda: not published(next(tries)), 30, "a label to fail again")
            assert not published(next(tries))
    finally:
        publisher.close()
        if broker is not None:
            broker.stop()
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 3, said
    assert said[0].startswith(f"Kafka at {address} is unreachable: labels for topic 'labels'")
    assert said[1] == f"Kafka at {address} is reachable again"
    assert said[2].startswith(f"Kafka at {address} is unreachable: labels for topic 'labels'")


def test_kafka_unreachable_and_back_again_are_each_said_once_whatever_fails_between(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The reports librdkafka would give, in an order hard to make a real broker give: a
    message too large is no sign of an unreachable Kafka, nor of one back; it is said as a
    refusal once, and again only after a label got through."""
    publisher = LabelPublisher("127.0.0.1:1", "labels")
    timed_out, too_large = (
        KafkaError(KafkaError._MSG_TIMED_OUT),
        KafkaError(KafkaError.MSG_SIZE_TOO_LARGE),
    )
    with caplog.at_level(logging.WARNING, logger="grpc_api.feedback"):
        for err in (too_large, timed_out, timed_out, None, None, too_large, timed_out):
            publisher._note(err)
    assert [r.getMessage() for r in caplog.records] == [
        "Kafka at 127.0.0.1:1 refused a label for topic 'labels': Broker: Message size too "
        "large; Feedback answers UNAVAILABLE for each such label (said once for each kind of "
        "refusal)",
        "Kafka at 127.0.0.1:1 is unreachable: labels for topic 'labels' fail and Feedback "
        "answers UNAVAILABLE until one gets through; librdkafka's last error: Local: Message "
        "timed out",
        "Kafka at 127.0.0.1:1 is reachable again",
        "Kafka at 127.0.0.1:1 refused a label for topic 'labels': Broker: Message size too "
        "large; Feedback answers UNAVAILABLE for each such label (said once for each kind of "
        "refusal)",
        "Kafka at 127.0.0.1:1 is unreachable: labels for topic 'labels' fail and Feedback "
        "answers UNAVAILABLE until one gets through; librdkafka's last error: Local: Message "
        "timed out",
    ]


def test_a_label_kafka_refuses_is_said_once_in_the_log_and_each_time_to_the_caller(
    caplog: pytest.LogCaptureFixture, stack: LocalStack
) -> None:
    """A topic the broker will not take (an invalid name here) fails every label, through the
    real broker: each caller is told, and the server's log says it once, not at DEBUG only."""
    kafka = stack.bootstrap_servers
    publisher = LabelPublisher(kafka, "no such topic!")
    try:
        with caplog.at_level(logging.WARNING, logger="grpc_api.feedback"):
            for n in range(3):
                with pytest.raises(PublishError, match="topic 'no such topic!': KafkaError"):
                    publisher.publish(f"e{n}", b"{}")
    finally:
        publisher.close()
    assert [r.getMessage() for r in caplog.records] == [
        f"Kafka at {kafka} refused a label for topic 'no such topic!': Broker: Invalid topic; "
        "Feedback answers UNAVAILABLE for each such label (said once for each kind of refusal)"
    ]


def test_a_models_own_error_is_internal_counted_and_the_next_request_answered(
    make_settings: Any,
) -> None:
    """The champion's code raising (``tests.recorder:flaky`` on ``v`` above 0.9) is
    ``INTERNAL`` naming the exception's type, in ``Predict`` and in one reply of a stream,
    and the server goes on."""
    s = make_settings()
    publish(s, flaky(), spec="tests.recorder:flaky")
    with running(s) as (_, client):
        before = requests_counted("Predict", "INTERNAL")
        error = refusal(lambda: client.predict({"v": 0.95}))
        assert (error.code(), error.details()) == (Code.INTERNAL, "internal error: ValueError")
        assert requests_counted("Predict", "INTERNAL") == before + 1
        assert client.predict({"v": 0.5}, id="ok").id == "ok"
        stream = client.channel.stream_stream(
            "/riverrun.v1.Scoring/PredictStream",
            request_serializer=pb.PredictRequest.SerializeToString,
            response_deserializer=pb.StreamReply.FromString,
        )
        replies = list(
            stream(
                iter(
                    [
                        pb.PredictRequest(id=i, features={"v": v})
                        for i, v in (("a", 0.95), ("b", 0.5))
                    ]
                ),
                timeout=10,
            )
        )
    assert [(r.id, r.error.code, r.error.message) for r in replies] == [
        ("a", "INTERNAL", "internal error: ValueError"),
        ("b", "", ""),
    ]
    assert replies[1].result.proba["true"] == 0.5


def test_the_client_takes_a_reply_as_large_as_the_server_may_send() -> None:
    """gRPC's default of 4 MiB refused a 5,000-row answer of a 50-class model, which the
    server counted as answered."""
    port = free_port()
    limits = [(f"grpc.max_{way}_message_length", MAX_MESSAGE_BYTES) for way in ("send", "receive")]
    server = grpc.server(futures.ThreadPoolExecutor(2), options=limits)  # as riverrun serve's
    rpc.add_ScoringServicer_to_server(Echo(), server)  # echoes the packed doubles back
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        with ScoringClient(f"127.0.0.1:{port}") as client:
            values = [0.5] * 1_000_000  # 8 MB each way
            packed = pb.PackedRows(feature_names=["a"], values=values)
            reply = client.stub.PredictBatch(pb.PredictBatchRequest(packed=packed), timeout=30)
        assert len(reply.packed.proba) == len(values)
    finally:
        server.stop(None)


def test_a_request_over_the_message_limit_is_refused_saying_so(make_settings: Any) -> None:
    """gRPC refuses it before riverrun's code runs, so it is not counted (README says so)."""
    s = make_settings()
    model, rows = trained()
    publish(s, model)
    with running(s) as (_, client):
        call = client.channel.unary_unary("/riverrun.v1.Scoring/Predict")
        with pytest.raises(grpc.RpcError) as error:
            call(b"\0" * (MAX_MESSAGE_BYTES + 1), timeout=30)
        assert error.value.code() == Code.RESOURCE_EXHAUSTED
        details = str(error.value.details())
        assert f"larger than max ({MAX_MESSAGE_BYTES + 1} vs. {MAX_MESSAGE_BYTES})" in details
        assert client.predict(rows[0]).version == 1, "the server goes on answering"
