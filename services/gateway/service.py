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
from services.gateway.backends import Backends, EncoderPool, ShardClient
from services.gateway.config import GatewayConfig
from services.gateway.errors import BackendError, ErrorMapping
from services.gateway.servicer import GatewayServicer

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
            AdmissionInterceptor(gates(config)),
            ErrorMapping(lambda: self.servicer.ready),
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
        text_pool = EncoderPool("text", self.config.text_encoders, tls=tls, max_message_bytes=size)
        image_pool = EncoderPool("image", self.config.image_encoders, tls=tls, max_message_bytes=size)
        shards = [
            ShardClient(n, replicas, tls=tls, max_message_bytes=size)
            for n, replicas in enumerate(self.config.shard_map)
        ]
        self.backends = Backends(text_pool, image_pool, shards, model_id="", dim=0)
        delay = 0.2
        while True:
            try:
                text = await text_pool.model_info(timeout=5.0)
                image = await image_pool.model_info(timeout=5.0)
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
        self.backends.model_id, self.backends.dim = text.model_id, text.dim
        self.servicer.attach(self.backends)
        log.info("model", model_id=text.model_id, dim=text.dim, shards=len(shards))

    async def stop(self) -> None:
        """Close the downstream channels."""
        await self.backends.close()
