"""Audio input: log-mel parity with librosa, clip fitting and windows, PyAV decoding of every format, bad input."""

from __future__ import annotations

import io

import av
import librosa
import numpy as np
import pytest

import crossmodal.bundle.audio as audio_module
from crossmodal.bundle.audio import (
    AudioConfig,
    AudioInputError,
    DecodeLimits,
    LogMel,
    _ffmpeg_decode,
    decode_audio,
    fit_clip,
    mel_filters,
    pcm16,
    windows,
)
from tests.bundle.audio_bundles import encode_sound, wav_bytes

# CLAP's front end (HTSAT: 48 kHz, 1024/480, 64 Slaney mels 50 Hz-14 kHz, power dB); a speech-style one
# (16 kHz, 25 ms window in a 512 FFT, HTK mels without norm, natural log, zero padding); CLAP's with top_db.
CONFIGS = {
    "clap": AudioConfig(),
    "speech": AudioConfig(
        sample_rate=16_000,
        clip_seconds=4.0,
        window_hop_seconds=2.0,
        n_fft=512,
        hop_length=160,
        win_length=400,
        n_mels=40,
        f_min=0.0,
        f_max=8_000.0,
        mel_scale="htk",
        mel_norm="none",
        log="ln",
        amin=1e-6,
        pad_mode="constant",
    ),
    "top_db": AudioConfig(clip_seconds=2.0, window_hop_seconds=1.0, top_db=80.0),
}


def _signals(config: AudioConfig) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    n = config.clip_samples
    t = np.arange(n) / config.sample_rate
    chirp = np.sin(2 * np.pi * (100 + 2_000 * t / t[-1]) * t)
    return {
        "tone+noise": 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n),
        "chirp": 0.5 * chirp,
        "clicks": (rng.random(n) < 0.001) * 0.9,
        "silence": np.zeros(n),
        "short": 0.2 * rng.standard_normal(n // 7),
    }


def _librosa_log_mel(y: np.ndarray, c: AudioConfig) -> np.ndarray:
    norm = "slaney" if c.mel_norm == "slaney" else None
    mel = librosa.feature.melspectrogram(
        y=y.astype(np.float64),
        sr=c.sample_rate,
        n_fft=c.n_fft,
        hop_length=c.hop_length,
        win_length=c.win_length,
        window="hann",
        center=c.center,
        pad_mode=c.pad_mode,
        power=c.power,
        n_mels=c.n_mels,
        fmin=c.f_min,
        fmax=c.f_max,
        htk=c.mel_scale == "htk",
        norm=norm,
        dtype=np.float64,
    )
    if c.log == "ln":
        return np.log(mel + c.amin).T
    return librosa.power_to_db(mel, ref=1.0, amin=c.amin, top_db=c.top_db).T


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_log_mel_matches_librosa_within_1e_4(name: str) -> None:
    config = CONFIGS[name]
    norm = "slaney" if config.mel_norm == "slaney" else None
    reference_bank = librosa.filters.mel(
        sr=config.sample_rate,
        n_fft=config.n_fft,
        n_mels=config.n_mels,
        fmin=config.f_min,
        fmax=config.f_max,
        htk=config.mel_scale == "htk",
        norm=norm,
        dtype=np.float64,
    )
    np.testing.assert_allclose(mel_filters(config), reference_bank, atol=1e-9)
    features = LogMel(config)
    for label, signal in _signals(config).items():
        ours = features(signal.astype(np.float32))
        theirs = _librosa_log_mel(signal.astype(np.float32), config)
        assert ours.shape == theirs.shape, label
        assert ours.dtype == np.float32
        assert np.abs(ours - theirs).max() <= 1e-4, (label, float(np.abs(ours - theirs).max()))
    assert features(fit_clip(np.zeros(10), config)).shape == (config.frames, config.n_mels)


def test_fit_clip_tiles_short_sounds_or_pads_them() -> None:
    config = AudioConfig(sample_rate=8_000, clip_seconds=1.0, window_hop_seconds=0.5, f_max=4_000)
    short = np.arange(1, 3_001, dtype=np.float32)
    tiled = fit_clip(short, config)
    assert tiled.shape == (8_000,)
    np.testing.assert_array_equal(tiled[:6_000], np.tile(short, 2))
    assert not tiled[6_000:].any()
    padded = fit_clip(short, AudioConfig(**{**config.to_dict(), "short": "pad"}))
    np.testing.assert_array_equal(padded[:3_000], short)
    assert not padded[3_000:].any()
    assert fit_clip(np.ones(9_000), config).shape == (8_000,)
    assert not fit_clip(np.zeros(0), config).any()


def test_windows_cover_a_long_sound_with_start_and_end_seconds() -> None:
    config = AudioConfig(sample_rate=8_000, clip_seconds=2.0, window_hop_seconds=1.0, f_max=4_000)
    one = list(windows(np.ones(8_000), config))
    assert [(w.start_seconds, w.end_seconds) for w in one] == [(0.0, 1.0)]
    spans = [(w.start_seconds, w.end_seconds) for w in windows(np.ones(8_000 * 5 + 4_000), config)]
    assert spans == [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0), (3.0, 5.0), (4.0, 5.5)]
    assert all(w.samples.shape == (16_000,) for w in windows(np.ones(44_000), config))


def test_config_round_trips_and_refuses_nonsense() -> None:
    config = CONFIGS["speech"]
    assert AudioConfig.from_dict(config.to_dict()) == config
    assert config.frames == 401
    with pytest.raises(ValueError, match="unknown audio settings"):
        AudioConfig.from_dict({**config.to_dict(), "n_mel": 64})
    for bad in ({"mel_scale": "bark"}, {"f_max": 30_000.0}, {"win_length": 2048}, {"window_hop_seconds": 20.0}):
        with pytest.raises(ValueError):
            AudioConfig(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fmt", "codec", "rate"),
    [
        ("wav", "pcm_s16le", 44_100),
        ("flac", "flac", 44_100),
        ("mp3", "libmp3lame", 44_100),
        ("ogg", "libopus", 48_000),
        ("ipod", "aac", 22_050),
        ("ipod", "alac", 44_100),
    ],
)
def test_decodes_each_format_to_mono_at_the_towers_rate(fmt: str, codec: str, rate: int) -> None:
    samples = decode_audio(encode_sound(fmt, codec, rate), 48_000)
    assert samples.dtype == np.float32 and samples.ndim == 1
    # One second of sound; AAC and Opus add their encoder delay (AAC's is 2,048 samples at the source rate).
    assert 47_000 <= samples.shape[0] <= 53_000
    # Over 48,000 samples at 48 kHz a spectrum bin is 1 Hz wide.
    assert abs(int(np.argmax(np.abs(np.fft.rfft(samples[:48_000])))) - 440) <= 2
    assert 0.2 < np.abs(samples[2_000:40_000]).max() < 0.6


def _video_only() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=1)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), dtype=np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "kind", "words"),
    [
        (b"", "empty", "0 bytes"),
        (wav_bytes(frames=0), "empty", "no samples"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt garbage!", "corrupt", "not a readable audio file"),
        (b"\x00" * 4096, "corrupt", "not a readable audio file"),
        (wav_bytes(channels=12), "channels", "12 channels; at most 8"),
        (wav_bytes(rate=500), "sample_rate", "500 Hz is outside"),
        (wav_bytes(rate=1_000_000), "sample_rate", "1000000 Hz is outside"),
        (wav_bytes(tag=0x7A21), "codec", "not supported"),
    ],
    ids=["zero-bytes", "zero-samples", "bad-header", "noise", "channels", "rate-low", "rate-high", "codec"],
)
def test_bad_audio_is_refused_with_its_kind(data: bytes, kind: str, words: str) -> None:
    with pytest.raises(AudioInputError) as caught:
        decode_audio(data, 48_000)
    assert caught.value.kind == kind
    assert words in caught.value.reason


def test_audio_only_requirement_and_truncation_and_length_limit() -> None:
    with pytest.raises(AudioInputError) as caught:
        decode_audio(_video_only(), 48_000)
    assert caught.value.kind == "no_audio"
    mp3 = encode_sound("mp3", "libmp3lame", 44_100, seconds=4.0)
    with pytest.raises(AudioInputError, match=r"truncated: its header says 4.00 s") as caught:
        decode_audio(mp3[: len(mp3) // 2], 48_000)
    assert caught.value.kind == "corrupt"
    with pytest.raises(AudioInputError, match="longer than the 2 s allowed") as caught:
        decode_audio(mp3, 48_000, DecodeLimits(max_seconds=2.0))
    assert caught.value.kind == "too_long"
    assert decode_audio(mp3, 16_000, DecodeLimits(max_seconds=5.0)).shape[0] >= 63_000
    # WAV: FFmpeg's reader takes the length of the file it has; the data chunk's declared size tells.
    wav = wav_bytes(frames=32_000)
    with pytest.raises(AudioInputError, match=r"truncated: its header declares 64000 bytes of samples, it holds 32000"):
        decode_audio(wav[: len(wav) - 32_000], 16_000)
    assert decode_audio(wav[: len(wav) - 2_000], 16_000).shape[0] == 31_000  # a few samples short: kept


def test_plain_wav_at_the_towers_rate_skips_ffmpeg_and_gives_its_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    """16-bit mono WAV at the tower's rate (the gateway's windows) is read with numpy: FFmpeg's samples, bit for
    bit, for every layout of chunks; anything else still goes to FFmpeg."""
    rng = np.random.default_rng(3)
    plain = audio_module.wav_bytes(pcm16(rng.uniform(-1.1, 1.1, 16_001).astype(np.float32)), 16_000)
    header, body = plain[:36], plain[36:]  # RIFF + fmt chunk | data chunk
    listed = b"LIST" + (5).to_bytes(4, "little") + b"INFO!" + b"\0"  # odd size: padded
    cases = {
        "plain": plain,
        "chunk before the data": header + listed + body,
        "chunk after the data": plain + listed,
        "a few bytes short": plain[:-101],
    }
    expected = {name: _ffmpeg_decode(data, 16_000, DecodeLimits()) for name, data in cases.items()}

    def no_ffmpeg(*_args: object) -> np.ndarray:
        raise AssertionError("FFmpeg was used")

    monkeypatch.setattr(audio_module, "_ffmpeg_decode", no_ffmpeg)
    for name, data in cases.items():
        assert np.array_equal(decode_audio(data, 16_000), expected[name]), name
    assert expected["a few bytes short"].shape[0] == 16_001 - 51
    for other in (wav_bytes(channels=2), wav_bytes(rate=22_050), audio_module.wav_bytes(body[8:], 22_050)):
        with pytest.raises(AssertionError, match="FFmpeg was used"):
            decode_audio(other, 16_000)
