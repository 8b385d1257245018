"""Fixtures of the audio tests: a bundle with an audio tower, generated sounds, and clusters that serve them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from crossmodal.bundle.audio import pcm16, wav_bytes
from crossmodal.cluster import ClusterSpec, LocalCluster
from tests.bundle.audio_bundles import AUDIO, with_audio_tower
from tests.encoder.conftest import bundle_dir  # noqa: F401 - the shared bundle fixture

RATE = AUDIO.sample_rate  # the test tower's rate: 16 kHz, 1 s clips, windows 0.5 s apart
# The gateway's audio limits in the test clusters: small, so that going past them is cheap to test.
MAX_SECONDS = 30
MAX_CHUNK_BYTES = 64 * 1024


@pytest.fixture(scope="session")
def audio_bundle(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path) -> Path:  # noqa: F811
    """The default bundle with the tests' small random audio tower (1 s clips, 0.5 s apart) for its own.

    These tests check plumbing (windows, moments, writes, refusals) with clips short enough to make many
    windows cheaply; what the built-in tower hears is tested in tests/model/test_audio_tower.py and by the demo.
    """
    out = tmp_path_factory.mktemp("audio-bundle") / "bundle"
    with_audio_tower(bundle_dir, out, keep_image=True)
    return out


def _running(factory: pytest.TempPathFactory, bundle: Path, name: str, **env: str) -> Iterator[LocalCluster]:
    gateway_env = {
        "CROSSMODAL_GATEWAY_AUDIO_MAX_SECONDS": str(MAX_SECONDS),
        "CROSSMODAL_GATEWAY_AUDIO_MAX_CHUNK_BYTES": str(MAX_CHUNK_BYTES),
        **env,
    }
    # The audio encoder's own limits, small too: 20 s of sound, 2 channels.
    encoder_env = {"CROSSMODAL_ENCODER_MAX_AUDIO_SECONDS": "20", "CROSSMODAL_ENCODER_MAX_AUDIO_CHANNELS": "2"}
    # The HTTP service in front, serving the sound files the tests write (all under pytest's base temp).
    spec = ClusterSpec.on_free_ports(
        factory.mktemp(name),
        shards=2,
        bundle=bundle,
        gateway_env=gateway_env,
        env=encoder_env,
        http_port=0,
        media_roots=(factory.getbasetemp(),),
    )
    with LocalCluster(spec) as running:
        yield running


@pytest.fixture(scope="session")
def mute_cluster(tmp_path_factory: pytest.TempPathFactory, audio_bundle: Path) -> Iterator[LocalCluster]:
    """A cluster whose gateway is given no audio encoder (CROSSMODAL_GATEWAY_AUDIO_ENCODERS empty)."""
    yield from _running(tmp_path_factory, audio_bundle, "mute", CROSSMODAL_GATEWAY_AUDIO_ENCODERS="")


@pytest.fixture(scope="session")
def audio_cluster(tmp_path_factory: pytest.TempPathFactory, audio_bundle: Path) -> Iterator[LocalCluster]:
    """2 shards written directly, with the audio encoder started beside the text and image encoders."""
    yield from _running(tmp_path_factory, audio_bundle, "audio")


def tone(freq: float, seconds: float, rate: int = RATE, amplitude: float = 0.5) -> np.ndarray:
    """A steady sine tone (float32 mono)."""
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, seed: int, rate: int = RATE, amplitude: float = 0.3) -> np.ndarray:
    """White noise (float32 mono), deterministic by seed."""
    return (amplitude * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32)


def wav(samples: np.ndarray, rate: int = RATE) -> bytes:
    """Mono float samples as 16-bit WAV bytes."""
    return wav_bytes(pcm16(samples), rate)


def write_sound(path: Path, samples: np.ndarray, codec: str, rate: int = RATE) -> Path:
    """Mono float samples encoded with PyAV into `path` (the container from its suffix) with `codec`."""
    pcm = np.frombuffer(pcm16(samples), "<i2")
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        for start in range(0, len(pcm), 4096):
            frame = av.AudioFrame.from_ndarray(pcm[None, start : start + 4096].copy(), format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path
