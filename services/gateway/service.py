"""The gateway service: its servicer and the wiring into the shared server bootstrap."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from crossmodal.v1 import gateway_pb2_grpc
from services.gateway.config import GatewayConfig


class GatewayService:
    """Serves crossmodal.v1.GatewayService; its RPCs answer UNIMPLEMENTED until the service's issue lands."""

    name = "gateway"

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        """Add the servicer to the gRPC server."""
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(gateway_pb2_grpc.GatewayServiceServicer(), server)
        return ["crossmodal.v1.GatewayService"]

    async def start(self) -> None:
        """Nothing to load yet."""

    async def stop(self) -> None:
        """Nothing to flush yet."""
