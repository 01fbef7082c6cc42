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

__all__ = ["SERVICE", "pb", "rpc"]
