"""The Python SDK of crossmodal: a typed, blocking client of the public GatewayService."""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import grpc

from crossmodal.transport import RECONNECT_OPTIONS, RETRYABLE, code_of
from crossmodal.v1 import gateway_pb2, gateway_pb2_grpc, types_pb2

if TYPE_CHECKING:
    from crossmodal.video import VideoOptions

Target = Literal["any", "image", "text", "video", "audio"]
_MODALITY = {
    "any": types_pb2.MODALITY_UNSPECIFIED,
    "image": types_pb2.MODALITY_IMAGE,
    "text": types_pb2.MODALITY_TEXT,
    "video": types_pb2.MODALITY_VIDEO,
    "audio": types_pb2.MODALITY_AUDIO,
}
# PCM bytes per AudioChunk (2 s at 16 kHz), well within the gateway's CROSSMODAL_GATEWAY_AUDIO_MAX_CHUNK_BYTES.
AUDIO_CHUNK_BYTES = 64 * 1024
# The rate sounds are decoded to when the cluster has no audio tower (the gateway refuses them then anyway).
_FALLBACK_RATE = 48_000
_NAMES = {number: name for name, number in _MODALITY.items()}


@dataclass(frozen=True)
class Hit:
    """One search result; a moment (target "video" or "audio") also has its span and best part's time."""

    id: str
    score: float
    modality: str
    metadata: dict[str, str]
    tags: list[str]
    start: float = 0.0
    end: float = 0.0
    best: float = 0.0


@dataclass(frozen=True)
class StoredItem:
    """One item as stored, returned by Client.get: no score, since nothing was ranked."""

    id: str
    modality: str
    metadata: dict[str, str]
    tags: list[str]
    shard: int


@dataclass(frozen=True)
class SearchResult:
    """The answer to a search: hits best first, and the shards that did not answer."""

    hits: list[Hit]
    partial_shards: list[int]
    model_id: str
    # The query sound was longer than the audio tower's clip: only its first clip was searched with.
    query_truncated: bool = False


@dataclass(frozen=True)
class Item:
    """An item to ingest: an id and one of image bytes, a text or sound file bytes, with metadata and tags.

    A sound sent this way is stored whole, encoded from its first clip; `Client.ingest_audio_file` stores
    a sound of any length (as windows found as moments) and records its length.
    """

    id: str
    image: bytes | None = None
    text: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    tags: Sequence[str] = ()
    audio: bytes | None = None

    @classmethod
    def from_image_file(
        cls, item_id: str, path: str | Path, metadata: Mapping[str, str] | None = None, tags: Sequence[str] = ()
    ) -> Item:
        """An image item read from a file."""
        return cls(item_id, image=Path(path).read_bytes(), metadata=dict(metadata or {}), tags=tuple(tags))


@dataclass(frozen=True)
class VideoFrame:
    """One sampled frame of a video to ingest: its time, the frame as encoded image bytes, and whether a cut
    (not the sampling rate) picked it."""

    seconds: float
    image: bytes
    scene_change: bool = False


@dataclass(frozen=True)
class VideoAck:
    """A stored video: its id, the frames stored, its shard, and the frames of an earlier version removed."""

    id: str
    frames: int
    shard: int
    replaced_frames: int
    # Windows of its audio track stored (0: sent without sound), and those of an earlier version removed.
    audio_windows: int = 0
    replaced_audio_windows: int = 0


@dataclass(frozen=True)
class AudioAck:
    """A stored sound: its id, its windows (0: stored whole, no longer than one clip), its shard, the windows
    of an earlier version removed, and its length in seconds."""

    id: str
    windows: int
    shard: int
    replaced_windows: int
    duration: float


@dataclass(frozen=True)
class Position:
    """Where a write is in the cluster's write log: its partition and sequence (a read-your-writes token)."""

    partition: int
    sequence: int


@dataclass(frozen=True)
class Ack:
    """The acknowledgement of one ingested item."""

    id: str
    ok: bool
    code: grpc.StatusCode
    message: str
    shard: int
    failed_replicas: list[str]
    # Where the write is in the log (None without a log, or when not OK).
    position: Position | None = None

    @property
    def retryable(self) -> bool:
        """Whether sending the item again may succeed."""
        return self.code in RETRYABLE


@dataclass(frozen=True)
class ReplicaInfo:
    """The health of one replica."""

    address: str
    healthy: bool
    count: int
    error: str
    # With a write log: writes it has not applied yet, and how old the oldest of them is.
    log_lag: int = 0
    log_lag_seconds: float = 0.0
    # With a write log: the last sequence it applied, by partition its shard owns.
    applied: dict[int, int] = field(default_factory=dict)

    def has_applied(self, positions: Iterable[Position]) -> bool:
        """Whether it applied every position of `positions` in a partition its shard owns."""
        return all(self.applied[p.partition] >= p.sequence for p in positions if p.partition in self.applied)


@dataclass(frozen=True)
class Stats:
    """Collection statistics."""

    model_id: str
    dim: int
    total_count: int
    shards: dict[int, list[ReplicaInfo]]
    # The audio tower's sample rate and clip length; 0 when the cluster has no audio encoder.
    audio_sample_rate: int = 0
    audio_clip_seconds: float = 0.0


class IngestJournal:
    """The ids a resumable ingest saw acknowledged OK: kept in memory and, given a path, in an append-only file.

    The file holds one JSON-encoded id per line, appended and flushed as each OK acknowledgement arrives,
    so a client process that is killed loses at most what the OS had not yet written. A missing entry is
    always safe (the item is sent again, and re-sending an id replaces the stored item); a torn last
    line, the only damage a crash can do to an append, is cut off when the file is opened. Lines that do
    not start with a quote are taken as plain ids, so files of the older one-id-per-line format still load.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._acked: set[str] = set()
        self._file: IO[str] | None = None
        if self.path is not None:
            if self.path.exists():
                self._acked.update(self._read(self.path))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")

    @staticmethod
    def _read(path: Path) -> list[str]:
        data = path.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            # A crash in the middle of an append left a torn last line: drop it, so the next append
            # starts a line of its own instead of gluing onto the fragment.
            os.truncate(path, complete)
        ids = []
        for line in data[:complete].decode("utf-8", errors="replace").splitlines():
            if line.startswith('"'):
                try:
                    value = json.loads(line)
                except json.JSONDecodeError:
                    continue  # damaged: not an acknowledgement, so the item is simply sent again
            else:
                value = line  # the older format: one plain id per line
            if isinstance(value, str) and value:
                ids.append(value)
        return ids

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._acked

    def __len__(self) -> int:
        return len(self._acked)

    @property
    def acknowledged(self) -> frozenset[str]:
        """The ids acknowledged OK so far (a copy)."""
        return frozenset(self._acked)

    def record(self, ack: Ack) -> None:
        """Remember `ack` if it is OK; failures are not remembered, so a resume sends those items again."""
        if not ack.ok or ack.id in self._acked:
            return
        self._acked.add(ack.id)
        if self._file is not None:
            self._file.write(json.dumps(ack.id) + "\n")
            self._file.flush()

    def pending(self, items: Iterable[Item]) -> Iterator[Item]:
        """The items of `items` whose id was not acknowledged OK, lazily and in order."""
        return (item for item in items if item.id not in self._acked)

    def sync(self) -> None:
        """fsync the journal file, for a caller that wants its progress to survive a machine crash too."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the journal file (the in-memory record stays usable)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> IngestJournal:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _audio_chunks(pcm: Iterable[bytes]) -> Iterator[gateway_pb2.AudioChunk]:
    """PCM byte strings as AudioChunks numbered by their first sample (at most AUDIO_CHUNK_BYTES each)."""
    first = 0
    for block in pcm:
        for start in range(0, len(block), AUDIO_CHUNK_BYTES):
            piece = block[start : start + AUDIO_CHUNK_BYTES]
            yield gateway_pb2.AudioChunk(pcm=piece, first_sample=first)
            first += len(piece) // 2


def build_filter(
    equals: Mapping[str, str | Sequence[str]] | None = None, tags_all: Sequence[str] = (), tags_any: Sequence[str] = ()
) -> types_pb2.Filter:
    """A metadata filter: key equals a value (or is one of several values), and tag conditions."""
    clauses = [
        types_pb2.FilterClause(key=k, any_of=[v] if isinstance(v, str) else list(v)) for k, v in (equals or {}).items()
    ]
    return types_pb2.Filter(clauses=clauses, tags_all=list(tags_all), tags_any=list(tags_any))


class Client:
    """A blocking client of a crossmodal gateway.

    Read your writes: with a write log, the cluster's replicas apply writes a few milliseconds after they
    are acknowledged. The client remembers the log position of every write it saw acknowledged and, unless
    `read_your_writes=False`, sends them with each search and get, so its own writes are always found.
    `positions()` hands them to another client (`after=`), e.g. a later process.
    """

    def __init__(
        self,
        address: str,
        *,
        api_key: str | None = None,
        root_certificates: bytes | None = None,
        client_cert: bytes | None = None,
        client_key: bytes | None = None,
        tls: bool = False,
        timeout: float = 30.0,
        max_message_bytes: int = 64 * 1024 * 1024,
        read_your_writes: bool = True,
    ) -> None:
        self.read_your_writes = read_your_writes
        self._written: dict[int, int] = {}
        self._written_lock = threading.Lock()
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            *RECONNECT_OPTIONS,
        ]
        if tls or root_certificates is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates, client_key, client_cert)
            self._channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self.timeout = timeout
        self._audio_rate: int | None = None

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def positions(self) -> list[Position]:
        """The newest log position of this client's acknowledged writes in each partition."""
        with self._written_lock:
            return [Position(p, s) for p, s in sorted(self._written.items())]

    def _saw(self, position: types_pb2.LogPosition) -> Position:
        with self._written_lock:
            if position.sequence > self._written.get(position.partition, 0):
                self._written[position.partition] = position.sequence
        return Position(position.partition, position.sequence)

    def _after(self, after: Sequence[Position] | None) -> list[types_pb2.LogPosition]:
        """The positions a read must wait for: those given, and this client's own writes if it reads them."""
        wanted = {p.partition: p.sequence for p in after or ()}
        for own in self.positions() if self.read_your_writes else ():
            wanted[own.partition] = max(own.sequence, wanted.get(own.partition, 0))
        return [types_pb2.LogPosition(partition=p, sequence=s) for p, s in sorted(wanted.items())]

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def search(
        self,
        text: str | None = None,
        *,
        image: bytes | None = None,
        vector: Sequence[float] | None = None,
        like_id: str | None = None,
        audio: bytes | None = None,
        k: int = 10,
        target: Target = "any",
        filter: types_pb2.Filter | None = None,
        require_complete: bool = False,
        exact: bool = False,
        timeout: float | None = None,
        request_id: str | None = None,
        after: Sequence[Position] | None = None,
        include_video_frames: bool = False,
    ) -> SearchResult:
        """Search with exactly one of text, image, sound file bytes, vector or like_id; raises grpc.RpcError.

        target="video" answers K moments of videos (Hit.start, .end, .best in seconds; Hit.id the video's).
        target="audio" answers sounds: short ones whole (start 0, end their length), long sounds and videos'
        audio tracks as moments. With target="image", `include_video_frames` lets frames answer as images.
        """
        given = [x is not None for x in (text, image, vector, like_id, audio)]
        if sum(given) != 1:
            raise ValueError("give exactly one of text, image, audio, vector or like_id")
        request = gateway_pb2.SearchRequest(
            k=k,
            target=_MODALITY[target],
            require_complete=require_complete,
            exact=exact,
            after=self._after(after),
            include_video_frames=include_video_frames,
        )
        if filter is not None:
            request.filter.CopyFrom(filter)
        if text is not None:
            request.text = text
        elif image is not None:
            request.image = image
        elif audio is not None:
            request.audio = audio
        elif vector is not None:
            request.vector.values.extend(vector)
        else:
            request.like_id = like_id or ""
        metadata = self._metadata + ((("x-request-id", request_id),) if request_id else ())
        reply = self._stub.Search(request, timeout=timeout or self.timeout, metadata=metadata)
        return SearchResult(
            hits=[
                Hit(
                    r.id,
                    r.score,
                    _NAMES.get(r.modality, "any"),
                    dict(r.metadata),
                    list(r.tags),
                    r.start_seconds,
                    r.end_seconds,
                    r.best_seconds,
                )
                for r in reply.results
            ],
            partial_shards=list(reply.partial_shards),
            model_id=reply.model_id,
            query_truncated=reply.query_truncated,
        )

    def ingest(self, items: Iterable[Item], *, window: int = 256, timeout: float | None = None) -> Iterator[Ack]:
        """Stream items in and yield one Ack per item as they come back.

        At most `window` items are in flight (sent but not acknowledged), so a large or endless
        iterable is read only as fast as the cluster stores it. When the stream breaks (the gateway
        went away), grpc.RpcError is raised after the acks that did arrive; see ingest_resumable.
        """
        slots = threading.Semaphore(window)
        errors: queue.Queue[BaseException] = queue.Queue()
        ended = threading.Event()

        def requests() -> Iterator[gateway_pb2.IngestRequest]:
            try:
                for item in items:
                    slots.acquire()
                    if ended.is_set():
                        return
                    request = gateway_pb2.IngestRequest(id=item.id, metadata=dict(item.metadata), tags=list(item.tags))
                    if item.image is not None:
                        request.image = item.image
                    elif item.text is not None:
                        request.text = item.text
                    elif item.audio is not None:
                        request.audio = item.audio
                    yield request
            except BaseException as exc:  # surfaced to the caller after the stream ends
                errors.put(exc)

        stream = self._stub.Ingest(requests(), timeout=timeout, metadata=self._metadata)
        try:
            for reply in stream:
                slots.release()
                ok = reply.status.code == 0
                yield Ack(
                    reply.id,
                    ok,
                    code_of(reply.status.code),
                    reply.status.message,
                    reply.shard,
                    list(reply.failed_replicas),
                    self._saw(reply.position) if ok and reply.HasField("position") else None,
                )
        finally:
            stream.cancel()
            # Wake the request generator if it waits for a slot, so a broken stream leaves no thread behind.
            ended.set()
            slots.release(window)
        if not errors.empty():
            raise errors.get()

    def ingest_resumable(
        self, items: Iterable[Item], journal: IngestJournal, *, window: int = 256, timeout: float | None = None
    ) -> Iterator[Ack]:
        """Ingest the items `journal` has not seen acknowledged OK, record the new OK acks, yield every ack.

        Resuming is calling this again with the same items (or a superset) and the same journal, or a
        journal reopened from the same file by a new process. Only the items not acknowledged OK are
        sent again: those acknowledged with an error (retryable ones such as UNAVAILABLE when a shard or
        encoder was down, and any other), and those sent but never acknowledged because the stream broke.
        An OK ack is in the journal before it is yielded, so it counts even if the caller stops there.

        A broken stream (gateway killed or restarted: UNAVAILABLE, CANCELLED, connection reset) raises
        grpc.RpcError after the acks that arrived; the journal is then exact, and nothing acknowledged
        OK is sent twice. Re-sending an id replaces the stored item, so an item that was stored but whose
        ack was lost is stored once either way.
        """
        for ack in self.ingest(journal.pending(items), window=window, timeout=timeout):
            journal.record(ack)
            yield ack

    def ingest_video(
        self,
        video_id: str,
        frames: Iterable[VideoFrame],
        *,
        duration: float,
        interval: float = 1.0,
        metadata: Mapping[str, str] | None = None,
        tags: Sequence[str] = (),
        timeout: float | None = None,
        audio: Iterable[bytes] | None = None,
        audio_sample_rate: int = 0,
    ) -> VideoAck:
        """Store a video from its sampled frames (in time order), replacing any earlier version of it.

        The frames are streamed as the iterable yields them, so a video of any length is never held whole;
        the gateway stores the video only once every frame arrived and was encoded. An exception raised by
        `frames` (a file found damaged half-way) cancels the call, and nothing of the video is stored.
        Raises grpc.RpcError when the gateway refuses the video (INVALID_ARGUMENT: a limit; retryable codes:
        try again). `crossmodal.video.sample_video` turns a file into frames; `ingest_video_file` does both.
        `audio`: the video's sound as 16-bit mono PCM at `audio_sample_rate`, sent after the frames and
        stored as audio windows (the cluster must have an audio tower).
        """
        header = gateway_pb2.VideoHeader(
            id=video_id,
            metadata=dict(metadata or {}),
            tags=list(tags),
            duration_seconds=duration,
            sample_interval_seconds=interval,
            audio_sample_rate=audio_sample_rate if audio is not None else 0,
        )

        def requests() -> Iterator[gateway_pb2.IngestVideoRequest]:
            yield gateway_pb2.IngestVideoRequest(header=header)
            for frame in frames:
                message = gateway_pb2.VideoFrame(
                    seconds=frame.seconds, image=frame.image, scene_change=frame.scene_change
                )
                yield gateway_pb2.IngestVideoRequest(frame=message)
            for chunk in _audio_chunks(audio or ()):
                yield gateway_pb2.IngestVideoRequest(audio=chunk)

        reply = self._store_stream(self._stub.IngestVideo, requests(), timeout)
        return VideoAck(
            reply.id,
            reply.frames,
            reply.shard,
            reply.replaced_frames,
            reply.audio_windows,
            reply.replaced_audio_windows,
        )

    def _store_stream(
        self, method: grpc.StreamUnaryMultiCallable, messages: Iterator[Any], timeout: float | None
    ) -> Any:
        """Send a client stream that stores one medium; its reply, or the error of `messages` or the call.

        An exception raised by `messages` (a file found damaged half-way) cancels the call, so the gateway
        stores nothing of it, and is raised here.
        """
        failure: list[BaseException] = []
        call: list[grpc.Future] = []
        started = threading.Event()

        def requests() -> Iterator[Any]:
            try:
                yield from messages
            except GeneratorExit:
                # gRPC closes the stream once the call has ended (the gateway refused it early): the call's
                # own status is the answer, not a failure of the messages.
                raise
            except BaseException as exc:  # noqa: BLE001 - raised to the caller once the call is cancelled
                failure.append(exc)
                started.wait()
                call[0].cancel()  # the gateway sees the call cancelled, not ended: it stores nothing of it

        call.append(method.future(requests(), timeout=timeout, metadata=self._metadata))
        started.set()
        try:
            reply = call[0].result()
        except (grpc.RpcError, grpc.FutureCancelledError):
            if failure:
                raise failure[0] from None
            raise
        for position in reply.positions:
            self._saw(position)
        return reply

    def audio_sample_rate(self) -> int:
        """The cluster's audio tower's sample rate (0: it has none), asked once and remembered."""
        if self._audio_rate is None:
            self._audio_rate = self.stats().audio_sample_rate
        return self._audio_rate

    def ingest_audio(
        self,
        sound_id: str,
        pcm: Iterable[bytes],
        *,
        sample_rate: int,
        duration: float = 0.0,
        metadata: Mapping[str, str] | None = None,
        tags: Sequence[str] = (),
        timeout: float | None = None,
    ) -> AudioAck:
        """Store a sound from its samples (16-bit little-endian mono PCM at `sample_rate`, in any chunks).

        Streamed as the iterable yields, so a sound of any length is never held whole by the gateway; one
        no longer than the audio tower's clip is stored as one item, a longer one as windows found as
        moments. An exception raised by `pcm` cancels the call and nothing is stored. Raises grpc.RpcError
        when the gateway refuses the sound (FAILED_PRECONDITION: the cluster has no audio tower).
        """
        header = gateway_pb2.AudioHeader(
            id=sound_id,
            metadata=dict(metadata or {}),
            tags=list(tags),
            sample_rate=sample_rate,
            duration_seconds=duration,
        )

        def requests() -> Iterator[gateway_pb2.IngestAudioRequest]:
            yield gateway_pb2.IngestAudioRequest(header=header)
            for chunk in _audio_chunks(pcm):
                yield gateway_pb2.IngestAudioRequest(chunk=chunk)

        reply = self._store_stream(self._stub.IngestAudio, requests(), timeout)
        return AudioAck(reply.id, reply.windows, reply.shard, reply.replaced_windows, reply.duration_seconds)

    def ingest_audio_file(
        self,
        sound_id: str,
        path: str | Path,
        *,
        metadata: Mapping[str, str] | None = None,
        tags: Sequence[str] = (),
        max_seconds: float = 4 * 3600.0,
        timeout: float | None = None,
    ) -> AudioAck:
        """Decode a sound file (WAV, FLAC, MP3, OGG/Opus, M4A, ...) with PyAV here and store it with `ingest_audio`.

        The file is decoded to mono at the audio tower's rate, so the gateway never runs FFmpeg on it. The
        metadata gets the file's absolute `path`. Raises crossmodal.bundle.AudioInputError for a file that
        cannot be used (corrupt, truncated, empty, an unsupported codec, too many channels, an absurd rate,
        longer than `max_seconds`): nothing of it is stored.
        """
        rate = self.audio_sample_rate()
        meta = {"path": str(Path(path).resolve()), **(metadata or {})}
        if not rate:
            # No audio tower: the gateway refuses the header with its own FAILED_PRECONDITION message.
            return self.ingest_audio(
                sound_id, (), sample_rate=_FALLBACK_RATE, metadata=meta, tags=tags, timeout=timeout
            )
        from crossmodal.bundle.audio import DecodeLimits, decode_audio, pcm16

        samples = decode_audio(Path(path).read_bytes(), rate, DecodeLimits(max_seconds=max_seconds))
        return self.ingest_audio(
            sound_id,
            [pcm16(samples)],  # ingest_audio cuts it into AUDIO_CHUNK_BYTES chunks
            sample_rate=rate,
            duration=samples.shape[0] / rate,
            metadata=meta,
            tags=tags,
            timeout=timeout,
        )

    def ingest_video_file(
        self,
        video_id: str,
        path: str | Path,
        *,
        options: VideoOptions | None = None,
        metadata: Mapping[str, str] | None = None,
        tags: Sequence[str] = (),
        timeout: float | None = None,
        sound: bool = True,
    ) -> VideoAck:
        """Decode a video file with PyAV, sample its frames (`options`) and store it with `ingest_video`.

        The metadata gets the file's absolute `path` (as image files do) and its duration. When the file
        has sound, `sound` is true and the cluster has an audio tower, its audio track is decoded too (at
        the tower's rate) and stored as audio windows. Raises crossmodal.video.VideoError for a file that
        cannot be used (damaged, truncated, no video, an unsupported codec, over a limit): nothing of it is
        stored.
        """
        from crossmodal.video import VideoOptions, audio_track, sample_video

        options = options or VideoOptions()
        info, frames = sample_video(path, options)
        meta = {"path": str(Path(path).resolve()), "duration": f"{info.duration:.3f}", **(metadata or {})}
        rate = self.audio_sample_rate() if sound and info.audio else 0
        return self.ingest_video(
            video_id,
            (VideoFrame(f.seconds, f.jpeg, f.scene_change) for f in frames),
            duration=info.duration,
            interval=1.0 / options.rate,
            metadata=meta,
            tags=tags,
            timeout=timeout,
            audio=audio_track(path, rate, options.max_seconds, AUDIO_CHUNK_BYTES) if rate else None,
            audio_sample_rate=rate,
        )

    def delete(self, ids: Sequence[str], timeout: float | None = None) -> int:
        """Delete ids (a video's id deletes all its frames too); returns how many existed."""
        reply = self._stub.Delete(
            gateway_pb2.DeleteRequest(ids=list(ids)), timeout=timeout or self.timeout, metadata=self._metadata
        )
        for position in reply.positions:
            self._saw(position)
        return int(reply.deleted)

    def get(
        self, ids: Sequence[str], timeout: float | None = None, after: Sequence[Position] | None = None
    ) -> tuple[list[StoredItem], list[str]]:
        """Fetch items by id: (the stored items in request order, the ids not stored)."""
        reply = self._stub.Get(
            gateway_pb2.GetRequest(ids=list(ids), after=self._after(after)),
            timeout=timeout or self.timeout,
            metadata=self._metadata,
        )
        found = [
            StoredItem(i.id, _NAMES.get(i.modality, "any"), dict(i.metadata), list(i.tags), i.shard)
            for i in reply.items
        ]
        return found, list(reply.missing)

    def reshard(
        self, shards: int, *, dry_run: bool = False, timeout: float | None = None
    ) -> Iterator[gateway_pb2.ReshardProgress]:
        """Admin: move the write log's partitions so that `shards` shards own them; the progress as it comes.

        Resumes a move that was interrupted; `dry_run` answers the plan only. No deadline unless `timeout`.
        """
        yield from self._stub.Reshard(
            gateway_pb2.ReshardRequest(shards=shards, dry_run=dry_run), timeout=timeout, metadata=self._metadata
        )

    def stats(self, timeout: float | None = None) -> Stats:
        """Collection statistics with per-replica health."""
        reply = self._stub.GetStats(
            gateway_pb2.GetStatsRequest(), timeout=timeout or self.timeout, metadata=self._metadata
        )
        return Stats(
            reply.model_id,
            reply.dim,
            reply.total_count,
            {
                s.shard: [
                    ReplicaInfo(
                        r.address,
                        r.healthy,
                        r.count,
                        r.error,
                        r.log_lag,
                        r.log_lag_seconds,
                        {a.partition: a.sequence for a in r.applied},
                    )
                    for r in s.replicas
                ]
                for s in reply.shards
            },
            reply.audio_sample_rate,
            reply.audio_clip_seconds,
        )
