"""Timed media (videos, long sounds): their parts encoded while the stream arrives, then stored all or nothing.

A video is stored as a record (id = the video's id, modality VIDEO) and its frames `<id>#frame=<n>`; a long
sound as a record (modality AUDIO) and its windows `<id>#window=<n>`; a video with sound has both kinds of
parts. Every part is routed by the record's id, so a record and its parts live in one partition and shard.
Nothing is written while a stream arrives: `EncodeQueue` sends each batch of parts to its tower as it fills
(up to INGEST_CONCURRENCY batches at once; the stream is not read while they are busy, so a fast client is
slowed by flow control) and keeps only the vectors. A stream refused on the way leaves nothing stored.

Once the stream ends, `store_timed` writes in an order that always lets a later Delete or re-ingest find
every part (docs/architecture.md, "Video"):

1. the record with, per kind of part, the larger of the old and the new count (metadata `video_frames`,
   `audio_windows`), so it covers every part that may exist during the write;
2. the parts, in batches of CROSSMODAL_MAX_BATCH;
3. the record again with the new counts;
4. the old version's parts past the new counts are deleted.

If step 2 or 3 fails, every part the record covers and the record are deleted (the old version had been
partly overwritten), and the call fails with the write's (retryable) status: the medium is either stored
whole or not at all, and sending it again stores it. A record without parts (a sound no longer than one
clip) is written once, as a plain item, after which the old version's parts are deleted the same way.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import structlog

from crossmodal.v1 import encoder_pb2, index_pb2, types_pb2
from services.common.placement import Placement, frame_id, window_id
from services.gateway.backends import Backends, EncoderPool
from services.gateway.config import GatewayConfig
from services.gateway.errors import GatewayError
from services.gateway.moments import AUDIO_WINDOWS_KEY, VIDEO_FRAMES_KEY
from services.gateway.writer import Writer, delete_in_batches

log = structlog.get_logger("gateway")
# The modalities of records that may have parts (a plain item of another modality never has any).
RECORD_MODALITIES = (types_pb2.MODALITY_VIDEO, types_pb2.MODALITY_AUDIO)


@dataclass(frozen=True)
class Track:
    """One kind of part: how its ids are made from the record's id, and the record's key that counts them."""

    name: str
    part_id: Callable[[str, int], str]
    count_key: str


FRAMES = Track("frames", frame_id, VIDEO_FRAMES_KEY)
WINDOWS = Track("windows", window_id, AUDIO_WINDOWS_KEY)
TRACKS = (FRAMES, WINDOWS)


def stored_count(item: index_pb2.IndexItem | None, track: Track) -> int:
    """How many parts of `track` a stored record says it has (0 for a plain item or none)."""
    if item is None or item.modality not in RECORD_MODALITIES:
        return 0
    value = item.metadata.get(track.count_key, "0")
    return int(value) if value.isdigit() else 0


def part_ids(items: dict[str, index_pb2.IndexItem]) -> list[str]:
    """The ids of every part the records among `items` count (what deleting them must delete first)."""
    return [t.part_id(i, n) for i, item in items.items() for t in TRACKS for n in range(stored_count(item, t))]


def part_items(
    record_id: str,
    track: Track,
    modality: types_pb2.Modality,
    vectors: Sequence[Sequence[float]],
    metadata: Sequence[dict[str, str]],
    tags: Sequence[str],
) -> list[index_pb2.IndexItem]:
    """A record's parts of one track, in order: each with its id, vector and metadata, and the record's tags."""
    return [
        index_pb2.IndexItem(id=track.part_id(record_id, n), modality=modality, vector=v, metadata=m, tags=tags)
        for n, (v, m) in enumerate(zip(vectors, metadata, strict=True))
    ]


def mean_vector(vectors: Sequence[Sequence[float]]) -> list[float]:
    """The normalised mean of the parts' vectors: a record's vector ("more like this" and Get have one)."""
    mean = np.mean(np.asarray(vectors, dtype=np.float32), axis=0)
    norm = float(np.linalg.norm(mean))
    return (mean / norm).tolist() if norm > 1e-6 and math.isfinite(norm) else list(vectors[0])


class EncodeQueue:
    """One stream's parts, batched per track and encoded in the background; only their vectors are kept."""

    def __init__(self, config: GatewayConfig, backends: Backends) -> None:
        self.config = config
        self.backends = backends
        self._slots = asyncio.Semaphore(config.ingest_concurrency)
        self._pending: dict[Track, tuple[EncoderPool, list[encoder_pb2.EncodeItem], list[str]]] = {}
        self._jobs: dict[Track, list[asyncio.Task[list[list[float]]]]] = {}

    async def add(self, track: Track, pool: EncoderPool, item: encoder_pb2.EncodeItem, label: str) -> None:
        """Queue one part (`label` names it in an error); a full batch goes to the encoder now."""
        _, items, labels = self._pending.setdefault(track, (pool, [], []))
        items.append(item)
        labels.append(label)
        if len(items) >= self.config.ingest_batch:
            await self._submit(track)

    async def _submit(self, track: Track) -> None:
        pool, items, labels = self._pending.pop(track)
        await self._slots.acquire()  # backpressure: the stream is not read while every slot is busy
        for job in (j for jobs in self._jobs.values() for j in jobs):
            # A part already refused ends the call now, not after the client has sent the rest of it.
            if job.done() and not job.cancelled() and job.exception() is not None:
                self._slots.release()
                raise job.exception()  # type: ignore[misc]
        self._jobs.setdefault(track, []).append(asyncio.ensure_future(self._encode(pool, items, labels)))

    async def _encode(
        self, pool: EncoderPool, items: list[encoder_pb2.EncodeItem], labels: list[str]
    ) -> list[list[float]]:
        try:
            encoded = await self.backends.encode(pool, items, self.config.encode_timeout_ms / 1000)
        finally:
            self._slots.release()
        vectors = []
        for label, result in zip(labels, encoded, strict=True):
            if result.error is not None:
                raise GatewayError(result.error.code, f"{label}: {result.error.message}")
            assert result.vector is not None
            vectors.append(result.vector)
        return vectors

    async def vectors(self) -> dict[Track, list[list[float]]]:
        """Every part's vector per track, in the order the parts were added, once all are encoded."""
        for track in list(self._pending):
            await self._submit(track)
        out: dict[Track, list[list[float]]] = {}
        for track, jobs in self._jobs.items():
            out[track] = [v for batch in await asyncio.gather(*jobs) for v in batch]
        return out

    def cancel(self) -> None:
        """Stop every encoding still running (the stream failed: nothing will be stored)."""
        for job in (j for jobs in self._jobs.values() for j in jobs):
            job.cancel()


@dataclass
class Stored:
    """Where a timed medium went: its shard, its newest log positions, and per track the old parts removed."""

    shard: int
    positions: list[types_pb2.LogPosition]
    replaced: dict[Track, int] = field(default_factory=dict)


async def store_timed(
    writer: Writer,
    placement: Placement,
    max_batch: int,
    record: index_pb2.IndexItem,
    parts: dict[Track, list[index_pb2.IndexItem]],
) -> Stored:
    """Write `record` (without count keys) and its `parts` in the order above, replacing an older version."""
    record_id = record.id
    shard = placement.shard_of(record_id)
    old = (await writer.latest([record_id])).get(record_id)
    old_counts = {t: stored_count(old, t) for t in TRACKS}
    new_counts = {t: len(parts.get(t, [])) for t in TRACKS}
    covered = {t: max(old_counts[t], new_counts[t]) for t in TRACKS}

    def counted(counts: dict[Track, int]) -> index_pb2.IndexItem:
        item = index_pb2.IndexItem()
        item.CopyFrom(record)
        for track, count in counts.items():
            if count:
                item.metadata[track.count_key] = str(count)
        return item

    positions: list[types_pb2.LogPosition] = []
    if any(covered.values()):
        await _write(writer, shard, [counted(covered)], positions)
    try:
        items = [p for t in TRACKS for p in parts.get(t, [])]
        for start in range(0, len(items), max_batch):
            await _write(writer, shard, items[start : start + max_batch], positions)
        await _write(writer, shard, [counted(new_counts)], positions)
    except GatewayError:
        await _roll_back(writer, max_batch, record_id, covered)
        raise
    stale = [t.part_id(record_id, n) for t in TRACKS for n in range(new_counts[t], old_counts[t])]
    positions.extend((await delete_in_batches(writer, stale, max_batch)).positions)
    replaced = {t: max(old_counts[t] - new_counts[t], 0) for t in TRACKS}
    return Stored(shard, _latest(positions), replaced)


async def _write(
    writer: Writer, shard: int, items: list[index_pb2.IndexItem], positions: list[types_pb2.LogPosition]
) -> None:
    for outcome in await writer.upsert(shard, items):
        if outcome.error is not None:
            raise outcome.error
        if outcome.position is not None:
            positions.append(outcome.position)


async def _roll_back(writer: Writer, max_batch: int, record_id: str, covered: dict[Track, int]) -> None:
    """Delete what a failed write may have left; if that fails too, the record still covers it all."""
    ids = [t.part_id(record_id, n) for t in TRACKS for n in range(covered[t])]
    try:
        await delete_in_batches(writer, [*ids, record_id], max_batch)
    except GatewayError as exc:
        log.warning(
            "roll-back failed; the record still counts every part, so a retry or Delete removes them",
            id=record_id[:80],
            error=exc.message,
        )


def _latest(positions: list[types_pb2.LogPosition]) -> list[types_pb2.LogPosition]:
    """The newest position per partition (a medium's writes all go to one partition)."""
    newest: dict[int, types_pb2.LogPosition] = {}
    for p in positions:
        if p.partition not in newest or p.sequence > newest[p.partition].sequence:
            newest[p.partition] = p
    return list(newest.values())
