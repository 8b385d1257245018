"""Bundles with any towers: text + image + audio, text + audio without images, and what a manifest may not say."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from crossmodal.bundle import BundleError, Manifest, ModelBundle, sha256_file
from crossmodal.bundle.audio import AudioConfig, LogMel, fit_clip

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


def _export_audio_tower(path: Path, dim: int, frames: int, n_mels: int) -> object:
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


def _with_audio(tiny_bundle: Path, out: Path, *, keep_image: bool, frames: int | None = None) -> object:
    shutil.copytree(tiny_bundle, out)
    data = json.loads((out / "model.json").read_text())
    model = _export_audio_tower(out / "audio.onnx", data["embed_dim"], frames or AUDIO.frames, AUDIO.n_mels)
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


def _tones(rate: int) -> list[np.ndarray]:
    t = np.arange(rate) / rate
    return [np.sin(2 * np.pi * f * t).astype(np.float32) for f in (220.0, 880.0, 3_000.0)] + [np.zeros(rate // 3)]


def test_a_bundle_with_all_three_towers_encodes_sounds_like_the_model(tiny_bundle: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    model = _with_audio(tiny_bundle, tmp_path / "b", keep_image=True)
    bundle = ModelBundle.open(tmp_path / "b", providers=["CPUExecutionProvider"])
    assert bundle.towers == ("text", "image", "audio") == bundle.manifest.towers
    clips = _tones(AUDIO.sample_rate)
    ours = bundle.encode_clips(clips)
    features = np.stack([LogMel(AUDIO)(fit_clip(c, AUDIO)) for c in clips])
    with torch.no_grad():
        reference = model(torch.from_numpy(features)).numpy()  # type: ignore[operator]
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    assert ours.shape == (4, bundle.embed_dim)
    assert float((ours * reference).sum(axis=1).min()) >= 0.9999
    assert bundle.encode_texts(["a red circle"]).shape == (1, bundle.embed_dim)
    saved = Manifest.load(tmp_path / "b")
    assert Manifest.from_dict(saved.to_dict()) == saved and saved.audio == AUDIO


def test_a_text_and_audio_bundle_needs_no_image_tower(tiny_bundle: Path, tmp_path: Path) -> None:
    _with_audio(tiny_bundle, tmp_path / "b", keep_image=False)
    bundle = ModelBundle.open(tmp_path / "b", providers=["CPUExecutionProvider"])
    assert bundle.towers == ("text", "audio")
    assert "image" not in bundle.manifest.to_dict() and "image_input" not in bundle.manifest.to_dict()["io"]
    with pytest.raises(BundleError, match="no image tower"):
        _ = bundle.image_config
    with pytest.raises(BundleError, match="no image tower"):
        ModelBundle.open(tmp_path / "b", towers=("image",))
    with pytest.raises(ValueError, match=r"features must have shape \(n, 101, 32\)"):
        bundle.encode_audio_features(np.zeros((1, 100, 32), dtype=np.float32))


def test_the_manifest_refuses_inconsistent_towers(tiny_bundle: Path, tmp_path: Path) -> None:
    _with_audio(tiny_bundle, tmp_path / "b", keep_image=True)
    data = json.loads((tmp_path / "b" / "model.json").read_text())
    text_only = {**data, "variants": {"fp32": {"text": data["variants"]["fp32"]["text"]}}}
    del text_only["image"], text_only["audio"]
    with pytest.raises(BundleError, match="needs an image or an audio tower"):
        Manifest.from_dict(text_only)
    no_audio_file = {**data, "variants": {"fp32": {k: v for k, v in data["variants"]["fp32"].items() if k != "audio"}}}
    with pytest.raises(BundleError, match=r"variant 'fp32' has towers \['text', 'image'\]"):
        Manifest.from_dict(no_audio_file)
    with pytest.raises(BundleError, match="unknown audio settings"):
        Manifest.from_dict({**data, "audio": {**data["audio"], "mels": 64}})


def test_an_audio_graph_that_disagrees_with_the_manifest_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    _with_audio(tiny_bundle, tmp_path / "b", keep_image=False, frames=99)
    with pytest.raises(
        BundleError, match=r"input shape .* disagrees with the manifest \(expected \[batch, 101, 32\]\)"
    ):
        ModelBundle.open(tmp_path / "b", providers=["CPUExecutionProvider"])
