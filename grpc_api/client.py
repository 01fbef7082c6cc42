"""A Python client of the scoring service: plain values in, plain values out.

.. code-block:: python

    with ScoringClient("127.0.0.1:50051") as client:
        answer = client.predict({"amount": 12.5, "age": 31}, entity="user-7")
        print(answer.prediction, answer.proba["true"], answer.version)

Errors are the server's: :class:`grpc.RpcError` with ``code()`` and ``details()``. Features
that are not numbers never reach the wire: :class:`~models.schema.InvalidInput` names them.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from grpc_api.errors import read_tls_file
from grpc_api.labels import from_label, to_label
from grpc_api.proto import MAX_MESSAGE_BYTES, pb, rpc
from models.schema import InvalidInput, Label
from riverrun.settings import Settings, host_port


@dataclass(frozen=True)
class Answer:
    """One event's answer: who answered, the prediction and the class probabilities."""

    id: str
    model: str
    version: int
    arm: str
    prediction: Any
    proba: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamFailure:
    """A streamed request the server refused: the status name, message and field."""

    id: str
    code: str
    message: str
    field: str


@dataclass(frozen=True)
class PackedAnswer:
    """Answers to packed rows: class probabilities (rows x classes) or values, and who
    answered each row as ``(model, version, arm)``."""

    classes: list[str]
    proba: np.ndarray
    predicted: list[str]
    values: np.ndarray
    answered_by: list[tuple[str, int, str]]


def numeric_features(features: Mapping[str, Any]) -> dict[str, float]:
    """``features`` as floats (NumPy's numbers too: a row of a data frame), or
    :class:`InvalidInput` naming the first that is no number (a bool is none).

    >>> numeric_features({"a": 1, "b": np.float32(0.5), "c": np.int64(3)})
    {'a': 1.0, 'b': 0.5, 'c': 3.0}
    >>> numeric_features({"a": 1, "b": True})
    Traceback (most recent call last):
    ...
    models.schema.InvalidInput: feature 'b' must be a number, got bool
    >>> numeric_features({"a": 10**400})
    Traceback (most recent call last):
    ...
    models.schema.InvalidInput: feature 'a' is too large for a double
    """
    out = {}
    for name, value in features.items():
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise InvalidInput(
                "bad_feature",
                f"feature {name!r} must be a number, got {type(value).__name__}",
                name,
            )
        try:
            out[name] = float(value)
        except OverflowError:
            raise InvalidInput(
                "bad_feature", f"feature {name!r} is too large for a double", name
            ) from None
    return out


def _request(
    features: Mapping[str, Any], entity: str, model: str, id: str, time: float
) -> pb.PredictRequest:
    return pb.PredictRequest(
        model=model, entity=entity, features=numeric_features(features), id=id, time=time
    )


def _answer(reply: pb.PredictResponse) -> Answer:
    return Answer(
        reply.id,
        reply.model,
        reply.version,
        reply.arm,
        from_label(reply.prediction),
        dict(reply.proba),
    )


class ScoringClient:
    """A channel to one scoring server (TLS when ``root_certificate`` is given)."""

    def __init__(
        self, target: str, *, root_certificate: bytes | None = None, timeout: float = 10.0
    ) -> None:
        # what the server may send (gRPC's default would refuse a reply past 4 MiB)
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        if root_certificate is None:
            self.channel = grpc.insecure_channel(target, options)
        else:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificate)
            self.channel = grpc.secure_channel(target, credentials, options)
        self.stub = rpc.ScoringStub(self.channel)
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings, timeout: float = 10.0) -> ScoringClient:
        """A client of the server the settings name (``serve_host``, ``serve_port``, CA);
        :class:`~grpc_api.errors.ServeError` if the CA file cannot be read."""
        ca = settings.serve_tls_ca
        root = read_tls_file(ca, "root certificate") if ca else None
        target = host_port(settings.serve_host, settings.serve_port)
        return cls(target, root_certificate=root, timeout=timeout)

    def predict(
        self,
        features: Mapping[str, Any],
        *,
        entity: str = "",
        model: str = "",
        id: str = "",
        time: float = 0.0,
    ) -> Answer:
        """Score one event."""
        request = _request(features, entity, model, id, time)
        return _answer(self.stub.Predict(request, timeout=self.timeout))

    def predict_batch(
        self, rows: Sequence[Mapping[str, Any]], *, entities: Sequence[str] = (), model: str = ""
    ) -> list[Answer]:
        """Score many events in one call, one message per row."""
        keys = entities or [""] * len(rows)
        events = [_request(x, e, "", "", 0.0) for x, e in zip(rows, keys, strict=True)]
        reply = self.stub.PredictBatch(
            pb.PredictBatchRequest(model=model, events=events), timeout=self.timeout
        )
        return [_answer(r) for r in reply.results]

    def predict_packed(
        self,
        names: Sequence[str],
        matrix: np.ndarray,
        *,
        entities: Sequence[str] = (),
        times: Sequence[float] = (),
        model: str = "",
    ) -> PackedAnswer:
        """Score the rows of ``matrix`` (columns ``names``) in one call, packed;
        :class:`InvalidInput` for a matrix that is not one row per event, one column per name.
        """
        matrix = np.asarray(matrix, float)
        if matrix.ndim != 2 or matrix.shape[1] != len(names):
            raise InvalidInput(
                "bad_field",
                f"matrix: expected rows of {len(names)} features (one per name), got an array "
                f"of shape {matrix.shape}",
                "matrix",
            )
        rows = pb.PackedRows(
            feature_names=list(names),
            values=matrix.ravel(),
            entities=list(entities),
            times=list(times),
        )
        reply = self.stub.PredictBatch(
            pb.PredictBatchRequest(model=model, packed=rows), timeout=self.timeout
        ).packed
        n = len(matrix)
        classes = list(reply.classes)
        proba = np.array(reply.proba).reshape(n, len(classes))
        who = [(a.model, a.version, a.arm) for a in reply.answerers]
        by = list(reply.answered_by) or [0] * n
        return PackedAnswer(
            classes,
            proba,
            [classes[i] for i in reply.predicted],
            np.array(reply.values),
            [who[i] for i in by],
        )

    def stream(self, events: Iterable[Mapping[str, Any]]) -> Iterator[Answer | StreamFailure]:
        """Score a stream of events, each a dict with ``features`` and optionally ``entity``,
        ``model``, ``id`` and ``time``; answers come in order."""
        requests = (
            _request(
                e["features"],
                e.get("entity", ""),
                e.get("model", ""),
                e.get("id", ""),
                e.get("time", 0.0),
            )
            for e in events
        )
        for reply in self.stub.PredictStream(requests, timeout=self.timeout):
            if reply.WhichOneof("outcome") == "result":
                yield _answer(reply.result)
            else:
                err = reply.error
                yield StreamFailure(reply.id, err.code, err.message, err.field)

    def feedback(
        self, id: str, label: Label, *, time: float = 0.0, model: str = ""
    ) -> tuple[str, int, int]:
        """Send an event's label to the learn flow; ``(topic, partition, offset)`` it went to."""
        request = pb.FeedbackRequest(id=id, label=to_label(label), time=time, model=model)
        reply = self.stub.Feedback(request, timeout=self.timeout)
        return reply.topic, reply.partition, reply.offset

    def get_model(self, model: str = "") -> pb.GetModelResponse:
        """The model's serving versions, A/B split and entity features."""
        return self.stub.GetModel(pb.GetModelRequest(model=model), timeout=self.timeout)

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def __enter__(self) -> ScoringClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
