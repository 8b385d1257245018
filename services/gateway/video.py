"""The IngestVideo stream: check a video's header and frames, encode every frame, then store them all.

One `VideoIngest` serves one call. Nothing is written while frames arrive: each batch of frames goes to
the image tower as it fills (up to INGEST_CONCURRENCY batches at once; the stream is not read while they
are busy, so a fast client is slowed by flow control) and only its vectors are kept. A video refused on
the way (a limit, a frame the tower cannot decode, a stream that breaks) leaves nothing stored.

Once the stream ends, the video is written in an order that always lets a later Delete or re-ingest find
every frame (docs/architecture.md, "Video"):

1. the video's record (id = the video's id, modality VIDEO, metadata `video_frames`) with the larger of
   the old and the new frame count, so it covers every frame that may exist during the write;
2. the frames `<id>#frame=0..n-1`, all routed by the video's id to one shard and partition;
3. the record again with the new count;
4. the old version's frames past the new count are deleted.

If step 2 or 3 fails, every frame the record covers and the record are deleted (the old version had
been partly overwritten), and the call fails with the write's (retryable) status: the video is either
stored whole or not at all, and sending it again stores it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence

import numpy as np
import structlog

from crossmodal.v1 import encoder_pb2, gateway_pb2, index_pb2, types_pb2
from services.common.limits import LimitError
from services.common.placement import frame_id
from services.gateway.backends import Backends
from services.gateway.config import GatewayConfig
from services.gateway.errors import GatewayError
from services.gateway.metrics import VIDEO_FRAMES, VIDEO_INGESTS
from services.gateway.moments import (
    FRAME_INTERVAL_KEY,
    FRAME_SECONDS_KEY,
    SCENE_CHANGE_KEY,
    VIDEO_DURATION_KEY,
    VIDEO_FRAMES_KEY,
    VIDEO_ID_KEY,
)
from services.gateway.validation import check_video_frame, check_video_header
from services.gateway.writer import Writer, delete_in_batches

log = structlog.get_logger("gateway")
VIDEO = types_pb2.MODALITY_VIDEO


class VideoIngest:
    """Turns one IngestVideo stream into a stored video, or an error with nothing stored."""

    def __init__(self, config: GatewayConfig, backends: Backends, writer: Writer) -> None:
        self.config = config
        self.backends = backends
        self.writer = writer
        self._slots = asyncio.Semaphore(config.ingest_concurrency)
        self._jobs: list[asyncio.Task[list[list[float]]]] = []

    async def run(self, requests: AsyncIterator[gateway_pb2.IngestVideoRequest]) -> gateway_pb2.IngestVideoResponse:
        """Read, check and encode the whole video, then store it; raises GatewayError or LimitError."""
        try:
            header, frames = await self._read(requests)
            vectors = [v for job in await asyncio.gather(*self._jobs) for v in job]
        except BaseException:
            for job in self._jobs:
                job.cancel()
            raise
        try:
            response = await self._store(header, frames, vectors)
        except BaseException:
            VIDEO_INGESTS.labels("failed").inc()
            raise
        VIDEO_INGESTS.labels("stored").inc()
        VIDEO_FRAMES.inc(len(frames))
        return response

    async def _read(
        self, requests: AsyncIterator[gateway_pb2.IngestVideoRequest]
    ) -> tuple[gateway_pb2.VideoHeader, list[gateway_pb2.VideoFrame]]:
        config = self.config
        header: gateway_pb2.VideoHeader | None = None
        kept: list[gateway_pb2.VideoFrame] = []  # without their images, which are dropped once sent
        batch: list[gateway_pb2.VideoFrame] = []
        previous = 0.0
        async for message in requests:
            part = message.WhichOneof("part")
            if header is None:
                if part != "header":
                    raise LimitError("an IngestVideo stream starts with the video's header, then its frames")
                header = message.header
                check_video_header(header, config.limits, config.video_max_seconds)
                continue
            if part != "frame":
                raise LimitError(f"video {header.id[:40]!r}: a second header; send one video per IngestVideo call")
            frame = message.frame
            check_video_frame(frame, header, previous, len(kept), config)
            previous = frame.seconds
            batch.append(frame)
            kept.append(gateway_pb2.VideoFrame(seconds=frame.seconds, scene_change=frame.scene_change))
            if len(batch) >= config.ingest_batch:
                await self._encode(batch, len(kept) - len(batch))
                batch = []
        if header is None:
            raise LimitError("the IngestVideo stream ended before the video's header")
        if not kept:
            raise LimitError(f"video {header.id[:40]!r} has no frames")
        if batch:
            await self._encode(batch, len(kept) - len(batch))
        return header, kept

    async def _encode(self, batch: Sequence[gateway_pb2.VideoFrame], first: int) -> None:
        await self._slots.acquire()  # backpressure: the stream is not read while every slot is busy
        for job in self._jobs:
            # A frame already refused ends the call now, not after the client has sent the rest of the video.
            if job.done() and not job.cancelled() and job.exception() is not None:
                self._slots.release()
                raise job.exception()  # type: ignore[misc]
        self._jobs.append(asyncio.ensure_future(self._encode_batch(list(batch), first)))

    async def _encode_batch(self, batch: list[gateway_pb2.VideoFrame], first: int) -> list[list[float]]:
        try:
            items = [encoder_pb2.EncodeItem(image=f.image) for f in batch]
            encoded = await self.backends.encode(self.backends.image, items, self.config.encode_timeout_ms / 1000)
        finally:
            self._slots.release()
        vectors = []
        for n, (frame, result) in enumerate(zip(batch, encoded, strict=True)):
            if result.error is not None:
                raise GatewayError(
                    result.error.code, f"frame {first + n} at {frame.seconds:.3f} s: {result.error.message}"
                )
            assert result.vector is not None
            vectors.append(result.vector)
        return vectors

    async def _store(
        self, header: gateway_pb2.VideoHeader, frames: list[gateway_pb2.VideoFrame], vectors: list[list[float]]
    ) -> gateway_pb2.IngestVideoResponse:
        video_id, placement = header.id, self.backends.placement
        shard = placement.shard_of(video_id)
        old = (await self.writer.latest([video_id])).get(video_id)
        old_frames = int(old.metadata.get(VIDEO_FRAMES_KEY, "0")) if old is not None and old.modality == VIDEO else 0
        interval = header.sample_interval_seconds or 1.0
        duration = header.duration_seconds or frames[-1].seconds + interval
        common = {**header.metadata, VIDEO_DURATION_KEY: f"{duration:.3f}", FRAME_INTERVAL_KEY: f"{interval:g}"}
        items = [
            index_pb2.IndexItem(
                id=frame_id(video_id, n),
                modality=VIDEO,
                vector=vector,
                metadata={
                    **common,
                    VIDEO_ID_KEY: video_id,
                    FRAME_SECONDS_KEY: f"{frame.seconds:.3f}",
                    **({SCENE_CHANGE_KEY: "1"} if frame.scene_change else {}),
                },
                tags=header.tags,
            )
            for n, (frame, vector) in enumerate(zip(frames, vectors, strict=True))
        ]
        mean = np.mean(np.asarray(vectors, dtype=np.float32), axis=0)
        norm = float(np.linalg.norm(mean))
        # The record's vector: the mean frame, so "more like this video" and Get have something meaningful.
        record_vector = (mean / norm).tolist() if norm > 1e-6 and math.isfinite(norm) else vectors[0]

        def record(count: int) -> index_pb2.IndexItem:
            metadata = {**common, VIDEO_FRAMES_KEY: str(count)}
            return index_pb2.IndexItem(
                id=video_id, modality=VIDEO, vector=record_vector, metadata=metadata, tags=header.tags
            )

        positions: list[types_pb2.LogPosition] = []
        covered = max(old_frames, len(items))
        await self._write(shard, [record(covered)], positions)
        try:
            for start in range(0, len(items), self.config.limits.max_batch):
                await self._write(shard, items[start : start + self.config.limits.max_batch], positions)
            await self._write(shard, [record(len(items))], positions)
        except GatewayError:
            await self._roll_back(video_id, covered)
            raise
        stale = [frame_id(video_id, n) for n in range(len(items), old_frames)]
        positions.extend((await delete_in_batches(self.writer, stale, self.config.limits.max_batch)).positions)
        log.info("video stored", video=video_id[:80], frames=len(items), replaced=len(stale), shard=shard)
        return gateway_pb2.IngestVideoResponse(
            id=video_id, frames=len(items), shard=shard, positions=_latest(positions), replaced_frames=len(stale)
        )

    async def _write(
        self, shard: int, items: list[index_pb2.IndexItem], positions: list[types_pb2.LogPosition]
    ) -> None:
        for outcome in await self.writer.upsert(shard, items):
            if outcome.error is not None:
                raise outcome.error
            if outcome.position is not None:
                positions.append(outcome.position)

    async def _roll_back(self, video_id: str, covered: int) -> None:
        """Delete what a failed write may have left; if that fails too, the record still covers it all."""
        ids = [frame_id(video_id, n) for n in range(covered)]
        try:
            await delete_in_batches(self.writer, [*ids, video_id], self.config.limits.max_batch)
        except GatewayError as exc:
            log.warning(
                "video roll-back failed; its record still lists every frame, so a retry or Delete removes them",
                video=video_id[:80],
                error=exc.message,
            )


def _latest(positions: list[types_pb2.LogPosition]) -> list[types_pb2.LogPosition]:
    """The newest position per partition (a video's writes all go to one partition)."""
    newest: dict[int, types_pb2.LogPosition] = {}
    for p in positions:
        if p.partition not in newest or p.sequence > newest[p.partition].sequence:
            newest[p.partition] = p
    return list(newest.values())


def video_frame_ids(items: dict[str, index_pb2.IndexItem]) -> list[str]:
    """The frame ids of the videos among `items` (as their records count them); other items have none."""
    ids: list[str] = []
    for video_id, item in items.items():
        if item.modality == VIDEO and VIDEO_FRAMES_KEY in item.metadata:
            count = int(item.metadata[VIDEO_FRAMES_KEY]) if item.metadata[VIDEO_FRAMES_KEY].isdigit() else 0
            ids.extend(frame_id(video_id, n) for n in range(count))
    return ids
