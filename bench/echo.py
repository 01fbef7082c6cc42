"""The baseline of the serving benchmark: the Scoring service doing no work at all.

It answers Predict with a fixed reply the size of a real one and PredictBatch by echoing
the packed doubles back (or one reply per row), from the same kind of grpcio server as
``riverrun serve`` (thread pool, options), so the ratio to it is riverrun's own cost.
Run as ``python -m bench.echo PORT``.
"""

from __future__ import annotations

import sys
from concurrent import futures
from typing import Any

import grpc

from grpc_api.proto import pb, rpc

REPLY = pb.PredictResponse(
    model="echo",
    version=1,
    arm="champion",
    prediction=pb.Label(boolean=True),
    proba={"false": 0.25, "true": 0.75},
)
WHO = pb.Answerer(model="echo", version=1, arm="champion")


class Echo(rpc.ScoringServicer):
    """Answers without looking at the request."""

    def Predict(self, request: pb.PredictRequest, context: Any) -> pb.PredictResponse:
        return REPLY

    def PredictBatch(
        self, request: pb.PredictBatchRequest, context: Any
    ) -> pb.PredictBatchResponse:
        if request.HasField("packed"):
            return pb.PredictBatchResponse(
                packed=pb.PackedAnswers(proba=request.packed.values, answerers=[WHO])
            )
        return pb.PredictBatchResponse(results=[REPLY] * len(request.events))


def main(port: int, workers: int = 16) -> None:
    """Serve the echo on loopback until killed."""
    server = grpc.server(futures.ThreadPoolExecutor(workers), options=[("grpc.so_reuseport", 0)])
    rpc.add_ScoringServicer_to_server(Echo(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("echo ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main(int(sys.argv[1]))
