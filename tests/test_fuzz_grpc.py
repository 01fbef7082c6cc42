"""Property-based fuzzing of the gRPC scoring server through its API: arbitrary feature maps,
values, model names, packed rows, streams, labels and ids. Every call is answered, or
refused with a proper status and a message; nothing is an internal error, and the server
keeps answering."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grpc_api.proto import pb, rpc
from models.schema import EARLIEST_TIME, FEATURE_LIMIT, FUTURE_TOLERANCE, LATEST_TIME
from tests.serving import publish, requests_counted, running, trained

Code = grpc.StatusCode
REFUSALS = {
    Code.INVALID_ARGUMENT,
    Code.NOT_FOUND,
    Code.UNAVAILABLE,
    Code.RESOURCE_EXHAUSTED,
}
RPCS = ("Predict", "PredictBatch", "PredictStream", "Feedback", "GetModel")
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
VALUES = st.floats() | st.sampled_from([1e308, -1e308, 5e-324, 0.0, -0.0])
TEXT = st.text(max_size=16)
# Event times: any double, the edges of what the learn flow takes (years 1 to 9999), and
# times two days ahead of the clock (it takes no more than one).
EDGES = (EARLIEST_TIME, LATEST_TIME)
AHEAD = time.time() + 2 * FUTURE_TOLERANCE
TIMES = st.floats() | st.sampled_from(
    [0.0, -0.0, 1.7e9, AHEAD, 5e11, -1e11, *EDGES, *(math.nextafter(t, -t) for t in EDGES), 1e12]
)


def _call(method: Any, request: Any) -> tuple[Code, Any]:
    """``(OK, reply)`` or ``(code, details)`` of a unary call; a refusal must say why."""
    try:
        return Code.OK, method(request, timeout=10)
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details()  # type: ignore[attr-defined]
        assert code in REFUSALS, f"{code}: {details}"
        assert details, f"{code} without a message"
        return code, details


def _feature_maps(rows: list[dict[str, float]]) -> Any:
    """A real row with keys dropped, values replaced and keys added, or any map at all."""

    @st.composite
    def edited(draw: Any) -> dict[str, float]:
        row = dict(draw(st.sampled_from(rows)))
        for name in draw(st.lists(st.sampled_from(sorted(row)), max_size=3)):
            if draw(st.booleans()):
                row.pop(name, None)
            else:
                row[name] = draw(VALUES)
        row.update(draw(st.dictionaries(TEXT, VALUES, max_size=3)))
        return row

    return edited() | st.dictionaries(TEXT, VALUES, max_size=12)


def _in_range(values: Iterable[float]) -> bool:
    """Whether every value is one a model may see: finite, within the feature limit."""
    return all(math.isfinite(v) and abs(v) <= FEATURE_LIMIT for v in values)


def _epoch(times: Iterable[float]) -> bool:
    """Whether every time is one the learn flow takes: from year 1 to the end of 9999, and no
    more than a day ahead of the clock."""
    latest = min(LATEST_TIME, time.time() + FUTURE_TOLERANCE)
    return all(EARLIEST_TIME <= t <= latest for t in times)  # NaN is not


def _expected(request: pb.PredictRequest, model: str, names: set[str]) -> Code:
    """What the server must answer: unknown model, then bad values or time (0: now), then
    missing features."""
    if request.model not in ("", model):
        return Code.NOT_FOUND
    features = dict(request.features)
    if not _in_range(features.values()) or not _epoch([request.time]):
        return Code.INVALID_ARGUMENT
    return Code.OK if names <= features.keys() else Code.INVALID_ARGUMENT


def _expected_feedback(request: pb.FeedbackRequest, model: str) -> Code:
    """What the server must answer a label of the binary model: a missing id or label, then
    an unknown model, then a label that is not a boolean (or 0 or 1), or a bad time (0: now).
    Kafka is up, so anything else is published."""
    kind = request.label.WhichOneof("value")
    if not request.id or kind is None:
        return Code.INVALID_ARGUMENT
    if request.model not in ("", model):
        return Code.NOT_FOUND
    if kind not in ("boolean", "integer") or getattr(request.label, kind) not in (0, 1):
        return Code.INVALID_ARGUMENT
    return Code.OK if _epoch([request.time]) else Code.INVALID_ARGUMENT


def _expected_batch(request: pb.PredictBatchRequest, model: str, names: set[str]) -> Code:
    """What the server must answer a batch: events are checked as one request each (after
    their models), packed rows by their shape, then their values, then the model's features."""
    if not request.HasField("packed"):
        if any(event.model not in ("", model) for event in request.events):
            return Code.INVALID_ARGUMENT
        codes = (_expected(event, model, names) for event in request.events)
        return next((code for code in codes if code != Code.OK), Code.OK)
    packed = request.packed
    width = len(packed.feature_names)
    if request.events or width == 0 or len(set(packed.feature_names)) != width:
        return Code.INVALID_ARGUMENT
    rows, rest = divmod(len(packed.values), width)
    if rest or {len(packed.entities), len(packed.times)} - {0, rows}:
        return Code.INVALID_ARGUMENT
    if not _in_range(packed.values) or not _epoch(packed.times):
        return Code.INVALID_ARGUMENT
    return Code.OK if names <= set(packed.feature_names) else Code.INVALID_ARGUMENT


def test_arbitrary_requests_get_an_answer_or_a_proper_status(make_settings: Any) -> None:
    s = make_settings()
    model, rows = trained()
    publish(s, model)
    names = set(rows[0])
    internal = {rpc_name: requests_counted(rpc_name, "INTERNAL") for rpc_name in RPCS}
    predict_requests = st.builds(
        pb.PredictRequest,
        model=st.sampled_from(["", s.model_name]) | TEXT,
        entity=TEXT,
        features=_feature_maps(rows),
        id=TEXT,
        time=TIMES,
    )
    packed_rows = st.builds(
        pb.PackedRows,
        feature_names=st.lists(st.sampled_from(sorted(names)) | TEXT, max_size=12),
        values=st.lists(VALUES, max_size=40),
        entities=st.lists(TEXT, max_size=4),
        times=st.lists(TIMES, max_size=4),
    )

    @st.composite
    def well_shaped(draw: Any) -> pb.PackedRows:
        """Rows of the model's features in any order, maybe with more, their values (one of
        which may be anything) and maybe their times."""
        columns = draw(st.permutations(sorted(names)))
        columns += draw(st.lists(TEXT.filter(lambda t: t not in names), max_size=2, unique=True))
        rows = draw(st.integers(1, 3))
        size = rows * len(columns)
        values = draw(st.lists(st.floats(-10, 10), min_size=size, max_size=size))
        if draw(st.booleans()):  # one value of any kind, maybe out of bounds
            values[draw(st.integers(0, size - 1))] = draw(VALUES)
        entities = draw(st.sampled_from([[], [f"user-{i}" for i in range(rows)]]))
        times = draw(
            st.just([]) | st.lists(st.floats(0, 2e9) | TIMES, min_size=rows, max_size=rows)
        )
        return pb.PackedRows(feature_names=columns, values=values, entities=entities, times=times)

    labels = (
        st.builds(pb.Label, boolean=st.booleans())
        | st.builds(pb.Label, text=TEXT)
        | st.builds(pb.Label, integer=st.integers(-(2**63), 2**63 - 1))
        | st.builds(pb.Label, number=st.floats())
        | st.just(pb.Label())
    )

    with running(s) as (server, _client), grpc.insecure_channel(server.target) as channel:
        stub = rpc.ScoringStub(channel)

        @FUZZ
        @given(request=predict_requests)
        def predict(request: pb.PredictRequest) -> None:
            code, reply = _call(stub.Predict, request)
            assert code == _expected(request, s.model_name, names), reply
            if code == Code.OK:
                assert reply.version >= 1 and set(reply.proba) == {"true", "false"}
                assert all(0.0 <= p <= 1.0 for p in reply.proba.values()), reply
                assert reply.prediction.WhichOneof("value") == "boolean"

        @FUZZ
        @given(
            events=st.lists(predict_requests, max_size=5),
            packed=packed_rows | well_shaped() | st.none(),
        )
        def predict_batch(events: list[pb.PredictRequest], packed: pb.PackedRows | None) -> None:
            request = pb.PredictBatchRequest(model=s.model_name, events=events)
            if packed is not None:
                request.packed.CopyFrom(packed)
            code, reply = _call(stub.PredictBatch, request)
            assert code == _expected_batch(request, s.model_name, names), reply
            if code != Code.OK:
                return
            if request.HasField("packed"):
                rows = len(packed.values) // len(packed.feature_names)
                assert set(reply.packed.classes) == {"true", "false"}
                assert len(reply.packed.proba) == rows * len(reply.packed.classes)
                assert all(0.0 <= p <= 1.0 for p in reply.packed.proba), reply
            else:
                assert [r.id for r in reply.results] == [e.id for e in events]
                assert all(set(r.proba) == {"true", "false"} for r in reply.results)

        @FUZZ
        @given(events=st.lists(predict_requests, max_size=6))
        def predict_stream(events: list[pb.PredictRequest]) -> None:
            replies = list(stub.PredictStream(iter(events), timeout=10))
            assert [r.id for r in replies] == [e.id for e in events], "one reply per event"
            for event, reply in zip(events, replies, strict=True):
                expected = _expected(event, s.model_name, names)
                got = Code.OK if reply.HasField("result") else Code[reply.error.code]
                assert got == expected, reply
                assert got == Code.OK or reply.error.message

        @FUZZ
        @given(
            id=TEXT,
            label=labels,
            time=TIMES,
            model=st.sampled_from(["", s.model_name]) | TEXT,
        )
        def feedback(id: str, label: pb.Label, time: float, model: str) -> None:
            request = pb.FeedbackRequest(id=id, time=time, model=model)
            request.label.CopyFrom(label)
            code, reply = _call(stub.Feedback, request)
            assert code == _expected_feedback(request, s.model_name), reply

        @FUZZ
        @given(model=st.sampled_from(["", s.model_name]) | TEXT)
        def get_model(model: str) -> None:
            code, reply = _call(stub.GetModel, pb.GetModelRequest(model=model))
            assert code == (Code.OK if model in ("", s.model_name) else Code.NOT_FOUND), reply

        for check in (predict, predict_batch, predict_stream, feedback, get_model):
            check()
        good = pb.PredictRequest(features=rows[0], id="still-there")
        assert stub.Predict(good, timeout=10).id == "still-there"
    for rpc_name in RPCS:
        assert requests_counted(rpc_name, "INTERNAL") == internal[rpc_name], rpc_name
