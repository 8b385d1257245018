"""Audio test inputs: sounds encoded with PyAV, hand-made WAV files, and bundles given a random audio tower."""

from __future__ import annotations

import io
import json
import shutil
import struct
import warnings
from pathlib import Path

import av
import numpy as np
import pytest

from crossmodal.bundle import sha256_file
from crossmodal.bundle.audio import AudioConfig

# 16 kHz, 1 s clips: small features (101 frames x 32 mels), so that tests encode many sounds cheaply.
AUDIO = AudioConfig(
    sample_rate=16_000,
    clip_seconds=1.0,
    window_hop_seconds=0.5,
    n_fft=512,
    hop_length=160,
    win_length=400,
    n_mels=32,
    f_min=20.0,
    f_max=8_000.0,
)


def export_audio_tower(path: Path, dim: int, frames: int, n_mels: int) -> object:
    """A random-weight audio tower (a conv over the log-mel, pooled over time) exported to ONNX."""
    torch = pytest.importorskip("torch")

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv1d(n_mels, 48, kernel_size=3, padding=1)
            self.proj = torch.nn.Linear(48, dim)

        def forward(self, features: object) -> object:
            hidden = torch.relu(self.conv(features.transpose(1, 2)))  # type: ignore[attr-defined]
            return self.proj(hidden.mean(dim=2))

    torch.manual_seed(0)
    model = Tower().eval()
    # The TorchScript exporter, as crossmodal.export uses (the torch.export one needs onnxscript).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(2, frames, n_mels),),
            str(path),
            input_names=["features"],
            output_names=["embedding"],
            dynamic_axes={"features": {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return model


def with_audio_tower(source: Path, out: Path, *, keep_image: bool, frames: int | None = None) -> object:
    """Copy the bundle at `source` to `out` with a random audio tower (fp32 variant only); the torch model."""
    shutil.copytree(source, out)
    data = json.loads((out / "model.json").read_text())
    model = export_audio_tower(out / "audio.onnx", data["embed_dim"], frames or AUDIO.frames, AUDIO.n_mels)
    data["audio"] = AUDIO.to_dict()
    data["files"]["audio.onnx"] = {
        "sha256": sha256_file(out / "audio.onnx"),
        "bytes": (out / "audio.onnx").stat().st_size,
    }
    data["variants"] = {"fp32": {**data["variants"]["fp32"], "audio": "audio.onnx"}}
    if not keep_image:
        del data["image"]
        image_file = data["variants"]["fp32"].pop("image")
        del data["files"][image_file]
    (out / "model.json").write_text(json.dumps(data))
    return model


def encode_sound(fmt: str, codec: str, rate: int, layout: str = "stereo", seconds: float = 1.0) -> bytes:
    """A 440 Hz tone encoded with PyAV into ``fmt`` with ``codec``."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        n = int(rate * seconds)
        tone = (0.4 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)
        channels = 2 if layout == "stereo" else 1
        for start in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(
                np.tile(tone[start : start + 1024], (channels, 1)), format="fltp", layout=layout
            )
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def wav_bytes(channels: int = 1, rate: int = 16_000, tag: int = 1, frames: int = 16_000) -> bytes:
    """A 16-bit PCM WAV of silence with the given header fields (to make absurd channel counts and rates)."""
    block = channels * 2
    body = np.zeros(frames * channels, dtype=np.int16).tobytes()
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, 16)
    header = b"RIFF" + struct.pack("<I", 36 + len(body)) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
    return header + b"data" + struct.pack("<I", len(body)) + body
