"""Client channels to other crossmodal services, with TLS, message limits and request-id propagation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from services.common.config import TLSConfig
from services.common.interceptors import REQUEST_ID, REQUEST_ID_HEADER

# Keepalive lets a client notice a peer that vanished (kill -9, node loss) within seconds.
KEEPALIVE_TIME_MS = 20_000
# By default a server wants 5 minutes between pings on an idle connection and answers a 20-second
# keepalive with GOAWAY too_many_pings; ours accept one every 10 s and keep the strike limit for
# clients that ping faster than that.
MIN_PING_INTERVAL_MS = KEEPALIVE_TIME_MS // 2


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """gRPC channel/server options shared by every service."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


def server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """gRPC server options: the shared ones plus acceptance of our clients' keepalive pings."""
    # This key is core's GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS; the "_recv_"
    # spelling is silently ignored.
    return [*channel_options(max_message_bytes), ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS)]


def open_channel(
    target: str,
    *,
    tls: TLSConfig | None = None,
    max_message_bytes: int = 64 * 1024 * 1024,
    extra_options: Sequence[tuple[str, int | str]] = (),
) -> grpc.aio.Channel:
    """Open an asyncio channel to `target` that forwards the current request id downstream."""
    options = [*channel_options(max_message_bytes), *extra_options]
    if tls is not None and tls.enabled:
        from services.common.tls import channel_credentials

        return RequestIdChannel(grpc.aio.secure_channel(target, channel_credentials(tls), options=options))
    return RequestIdChannel(grpc.aio.insecure_channel(target, options=options))


class RequestIdChannel:
    """An asyncio channel whose calls carry the request id of the RPC being served (x-request-id).

    A client interceptor would do the same, but grpc.aio runs every intercepted call through an extra
    call object and task: with four shards and an encoder behind each search that cost the gateway
    about a fifth of its CPU (bench/bench_search_cpu.py). This wrapper only adds the metadata.
    """

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        """A unary-unary multicallable that adds the request id."""
        return _WithRequestId(self._channel.unary_unary(*args, **kwargs))

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        """A unary-stream multicallable that adds the request id."""
        return _WithRequestId(self._channel.unary_stream(*args, **kwargs))

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        """A stream-unary multicallable that adds the request id."""
        return _WithRequestId(self._channel.stream_unary(*args, **kwargs))

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        """A stream-stream multicallable that adds the request id."""
        return _WithRequestId(self._channel.stream_stream(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)

    async def __aenter__(self) -> RequestIdChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._channel.close()


class _WithRequestId:
    def __init__(self, multicallable: Any) -> None:
        self._multicallable = multicallable

    def __call__(self, request: Any, *, metadata: Any = None, **kwargs: Any) -> Any:
        request_id = REQUEST_ID.get()
        if request_id is not None:
            pairs = tuple(metadata or ())
            if not any(key == REQUEST_ID_HEADER for key, _ in pairs):
                metadata = (*pairs, (REQUEST_ID_HEADER, request_id))
        return self._multicallable(request, metadata=metadata, **kwargs)
