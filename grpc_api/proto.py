"""The messages and stubs of ``riverrun.v1``, generated from ``protos/`` by the build."""

from __future__ import annotations

try:
    from grpc_api._generated.riverrun.v1 import scoring_pb2 as pb
    from grpc_api._generated.riverrun.v1 import scoring_pb2_grpc as rpc
except ImportError as exc:  # a source tree that was never installed
    raise ImportError(
        "the gRPC stubs are generated from protos/ by the build: run `pip install -e .` "
        f"(or `make test`) first ({exc})"
    ) from exc

SERVICE = pb.DESCRIPTOR.services_by_name["Scoring"].full_name
# The largest message the server takes or sends, and the client takes: a 10,000-row batch's
# answer of many classes is past gRPC's default of 4 MiB.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

__all__ = ["MAX_MESSAGE_BYTES", "SERVICE", "pb", "rpc"]
