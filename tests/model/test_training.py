"""The demo-model pipeline end to end on a tiny set: train, resume, export, evaluate through the bundle."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from crossmodal.bundle import ModelBundle  # noqa: E402
from crossmodal.export import export_bundle  # noqa: E402
from crossmodal.train.config import TrainConfig  # noqa: E402
from crossmodal.train.evaluate import evaluate, recall_at_k  # noqa: E402
from crossmodal.train.loop import train  # noqa: E402

TINY_ARCH = {
    "embed_dim": 32,
    "image_size": 32,
    "resnet_width": 8,
    "vision_head_width": 32,
    "text_width": 64,
    "text_layers": 1,
    "text_heads": 2,
    "context_length": 48,
}


def tiny_config(out: Path, cache: Path) -> TrainConfig:
    """A run that takes seconds: 200 scenes, 4 steps of 16."""
    return TrainConfig(
        out_dir=str(out),
        steps=4,
        batch_size=16,
        scenes=200,
        warmup_steps=2,
        checkpoint_every=1,
        workers=1,
        threads=1,
        cache_dir=str(cache),
        arch=TINY_ARCH,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainConfig, object]:
    root = tmp_path_factory.mktemp("tiny")
    cfg = tiny_config(root / "run", root / "cache")
    first = train(cfg, progress=False, stop_after=2)
    assert len(first.losses) == 2
    return cfg, train(cfg, progress=False)


def test_resumed_run_equals_an_uninterrupted_one(trained: tuple[TrainConfig, object], tmp_path: Path) -> None:
    cfg, resumed = trained
    straight = train(replace(cfg, out_dir=str(tmp_path / "straight")), progress=False, resume=False)
    assert resumed.losses == straight.losses  # type: ignore[attr-defined]
    a, b = resumed.model.state_dict(), straight.model.state_dict()  # type: ignore[attr-defined]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_loss_is_finite_and_logged(trained: tuple[TrainConfig, object]) -> None:
    cfg, result = trained
    losses = result.losses  # type: ignore[attr-defined]
    assert len(losses) == 4 and all(0 < x < 50 for x in losses)
    log = json.loads((Path(cfg.out_dir) / "train_log.json").read_text())
    assert log["losses"] == losses


def test_a_changed_config_refuses_to_resume(trained: tuple[TrainConfig, object]) -> None:
    cfg, _ = trained
    with pytest.raises(ValueError, match="different configuration"):
        train(replace(cfg, lr=cfg.lr / 2), progress=False)


def test_export_and_evaluate_through_the_bundle(trained: tuple[TrainConfig, object], tmp_path: Path) -> None:
    cfg, result = trained
    out = tmp_path / "bundle"
    manifest = export_bundle(
        result.model,  # type: ignore[attr-defined]
        out,
        model_id="tiny-test",
        context_length=TINY_ARCH["context_length"],
        source={"kind": "test"},
        tokenizer_json=result.tokenizer_path,  # type: ignore[attr-defined]
        image_config=result.image_config,  # type: ignore[attr-defined]
    )
    assert manifest.image.size == (32, 32)
    bundle = ModelBundle.open(out, precision="int8", providers=["CPUExecutionProvider"])
    report = evaluate(bundle, gallery_size=40, seed=3)
    t2i = report["retrieval"]["text_to_image"]
    assert set(t2i) == {"R@1", "R@5", "R@10"} and 0.0 <= t2i["R@1"] <= t2i["R@5"] <= t2i["R@10"] <= 1.0
    assert report["retrieval"]["scenes_with_unseen_pairs"] == 40
    assert report["binding"]["pairs"] > 0 and 0.0 <= report["binding"]["accuracy"] <= 1.0
    assert report["foreign_drawings"]["drawings"] == 105

    from crossmodal.cli import main

    assert main(["eval-model", "--bundle", str(out), "--gallery-size", "30", "--out-dir", str(tmp_path / "q")]) == 0
    quality = json.loads((tmp_path / "q" / "quality.json").read_text())
    assert set(quality["results"]) == {"fp32", "int8"}
    assert "text->image R@10" in (tmp_path / "q" / "QUALITY.md").read_text()


def test_recall_counts_ties_against_the_match() -> None:
    import numpy as np

    sim = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 0.5], [0.9, 0.5, 0.1]])
    r = recall_at_k(sim, ks=(1, 2))
    assert r == {"R@1": round(1 / 3, 4), "R@2": round(2 / 3, 4)}
