"""The encoder_audio server on loopback: formats, clip fitting and cutting, input limits and per-item statuses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest

from crossmodal.bundle import ModelBundle, decode_audio
from crossmodal.v1 import encoder_pb2, types_pb2
from tests.bundle.audio_bundles import AUDIO, encode_sound, wav_bytes, with_audio_tower
from tests.encoder.helpers import base_env, stub, texts
from tests.support import ServiceProcess

INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]
MAX_AUDIO_BYTES = 400_000


@pytest.fixture(scope="module")
def audio_bundle(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default bundle with a random-weight audio tower (16 kHz, 1 s clips) added."""
    out = tmp_path_factory.mktemp("audio-bundle") / "bundle"
    with_audio_tower(bundle_dir, out, keep_image=True)
    return out


@pytest.fixture(scope="module")
def audio_server(start_encoder: Callable[..., ServiceProcess], audio_bundle: Path) -> ServiceProcess:
    """An encoder_audio server: at most 400 kB per sound, 3 s of audio and 2 channels."""
    env = base_env(audio_bundle, MAX_AUDIO_SECONDS="3", MAX_AUDIO_CHANNELS="2")
    env["CROSSMODAL_MAX_AUDIO_BYTES"] = str(MAX_AUDIO_BYTES)
    return start_encoder("services.encoder_audio", env)


@pytest.fixture(scope="module")
def reference(audio_bundle: Path) -> ModelBundle:
    """The bundle opened in this process, with the audio tower."""
    return ModelBundle.open(audio_bundle, providers=["CPUExecutionProvider"], intra_op_threads=1)


def encode(server: ServiceProcess, *sounds: bytes) -> encoder_pb2.EncodeResponse:
    """One Encode call with these sounds, keyed a0, a1, ..."""
    items = [encoder_pb2.EncodeItem(key=f"a{i}", audio=b) for i, b in enumerate(sounds)]
    return stub(server).Encode(encoder_pb2.EncodeRequest(items=items), timeout=60)


@pytest.mark.parametrize(
    ("fmt", "codec", "rate", "seconds"),
    [
        ("wav", "pcm_s16le", 44_100, 0.6),
        ("flac", "flac", 22_050, 0.8),
        ("mp3", "libmp3lame", 44_100, 0.5),
        ("ogg", "libopus", 48_000, 0.7),
        ("ipod", "aac", 32_000, 0.9),
    ],
)
def test_sounds_match_the_in_process_bundle(
    audio_server: ServiceProcess, reference: ModelBundle, fmt: str, codec: str, rate: int, seconds: float
) -> None:
    data = encode_sound(fmt, codec, rate, "stereo", seconds)
    response = encode(audio_server, data)
    (result,) = response.results
    assert result.status.code == 0, result.status.message
    assert not result.truncated
    assert abs(result.seconds - seconds) < 0.06, result.seconds  # lossy codecs pad a few milliseconds
    assert response.model_id == reference.model_id and response.dim == reference.embed_dim
    expected = reference.encode_clips([decode_audio(data, AUDIO.sample_rate)])
    np.testing.assert_allclose(np.array([result.vector]), expected, atol=2e-5)
    assert abs(np.linalg.norm(result.vector) - 1.0) < 1e-5


def test_a_sound_longer_than_a_clip_is_cut_to_its_first_clip(
    audio_server: ServiceProcess, reference: ModelBundle
) -> None:
    long = encode_sound("wav", "pcm_s16le", 16_000, "mono", 2.5)
    (result,) = encode(audio_server, long).results
    assert result.status.code == 0 and result.truncated
    assert result.seconds == 2.5  # the length decoded, before the cut
    first = decode_audio(long, AUDIO.sample_rate)[: AUDIO.clip_samples]
    np.testing.assert_allclose(np.array([result.vector]), reference.encode_clips([first]), atol=2e-5)


def test_model_info_describes_the_audio_tower(audio_server: ServiceProcess) -> None:
    info = stub(audio_server).GetModelInfo(encoder_pb2.GetModelInfoRequest(), timeout=10)
    assert info.modality == types_pb2.MODALITY_AUDIO
    assert (info.clip_seconds, info.sample_rate) == (1.0, 16_000)


def test_bad_sounds_fail_alone_with_their_reasons(audio_server: ServiceProcess) -> None:
    good = encode_sound("flac", "flac", 16_000, "mono", 0.5)
    cases = {
        b"": "the sound is empty (0 bytes)",
        b"\x00" * 4096: "corrupt: not a readable audio file",
        wav_bytes(channels=6): "channels: the audio has 6 channels; at most 2 are accepted",
        wav_bytes(rate=500): "sample_rate: the audio's sample rate 500 Hz is outside 1000-384000 Hz",
        wav_bytes(tag=0x7A21): "codec: the audio stream's codec is not supported by this build of FFmpeg",
        wav_bytes(frames=0): "empty: the audio holds no samples",
        wav_bytes(frames=16_000 * 4): "too_long: the audio is longer than the 3 s allowed; cut it first",
        b"x" * (MAX_AUDIO_BYTES + 1): "the limit is 400000 (CROSSMODAL_MAX_AUDIO_BYTES)",
    }
    response = encode(audio_server, good, *cases)
    assert response.results[0].status.code == 0
    for result, (data, words) in zip(response.results[1:], cases.items(), strict=True):
        assert result.status.code == INVALID, (len(data), result.status)
        assert words in result.status.message, result.status.message
        assert not result.vector


def test_texts_are_refused_by_the_audio_server(audio_server: ServiceProcess) -> None:
    (result,) = stub(audio_server).Encode(texts("a high beep"), timeout=10).results
    assert result.status.code == INVALID
    assert "send texts to the encoder_text service" in result.status.message
