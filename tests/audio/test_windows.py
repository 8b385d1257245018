"""The gateway cuts streamed PCM into the same windows as the bundle cuts a whole sound, holding little."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from crossmodal.bundle.audio import windows
from crossmodal.v1 import gateway_pb2
from services.common.limits import LimitError
from services.gateway.audio import PcmWindows
from services.gateway.backends import AudioClip
from services.gateway.config import GatewayConfig
from services.gateway.moments import sound_of
from tests.bundle.audio_bundles import AUDIO

CLIP = AudioClip(AUDIO.clip_seconds, AUDIO.sample_rate, AUDIO.window_hop_seconds)


def _pcm_of(wav: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(wav)) as sound:
        return np.frombuffer(sound.readframes(sound.getnframes()), "<i2")


@pytest.mark.parametrize("samples", [1, 7_999, 16_000, 16_001, 24_000, 40_000, 41_234])
@pytest.mark.parametrize("chunk", [1_000, 7_777, 64_000])
def test_streamed_windows_match_the_bundles_windows(samples: int, chunk: int) -> None:
    pcm = np.random.default_rng(samples).integers(-30_000, 30_000, samples).astype("<i2")
    track = PcmWindows("sound 'x'", AUDIO.sample_rate, 0.0, CLIP, GatewayConfig())
    cut: list[bytes] = []
    for start in range(0, samples, chunk):
        piece = pcm[start : start + chunk].tobytes()
        cut.extend(track.add(gateway_pb2.AudioChunk(pcm=piece, first_sample=start)))
        assert len(track._buffer) <= 2 * (CLIP.clip_seconds * AUDIO.sample_rate + chunk)  # never the whole sound
    cut.extend(track.finish())
    expected = list(windows(pcm.astype(np.float32), AUDIO))
    assert [(w.start, w.end) for w in track.windows] == [(e.start_seconds, e.end_seconds) for e in expected]
    rate = AUDIO.sample_rate
    for window, wav in zip(track.windows, cut, strict=True):
        assert np.array_equal(_pcm_of(wav), pcm[round(window.start * rate) : round(window.end * rate)])
    assert track.whole == (samples <= AUDIO.clip_samples)


def test_a_chunk_out_of_order_or_an_empty_sound_is_refused() -> None:
    track = PcmWindows("sound 'x'", AUDIO.sample_rate, 0.0, CLIP, GatewayConfig())
    with pytest.raises(LimitError, match="has no samples"):
        track.finish()
    track.add(gateway_pb2.AudioChunk(pcm=b"\x00" * 200))
    with pytest.raises(LimitError, match="starts at sample 50, but 100 samples came before it"):
        track.add(gateway_pb2.AudioChunk(pcm=b"\x00" * 200, first_sample=50))


def test_a_record_is_no_moment_a_window_is_its_span_a_short_sound_whole() -> None:
    from crossmodal.v1 import index_pb2

    record = index_pb2.SearchHit(id="s", score=0.9, metadata={"audio_windows": "3", "duration_seconds": "2.000"})
    window = index_pb2.SearchHit(
        id="s#window=2",
        score=0.8,
        metadata={"window_start": "1.000", "window_end": "2.000", "window_length": "1.000", "duration_seconds": "2"},
    )
    short = index_pb2.SearchHit(id="b", score=0.7, metadata={"duration_seconds": "0.600"})
    assert sound_of(record) is None
    part = sound_of(window)
    assert part is not None and (part.video, part.seconds, part.interval, part.duration) == ("s", 1.0, 1.0, 2.0)
    whole = sound_of(short)
    assert whole is not None and (whole.video, whole.seconds, whole.interval) == ("b", 0.0, 0.6)
