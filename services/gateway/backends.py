"""Clients of the gateway's downstream services: encoder pools and replicated shards.

Encoder calls rotate over the configured addresses and move on to the next one on UNAVAILABLE or
RESOURCE_EXHAUSTED. Shard reads go to the healthiest replica first and are hedged: when no answer
has come after the hedge delay, the same read goes to another replica and the first answer wins.
Shard writes go to every replica; the caller learns which replicas failed.

A backend that crashed and came back on its address is used again without any operator action: the
channels retry the connection with a backoff capped at about a second (gRPC's default grows to two
minutes, which would keep a restarted shard out of searches long after it is SERVING again), and an
address that failed is only tried last for a few seconds, never dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import grpc

from crossmodal.transport import FAILOVER, RECONNECT_OPTIONS, code_of
from crossmodal.v1 import encoder_pb2, encoder_pb2_grpc, index_pb2, index_pb2_grpc
from services.common.channels import open_channel
from services.common.config import TLSConfig
from services.common.placement import Placement
from services.gateway.errors import BackendError, GatewayError, describe_error, status_of
from services.gateway.metrics import ENCODE_SECONDS, ENCODER_RETRIES, HEDGED_REQUESTS, SHARD_ERRORS

T = TypeVar("T")

OK = grpc.StatusCode.OK.value[0]
# A replica that failed is tried last for this long, so traffic leaves it without being starved forever.
_PENALTY_SECONDS = 5.0


class EncoderPool:
    """The addresses of one tower's encoders, used in rotation with failover."""

    def __init__(
        self, modality: str, addresses: Sequence[str], *, tls: TLSConfig | None, max_message_bytes: int
    ) -> None:
        self.modality = modality
        self.addresses = list(addresses)
        self.max_message_bytes = max_message_bytes
        # Most items its encoders take in one Encode call (ENCODER_MAX_REQUEST_ITEMS, from GetModelInfo at
        # start; 0 while unknown).
        self.max_request_items = 0
        # round_robin spreads calls over every address a DNS name resolves to (a headless Service's pods),
        # so encoder replicas added by an autoscaler get traffic; pick_first would pin one pod.
        options: list[tuple[str, int | str]] = [("grpc.lb_policy_name", "round_robin"), *RECONNECT_OPTIONS]
        self._channels = [
            open_channel(a, tls=tls, max_message_bytes=max_message_bytes, extra_options=options) for a in addresses
        ]
        self._stubs = [encoder_pb2_grpc.EncoderServiceStub(c) for c in self._channels]
        self._last_failure = [-1e18] * len(addresses)
        self._next = 0

    def _order(self) -> list[int]:
        start = self._next
        self._next = (self._next + 1) % len(self._stubs)
        rotated = [(start + n) % len(self._stubs) for n in range(len(self._stubs))]
        now = time.monotonic()
        # An address that failed recently goes last, so a crashed encoder costs one failed call, not one per batch.
        return sorted(rotated, key=lambda i: now - self._last_failure[i] < _PENALTY_SECONDS)

    async def _call(self, fn: Callable[[encoder_pb2_grpc.EncoderServiceStub], Awaitable[T]]) -> T:
        errors: list[str] = []
        order = self._order()
        for attempt, index in enumerate(order):
            try:
                return await fn(self._stubs[index])
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in FAILOVER:
                    raise
                self._last_failure[index] = time.monotonic()
                errors.append(f"{self.addresses[index]}: {describe_error(exc)}")
                if attempt + 1 < len(order):
                    ENCODER_RETRIES.labels(self.modality).inc()
        raise BackendError(
            grpc.StatusCode.UNAVAILABLE, f"no {self.modality} encoder could serve the call ({'; '.join(errors)})"
        )

    async def model_info(self, timeout: float) -> encoder_pb2.GetModelInfoResponse:
        """The served model's description, from the first encoder that answers."""
        return await self._call(lambda s: s.GetModelInfo(encoder_pb2.GetModelInfoRequest(), timeout=timeout))

    async def encode(self, items: Sequence[encoder_pb2.EncodeItem], timeout: float) -> encoder_pb2.EncodeResponse:
        """Encode `items` in one call, failing over to another address when one is unavailable."""
        request = encoder_pb2.EncodeRequest(items=items)
        return await self._call(lambda s: s.Encode(request, timeout=timeout))

    async def close(self) -> None:
        """Close every channel."""
        for channel in self._channels:
            await channel.close()


@dataclass
class Replica:
    """One replica of a shard: its address, stub and recent failures."""

    address: str
    stub: index_pb2_grpc.IndexServiceStub
    channel: grpc.aio.Channel
    last_failure: float = field(default=-1e18)

    @property
    def suspect(self) -> bool:
        """Whether it failed recently enough to be tried last."""
        return time.monotonic() - self.last_failure < _PENALTY_SECONDS


class ShardClient:
    """The gateway's client of one shard: its replicas, read one at a time (hedged) and written together."""

    def __init__(self, number: int, addresses: Sequence[str], *, tls: TLSConfig | None, max_message_bytes: int) -> None:
        self.number = number
        self.replicas: list[Replica] = []
        for address in addresses:
            channel = open_channel(
                address, tls=tls, max_message_bytes=max_message_bytes, extra_options=RECONNECT_OPTIONS
            )
            self.replicas.append(Replica(address, index_pb2_grpc.IndexServiceStub(channel), channel))
        self._next = 0
        # Set when the shard answered UNIMPLEMENTED to SearchShardBatch (an older release).
        self.batch_unsupported = False

    def _order(self) -> list[Replica]:
        self._next = (self._next + 1) % len(self.replicas)
        rotated = self.replicas[self._next :] + self.replicas[: self._next]
        return sorted(rotated, key=lambda r: r.suspect)

    def _failed(self, replica: Replica) -> None:
        replica.last_failure = time.monotonic()
        SHARD_ERRORS.labels(str(self.number), replica.address).inc()

    async def read(
        self, fn: Callable[[index_pb2_grpc.IndexServiceStub, float], Awaitable[T]], timeout: float, hedge_delay: float
    ) -> T:
        """Run a read on one replica, hedged to the next after `hedge_delay`; the first answer wins."""
        if len(self.replicas) == 1:
            return await self._read_only_replica(fn, timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        order = self._order()
        pending: dict[asyncio.Task[T], Replica] = {}
        errors: list[str] = []

        def launch() -> None:
            replica = order[len(pending) + len(errors)]
            remaining = max(deadline - loop.time(), 0.001)
            pending[asyncio.ensure_future(fn(replica.stub, remaining))] = replica

        launch()
        try:
            while pending:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                can_hedge = hedge_delay > 0 and len(pending) + len(errors) < len(order)
                done, _ = await asyncio.wait(
                    set(pending),
                    timeout=min(hedge_delay, remaining) if can_hedge else remaining,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not done:
                    if can_hedge:
                        HEDGED_REQUESTS.inc()
                        launch()
                    continue
                for task in done:
                    replica = pending.pop(task)
                    error = task.exception()
                    if error is None:
                        return task.result()
                    if isinstance(error, grpc.aio.AioRpcError) and error.code() not in FAILOVER:
                        raise error
                    self._failed(replica)
                    errors.append(f"{replica.address}: {describe_error(error)}")
                if not pending and len(errors) < len(order):
                    launch()
            for replica in pending.values():
                self._failed(replica)
                errors.append(f"{replica.address}: DEADLINE_EXCEEDED: no answer within {timeout:.3f}s")
            raise BackendError(
                grpc.StatusCode.UNAVAILABLE,
                f"shard {self.number} did not answer ({'; '.join(errors)})",
            )
        finally:
            for task in pending:
                task.cancel()

    async def _read_only_replica(
        self, fn: Callable[[index_pb2_grpc.IndexServiceStub, float], Awaitable[T]], timeout: float
    ) -> T:
        """`read` of a shard with one replica: nothing to hedge to or fail over to, so no task to watch."""
        replica = self.replicas[0]
        try:
            return await fn(replica.stub, timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in FAILOVER:
                raise
            self._failed(replica)
            message = (
                f"DEADLINE_EXCEEDED: no answer within {timeout:.3f}s"
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                else describe_error(exc)
            )
            raise BackendError(
                grpc.StatusCode.UNAVAILABLE, f"shard {self.number} did not answer ({replica.address}: {message})"
            ) from None

    async def write(
        self, fn: Callable[[index_pb2_grpc.IndexServiceStub], Awaitable[T]]
    ) -> list[tuple[Replica, T | BaseException]]:
        """Run a write on every replica at once; each replica's result or error."""
        results = await asyncio.gather(*(fn(r.stub) for r in self.replicas), return_exceptions=True)
        for replica, result in zip(self.replicas, results, strict=True):
            if isinstance(result, BaseException):
                self._failed(replica)
        return list(zip(self.replicas, results, strict=True))

    async def replica_stats(self, replica: Replica, timeout: float) -> index_pb2.ShardStats | str:
        """One replica's statistics of this shard, or why it gave none (unreachable, or serves another shard)."""
        try:
            reply = await replica.stub.GetShardStats(index_pb2.GetShardStatsRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return describe_error(exc)
        found = next((stats for stats in reply.shards if stats.shard == self.number), None)
        return found if found is not None else f"the process does not serve shard {self.number}"

    async def close(self) -> None:
        """Close every replica's channel."""
        for replica in self.replicas:
            await replica.channel.close()


# Room left in a message for the request's own framing when items are split by size.
_MESSAGE_HEADROOM = 64 * 1024


def fullest(answers: Iterable[index_pb2.ShardStats | str | None]) -> index_pb2.ShardStats | None:
    """The statistics of a shard's fullest answering replica (one that missed writes holds fewer items)."""
    return max((a for a in answers if isinstance(a, index_pb2.ShardStats)), key=lambda stats: stats.count, default=None)


def _split(items: list[encoder_pb2.EncodeItem], max_bytes: int, max_items: int) -> list[list[encoder_pb2.EncodeItem]]:
    """`items` in order, cut into runs of at most `max_items` (0: any number) within `max_bytes` encoded."""
    chunks: list[list[encoder_pb2.EncodeItem]] = [[]]
    size = 0
    for item in items:
        # The field tag and length prefix of a repeated message field: at most 6 bytes up to 2 GiB.
        item_size = item.ByteSize() + 6
        full = max_items > 0 and len(chunks[-1]) >= max_items
        if chunks[-1] and (size + item_size > max_bytes or full):
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += item_size
    return chunks


@dataclass
class Encoded:
    """One item's encoding: its vector, or why it has none; `truncated` when the encoder cut the input."""

    vector: list[float] | None
    error: GatewayError | None = None
    truncated: bool = False
    seconds: float = 0.0  # a sound's decoded length (0: not a sound, or an encoder that does not say)


@dataclass(frozen=True)
class AudioClip:
    """What the audio tower encodes (from its GetModelInfo): a clip's length, its rate, the hop of windows."""

    clip_seconds: float
    sample_rate: int
    hop_seconds: float


NO_IMAGE = (
    "this cluster has no image encoder (CROSSMODAL_GATEWAY_IMAGE_ENCODERS is empty: its bundle has no image "
    "tower), so it cannot encode images or video frames; serve a bundle with an image tower for that"
)
NO_AUDIO = (
    "this cluster has no audio encoder (CROSSMODAL_GATEWAY_AUDIO_ENCODERS is empty), so it cannot encode or "
    "search sounds; serve a bundle with an audio tower with services.encoder_audio and list its address in "
    "CROSSMODAL_GATEWAY_AUDIO_ENCODERS (`crossmodal up` does both when the bundle has an audio tower)"
)


@dataclass
class Backends:
    """Everything the gateway calls, once the encoders have agreed on the model they serve."""

    text: EncoderPool
    image: EncoderPool | None  # None for a bundle without an image tower (CROSSMODAL_GATEWAY_IMAGE_ENCODERS)
    shards: list[ShardClient]
    placement: Placement
    model_id: str
    dim: int
    # The audio tower's pool and clip, when the cluster has one (CROSSMODAL_GATEWAY_AUDIO_ENCODERS).
    audio: EncoderPool | None = None
    audio_clip: AudioClip | None = None

    def image_pool(self) -> EncoderPool:
        """The image encoders; FAILED_PRECONDITION when the cluster has none."""
        if self.image is None:
            raise GatewayError(grpc.StatusCode.FAILED_PRECONDITION, NO_IMAGE)
        return self.image

    def audio_pool(self) -> tuple[EncoderPool, AudioClip]:
        """The audio encoders and their clip; FAILED_PRECONDITION when the cluster has none."""
        if self.audio is None or self.audio_clip is None:
            raise GatewayError(grpc.StatusCode.FAILED_PRECONDITION, NO_AUDIO)
        return self.audio, self.audio_clip

    async def encode(self, pool: EncoderPool, items: list[encoder_pb2.EncodeItem], timeout: float) -> list[Encoded]:
        """Encode `items` with one pool; per item, its vector or the error to report for it.

        Items that would not fit in one call go in several calls at once, the order kept: more than the
        encoders take per call (ENCODER_MAX_REQUEST_ITEMS), or more bytes than one message holds (32
        camera photos of 4 MB are 128 MB, twice the default CROSSMODAL_MAX_MESSAGE_BYTES).
        """
        chunks = _split(items, pool.max_message_bytes - _MESSAGE_HEADROOM, pool.max_request_items)
        if len(chunks) == 1:
            return await self._encode_call(pool, items, timeout)
        parts = await asyncio.gather(*(self._encode_call(pool, chunk, timeout) for chunk in chunks))
        return [encoded for part in parts for encoded in part]

    async def _encode_call(
        self, pool: EncoderPool, items: list[encoder_pb2.EncodeItem], timeout: float
    ) -> list[Encoded]:
        started = time.perf_counter()
        try:
            response = await pool.encode(items, timeout)
            ENCODE_SECONDS.labels(pool.modality).observe(time.perf_counter() - started)
        except (grpc.aio.AioRpcError, BackendError) as exc:
            error = GatewayError(status_of(exc)[0], f"{pool.modality} encoder failed: {describe_error(exc)}")
            return [Encoded(None, error)] * len(items)
        if response.model_id != self.model_id:
            error = GatewayError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{pool.modality} encoder serves model {response.model_id}, the collection uses {self.model_id}",
            )
            return [Encoded(None, error)] * len(items)
        return [
            Encoded(list(r.vector), truncated=r.truncated, seconds=r.seconds)
            if r.status.code == OK
            else Encoded(None, GatewayError(code_of(r.status.code), r.status.message))
            for r in response.results
        ]

    async def close(self) -> None:
        """Close every channel."""
        await self.text.close()
        for pool in (self.image, self.audio):
            if pool is not None:
                await pool.close()
        for shard in self.shards:
            await shard.close()
