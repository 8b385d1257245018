"""The IngestAudio stream, and the audio track of IngestVideo: streamed PCM cut into the audio tower's windows.

The client decodes the file (any format, with PyAV) and streams 16-bit mono PCM, so the gateway never runs
FFmpeg on an untrusted file. `PcmWindows` cuts the samples into windows of the tower's clip length, one
every `window_hop_seconds` (both from encoder_audio's GetModelInfo), exactly as
`crossmodal.bundle.audio.windows` would cut the whole sound, but holding only the samples the next window
needs. Each window is sent to the audio tower as a small WAV file; only its vector is kept.

A sound no longer than one clip becomes one plain item (modality AUDIO, metadata `duration_seconds`); a
longer one is a record (the windows' mean vector, `audio_windows` = N) and its windows `<id>#window=<n>`
(`window_start`, `window_end`, `audio_id`, the sound's metadata and tags), written by `timed.store_timed`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from crossmodal.bundle.audio import wav_bytes
from crossmodal.v1 import encoder_pb2, gateway_pb2, index_pb2, types_pb2
from services.common.limits import LimitError
from services.gateway.backends import AudioClip, Backends, EncoderPool
from services.gateway.config import GatewayConfig
from services.gateway.metrics import AUDIO_INGESTS, AUDIO_WINDOWS
from services.gateway.moments import (
    AUDIO_DURATION_KEY,
    AUDIO_ID_KEY,
    WINDOW_END_KEY,
    WINDOW_LENGTH_KEY,
    WINDOW_START_KEY,
)
from services.gateway.timed import WINDOWS, EncodeQueue, mean_vector, part_items, store_timed
from services.gateway.validation import check_audio_header
from services.gateway.writer import Writer

AUDIO = types_pb2.MODALITY_AUDIO
_SAMPLE_BYTES = 2  # 16-bit PCM


@dataclass(frozen=True)
class Window:
    """One window of a sound: its span in seconds."""

    start: float
    end: float


class PcmWindows:
    """Cuts one stream of PCM chunks into clip-long WAV windows, checking each chunk against the limits."""

    def __init__(self, name: str, sample_rate: int, duration: float, clip: AudioClip, config: GatewayConfig) -> None:
        self.name = name
        self.rate = sample_rate
        self.duration = duration
        self.config = config
        self.length = max(1, round(clip.clip_seconds * sample_rate))
        self.hop = max(1, round(clip.hop_seconds * sample_rate))
        self.received = 0
        self.windows: list[Window] = []
        self._buffer = bytearray()  # the samples from `_start` on: all a window yet to come needs
        self._start = 0
        self._end = 0  # where the last window cut ends, in samples

    @property
    def seconds(self) -> float:
        """The length of the samples received so far."""
        return self.received / self.rate

    def add(self, chunk: gateway_pb2.AudioChunk) -> list[bytes]:
        """Check and take one chunk; the windows it completed, as WAV files."""
        size = len(chunk.pcm)
        if size == 0 or size % _SAMPLE_BYTES:
            raise LimitError(f"{self.name}: an audio chunk of {size} bytes; send whole 16-bit samples (2 bytes each)")
        if size > self.config.audio_max_chunk_bytes:
            raise LimitError(
                f"{self.name}: an audio chunk of {size} bytes; the limit is {self.config.audio_max_chunk_bytes} "
                "(CROSSMODAL_GATEWAY_AUDIO_MAX_CHUNK_BYTES): send smaller chunks"
            )
        if chunk.first_sample != self.received:
            raise LimitError(
                f"{self.name}: an audio chunk starts at sample {chunk.first_sample}, but {self.received} samples "
                "came before it; send the chunks in order, without gaps"
            )
        self.received += size // _SAMPLE_BYTES
        if self.seconds > self.config.audio_max_seconds:
            raise LimitError(
                f"{self.name}: its sound is longer than {self.config.audio_max_seconds:g} s "
                "(CROSSMODAL_GATEWAY_AUDIO_MAX_SECONDS): cut it into parts"
            )
        if self.duration and self.seconds > self.duration + 1.0:
            raise LimitError(
                f"{self.name}: {self.seconds:.1f} s of samples, past its duration {self.duration:g} s in the header"
            )
        self._buffer += chunk.pcm
        out = []
        while self._next + self.length <= self.received:
            out.append(self._cut(self._next + self.length))
        return out

    @property
    def _next(self) -> int:
        return len(self.windows) * self.hop

    def _cut(self, end: int) -> bytes:
        start = self._next
        pcm = bytes(self._buffer[(start - self._start) * _SAMPLE_BYTES : (end - self._start) * _SAMPLE_BYTES])
        self.windows.append(Window(start / self.rate, end / self.rate))
        self._end = end
        # Samples before the next window's start are no longer needed.
        drop = min(self._next, self.received) - self._start
        del self._buffer[: drop * _SAMPLE_BYTES]
        self._start += drop
        return wav_bytes(pcm, self.rate)

    def finish(self) -> list[bytes]:
        """The last window, which ends where the sound does (none when a full window already did)."""
        if self.received == 0:
            raise LimitError(f"{self.name}: its sound has no samples")
        if self.windows and self._end >= self.received:
            return []
        return [self._cut(self.received)]

    @property
    def whole(self) -> bool:
        """Whether the sound fits in one clip (it is stored as one plain item, not as windows)."""
        return self.received <= self.length


async def queue_windows(queue: EncodeQueue, pool: EncoderPool, track: PcmWindows, sounds: list[bytes]) -> None:
    """Queue windows just cut from `track` for the audio tower, each named by its span in an error."""
    first = len(track.windows) - len(sounds)
    for n, sound in enumerate(sounds):
        window = track.windows[first + n]
        label = f"{track.name}: audio window {first + n} at {window.start:.3f}-{window.end:.3f} s"
        await queue.add(WINDOWS, pool, encoder_pb2.EncodeItem(audio=sound), label)


def window_items(
    parent_id: str,
    track: PcmWindows,
    vectors: list[list[float]],
    metadata: dict[str, str],
    tags: list[str],
    parent_key: str,
) -> list[index_pb2.IndexItem]:
    """The stored windows of a sound or a video's audio track (`parent_key`: audio_id or video_id)."""
    length = f"{track.length / track.rate:.3f}"
    spans = [
        {
            **metadata,
            parent_key: parent_id,
            AUDIO_DURATION_KEY: f"{track.seconds:.3f}",
            WINDOW_START_KEY: f"{w.start:.3f}",
            WINDOW_END_KEY: f"{w.end:.3f}",
            WINDOW_LENGTH_KEY: length,
        }
        for w in track.windows
    ]
    return part_items(parent_id, WINDOWS, AUDIO, vectors, spans, tags)


class AudioIngest:
    """Turns one IngestAudio stream into a stored sound, or an error with nothing stored."""

    def __init__(self, config: GatewayConfig, backends: Backends, writer: Writer) -> None:
        self.config = config
        self.backends = backends
        self.writer = writer

    async def run(self, requests: AsyncIterator[gateway_pb2.IngestAudioRequest]) -> gateway_pb2.IngestAudioResponse:
        """Read, check and encode the whole sound, then store it; raises GatewayError or LimitError."""
        pool, clip = self.backends.audio_pool()
        queue = EncodeQueue(self.config, self.backends)
        try:
            header, track = await self._read(requests, queue, pool, clip)
            vectors = (await queue.vectors()).get(WINDOWS, [])
        except BaseException:
            queue.cancel()
            raise
        try:
            response = await self._store(header, track, vectors)
        except BaseException:
            AUDIO_INGESTS.labels("failed").inc()
            raise
        AUDIO_INGESTS.labels("stored").inc()
        AUDIO_WINDOWS.inc(response.windows)
        return response

    async def _read(
        self,
        requests: AsyncIterator[gateway_pb2.IngestAudioRequest],
        queue: EncodeQueue,
        pool: EncoderPool,
        clip: AudioClip,
    ) -> tuple[gateway_pb2.AudioHeader, PcmWindows]:
        header: gateway_pb2.AudioHeader | None = None
        track: PcmWindows | None = None
        async for message in requests:
            part = message.WhichOneof("part")
            if header is None or track is None:
                if part != "header":
                    raise LimitError("an IngestAudio stream starts with the sound's header, then its samples")
                header = message.header
                check_audio_header(header, self.config)
                name = f"sound {header.id[:40]!r}"
                track = PcmWindows(name, header.sample_rate, header.duration_seconds, clip, self.config)
                continue
            if part != "chunk":
                raise LimitError(f"sound {header.id[:40]!r}: a second header; send one sound per IngestAudio call")
            await queue_windows(queue, pool, track, track.add(message.chunk))
        if header is None or track is None:
            raise LimitError("the IngestAudio stream ended before the sound's header")
        await queue_windows(queue, pool, track, track.finish())
        return header, track

    async def _store(
        self, header: gateway_pb2.AudioHeader, track: PcmWindows, vectors: list[list[float]]
    ) -> gateway_pb2.IngestAudioResponse:
        common = {**header.metadata, AUDIO_DURATION_KEY: f"{track.seconds:.3f}"}
        tags = list(header.tags)
        windows = (
            [] if track.whole else window_items(header.id, track, vectors, dict(header.metadata), tags, AUDIO_ID_KEY)
        )
        record = index_pb2.IndexItem(
            id=header.id, modality=AUDIO, vector=mean_vector(vectors), metadata=common, tags=tags
        )
        stored = await store_timed(
            self.writer, self.backends.placement, self.config.limits.max_batch, record, {WINDOWS: windows}
        )
        return gateway_pb2.IngestAudioResponse(
            id=header.id,
            windows=len(windows),
            shard=stored.shard,
            positions=stored.positions,
            replaced_windows=stored.replaced[WINDOWS],
            duration_seconds=track.seconds,
        )
