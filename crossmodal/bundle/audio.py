"""Audio input for an audio tower: decoding with limits (PyAV), windows over long sounds, log-mel features in numpy.

The serving side has no torch: the features an audio tower was trained on are computed here with numpy, to
within 1e-4 (in the log domain) of librosa, the reference the export extra carries (tests/bundle/test_audio.py
checks both mel scales, both log kinds and both padding modes). Every parameter is declared in the bundle's
manifest (``"audio"``), so a bundle exported from CLAP carries CLAP's front end and the built-in model its own.

Decoding goes through PyAV (FFmpeg): WAV, FLAC, MP3, OGG (Vorbis, Opus) and M4A (AAC, ALAC) alike. The
sound is decoded packet by packet, downmixed to mono and resampled to the tower's rate on the way, and the
decoder stops as soon as the sound is longer than the caller's limit, so a long or hostile file costs at most
the limit's worth of memory.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

MEL_SCALES = ("slaney", "htk")
MEL_NORMS = ("slaney", "none")
LOG_KINDS = ("db", "ln")
PAD_MODES = ("reflect", "constant")
SHORT_MODES = ("repeatpad", "pad")
# Sample rates a container may declare: below 1 kHz or above 384 kHz is not audio anyone records.
MIN_SOURCE_RATE = 1_000
MAX_SOURCE_RATE = 384_000
# Decoding less than this share of the duration a file declares means the file was cut off. Not 1.0: encoder
# delay and bitrate-estimated durations (MP3 without a header) make honest files differ by a few percent.
TRUNCATED_SHARE = 0.9


class AudioInputError(ValueError):
    """A sound a client sent cannot be used; ``kind`` names the problem, ``reason`` says what to do about it."""

    KINDS = ("corrupt", "empty", "no_audio", "codec", "too_long", "channels", "sample_rate")

    def __init__(self, kind: str, reason: str) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown audio error kind {kind!r}")
        self.kind = kind
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class AudioConfig:
    """How the audio tower expects its input: sample rate, clip length, windows over longer sounds, log-mel."""

    sample_rate: int = 48_000
    clip_seconds: float = 10.0
    # Longer sounds are cut into clip-long windows that start this far apart (found as moments).
    window_hop_seconds: float = 5.0
    # A sound shorter than a clip (or the last window of a long one): tiled then zero-padded, or zero-padded.
    short: str = "repeatpad"
    n_fft: int = 1024
    hop_length: int = 480
    win_length: int = 1024
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 14_000.0
    mel_scale: str = "slaney"
    mel_norm: str = "slaney"
    power: float = 2.0
    log: str = "db"
    # db: 10*log10(max(S, amin)), then floored at max - top_db when top_db is set. ln: log(S + amin).
    amin: float = 1e-10
    top_db: float | None = None
    center: bool = True
    pad_mode: str = "reflect"

    def __post_init__(self) -> None:
        if not 1_000 <= self.sample_rate <= MAX_SOURCE_RATE:
            raise ValueError(f"sample_rate must be 1000-{MAX_SOURCE_RATE}, got {self.sample_rate}")
        if not 0 < self.clip_seconds <= 600 or not 0 < self.window_hop_seconds <= self.clip_seconds:
            raise ValueError("clip_seconds must be in (0, 600] and window_hop_seconds in (0, clip_seconds]")
        if self.short not in SHORT_MODES:
            raise ValueError(f"short must be one of {SHORT_MODES}, got {self.short!r}")
        if self.n_fft < 16 or not 0 < self.win_length <= self.n_fft or self.hop_length < 1:
            raise ValueError("need n_fft >= 16, 0 < win_length <= n_fft and hop_length >= 1")
        if self.n_mels < 1 or not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError("need n_mels >= 1 and 0 <= f_min < f_max <= sample_rate / 2")
        if self.mel_scale not in MEL_SCALES or self.mel_norm not in MEL_NORMS:
            raise ValueError(f"mel_scale must be one of {MEL_SCALES} and mel_norm one of {MEL_NORMS}")
        if self.log not in LOG_KINDS or self.pad_mode not in PAD_MODES:
            raise ValueError(f"log must be one of {LOG_KINDS} and pad_mode one of {PAD_MODES}")
        if self.power <= 0 or self.amin <= 0 or (self.top_db is not None and self.top_db <= 0):
            raise ValueError("power and amin must be positive, top_db positive or null")

    @property
    def clip_samples(self) -> int:
        """Samples in one clip at the tower's rate."""
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def frames(self) -> int:
        """Spectrogram frames of one clip: the time axis of the tower's input."""
        if self.center:
            return 1 + self.clip_samples // self.hop_length
        return 1 + (self.clip_samples - self.n_fft) // self.hop_length

    def to_dict(self) -> dict[str, object]:
        """Return the JSON form stored in ``model.json``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> AudioConfig:
        """Parse the JSON form; unknown keys are an error so that a typo is not silently a default."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown audio settings {sorted(unknown)}")
        return cls(**data)  # type: ignore[arg-type]


def _hz_to_mel(hz: np.ndarray, scale: str) -> np.ndarray:
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    # Slaney's scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above.
    step, knee = 200.0 / 3, 1000.0
    log_step = math.log(6.4) / 27.0
    linear = hz / step
    return np.where(hz >= knee, knee / step + np.log(np.maximum(hz, knee) / knee) / log_step, linear)


def _mel_to_hz(mel: np.ndarray, scale: str) -> np.ndarray:
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    step, knee = 200.0 / 3, 1000.0
    log_step = math.log(6.4) / 27.0
    knee_mel = knee / step
    return np.where(mel >= knee_mel, knee * np.exp(log_step * (mel - knee_mel)), step * mel)


def mel_filters(config: AudioConfig) -> np.ndarray:
    """The (n_mels, n_fft // 2 + 1) triangular filter bank, float64."""
    bins = np.linspace(0.0, config.sample_rate / 2, config.n_fft // 2 + 1)
    edges_mel = np.linspace(
        _hz_to_mel(np.array(config.f_min), config.mel_scale),
        _hz_to_mel(np.array(config.f_max), config.mel_scale),
        config.n_mels + 2,
    )
    edges = _mel_to_hz(edges_mel, config.mel_scale)
    widths = np.diff(edges)
    # Each filter rises from edges[i] to edges[i+1] and falls to edges[i+2].
    rising = (bins[None, :] - edges[:-2, None]) / widths[:-1, None]
    falling = (edges[2:, None] - bins[None, :]) / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    if config.mel_norm == "slaney":
        weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights


def _window(config: AudioConfig) -> np.ndarray:
    # A periodic Hann window (the DFT-even one spectrograms use), centred in n_fft when shorter.
    n = config.win_length
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    left = (config.n_fft - n) // 2
    return np.pad(window, (left, config.n_fft - n - left))


class LogMel:
    """Log-mel features of fixed-length clips for one :class:`AudioConfig`; thread-safe (read-only state)."""

    def __init__(self, config: AudioConfig) -> None:
        self.config = config
        self._filters = mel_filters(config)
        self._window = _window(config)

    def __call__(self, clip: np.ndarray) -> np.ndarray:
        """The (frames, n_mels) float32 log-mel spectrogram of a mono clip of any length."""
        c = self.config
        signal = np.asarray(clip, dtype=np.float64)
        if c.center:
            signal = np.pad(signal, c.n_fft // 2, mode="reflect" if c.pad_mode == "reflect" else "constant")
        if signal.shape[0] < c.n_fft:
            signal = np.pad(signal, (0, c.n_fft - signal.shape[0]))
        count = 1 + (signal.shape[0] - c.n_fft) // c.hop_length
        frames = np.lib.stride_tricks.sliding_window_view(signal, c.n_fft)[:: c.hop_length][:count]
        spectrum = np.abs(np.fft.rfft(frames * self._window, axis=1)) ** c.power
        mel = spectrum @ self._filters.T
        if c.log == "ln":
            out = np.log(mel + c.amin)
        else:
            out = 10.0 * np.log10(np.maximum(mel, c.amin))
            if c.top_db is not None:
                out = np.maximum(out, out.max() - c.top_db)
        return out.astype(np.float32)


def fit_clip(samples: np.ndarray, config: AudioConfig) -> np.ndarray:
    """A clip of exactly ``clip_samples``: longer input is cut, shorter tiled (repeatpad) and zero-padded."""
    length = config.clip_samples
    if samples.shape[0] >= length:
        return samples[:length]
    if config.short == "repeatpad" and samples.shape[0]:
        samples = np.tile(samples, length // samples.shape[0])
    return np.pad(samples, (0, length - samples.shape[0]))


@dataclass(frozen=True)
class AudioWindow:
    """One clip-long window of a sound: where it starts and ends in the sound, and its samples (fitted)."""

    start_seconds: float
    end_seconds: float
    samples: np.ndarray


def windows(samples: np.ndarray, config: AudioConfig) -> Iterator[AudioWindow]:
    """The clip-long windows of a mono sound at the tower's rate: one for a sound up to a clip long, else
    windows ``window_hop_seconds`` apart until one reaches the end (the last one fitted like a short sound)."""
    length, rate = config.clip_samples, config.sample_rate
    hop = max(1, int(round(config.window_hop_seconds * rate)))
    total = samples.shape[0]
    count = 1 if total <= length else 1 + math.ceil((total - length) / hop)
    for index in range(count):
        start = index * hop
        end = min(total, start + length)
        yield AudioWindow(start / rate, end / rate, fit_clip(samples[start:end], config))


@dataclass(frozen=True)
class DecodeLimits:
    """What a decoder accepts: the longest sound and the most channels."""

    max_seconds: float = 600.0
    max_channels: int = 8


def decode_audio(data: bytes, sample_rate: int, limits: DecodeLimits = DecodeLimits()) -> np.ndarray:
    """Decode an audio file (any container and codec FFmpeg reads) to mono float32 at ``sample_rate``.

    Raises :class:`AudioInputError` naming what is wrong: not a readable file, no audio stream, a codec
    this build cannot decode, too many channels, an absurd sample rate, no samples, or longer than allowed.
    """
    if not data:
        raise AudioInputError("empty", "the audio is empty (0 bytes); send the bytes of an audio file")
    plain = _plain_wav(data, sample_rate, limits)
    return plain if plain is not None else _ffmpeg_decode(data, sample_rate, limits)


def _ffmpeg_decode(data: bytes, sample_rate: int, limits: DecodeLimits) -> np.ndarray:
    """`decode_audio` of any file, by FFmpeg: open, probe, decode and resample."""
    import av  # noqa: PLC0415 (PyAV loads FFmpeg: only processes that decode audio pay for it)

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise AudioInputError("corrupt", f"not a readable audio file ({_ffmpeg_reason(exc)})") from None
    with container:
        if not container.streams.audio:
            raise AudioInputError("no_audio", "the file holds no audio stream")
        stream = container.streams.audio[0]
        codec = stream.codec_context
        if codec is None or not codec.name or codec.codec is None:
            raise AudioInputError("codec", "the audio stream's codec is not supported by this build of FFmpeg")
        channels = codec.layout.nb_channels if codec.layout is not None else 0
        if channels > limits.max_channels:
            raise AudioInputError(
                "channels", f"the audio has {channels} channels; at most {limits.max_channels} are accepted"
            )
        if not MIN_SOURCE_RATE <= (codec.sample_rate or 0) <= MAX_SOURCE_RATE:
            raise AudioInputError(
                "sample_rate",
                f"the audio's sample rate {codec.sample_rate} Hz is outside {MIN_SOURCE_RATE}-{MAX_SOURCE_RATE} Hz",
            )
        declared = _declared_seconds(container, stream)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        max_samples = int(limits.max_seconds * sample_rate)
        parts: list[np.ndarray] = []
        held = 0
        try:
            for frame in container.decode(stream):
                if not isinstance(frame, av.AudioFrame):
                    continue
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
                    held += parts[-1].shape[0]
                if held > max_samples:
                    raise _too_long(limits)
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().reshape(-1))
                held += parts[-1].shape[0]
        except av.error.FFmpegError as exc:
            raise AudioInputError("corrupt", f"the audio stream is corrupt ({_ffmpeg_reason(exc)})") from None
    if held > max_samples:
        raise _too_long(limits)
    if held == 0:
        raise AudioInputError("empty", "the audio holds no samples")
    _check_wav_length(data)
    # A cut-off file decodes without an error up to where it ends; its header still says how long it was.
    if declared is not None and held / sample_rate < TRUNCATED_SHARE * declared:
        raise AudioInputError(
            "corrupt",
            f"the audio is truncated: its header says {declared:.2f} s but it holds {held / sample_rate:.2f} s",
        )
    return np.concatenate(parts).astype(np.float32, copy=False)


def pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] as 16-bit little-endian PCM (clipped)."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    """16-bit mono PCM wrapped as a WAV file (what the audio tower decodes)."""
    import wave  # noqa: PLC0415 (the standard library's; only writers of sounds need it)

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm)
    return buffer.getvalue()


def _too_long(limits: DecodeLimits) -> AudioInputError:
    return AudioInputError("too_long", f"the audio is longer than the {limits.max_seconds:g} s allowed; cut it first")


def _riff_chunks(data: bytes) -> dict[bytes, tuple[int, int]]:
    """A WAV file's chunks up to its sample data: id -> (where the body starts, the size declared); {} if not WAV."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return {}
    chunks: dict[bytes, tuple[int, int]] = {}
    offset = 12
    while offset + 8 <= len(data):
        chunk, size = data[offset : offset + 4], int.from_bytes(data[offset + 4 : offset + 8], "little")
        chunks.setdefault(chunk, (offset + 8, size))
        if chunk == b"data":
            break
        offset += 8 + size + (size & 1)  # chunks are padded to an even length
    return chunks


def _declared_data(data: bytes, chunks: dict[bytes, tuple[int, int]]) -> tuple[int, int] | None:
    """Where a WAV file's samples start and how many bytes of them it holds, when its header declares their size
    (writers that stream leave 0 or the largest value); refuses a file cut short."""
    if b"data" not in chunks:
        return None
    start, size = chunks[b"data"]
    if not 0 < size < 0xFFFF_FF00:
        return None
    held = min(size, len(data) - start)
    if held < TRUNCATED_SHARE * size:
        raise AudioInputError(
            "corrupt", f"the audio is truncated: its header declares {size} bytes of samples, it holds {held}"
        )
    return start, held


def _check_wav_length(data: bytes) -> None:
    """Refuse a WAV file cut short: FFmpeg's WAV reader measures the file it has, not what its header declares."""
    _declared_data(data, _riff_chunks(data))


def _plain_wav(data: bytes, sample_rate: int, limits: DecodeLimits) -> np.ndarray | None:
    """16-bit mono PCM at the tower's rate (what the gateway sends: windows of longer sounds), read without FFmpeg;
    None for any other file.

    FFmpeg gives the same samples for such a file (16-bit to float is x / 32768 there too: a test compares
    them), but opening and probing the container cost it ~6-8 ms a clip, most of the audio encoder's time.
    """
    chunks = _riff_chunks(data)
    if b"fmt " not in chunks or chunks[b"fmt "][1] < 16:
        return None
    start = chunks[b"fmt "][0]
    if len(data) < start + 16:
        return None
    tag, channels, rate, _, align, bits = struct.unpack("<HHIIHH", data[start : start + 16])
    if (tag, channels, rate, align, bits) != (1, 1, sample_rate, 2, 16):
        return None
    found = _declared_data(data, chunks)
    if found is None:
        return None
    start, held = found
    count = held // 2
    if count > int(limits.max_seconds * sample_rate):
        raise _too_long(limits)
    if count == 0:
        raise AudioInputError("empty", "the audio holds no samples")
    return np.frombuffer(data, "<i2", count, start).astype(np.float32) / np.float32(32768)


def _declared_seconds(container: object, stream: object) -> float | None:
    # The stream's own duration when the container states one, else the container's (in microseconds).
    duration, time_base = getattr(stream, "duration", None), getattr(stream, "time_base", None)
    if duration and time_base:
        return float(duration * time_base)
    total = getattr(container, "duration", None)
    return total / 1_000_000 if total else None


def _ffmpeg_reason(exc: BaseException) -> str:
    # FFmpegError's str() carries the errno and the path ("<none>"); its strerror is the readable part.
    return str(getattr(exc, "strerror", None) or exc)
