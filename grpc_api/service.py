"""The ``riverrun.v1.Scoring`` service: requests in, answers from the served versions out.

Every request reads its model's :class:`~grpc_api.book.Served` record once and answers
from it alone. Bad input is refused with a status and a message naming the field (also
in the ``riverrun-field`` trailing metadata); every answer and refusal is counted by RPC
and status code, and nothing a client sends can stop the server.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np
import orjson
import redis
from google.protobuf.message import DecodeError

from grpc_api.book import Loaded, Served
from grpc_api.feedback import LabelPublisher, PublishError, Unacknowledged, label_message
from grpc_api.follower import Follower
from grpc_api.labels import class_text, from_label, to_label
from grpc_api.proto import MAX_MESSAGE_BYTES, SERVICE, pb, rpc
from grpc_api.waits import LABEL, STREAM, Busy, WaitingCalls
from models.evaluation import predicted_label
from models.features import EntityFeatures
from models.schema import (
    EARLIEST_TIME,
    FEATURE_LIMIT,
    FUTURE_TOLERANCE,
    LATEST_TIME,
    InvalidInput,
    check_features,
    check_label,
    check_schema,
    check_time,
    too_far_ahead,
)
from models.scorers import Answers, NoClassYet
from riverrun.metrics import GRPC_REQUESTS, GRPC_SECONDS

log = logging.getLogger(__name__)

FIELD_METADATA = "riverrun-field"
# characters of a refusal's message and field: even percent-encoded, well inside the
# 8 KB of headers gRPC lets a status have
MESSAGE_LIMIT = 500
FIELD_LIMIT = 200
DEADLINE_MARGIN = 0.25  # seconds left for the answer to reach a caller before its deadline
Reply = TypeVar("Reply")
Code = grpc.StatusCode


class Refusal(Exception):
    """A request the server will not answer: a status code, a message and maybe a field."""

    def __init__(self, code: grpc.StatusCode, message: str, field: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.field = field


def metadata_text(text: str) -> str:
    r"""``text`` as gRPC metadata wants it, printable ASCII: other characters escaped as Python
    writes them (a control character in a feature name made the refusal an INTERNAL error).

    >>> print(metadata_text("popup_window"), metadata_text("température\x1f"))
    popup_window temp\xe9rature\x1f
    """
    return "".join(c if " " <= c <= "~" else ascii(c)[1:-1] for c in text)


def shortened(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how many more there were: gRPC fails a
    call whose status message and metadata outgrow its 8 KB of headers, and then the caller
    hears ``RESOURCE_EXHAUSTED`` instead of why (a 9,000-character feature name did that).

    >>> shortened("model 'mmmmmmmm' is unknown", 10)
    "model 'mmm... (17 more characters)"
    """
    return (
        text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"
    )


def _stream_error(request_id: str, refusal: Refusal) -> pb.StreamReply:
    """A stream's reply to a refused request: its status in the reply, shortened as a
    unary call's is (a 40 MiB feature name, named twice, made a reply gRPC would not send)."""
    error = pb.StreamError(
        code=refusal.code.name,
        message=shortened(str(refusal), MESSAGE_LIMIT),
        field=shortened(refusal.field, FIELD_LIMIT),
    )
    return pb.StreamReply(id=request_id, error=error)


def _invalid(exc: InvalidInput) -> Refusal:
    """The refusal of input the shared checks (``models.schema``) rejected."""
    return Refusal(Code.INVALID_ARGUMENT, str(exc), exc.field or "")


def _event_time(given: float) -> float:
    """A request's event time: ``given`` if the learn flow would take it, now if it is 0 (the
    proto3 default: not given), else the refusal naming ``time``."""
    now = time.time()
    if not given:
        return now
    try:
        at = check_time(given)
    except InvalidInput as exc:
        raise _invalid(exc) from None
    if at > now + FUTURE_TOLERANCE:
        raise _invalid(too_far_ahead(at))
    return at


@dataclass(frozen=True)
class Undecodable:
    """A request gRPC received but protobuf could not decode (bad wire bytes, a string that
    is not UTF-8): handed to the method so that it is refused and counted like bad input."""

    message_type: str
    error: str
    id: str = ""

    def refusal(self) -> Refusal:
        """``INVALID_ARGUMENT``, saying what could not be decoded."""
        return Refusal(
            Code.INVALID_ARGUMENT, f"the request is not a valid {self.message_type}: {self.error}"
        )


def _decoder(message: Any) -> Callable[[bytes], Any]:
    """``message.FromString``, returning an :class:`Undecodable` instead of raising."""

    def decode(raw: bytes) -> Any:
        try:
            return message.FromString(raw)
        except DecodeError as exc:
            return Undecodable(message.DESCRIPTOR.full_name, str(exc))

    return decode


def add_to_server(service: ScoringService, server: grpc.Server) -> None:
    """Register ``service`` as the generated ``add_ScoringServicer_to_server`` does, except
    that requests are decoded by :func:`_decoder`: gRPC's own decoding fails such a request
    as ``INTERNAL`` before any method sees it, so it was neither refused as bad input nor
    counted."""
    handlers = {}
    for method in pb.DESCRIPTOR.services_by_name["Scoring"].methods:
        assert method.client_streaming == method.server_streaming, "unary or bidirectional"
        make = (
            grpc.stream_stream_rpc_method_handler
            if method.client_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(
            getattr(service, method.name),
            request_deserializer=_decoder(getattr(pb, method.input_type.name)),
            response_serializer=getattr(pb, method.output_type.name).SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


class _Counted:
    """Counts and times one RPC; children of the labelled metrics are looked up once."""

    def __init__(self, rpc_name: str) -> None:
        self.name = rpc_name
        self.seconds = GRPC_SECONDS.labels(rpc_name)
        self.codes = {code: GRPC_REQUESTS.labels(rpc_name, code.name) for code in Code}

    def record(self, code: grpc.StatusCode, began: float) -> None:
        """Count the call under its status code and time it."""
        self.codes[code].inc()
        self.seconds.observe(time.perf_counter() - began)

    def unary(self, handle: Callable[[Any], Reply], request: Any, context: Any) -> Reply:
        """Answer, or abort with the refusal's status; never let an error escape."""
        began = time.perf_counter()
        try:
            if type(request) is Undecodable:
                raise request.refusal()
            reply = handle(request)
        except Refusal as exc:
            refusal = exc
        except Exception as exc:
            log.exception("%s failed", self.name)
            refusal = Refusal(Code.INTERNAL, f"internal error: {type(exc).__name__}")
        else:
            self.record(Code.OK, began)
            return reply
        self.record(refusal.code, began)
        if refusal.field:
            field = shortened(metadata_text(refusal.field), FIELD_LIMIT)
            context.set_trailing_metadata(((FIELD_METADATA, field),))
        context.abort(refusal.code, shortened(str(refusal), MESSAGE_LIMIT))
        raise AssertionError("unreachable: abort raises")


class ScoringService(rpc.ScoringServicer):
    """Predict, PredictBatch, PredictStream, Feedback and GetModel over the served models."""

    def __init__(
        self,
        follower: Follower,
        publisher: LabelPublisher,
        *,
        default_model: str,
        max_batch: int,
        max_message_bytes: int,
        waiting_calls: int = 8,
    ) -> None:
        self.follower = follower
        self.publisher = publisher
        self.default_model = default_model
        self.max_batch = max_batch
        # Open streams and labels waiting on Kafka hold their threads for as long as they
        # wait: at most this many of each at once, so that Predict and health checks keep
        # the rest.
        self.waits = WaitingCalls(waiting_calls)
        self.max_message_bytes = max_message_bytes  # the learn flow's: larger labels are refused
        self._rpcs = {
            name: _Counted(name)
            for name in ("Predict", "PredictBatch", "PredictStream", "Feedback", "GetModel")
        }

    # -- RPCs ------------------------------------------------------------------------------

    def Predict(self, request: pb.PredictRequest, context: Any) -> pb.PredictResponse:
        """Score one row with the named model (default: the champion)."""
        return self._rpcs["Predict"].unary(self._predict, request, context)

    def PredictBatch(
        self, request: pb.PredictBatchRequest, context: Any
    ) -> pb.PredictBatchResponse:
        """Score many rows in one call, as messages or a packed matrix."""
        return self._rpcs["PredictBatch"].unary(self._predict_batch, request, context)

    def PredictStream(self, requests: Iterator[pb.PredictRequest], context: Any) -> Iterator:
        """Score each request of a stream; a refused one gets its status in its reply. A
        stream holds its thread while open: one past the server's limit is refused at once."""
        counted = self._rpcs["PredictStream"]
        began = time.perf_counter()
        try:
            with self.waits.holding(STREAM):
                yield from self._stream(requests, counted)
        except Busy as exc:
            counted.record(Code.RESOURCE_EXHAUSTED, began)
            context.abort(Code.RESOURCE_EXHAUSTED, str(exc))

    def _stream(self, requests: Iterator[pb.PredictRequest], counted: _Counted) -> Iterator:
        for request in requests:
            began = time.perf_counter()
            try:
                if type(request) is Undecodable:
                    raise request.refusal()
                reply = pb.StreamReply(id=request.id, result=self._predict(request))
                code = Code.OK
            except Refusal as exc:
                code, reply = exc.code, _stream_error(request.id, exc)
            except Exception as exc:
                log.exception("PredictStream failed on one request")
                code = Code.INTERNAL
                internal = Refusal(code, f"internal error: {type(exc).__name__}")
                reply = _stream_error(request.id, internal)
            size = reply.ByteSize()
            if size > MAX_MESSAGE_BYTES:  # gRPC would end the stream, and drop what follows
                code = Code.RESOURCE_EXHAUSTED
                too_large = Refusal(
                    code,
                    f"the answer would be {size} bytes, over this server's limit of "
                    f"{MAX_MESSAGE_BYTES} (a result holds its id twice): send a shorter id",
                    "id",
                )
                reply = _stream_error(request.id, too_large)
            counted.record(code, began)
            yield reply

    def Feedback(self, request: pb.FeedbackRequest, context: Any) -> pb.FeedbackResponse:
        """Check a label against the model's task and publish it for the learn flow to join."""
        remaining = context.time_remaining()  # None without a deadline
        deadline = None if remaining is None else time.monotonic() + remaining
        return self._rpcs["Feedback"].unary(
            lambda req: self._feedback(req, deadline), request, context
        )

    def GetModel(self, request: pb.GetModelRequest, context: Any) -> pb.GetModelResponse:
        """The champion and challenger serving under a name, the A/B split and entity features."""
        return self._rpcs["GetModel"].unary(self._get_model, request, context)

    # -- the work --------------------------------------------------------------------------

    def _served(self, name: str) -> Served:
        """The model's record with a champion, or the refusal that says why there is none."""
        name = name or self.default_model
        served = self.follower.served.get(name)
        if served is not None and served.champion is not None:
            return served
        if served is not None and served.refused:
            raise Refusal(
                Code.FAILED_PRECONDITION,
                f"model {name!r}: its champion {served.refused}; promote or roll back to a "
                "version this server can load",
            )
        if not self.follower.serves(name):
            raise Refusal(Code.NOT_FOUND, f"model {name!r} is not served here", "model")
        if served is None:
            try:
                known = self.follower.exists(name)
            except redis.RedisError as exc:
                raise Refusal(Code.UNAVAILABLE, f"the registry cannot be reached: {exc}") from None
            if not known and not self.follower.only:
                raise Refusal(Code.NOT_FOUND, f"unknown model {name!r}", "model")
        raise Refusal(
            Code.UNAVAILABLE,
            f"model {name!r} has no champion yet: nothing to serve until one is registered "
            "and promoted (the learn flow registers its first model on start)",
        )

    def _predict(self, request: pb.PredictRequest) -> pb.PredictResponse:
        served = self._served(request.model)
        return self._score(served, request, self._states(served, [request.entity])[0])

    def _states(self, served: Served, entities: list[str]) -> list[Any]:
        """The entities' states in the online feature store (``None`` for each if unused)."""
        if served.features is None or served.store is None:
            return [None] * len(entities)
        try:
            return served.store.read_many(served.spec, entities)
        except redis.RedisError as exc:
            raise Refusal(
                Code.UNAVAILABLE, f"the online feature store cannot be reached: {exc}"
            ) from None

    def _score(self, served: Served, request: pb.PredictRequest, state: Any) -> pb.PredictResponse:
        """One event's answer from ``served``; ``state`` is its entity's stored state."""
        loaded = served.pick(request.entity)
        assert loaded is not None  # _served checked the champion
        try:
            features = check_features(dict(request.features))
        except InvalidInput as exc:
            raise _invalid(exc) from None
        at = _event_time(request.time)  # refused as the flow would, whether used or not
        entity_features = served.features
        if entity_features is not None:
            features = entity_features.peek(state, at, features)
        expected = loaded.features
        if expected is not None:
            try:
                check_schema(features, expected)
            except InvalidInput as exc:
                raise _invalid(exc) from None
        reply = pb.PredictResponse(
            id=request.id, model=served.name, version=loaded.info.version, arm=loaded.role
        )
        prediction = loaded.scorer.predict_one(features)
        if isinstance(prediction, dict):
            best = predicted_label(prediction)
            if best is not None:
                reply.prediction.CopyFrom(to_label(best))
            for cls, p in prediction.items():
                reply.proba[class_text(cls)] = p
        else:
            reply.prediction.number = prediction
        return reply

    def _predict_batch(self, request: pb.PredictBatchRequest) -> pb.PredictBatchResponse:
        if request.events and request.HasField("packed"):
            raise Refusal(Code.INVALID_ARGUMENT, "give events or packed rows, not both", "packed")
        if request.HasField("packed"):
            return pb.PredictBatchResponse(packed=self._predict_packed(request))
        events = request.events
        if len(events) > self.max_batch:
            raise self._oversize(len(events))
        name = request.model or self.default_model
        for i, event in enumerate(events):
            if event.model and event.model != name:
                raise Refusal(
                    Code.INVALID_ARGUMENT,
                    f"events[{i}].model is {event.model!r}, the batch's is {name!r}",
                    f"events[{i}].model",
                )
        served = self._served(name)  # an unknown model is NOT_FOUND, events or none
        if not events:
            return pb.PredictBatchResponse()
        states = self._states(served, [event.entity for event in events])
        results = []
        for i, (event, state) in enumerate(zip(events, states, strict=True)):
            try:
                results.append(self._score(served, event, state))
            except Refusal as exc:
                field = f"events[{i}].{exc.field}" if exc.field else f"events[{i}]"
                raise Refusal(exc.code, f"events[{i}]: {exc}", field) from None
        return pb.PredictBatchResponse(results=results)

    def _oversize(self, rows: int) -> Refusal:
        return Refusal(
            Code.RESOURCE_EXHAUSTED,
            f"batch of {rows} rows exceeds this server's limit of {self.max_batch} "
            "(RIVERRUN_SERVE_MAX_BATCH): split it",
        )

    def _predict_packed(self, request: pb.PredictBatchRequest) -> pb.PackedAnswers:
        packed = request.packed
        names = list(packed.feature_names)
        width = len(names)
        if width == 0 or len(set(names)) != width:
            raise Refusal(
                Code.INVALID_ARGUMENT,
                "packed.feature_names must be distinct and not empty",
                "packed.feature_names",
            )
        if len(packed.values) % width:
            raise Refusal(
                Code.INVALID_ARGUMENT,
                f"packed.values holds {len(packed.values)} numbers, not a multiple "
                f"of {width} feature names",
                "packed.values",
            )
        rows = len(packed.values) // width
        if rows > self.max_batch:
            raise self._oversize(rows)
        for extra in ("entities", "times"):
            if len(getattr(packed, extra)) not in (0, rows):
                raise Refusal(
                    Code.INVALID_ARGUMENT,
                    f"packed.{extra} must be empty or hold one per row ({rows})",
                    f"packed.{extra}",
                )
        served = self._served(request.model)
        matrix = np.array(packed.values, dtype=float).reshape(rows, width)
        times = list(packed.times)
        # NaN fails both: the bounds events are held to, in one pass over all the rows
        bad = ~(np.abs(matrix) <= FEATURE_LIMIT).all(axis=1)
        latest = min(LATEST_TIME, time.time() + FUTURE_TOLERANCE)
        if times:
            stamps = np.array(times)
            bad |= ~((stamps >= EARLIEST_TIME) & (stamps <= latest))
        if bad.any():
            row = int(np.argmax(bad))
            try:  # says what is wrong with the row as it would for an event
                check_features(dict(zip(names, matrix[row].tolist(), strict=True)))
                if times and check_time(times[row]) > latest:
                    raise too_far_ahead(times[row])
            except InvalidInput as exc:
                field = "packed.times" if exc.field == "time" else exc.field or ""
                raise Refusal(Code.INVALID_ARGUMENT, f"packed row {row}: {exc}", field) from None
        entities = list(packed.entities) or [""] * rows
        entity_features = served.features
        if entity_features is not None and rows:
            names, matrix = self._with_entity_features(
                served, entity_features, names, matrix, entities, times
            )
        arms = [served.pick(e) for e in entities] if served.challenger else None
        return self._answer_packed(served, names, matrix, arms)

    def _with_entity_features(
        self,
        served: Served,
        code: EntityFeatures,
        names: list[str],
        matrix: np.ndarray,
        entities: list[str],
        times: list[float],
    ) -> tuple[list[str], np.ndarray]:
        """The matrix with the aggregates the learn flow's feature code adds to each row."""
        states = self._states(served, entities)
        now = time.time()
        used = [(f, names.index(f)) for f in served.spec.mean_of if f in names]
        added = [
            code.peek(state, times[r] if times else now, {f: matrix[r, c] for f, c in used})
            for r, state in enumerate(states)
        ]
        own = {f for f, _ in used}
        extra_names = [n for n in added[0] if n not in own]
        extra = np.array([[row[n] for n in extra_names] for row in added], dtype=float)
        keep = [i for i, n in enumerate(names) if n not in extra_names]  # the flow overwrites
        return [names[i] for i in keep] + extra_names, np.hstack((matrix[:, keep], extra))

    def _answer_packed(
        self,
        served: Served,
        names: list[str],
        matrix: np.ndarray,
        arms: list[Loaded | None] | None,
    ) -> pb.PackedAnswers:
        assert served.champion is not None
        answerers = [served.champion] if arms is None else list(dict.fromkeys(arms))
        groups: list[tuple[Loaded, np.ndarray | None]] = []
        for loaded in answerers:
            assert loaded is not None
            expected = loaded.features
            if expected is not None:
                try:
                    check_schema(dict.fromkeys(names, 0.0), expected)
                except InvalidInput as exc:
                    raise _invalid(exc) from None
            rows = None if arms is None else np.array([a is loaded for a in arms])
            groups.append((loaded, rows))
        out = pb.PackedAnswers(
            answerers=[
                pb.Answerer(model=served.name, version=loaded.info.version, arm=loaded.role)
                for loaded, _ in groups
            ]
        )
        try:
            if len(groups) == 1:
                _fill(out, groups[0][0].scorer.predict_matrix(names, matrix))
                return out
            merged = _merge(names, matrix, groups, len(matrix))
        except NoClassYet as exc:
            raise Refusal(
                Code.UNAVAILABLE,
                f"model {served.name!r}: a version that answers these rows {exc}; the packed "
                "form has no way to say so per row: ask in the map form, or once it has learned",
            ) from None
        _fill(out, merged[0])
        out.answered_by.extend(merged[1])
        return out

    def _feedback(self, request: pb.FeedbackRequest, deadline: float | None) -> pb.FeedbackResponse:
        if not request.id:
            raise Refusal(Code.INVALID_ARGUMENT, "id: the event id is missing", "id")
        value = from_label(request.label)
        if value is None:
            raise Refusal(Code.INVALID_ARGUMENT, "label: the label is missing", "label")
        served = self._served(request.model)
        assert served.champion is not None
        try:
            label = check_label(served.champion.info.task, value)
        except InvalidInput as exc:
            raise _invalid(exc) from None
        at = _event_time(request.time)
        message = label_message(request.id, label, at)
        size = len(message)
        if size > self.max_message_bytes:
            longer = len(orjson.dumps(label)) > len(orjson.dumps(request.id))  # as written
            field = "label" if longer else "id"
            raise Refusal(
                Code.INVALID_ARGUMENT,
                f"{field}: too long: the label message would be {size} bytes, over the learn "
                f"flow's limit of {self.max_message_bytes} bytes (RIVERRUN_MAX_MESSAGE_BYTES), "
                "where it would be dead-lettered",
                field,
            )
        # what is left of the call's time once the checks (and their Redis reads) are done
        within = None if deadline is None else deadline - time.monotonic() - DEADLINE_MARGIN
        if within is not None and within <= 0.0:
            raise Refusal(
                Code.DEADLINE_EXCEEDED,
                "the call's deadline leaves no time to wait for Kafka to acknowledge the label "
                f"(this server keeps {DEADLINE_MARGIN} s of it to answer): nothing was written",
            )
        try:
            with self.waits.holding(LABEL):
                topic, partition, offset = self.publisher.publish(request.id, message, within)
        except Unacknowledged as exc:  # not UNAVAILABLE: a retry might write it twice
            raise Refusal(Code.DEADLINE_EXCEEDED, str(exc)) from None
        except (Busy, PublishError) as exc:
            raise Refusal(Code.UNAVAILABLE, str(exc)) from None
        return pb.FeedbackResponse(topic=topic, partition=partition, offset=offset)

    def _get_model(self, request: pb.GetModelRequest) -> pb.GetModelResponse:
        served = self._served(request.model)
        reply = pb.GetModelResponse(
            champion=_version(served.champion),
            ab_fraction=served.ab_fraction,
            entity_features=list(served.spec.items()),
        )
        if served.challenger is not None:
            reply.challenger.CopyFrom(_version(served.challenger))
        return reply


def _version(loaded: Loaded | None) -> pb.ModelVersion:
    assert loaded is not None
    info = loaded.info
    return pb.ModelVersion(
        model=info.model,
        version=info.version,
        spec=info.spec,
        task=info.task,
        metrics={k: math.nan if v is None else float(v) for k, v in info.metrics.items()},
        events_seen=info.events_seen,
        created_at=info.created_at,
        loaded_at=loaded.loaded_at,
        vectorised=loaded.scorer.vectorised,
    )


def _fill(out: pb.PackedAnswers, answers: Answers) -> None:
    if answers.classes:
        out.classes.extend(class_text(c) for c in answers.classes)
        out.proba.extend(answers.proba.ravel().tolist())
        out.predicted.extend(answers.predicted.tolist())
    else:
        out.values.extend(answers.values.tolist())


def _merge(
    names: list[str], matrix: np.ndarray, groups: list[tuple[Loaded, Any]], rows: int
) -> tuple[Answers, list[int]]:
    """One set of answers from the arms that each answered some rows."""
    parts = [(g.scorer.predict_matrix(names, matrix[mask]), mask) for g, mask in groups]
    classes: dict[Any, int] = {}
    for answers, _ in parts:
        for c in answers.classes:
            classes.setdefault(c, len(classes))
    proba = np.zeros((rows, len(classes)))
    predicted = np.zeros(rows, dtype=np.uint32)
    values = np.zeros(rows if not classes else 0)
    answered_by = np.zeros(rows, dtype=np.uint32)
    for k, (answers, mask) in enumerate(parts):
        answered_by[mask] = k
        if classes:
            cols = [classes[c] for c in answers.classes]
            proba[np.ix_(mask, cols)] = answers.proba
            predicted[mask] = np.array(cols, dtype=np.uint32)[answers.predicted]
        else:
            values[mask] = answers.values
    return Answers(tuple(classes), proba, predicted, values), answered_by.tolist()
