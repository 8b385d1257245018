"""The gateway service: wires the encoder pools, the shards and the servicer into the shared bootstrap."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import structlog

from crossmodal.v1 import gateway_pb2_grpc
from services.common.config import ConfigError
from services.gateway.admission import AdmissionInterceptor, gates
from services.gateway.auth import AuthInterceptor, load_api_keys
from services.gateway.backends import BackendError, EncoderPool, Shard
from services.gateway.config import GatewayConfig
from services.gateway.servicer import ErrorMapping, GatewayServicer

log = structlog.get_logger("gateway")


class GatewayService:
    """Serves crossmodal.v1.GatewayService; ready once both encoders agree on the model."""

    name = "gateway"

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.servicer = GatewayServicer(config)
        keys = load_api_keys(config.api_keys_file) if config.api_keys_file else []
        if config.api_keys_file and not keys:
            raise ConfigError(f"CROSSMODAL_GATEWAY_API_KEYS_FILE: {config.api_keys_file} holds no key")
        self.interceptors = [
            AuthInterceptor(keys, config.rate_limit_rps, config.rate_limit_burst),
            # After auth, so unauthenticated or over-rate calls never take a slot.
            AdmissionInterceptor(gates(config.max_in_flight_searches, config.max_ingest_streams)),
            ErrorMapping(self.servicer),
        ]

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        """Add the gateway servicer."""
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(self.servicer, server)
        return ["crossmodal.v1.GatewayService"]

    async def start(self) -> None:
        """Wait until both encoders answer and serve the same model; the gateway is ready after that."""
        # Channels belong to the running event loop, so they are opened here and not in __init__.
        server = self.config.server
        tls, size = server.client_tls, server.max_message_bytes
        self.text = EncoderPool("text", self.config.text_encoders, tls=tls, max_message_bytes=size)
        self.image = EncoderPool("image", self.config.image_encoders, tls=tls, max_message_bytes=size)
        self.shards = [
            Shard(n, replicas, tls=tls, max_message_bytes=size) for n, replicas in enumerate(self.config.shard_map)
        ]
        delay = 0.2
        while True:
            try:
                text = await self.text.model_info(timeout=5.0)
                image = await self.image.model_info(timeout=5.0)
                break
            except (BackendError, grpc.aio.AioRpcError) as exc:
                log.info("waiting for encoders", error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if (text.model_id, text.dim) != (image.model_id, image.dim):
            raise RuntimeError(
                f"the text encoder serves {text.model_id} (dim {text.dim}) but the image encoder "
                f"serves {image.model_id} (dim {image.dim}); both must serve the same bundle"
            )
        self.servicer.attach(self.text, self.image, self.shards, text.model_id, text.dim)
        log.info("model", model_id=text.model_id, dim=text.dim, shards=len(self.shards))

    async def stop(self) -> None:
        """Close the downstream channels."""
        await self.text.close()
        await self.image.close()
        for shard in self.shards:
            await shard.close()
