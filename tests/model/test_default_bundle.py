"""The committed default bundle loads, verifies and retrieves generated scenes far above chance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crossmodal.bundle import ModelBundle
from crossmodal.scenes import Split, gallery_items
from crossmodal.train.evaluate import evaluate_binding, evaluate_retrieval

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BUNDLE = ROOT / "models" / "default"
GALLERY = 200  # chance level of R@10 is 10 / 200 = 5%
R10_FLOOR = 0.8


@pytest.fixture(scope="module")
def items() -> list:
    return gallery_items(GALLERY, seed=2024, split=Split.HELDOUT)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_default_bundle_finds_held_out_scenes(precision: str, items: list) -> None:
    bundle = ModelBundle.open(
        DEFAULT_BUNDLE, precision=precision, providers=["CPUExecutionProvider"], intra_op_threads=2
    )
    retrieval = evaluate_retrieval(bundle, items, image_size=128)
    t2i = retrieval["text_to_image"]
    assert t2i["R@10"] >= R10_FLOOR, t2i
    assert retrieval["image_to_text"]["R@10"] >= R10_FLOOR, retrieval["image_to_text"]
    # Each caption's own scene must usually outscore a random other scene by a margin.
    sim = retrieval["_similarity"]
    assert float(np.mean(np.diag(sim) > np.median(sim, axis=1))) > 0.9


def test_default_bundle_binds_colours_to_shapes(items: list) -> None:
    bundle = ModelBundle.open(DEFAULT_BUNDLE, precision="fp32", providers=["CPUExecutionProvider"], intra_op_threads=2)
    binding = evaluate_binding(bundle, items, image_size=128)
    assert binding["pairs"] >= 40
    assert binding["accuracy_full_caption"] >= 0.6, binding


def test_default_bundle_records_how_it_was_made() -> None:
    manifest = json.loads((DEFAULT_BUNDLE / "model.json").read_text())
    assert "train-demo-model" in manifest["source"]["command"]
    sizes = sum(p.stat().st_size for p in DEFAULT_BUNDLE.glob("*.onnx"))
    assert sizes <= 30 * 1024 * 1024
    quality = json.loads((DEFAULT_BUNDLE / "quality.json").read_text())
    assert quality["model_id"] == manifest["model_id"]
