"""The IngestVideo stream: check a video's header, frames and audio track, encode them, then store them all.

One `VideoIngest` serves one call. Frames go to the image tower and the audio track (PCM chunks, when the
header gives `audio_sample_rate`) is cut into windows for the audio tower as the stream arrives
(`timed.EncodeQueue`, `audio.PcmWindows`); once the stream ends, `timed.store_timed` writes the video's
record (modality VIDEO, the mean frame), its frames `<id>#frame=<n>` and its audio windows
`<id>#window=<n>` (modality AUDIO, `video_id`) all or nothing, replacing an earlier version.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog

from crossmodal.v1 import encoder_pb2, gateway_pb2, index_pb2, types_pb2
from services.common.limits import LimitError
from services.gateway.audio import PcmWindows, queue_windows, window_items
from services.gateway.backends import Backends
from services.gateway.config import GatewayConfig
from services.gateway.metrics import AUDIO_WINDOWS, VIDEO_FRAMES, VIDEO_INGESTS
from services.gateway.moments import (
    FRAME_INTERVAL_KEY,
    FRAME_SECONDS_KEY,
    SCENE_CHANGE_KEY,
    VIDEO_DURATION_KEY,
    VIDEO_ID_KEY,
)
from services.gateway.timed import FRAMES, WINDOWS, EncodeQueue, mean_vector, part_items, store_timed
from services.gateway.validation import check_video_frame, check_video_header
from services.gateway.writer import Writer

log = structlog.get_logger("gateway")
VIDEO = types_pb2.MODALITY_VIDEO


class VideoIngest:
    """Turns one IngestVideo stream into a stored video, or an error with nothing stored."""

    def __init__(self, config: GatewayConfig, backends: Backends, writer: Writer) -> None:
        self.config = config
        self.backends = backends
        self.writer = writer
        self._queue = EncodeQueue(config, backends)
        self._sound: PcmWindows | None = None

    async def run(self, requests: AsyncIterator[gateway_pb2.IngestVideoRequest]) -> gateway_pb2.IngestVideoResponse:
        """Read, check and encode the whole video, then store it; raises GatewayError or LimitError."""
        try:
            header, frames = await self._read(requests)
            vectors = await self._queue.vectors()
        except BaseException:
            self._queue.cancel()
            raise
        try:
            response = await self._store(header, frames, vectors.get(FRAMES, []), vectors.get(WINDOWS, []))
        except BaseException:
            VIDEO_INGESTS.labels("failed").inc()
            raise
        VIDEO_INGESTS.labels("stored").inc()
        VIDEO_FRAMES.inc(len(frames))
        AUDIO_WINDOWS.inc(response.audio_windows)
        return response

    async def _read(
        self, requests: AsyncIterator[gateway_pb2.IngestVideoRequest]
    ) -> tuple[gateway_pb2.VideoHeader, list[gateway_pb2.VideoFrame]]:
        config = self.config
        header: gateway_pb2.VideoHeader | None = None
        kept: list[gateway_pb2.VideoFrame] = []  # without their images, which are dropped once sent
        previous = 0.0
        async for message in requests:
            part = message.WhichOneof("part")
            if header is None:
                if part != "header":
                    raise LimitError("an IngestVideo stream starts with the video's header, then its frames")
                header = message.header
                check_video_header(header, config)
                continue
            if part == "audio":
                await self._audio(header, message.audio)
                continue
            if part != "frame":
                raise LimitError(f"video {header.id[:40]!r}: a second header; send one video per IngestVideo call")
            frame = message.frame
            check_video_frame(frame, header, previous, len(kept), config)
            previous = frame.seconds
            kept.append(gateway_pb2.VideoFrame(seconds=frame.seconds, scene_change=frame.scene_change))
            label = f"frame {len(kept) - 1} at {frame.seconds:.3f} s"
            pool = self.backends.image_pool()
            await self._queue.add(FRAMES, pool, encoder_pb2.EncodeItem(image=frame.image), label)
        if header is None:
            raise LimitError("the IngestVideo stream ended before the video's header")
        if not kept:
            raise LimitError(f"video {header.id[:40]!r} has no frames")
        if self._sound is not None:
            pool, _ = self.backends.audio_pool()
            await queue_windows(self._queue, pool, self._sound, self._sound.finish())
        return header, kept

    async def _audio(self, header: gateway_pb2.VideoHeader, chunk: gateway_pb2.AudioChunk) -> None:
        """Take one chunk of the video's audio track, cutting and queueing the windows it completes."""
        pool, clip = self.backends.audio_pool()
        if self._sound is None:
            if not header.audio_sample_rate:
                raise LimitError(f"video {header.id[:40]!r}: audio samples, but the header gives no audio_sample_rate")
            name = f"video {header.id[:40]!r}"
            self._sound = PcmWindows(name, header.audio_sample_rate, header.duration_seconds, clip, self.config)
        await queue_windows(self._queue, pool, self._sound, self._sound.add(chunk))

    async def _store(
        self,
        header: gateway_pb2.VideoHeader,
        frames: list[gateway_pb2.VideoFrame],
        vectors: list[list[float]],
        sound_vectors: list[list[float]],
    ) -> gateway_pb2.IngestVideoResponse:
        video_id = header.id
        interval = header.sample_interval_seconds or 1.0
        duration = header.duration_seconds or frames[-1].seconds + interval
        common = {**header.metadata, VIDEO_DURATION_KEY: f"{duration:.3f}", FRAME_INTERVAL_KEY: f"{interval:g}"}
        tags = list(header.tags)
        times = [
            {
                **common,
                VIDEO_ID_KEY: video_id,
                FRAME_SECONDS_KEY: f"{frame.seconds:.3f}",
                **({SCENE_CHANGE_KEY: "1"} if frame.scene_change else {}),
            }
            for frame in frames
        ]
        items = part_items(video_id, FRAMES, VIDEO, vectors, times, tags)
        windows = (
            window_items(video_id, self._sound, sound_vectors, common, tags, VIDEO_ID_KEY)
            if self._sound is not None
            else []
        )
        # The record's vector: the mean frame, so "more like this video" and Get have something meaningful.
        record = index_pb2.IndexItem(
            id=video_id, modality=VIDEO, vector=mean_vector(vectors), metadata=common, tags=tags
        )
        stored = await store_timed(
            self.writer,
            self.backends.placement,
            self.config.limits.max_batch,
            record,
            {FRAMES: items, WINDOWS: windows},
        )
        log.info(
            "video stored",
            video=video_id[:80],
            frames=len(items),
            audio_windows=len(windows),
            replaced=stored.replaced[FRAMES],
            shard=stored.shard,
        )
        return gateway_pb2.IngestVideoResponse(
            id=video_id,
            frames=len(items),
            shard=stored.shard,
            positions=stored.positions,
            replaced_frames=stored.replaced[FRAMES],
            audio_windows=len(windows),
            replaced_audio_windows=stored.replaced[WINDOWS],
        )
