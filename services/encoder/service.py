"""Wiring of an encoder process: one tower, its metrics, the engine and the servicer, in the shared life cycle.

`services.common.server.serve` runs an `EncoderService`: health stays NOT_SERVING while `start()`
loads and warms the model, and `stop()` runs once the server has drained its calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from crossmodal.v1 import encoder_pb2, encoder_pb2_grpc, types_pb2
from services.encoder.config import EncoderServiceConfig
from services.encoder.engine import EncoderEngine, TowerFactory
from services.encoder.metrics import EncoderMetrics
from services.encoder.servicer import EncoderServicer


class EncoderService:
    """A `Service` serving crossmodal.v1.EncoderService with one tower ("text" or "image")."""

    def __init__(
        self,
        config: EncoderServiceConfig,
        tower: str,
        modality: types_pb2.Modality,
        make_tower: TowerFactory,
    ) -> None:
        self.name = f"encoder_{tower}"
        self.config = config
        self._metrics = EncoderMetrics(tower, config.encoder.queue_size)
        self.engine = EncoderEngine(config.encoder, tower, make_tower, self._metrics)
        self._modality = modality

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        """Add the encoder servicer to the gRPC server."""
        servicer = EncoderServicer(self.engine, self._modality, self._metrics)
        encoder_pb2_grpc.add_EncoderServiceServicer_to_server(servicer, server)
        return [encoder_pb2.DESCRIPTOR.services_by_name["EncoderService"].full_name]

    async def start(self) -> None:
        """Load the bundle and warm it up; the server reports SERVING only after this returns."""
        await self.engine.start()

    async def stop(self) -> None:
        """Release the batcher and the worker pool."""
        await self.engine.stop()
