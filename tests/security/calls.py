"""Every RPC of the public GatewayService as a callable taking metadata, for the key and log tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc

from crossmodal.v1 import gateway_pb2, gateway_pb2_grpc

Metadata = Sequence[tuple[str, str]]
TIMEOUT = 20.0


def bearer(key: str) -> Metadata:
    """The metadata that authenticates with `key`."""
    return (("authorization", f"Bearer {key}"),)


def gateway_calls(channel: grpc.Channel, probe_id: str) -> dict[str, Callable[[Metadata], object]]:
    """Search, Ingest (of `probe_id`), Delete, Get and GetStats, each run to completion with the given metadata."""
    stub = gateway_pb2_grpc.GatewayServiceStub(channel)
    return {
        "Search": lambda md: stub.Search(
            gateway_pb2.SearchRequest(text="a red circle", k=3), metadata=md, timeout=TIMEOUT
        ),
        "Ingest": lambda md: list(
            stub.Ingest(
                iter([gateway_pb2.IngestRequest(id=probe_id, text="a blue square")]), metadata=md, timeout=TIMEOUT
            )
        ),
        "Delete": lambda md: stub.Delete(gateway_pb2.DeleteRequest(ids=[probe_id]), metadata=md, timeout=TIMEOUT),
        "Get": lambda md: stub.Get(gateway_pb2.GetRequest(ids=[probe_id]), metadata=md, timeout=TIMEOUT),
        "GetStats": lambda md: stub.GetStats(gateway_pb2.GetStatsRequest(), metadata=md, timeout=TIMEOUT),
    }


def outcome(call: Callable[[Metadata], object], metadata: Metadata) -> tuple[grpc.StatusCode, str]:
    """Run `call`: (OK, "") or the status code and message it failed with."""
    try:
        call(metadata)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""
