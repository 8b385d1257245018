"""The gateway service: wires the encoder pools, the shards and the servicer into the shared bootstrap."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from crossmodal.v1 import encoder_pb2, gateway_pb2_grpc
from services.common import partitionmap, writelog
from services.common.config import ConfigError, TLSConfig
from services.common.partitionmap import MapWatcher
from services.gateway.admission import AdmissionInterceptor, gates
from services.gateway.auth import AuthInterceptor, load_api_keys
from services.gateway.backends import AudioClip, Backends, EncoderPool, ShardClient
from services.gateway.config import GatewayConfig
from services.gateway.errors import ErrorMapping
from services.gateway.reshard import Resharder
from services.gateway.routing import MapPlacement, Router
from services.gateway.servicer import GatewayServicer
from services.gateway.writer import DirectWriter, LogWriter, Writer

log = structlog.get_logger("gateway")
T = TypeVar("T")


class GatewayService:
    """Serves crossmodal.v1.GatewayService; ready once both encoders agree on the model."""

    name = "gateway"

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._nats: NATS | None = None
        # With a write log: the partition map as this gateway follows it, and the reshard driver.
        self._watcher: MapWatcher | None = None
        self._resharder: Resharder | None = None
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
        """Wait until every encoder serves the same model (and the write log is reachable); ready after that."""
        # Channels belong to the running event loop, so they are opened here and not in __init__.
        server = self.config.server
        tls, size = server.client_tls, server.max_message_bytes
        text_pool = EncoderPool("text", self.config.text_encoders, tls=tls, max_message_bytes=size)
        image_pool = None
        if self.config.image_encoders:
            image_pool = EncoderPool("image", self.config.image_encoders, tls=tls, max_message_bytes=size)
        shards = [
            ShardClient(n, replicas, tls=tls, max_message_bytes=size)
            for n, replicas in enumerate(self.config.shard_map)
        ]
        self.backends = Backends(text_pool, image_pool, shards, self.config.placement, model_id="", dim=0)
        text = await _retry("the text encoder", lambda: text_pool.model_info(timeout=5.0))
        self.backends.model_id, self.backends.dim = text.model_id, text.dim
        text_pool.max_request_items = text.max_request_items
        if image_pool is not None:
            image = await _retry("the image encoder", lambda: image_pool.model_info(timeout=5.0))
            self._check_same_model("image", image)
            image_pool.max_request_items = image.max_request_items
        if self.config.audio_encoders:
            await self._attach_audio(tls, size)
        writer = await self._writer()
        if self._watcher is not None:
            # Acknowledgements and write paths name an item's shard by the partition map from now on.
            placement = self.backends.placement
            self.backends.placement = MapPlacement(placement.shards, placement.partitions, self._watcher)
        router = Router(self.backends.placement, len(shards), self._watcher)
        self.servicer.attach(self.backends, writer, router=router, resharder=self._resharder)
        log.info("model", model_id=text.model_id, dim=text.dim, shards=len(shards), log=self.config.log.enabled)

    def _check_same_model(self, tower: str, info: encoder_pb2.GetModelInfoResponse) -> None:
        """An encoder must serve the text encoder's model: one bundle, one embedding space."""
        if (info.model_id, info.dim) != (self.backends.model_id, self.backends.dim):
            raise RuntimeError(
                f"the {tower} encoder serves {info.model_id} (dim {info.dim}) but the text encoder serves "
                f"{self.backends.model_id} (dim {self.backends.dim}); all must serve the same bundle"
            )

    async def _attach_audio(self, tls: TLSConfig | None, size: int) -> None:
        """Open the audio pool and take its clip from GetModelInfo; it must serve the other towers' model."""
        pool = EncoderPool("audio", self.config.audio_encoders, tls=tls, max_message_bytes=size)
        self.backends.audio = pool
        info = await _retry("the audio encoder", lambda: pool.model_info(timeout=5.0))
        self._check_same_model("audio", info)
        if info.clip_seconds <= 0 or info.sample_rate <= 0:
            raise RuntimeError(f"the audio encoder at {self.config.audio_encoders} describes no clip; is it one?")
        pool.max_request_items = info.max_request_items
        hop = info.window_hop_seconds or info.clip_seconds  # an encoder that predates the field: no overlap
        self.backends.audio_clip = AudioClip(info.clip_seconds, info.sample_rate, hop)
        log.info("audio tower", clip_seconds=info.clip_seconds, sample_rate=info.sample_rate, hop_seconds=hop)

    async def _writer(self) -> Writer:
        """The write path: the log when one is configured (its stream made or checked), else direct writes."""
        config = self.config
        if not config.log.enabled:
            return DirectWriter(
                self.backends.shards, self.backends.placement, self.backends.model_id, config.write_timeout_ms / 1000
            )
        self._nats = await _retry("the write log", lambda: writelog.connect(config.log, "crossmodal-gateway"))
        js = self._nats.jetstream(timeout=config.log.timeout_seconds)
        placement = self.backends.placement
        # A fresh JetStream cluster answers "no leader" for a few seconds; a layout mismatch is final.
        layout = await _retry(
            "the write log's stream",
            lambda: writelog.ensure_stream(js, config.log.stream, placement, config.log_replicas, config.log_max_bytes),
        )
        log.info("write log", stream=layout.stream, partitions=placement.partitions, replicas=config.log_replicas)
        await self._follow_map(js, layout)
        return LogWriter(js, layout, self.backends.model_id, config.log.timeout_seconds)

    async def _follow_map(self, js: JetStreamContext, layout: writelog.LogLayout) -> None:
        """Read (or write, for a new log or one made before maps existed) the partition map, and watch it."""
        config = self.config
        assert layout.placement.partitions is not None
        partitions, first_shards = layout.placement.partitions, layout.placement.shards
        kv = await _retry(
            "the partition map's bucket",
            lambda: partitionmap.open_bucket(js, config.log.stream, config.log_replicas, create=True),
        )
        # A log created before the map existed: its description's shard count gives version 1 (p % shards).
        current, _ = await _retry("the partition map", lambda: partitionmap.ensure(kv, partitions, first_shards))
        addresses = len(self.backends.shards)
        if current.highest_shard >= addresses:
            raise ConfigError(
                f"CROSSMODAL_GATEWAY_SHARDS lists {addresses} shards, but the partition map ({current.describe()}) "
                f"gives partitions to shard {current.highest_shard}: list the addresses of every shard up to it"
            )
        self._watcher = MapWatcher(kv)
        await self._watcher.start()
        self._resharder = Resharder(self.backends.shards, self._watcher, js, layout, config.reshard_grace_seconds)
        log.info("partition map", map=current.describe(), shard_addresses=addresses)

    async def stop(self) -> None:
        """Close the downstream channels and the log connection."""
        if self._watcher is not None:
            await self._watcher.stop()
        await self.backends.close()
        if self._nats is not None:
            await self._nats.close()


async def _retry(what: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """Call `attempt` until it succeeds, with a capped backoff; a ValueError (a wrong setting) is final."""
    delay = 0.2
    while True:
        try:
            return await attempt()
        except ValueError:
            raise
        except Exception as exc:  # noqa: BLE001 - a dependency that is not up yet: wait for it
            log.info(f"waiting for {what}", error=str(exc) or repr(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
