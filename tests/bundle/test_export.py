"""The exporter: bundle contents, tower fidelity against PyTorch, variants, refusals and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from crossmodal.bundle import ModelBundle, preprocess_images, sha256_file, write_tokenizer_json
from crossmodal.bundle.probes import probe_images
from crossmodal.bundle.tokenizer import read_bpe_merges
from tests.bundle.conftest import TINY_CONFIG, ExportedModel, corpus_texts

torch = pytest.importorskip("torch")

FIDELITY_TEXTS = 64
FIDELITY_IMAGES = 16


def _fidelity(exported: ExportedModel) -> dict[str, float]:
    """Worst cosine between PyTorch and the fp32 bundle on 64 corpus texts and 16 varied images."""
    bundle = ModelBundle.open(exported.bundle)
    texts = corpus_texts()[::3][:FIDELITY_TEXTS]
    assert len(texts) == FIDELITY_TEXTS
    ids, truncated = bundle.tokenizer.encode_batch(texts)
    assert any(truncated)
    images = [img.resize((16 + 37 * i, 200 - 9 * i)) for i, img in enumerate(probe_images(FIDELITY_IMAGES))]
    pixels = preprocess_images(images, bundle.image_config)
    with torch.no_grad():
        ref_text = exported.model.encode_text(torch.from_numpy(ids), normalize=True).numpy()
        ref_image = exported.model.encode_image(torch.from_numpy(pixels), normalize=True).numpy()
    return {
        "text": float((bundle.encode_text_ids(ids) * ref_text).sum(axis=1).min()),
        "image": float((bundle.encode_pixels(pixels) * ref_image).sum(axis=1).min()),
    }


def _check_bundle_files(exported: ExportedModel) -> dict[str, Any]:
    bundle_dir = exported.bundle
    manifest = json.loads((bundle_dir / "model.json").read_text())
    on_disk = {p.name for p in bundle_dir.iterdir()} - {"model.json"}
    assert set(manifest["files"]) == on_disk
    for name, entry in manifest["files"].items():
        assert entry == {
            "sha256": sha256_file(bundle_dir / name),
            "bytes": (bundle_dir / name).stat().st_size,
        }
    for variant in manifest["variants"].values():
        for tower, input_name in [("text", "input_ids"), ("image", "pixels")]:
            graph = onnx.load(str(bundle_dir / variant[tower]), load_external_data=False)
            assert max(op.version for op in graph.opset_import if op.domain in ("", "ai.onnx")) >= 17
            (inp,) = graph.graph.input
            assert inp.name == input_name and inp.type.tensor_type.shape.dim[0].dim_param == "batch"
            out = graph.graph.output[0]
            assert out.name == "embedding" and out.type.tensor_type.shape.dim[0].dim_param == "batch"
            assert out.type.tensor_type.shape.dim[1].dim_value == manifest["embed_dim"]
    return manifest


def test_tiny_bundle_manifest_records_everything(tiny_export: ExportedModel) -> None:
    manifest = _check_bundle_files(tiny_export)
    assert set(manifest["files"]) == {
        "tokenizer.json",
        "text.onnx",
        "image.onnx",
        "text.fp16.onnx",
        "image.fp16.onnx",
        "text.int8.onnx",
        "image.int8.onnx",
    }
    assert manifest["model_id"] == "tiny_clip/random-seed0"
    assert (manifest["embed_dim"], manifest["context_length"], manifest["vocab_size"]) == (32, 77, 49408)
    assert manifest["image"] == {
        "size": [32, 32],
        "resize_mode": "shortest",
        "crop": "center",
        "interpolation": "bicubic",
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
        "fill_color": 0,
    }
    assert manifest["exporter"]["onnx_opset"] >= 17 and manifest["exporter"]["version"]
    assert manifest["source"]["kind"] == "random" and manifest["source"]["model_config"]["embed_dim"] == 32
    variants = manifest["variants"]
    assert variants["fp32"]["cosine_to_torch"]["text"]["min"] >= 0.9999
    assert variants["int8"]["target"] == "cpu" and variants["fp16"]["target"] == "cuda"
    for name in ("int8", "fp16"):
        for tower in ("text", "image"):
            stats = variants[name]["cosine_to_fp32"][tower]
            assert 0.9 < stats["min"] <= stats["mean"] <= 1.0


def test_tiny_towers_match_pytorch(tiny_export: ExportedModel) -> None:
    cos = _fidelity(tiny_export)
    assert min(cos.values()) >= 0.9999, cos


@pytest.fixture(scope="module")
def demo_arch_export(tmp_path_factory: pytest.TempPathFactory) -> ExportedModel:
    """The default model's small architecture (random weights) with a reduced vocabulary."""
    model_mod = pytest.importorskip("crossmodal.train.model")
    from crossmodal.export import export_bundle
    from crossmodal.export._torch_compat import import_open_clip

    out = tmp_path_factory.mktemp("demo")
    tok_json = write_tokenizer_json(out / "reduced-tokenizer.json", read_bpe_merges(limit=3000))
    arch = model_mod.DemoArchitecture(vocab_size=512 + 3000 + 2)
    torch.manual_seed(0)
    model = import_open_clip().model.CLIP(**arch.open_clip_config()).eval()
    manifest = export_bundle(
        model,
        out / "bundle",
        model_id="demo-arch/random",
        context_length=arch.context_length,
        source={"kind": "test"},
        precisions=("fp32",),
        tokenizer_json=tok_json,
    )
    return ExportedModel(bundle=out / "bundle", model=model, manifest=manifest)


def test_default_model_architecture_towers_match_pytorch(demo_arch_export: ExportedModel) -> None:
    manifest = _check_bundle_files(demo_arch_export)
    assert manifest["vocab_size"] == 3514 and manifest["context_length"] == demo_arch_export.model.context_length
    cos = _fidelity(demo_arch_export)
    assert min(cos.values()) >= 0.9999, cos


def test_export_refuses_a_non_empty_directory_and_cleans_up(tmp_path: Path) -> None:
    from crossmodal.export import ExportError, export_bundle, load_open_clip_model

    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    loaded = load_open_clip_model(model_config=TINY_CONFIG)
    with pytest.raises(ExportError, match="not empty"):
        export_bundle(loaded.model, out, model_id="m", context_length=77, source={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_export_refuses_a_tokenizer_larger_than_the_model_vocabulary(tmp_path: Path) -> None:
    from crossmodal.export import ExportError, export_bundle, load_open_clip_model

    cfg = json.loads(TINY_CONFIG.read_text())
    cfg["text_cfg"]["vocab_size"] = 1000
    small_vocab = tmp_path / "tiny_small_vocab.json"
    small_vocab.write_text(json.dumps(cfg))
    loaded = load_open_clip_model(model_config=small_vocab)
    big = tmp_path / "tok.json"
    write_tokenizer_json(big)
    with pytest.raises(ExportError, match="tokenizer has 49408 tokens but the model embeds only 1000"):
        export_bundle(loaded.model, tmp_path / "b", model_id="m", context_length=77, source={}, tokenizer_json=big)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny_small_vocab.json", "tok.json"]


def test_export_refuses_a_context_length_the_model_lacks() -> None:
    from crossmodal.export import ExportError, export_bundle, load_open_clip_model

    loaded = load_open_clip_model(model_config=TINY_CONFIG)
    with pytest.raises(ExportError, match="context_length 64 differs from the model's 77"):
        export_bundle(loaded.model, Path("/nonexistent/never-written"), model_id="m", context_length=64, source={})


def test_unknown_architecture_and_missing_checkpoint_are_explained(tmp_path: Path) -> None:
    from crossmodal.export import ExportError, load_open_clip_model

    with pytest.raises(ExportError, match="unknown architecture 'ViT-Q-99'"):
        load_open_clip_model("ViT-Q-99")
    with pytest.raises(ExportError, match="does not exist"):
        load_open_clip_model("ViT-B-32", checkpoint=tmp_path / "missing.pt")


def test_local_checkpoint_is_loaded_and_recorded(tmp_path: Path) -> None:
    from crossmodal.export import load_open_clip_model

    first = load_open_clip_model(model_config=TINY_CONFIG, seed=5)
    ckpt = tmp_path / "weights.pt"
    torch.save(first.model.state_dict(), ckpt)
    again = load_open_clip_model("tiny_clip", checkpoint=ckpt, seed=99)
    assert again.source["kind"] == "checkpoint" and again.source["checkpoint_sha256"] == sha256_file(ckpt)
    assert again.model_id == f"tiny_clip@{sha256_file(ckpt)[:12]}"
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key


def test_cli_exports_a_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from crossmodal.cli import main

    out = tmp_path / "cli-bundle"
    code = main(
        [
            "export-model",
            str(out),
            "--model-config",
            str(TINY_CONFIG),
            "--model-id",
            "tiny-cli",
            "--precision",
            "int8",
            "--seed",
            "3",
            "--quiet",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model_id"] == "tiny-cli" and set(summary["variants"]) == {"fp32", "int8"}
    bundle = ModelBundle.open(out, precision="int8")
    assert bundle.encode_texts(["a cat"]).shape == (1, 32)


def test_cli_explains_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from crossmodal.cli import main

    assert main(["export-model", str(tmp_path / "a")]) == 2
    assert "give --arch NAME or --model-config FILE" in capsys.readouterr().err
    code = main(["export-model", str(tmp_path / "b"), "--arch", "ViT-B-32", "--pretrained", "no-such-tag", "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "could not get pretrained weights 'no-such-tag' for ViT-B-32" in err and "--checkpoint" in err
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_vit_b_32_export_fidelity_and_variants(tmp_path_factory: pytest.TempPathFactory) -> None:
    """ViT-B-32 with random weights: ~1 minute and ~600 MB; run with -m slow."""
    from crossmodal.export import export_bundle, load_open_clip_model

    loaded = load_open_clip_model("ViT-B-32", seed=0)
    out = tmp_path_factory.mktemp("vitb32") / "bundle"
    manifest = export_bundle(
        loaded.model,
        out,
        model_id=loaded.model_id,
        context_length=77,
        source=loaded.source,
        precisions=("fp32", "fp16", "int8"),
    )
    exported = ExportedModel(bundle=out, model=loaded.model, manifest=manifest)
    _check_bundle_files(exported)
    assert manifest.embed_dim == 512 and manifest.image_size == (224, 224)
    cos = _fidelity(exported)
    print(f"ViT-B-32 fp32 ONNX vs PyTorch worst cosine: {cos}")
    print(f"ViT-B-32 variants: { {k: v.cosine_to_fp32 for k, v in manifest.variants.items()} }")
    assert min(cos.values()) >= 0.9999, cos
    assert manifest.variant("fp16").cosine_to_fp32["text"]["min"] >= 0.999
    assert manifest.variant("int8").cosine_to_fp32["text"]["min"] >= 0.95
    fp32 = ModelBundle.open(out)
    int8 = ModelBundle.open(out, precision="int8")
    texts = corpus_texts()[:16]
    assert float((fp32.encode_texts(texts) * int8.encode_texts(texts)).sum(axis=1).min()) >= 0.95
    assert np.isfinite(int8.encode_images(probe_images(2))).all()
