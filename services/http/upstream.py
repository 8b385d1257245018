"""The HTTP service's one channel to the gateway: calls by route, with the caller's key and request id."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crossmodal.transport import RECONNECT_OPTIONS
from services.common.channels import open_channel
from services.common.config import TLSConfig
from services.http.routes import SERVICE, Route

AUTHORIZATION = "authorization"


def call_metadata(authorization: str | None) -> tuple[tuple[str, str], ...]:
    """The gRPC metadata of a call made for an HTTP request: its Authorization header, passed on as it came.

    The request id is added by the channel (services.common.channels) from the id bound for the request.
    """
    return ((AUTHORIZATION, authorization),) if authorization else ()


class Gateway:
    """Calls the gateway's rpcs by their HTTP route; the gateway authenticates, limits and answers."""

    def __init__(self, address: str, tls: TLSConfig | None, max_message_bytes: int, timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        self._channel = open_channel(
            address, tls=tls, max_message_bytes=max_message_bytes, extra_options=RECONNECT_OPTIONS
        )
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._calls: dict[str, Any] = {}

    def _multicallable(self, route: Route) -> Any:
        callable_ = self._calls.get(route.rpc)
        if callable_ is None:
            kind = (
                ("stream" if route.client_streaming else "unary")
                + "_"
                + ("stream" if route.server_streaming else "unary")
            )
            callable_ = getattr(self._channel, kind)(
                route.full_method,
                request_serializer=route.request_class.SerializeToString,
                response_deserializer=route.response_class.FromString,
            )
            self._calls[route.rpc] = callable_
        return callable_

    async def unary(self, route: Route, request: Any, authorization: str | None) -> Any:
        """Make one unary call; raises grpc.aio.AioRpcError with the gateway's status."""
        return await self._multicallable(route)(request, metadata=call_metadata(authorization), timeout=self.timeout)

    def stream(self, route: Route, authorization: str | None) -> Any:
        """Open a client-streaming call (with or without streamed responses) to be fed with write()."""
        return self._multicallable(route)(None, metadata=call_metadata(authorization))

    async def serving(self, timeout: float = 2.0) -> bool:
        """Whether the gateway reports its GatewayService SERVING now."""
        try:
            reply = await self._health.Check(health_pb2.HealthCheckRequest(service=SERVICE.full_name), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()
