"""The public GatewayService: each RPC checks its request, then hands it to the search, ingest or write path.

Errors are raised, never returned: unary RPCs end through `errors.ErrorMapping`, Ingest acknowledges
each item with `errors.status_of` of what went wrong, so every status comes from one table.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc

from crossmodal.v1 import gateway_pb2, gateway_pb2_grpc, index_pb2
from services.gateway.audio import AudioIngest
from services.gateway.backends import Backends, Replica, fullest
from services.gateway.config import GatewayConfig
from services.gateway.errors import GatewayError, status_of
from services.gateway.ingest import IngestPipeline
from services.gateway.reshard import NO_LOG, Resharder
from services.gateway.routing import Router
from services.gateway.search import Searcher
from services.gateway.timed import part_ids
from services.gateway.validation import check_search
from services.gateway.video import VideoIngest
from services.gateway.writer import Writer, delete_in_batches

T = TypeVar("T")


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    """Implements crossmodal.v1.GatewayService over the encoders and the shards."""

    backends: Backends
    searcher: Searcher
    router: Router | None
    writer: Writer

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.ready = False

    def attach(
        self, backends: Backends, writer: Writer, router: Router | None = None, resharder: Resharder | None = None
    ) -> None:
        """Give the servicer its backends and write path once the service has started; it serves from then on."""
        self.backends = backends
        self.searcher = Searcher(self.config, backends, router)
        self.router = router
        self.writer = writer
        self.resharder = resharder
        self.ready = True

    async def Search(
        self, request: gateway_pb2.SearchRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.SearchResponse:
        """Encode the query, ask every shard for its top-K within the deadline, and merge exactly."""
        check_search(request, self.config.limits, self.backends.dim)
        return await self.searcher.search(request, context.time_remaining())

    async def Ingest(
        self, request_iterator: AsyncIterator[gateway_pb2.IngestRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.IngestResponse]:
        """Batch streamed items to the encoders, write each to its shard, acknowledge each item."""
        if not self.ready:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the gateway is still starting")
        pipeline = IngestPipeline(self.config, self.backends, self.writer)
        try:
            async for ack in pipeline.run(request_iterator):
                yield ack
            return
        except GatewayError as exc:
            code, message = status_of(exc)
        await context.abort(code, message)

    async def IngestVideo(
        self, request_iterator: AsyncIterator[gateway_pb2.IngestVideoRequest], context: grpc.aio.ServicerContext
    ) -> gateway_pb2.IngestVideoResponse:
        """Encode a streamed video's frames (and sound), then store them all (replacing an earlier version) or none."""
        return await self._store_stream(
            lambda: VideoIngest(self.config, self.backends, self.writer).run(request_iterator), context
        )

    async def IngestAudio(
        self, request_iterator: AsyncIterator[gateway_pb2.IngestAudioRequest], context: grpc.aio.ServicerContext
    ) -> gateway_pb2.IngestAudioResponse:
        """Cut a streamed sound into windows, encode them, then store them all (replacing an earlier version)."""
        return await self._store_stream(
            lambda: AudioIngest(self.config, self.backends, self.writer).run(request_iterator), context
        )

    async def _store_stream(self, run: Callable[[], Awaitable[T]], context: grpc.aio.ServicerContext) -> T:
        """Run a client-streaming store (a video, a sound) and end the call with the status of what failed."""
        if not self.ready:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the gateway is still starting")
        try:
            return await run()
        except Exception as exc:  # noqa: BLE001 - every failure gets its status from the one table
            code, message = status_of(exc)
        await context.abort(code, message)
        raise AssertionError("context.abort raises")  # for the type checker: abort is not typed NoReturn

    async def Delete(
        self, request: gateway_pb2.DeleteRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.DeleteResponse:
        """Delete ids from every replica of their shards; a video's or sound's id deletes its parts first."""
        ids = self.config.limits.check_ids(request.ids)
        frames = part_ids(await self.writer.latest(ids))
        positions = (await delete_in_batches(self.writer, frames, self.config.limits.max_batch)).positions
        outcome = await self.writer.delete(ids)
        return gateway_pb2.DeleteResponse(deleted=outcome.deleted, positions=[*positions, *outcome.positions])

    async def Get(self, request: gateway_pb2.GetRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.GetResponse:
        """Fetch stored items by id."""
        ids = self.config.limits.check_ids(request.ids)
        found = await self.searcher.get(ids, include_vectors=False, after=request.after)
        present = {item.id for _, item in found}
        return gateway_pb2.GetResponse(
            items=[
                gateway_pb2.StoredItem(id=i.id, modality=i.modality, metadata=i.metadata, tags=i.tags, shard=s)
                for s, i in found
            ],
            missing=[i for i in ids if i not in present],
        )

    async def Reshard(
        self, request: gateway_pb2.ReshardRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.ReshardProgress]:
        """Admin: move the log's partitions to `shards` shards online (or plan it), streaming progress."""
        if not self.ready:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the gateway is still starting")
        try:
            if self.resharder is None:
                raise GatewayError(grpc.StatusCode.FAILED_PRECONDITION, NO_LOG)
            async for progress in self.resharder.run(request.shards, request.dry_run):
                yield progress
            return
        except Exception as exc:  # noqa: BLE001 - every failure gets its status from the one table
            code, message = status_of(exc)
        await context.abort(code, message)

    async def GetStats(
        self, request: gateway_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetStatsResponse:
        """Ask every replica of every shard at once for its statistics, within the caller's deadline."""
        remaining = context.time_remaining()
        # A stats call is for an operator: a slow replica is worth waiting for as long as the caller allows.
        timeout = self.config.search_timeout_ms / 1000 if remaining is None else remaining
        shards = self.backends.shards
        answers = await asyncio.gather(
            *(shard.replica_stats(replica, timeout) for shard in shards for replica in shard.replicas)
        )
        out, total, start = [], 0, 0
        partition_items: dict[int, dict[int, int]] = {}
        for shard in shards:
            mine = answers[start : start + len(shard.replicas)]
            start += len(shard.replicas)
            # Replicas that missed writes hold fewer items; the shard holds what its fullest healthy one does.
            best = fullest(mine)
            count = best.count if best is not None else 0
            total += count
            partition_items[shard.number] = dict(best.partition_items) if best is not None else {}
            replicas = [_replica_info(r, a) for r, a in zip(shard.replicas, mine, strict=True)]
            out.append(gateway_pb2.GatewayShardStats(shard=shard.number, replicas=replicas, count=count))
        current = self.router.map if self.router is not None else None
        if current is not None:
            # During a reshard a moving partition is on its old and its new owner: count it once, at the shard
            # that answers for it at this map version.
            total = sum(partition_items.get(current.owner_of(p), {}).get(p, 0) for p in range(current.partitions))
        clip = self.backends.audio_clip
        return gateway_pb2.GetStatsResponse(
            model_id=self.backends.model_id,
            dim=self.backends.dim,
            shards=out,
            total_count=total,
            audio_sample_rate=clip.sample_rate if clip else 0,
            audio_clip_seconds=clip.clip_seconds if clip else 0.0,
        )


def _replica_info(replica: Replica, answer: index_pb2.ShardStats | str) -> gateway_pb2.ReplicaStats:
    """A replica's line in GetStats: its statistics, or unhealthy with why it gave none."""
    if isinstance(answer, str):
        return gateway_pb2.ReplicaStats(address=replica.address, healthy=False, error=answer)
    return gateway_pb2.ReplicaStats(
        address=replica.address,
        healthy=True,
        count=answer.count,
        snapshot_age_seconds=answer.snapshot_age_seconds,
        log_lag=answer.log_lag,
        log_lag_seconds=answer.log_lag_seconds,
        applied=answer.applied,
    )
