"""Bundles with any towers: text + image + audio, text + audio without images, and what a manifest may not say."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crossmodal.bundle import BundleError, Manifest, ModelBundle
from crossmodal.bundle.audio import LogMel, fit_clip
from tests.bundle.audio_bundles import AUDIO, with_audio_tower


def _tones(rate: int) -> list[np.ndarray]:
    t = np.arange(rate) / rate
    return [np.sin(2 * np.pi * f * t).astype(np.float32) for f in (220.0, 880.0, 3_000.0)] + [np.zeros(rate // 3)]


def test_a_bundle_with_all_three_towers_encodes_sounds_like_the_model(tiny_bundle: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    model = with_audio_tower(tiny_bundle, tmp_path / "b", keep_image=True)
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
    with_audio_tower(tiny_bundle, tmp_path / "b", keep_image=False)
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
    with_audio_tower(tiny_bundle, tmp_path / "b", keep_image=True)
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
    with_audio_tower(tiny_bundle, tmp_path / "b", keep_image=False, frames=99)
    with pytest.raises(
        BundleError, match=r"input shape .* disagrees with the manifest \(expected \[batch, 101, 32\]\)"
    ):
        ModelBundle.open(tmp_path / "b", providers=["CPUExecutionProvider"])
