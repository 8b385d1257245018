"""The audio tower: `crossmodal train-audio-tower` end to end on a small run, and the committed tower's floor."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from crossmodal.bundle import ModelBundle
from crossmodal.cli import main
from crossmodal.scenes import sounds
from crossmodal.train.audio import BUILTIN_AUDIO, evaluate_audio, features
from tests.support import ROOT

DEFAULT_BUNDLE = ROOT / "models" / "default"
# The committed tower on a smaller held-out set than QUALITY.md's (fixed seed): floors under what it measured.
FLOOR_SOUNDS = 150
FLOORS = {"t2a_R@10": 0.8, "a2t_R@10": 0.7, "binding": 0.8}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle made by a short `train-audio-tower` run from a copy of the default bundle without its audio."""
    work = tmp_path_factory.mktemp("audio-tower")
    source = work / "source"
    shutil.copytree(DEFAULT_BUNDLE, source)
    out = work / "out"
    args = ["train-audio-tower", "--bundle", str(source), "--out", str(out), "--sounds", "128", "--steps", "3"]
    assert main([*args, "--batch-size", "32", "--workers", "1", "--eval-sounds", "40", "--seed", "3"]) == 0
    return out


def test_a_trained_tower_joins_the_bundle_and_leaves_its_other_towers_alone(small_run: Path) -> None:
    before = json.loads((DEFAULT_BUNDLE / "model.json").read_text())
    after = json.loads((small_run / "model.json").read_text())
    assert after["model_id"] == before["model_id"]
    assert after["audio"] == BUILTIN_AUDIO.to_dict()
    for name in ("text.onnx", "image.onnx", "text.int8.onnx", "image.int8.onnx", "tokenizer.json"):
        assert after["files"][name] == before["files"][name]
    assert after["variants"]["fp32"]["audio"] == "audio.onnx"
    assert after["variants"]["int8"]["audio"] == "audio.int8.onnx"
    assert after["variants"]["fp32"]["cosine_to_torch"]["audio"]["min"] >= 0.9999
    assert after["source"]["audio"]["config"]["steps"] == 3
    assert "train-audio-tower" in after["source"]["audio"]["command"]
    for precision in ("fp32", "int8"):
        bundle = ModelBundle.open(small_run, precision=precision, providers=["CPUExecutionProvider"])
        assert bundle.towers == ("text", "image", "audio")
        vectors = bundle.encode_clips([sounds.render_sound(sounds.SoundSpec("beep", "low", "steady", "once", "long"))])
        assert vectors.shape == (1, before["embed_dim"]) and np.isfinite(vectors).all()


def test_the_run_writes_the_audio_part_of_the_quality_report(small_run: Path) -> None:
    report = json.loads((small_run / "quality.json").read_text())
    audio = report["audio"]
    assert set(audio["results"]) == {"fp32", "int8"}
    assert audio["results"]["fp32"]["heldout"]["held_out_sounds"] == 40
    assert not (small_run / "audio_quality.json").exists()
    # The image part is the default bundle's, untouched; the audio part is added to QUALITY.md.
    assert report["results"] == json.loads((DEFAULT_BUNDLE / "quality.json").read_text())["results"]
    markdown = (small_run / "QUALITY.md").read_text()
    assert "## Audio tower" in markdown and "text->audio R@10" in markdown


def test_training_is_reproducible_from_its_seed(small_run: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    args = ["train-audio-tower", "--bundle", str(small_run), "--out", str(again), "--sounds", "128", "--steps", "3"]
    assert main([*args, "--batch-size", "32", "--workers", "1", "--eval-sounds", "40", "--seed", "3"]) == 0
    probe = features(sounds.sample_specs(8, sounds.Split.HELD_OUT, 11), 1)
    first = ModelBundle.open(small_run, providers=["CPUExecutionProvider"]).encode_audio_features(probe)
    second = ModelBundle.open(again, providers=["CPUExecutionProvider"]).encode_audio_features(probe)
    np.testing.assert_allclose(first, second, atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_default_bundle_hears_sounds_it_never_heard(precision: str) -> None:
    bundle = ModelBundle.open(DEFAULT_BUNDLE, precision=precision, providers=["CPUExecutionProvider"])
    measured = evaluate_audio(bundle.encode_audio_features, bundle.encode_texts, FLOOR_SOUNDS, seed=5, workers=1)
    assert measured["text_to_audio"]["R@10"] >= FLOORS["t2a_R@10"], measured
    assert measured["audio_to_text"]["R@10"] >= FLOORS["a2t_R@10"], measured
    assert measured["binding"]["accuracy"] >= FLOORS["binding"], measured
