"""The audio tower: the size limit, decoding with limits, the log-mel front end and the bundle's audio model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from crossmodal.bundle import AudioInputError, ModelBundle, decode_audio
from crossmodal.bundle.audio import DecodeLimits, LogMel, fit_clip, pcm16, wav_bytes
from services.encoder.config import EncoderConfig
from services.encoder.engine import Prepared, prepare_each
from services.encoder.errors import InvalidItemError


def _warmup_sounds() -> list[bytes]:
    # A short tone and one longer than any clip, as 16-bit WAV: fitting and cutting. The long one is at 44.1 kHz,
    # a rate no tower uses, so FFmpeg loads and resamples here rather than in the first request; plain WAV at
    # the tower's rate (the short one, for a 16 kHz tower) is read without it.
    out = []
    for seconds, rate in ((0.5, 16_000), (12.0, 44_100)):
        t = np.arange(int(rate * seconds)) / rate
        out.append(wav_bytes(pcm16(0.3 * np.sin(2 * np.pi * 440 * t)), rate))
    return out


class AudioTower:
    """Checks and decodes sounds, computes their log-mel features, and runs the bundle's audio tower."""

    # One sound per pool task, so that the sounds of one request decode in parallel.
    preprocess_chunk = 1

    def __init__(self, bundle: ModelBundle, config: EncoderConfig) -> None:
        self._bundle = bundle
        self._audio = bundle.audio_config
        self._limits = config.limits
        self._decode_limits = DecodeLimits(config.max_audio_seconds, config.max_audio_channels)
        self._log_mel = LogMel(self._audio)

    def check(self, content: bytes) -> None:
        """Refuse empty sounds and sounds over CROSSMODAL_MAX_AUDIO_BYTES (`LimitError`) before the pool."""
        self._limits.check_audio(content)

    def cheap(self, contents: Sequence[bytes]) -> bool:
        """Never: decoding and resampling a sound takes milliseconds."""
        return False

    def prepare(self, contents: Sequence[bytes]) -> list[Prepared | InvalidItemError]:
        """Decode each sound within the limits and compute the log-mel of its first clip."""
        return prepare_each(contents, self._prepare_one, "sound")

    def _prepare_one(self, data: bytes) -> Prepared:
        try:
            samples = decode_audio(data, self._audio.sample_rate, self._decode_limits)
        except AudioInputError as exc:
            raise InvalidItemError(f"{exc.kind}: {exc.reason}") from None
        cut = samples.shape[0] > self._audio.clip_samples
        seconds = samples.shape[0] / self._audio.sample_rate
        return Prepared(self._log_mel(fit_clip(samples, self._audio)), truncated=cut, seconds=seconds)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run the audio tower on log-mel features (n, frames, n_mels)."""
        return self._bundle.encode_audio_features(batch)

    def warmup_contents(self) -> list[bytes]:
        """A short tone and a long one, to load the decoders and size the buffers before the first request."""
        return _warmup_sounds()

    def describe(self) -> Mapping[str, float]:
        """The clip length, the sample rate and the hop between the windows of a long sound."""
        audio = self._audio
        return {
            "clip_seconds": audio.clip_seconds,
            "sample_rate": audio.sample_rate,
            "window_hop_seconds": audio.window_hop_seconds,
        }
