"""What every gRPC caller in crossmodal shares: reconnect options and which status codes are worth retrying.

This module sits beside the generated contract (`crossmodal.v1`): the SDK and the services both import
it, and it imports neither, so the SDK installs and runs without the services package.
"""

from __future__ import annotations

import grpc

# Channel options that reach a peer restarted after a crash within a second, not after gRPC's default
# backoff of up to two minutes; a dead one costs only a refused connect per attempt. The SDK's channel to
# the gateway and the gateway's channels to encoders and shards use them.
RECONNECT_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

# The codes after which sending the same request again may succeed (the API's definition of "retryable",
# stated in types.proto): the service was down, overloaded, or did not answer in time.
RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}
)
# The codes after which a caller with several equivalent peers (encoder replicas, shard replicas) tries
# another one: the retryable ones, plus a peer that broke mid-call or failed in a way that is its own.
FAILOVER = RETRYABLE | {grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def code_of(number: int) -> grpc.StatusCode:
    """The status code with this number (UNKNOWN for a number gRPC does not define)."""
    return _BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)
