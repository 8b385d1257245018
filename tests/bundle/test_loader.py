"""The bundle loader: verification of files, checksums and shapes; sessions; encoding."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest

from crossmodal.bundle import BundleError, Manifest, ModelBundle, select_providers, sha256_file, verify_bundle
from crossmodal.bundle.probes import probe_images
from tests.bundle.conftest import corpus_texts

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny bundle that a test may damage."""
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, dst)
    return dst


def _rewrite_manifest(bundle: Path, edit: dict[str, object]) -> None:
    path = bundle / "model.json"
    data = json.loads(path.read_text())
    data.update(edit)
    path.write_text(json.dumps(data))


def test_open_exposes_manifest_tokenizer_and_image_config(tiny_bundle: Path) -> None:
    bundle = ModelBundle.open(tiny_bundle)
    m = bundle.manifest
    assert bundle.model_id == m.model_id == "tiny_clip/random-seed0"
    assert (m.embed_dim, m.context_length, m.image_size) == (32, 77, (32, 32))
    assert bundle.image_config.resize_mode == "shortest" and bundle.image_config.interpolation == "bicubic"
    assert bundle.tokenizer.context_length == 77 and bundle.tokenizer.vocab_size == m.vocab_size == 49408
    assert bundle.providers == ["CPUExecutionProvider"] and bundle.towers == ("text", "image")


def test_encodings_are_normalised_float32(tiny_bundle: Path) -> None:
    bundle = ModelBundle.open(tiny_bundle)
    texts = bundle.encode_texts(["a red circle", "", "two blue squares"])
    images = bundle.encode_images(probe_images(3, size=48))
    for out in (texts, images):
        assert out.dtype == np.float32 and out.shape == (3, 32)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert bundle.encode_text_ids(np.zeros((0, 77), np.int64)).shape == (0, 32)
    assert bundle.encode_pixels(np.zeros((0, 3, 32, 32), np.float32)).shape == (0, 32)


def test_batch_size_does_not_change_embeddings(tiny_bundle: Path) -> None:
    bundle = ModelBundle.open(tiny_bundle)
    texts = corpus_texts()[:24]
    together = bundle.encode_texts(texts)
    one_by_one = np.concatenate([bundle.encode_texts([t]) for t in texts])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_towers_can_be_loaded_separately(tiny_bundle: Path) -> None:
    text_only = ModelBundle.open(tiny_bundle, towers=("text",), intra_op_threads=1)
    assert text_only.towers == ("text",)
    with pytest.raises(BundleError, match="image tower was not loaded"):
        text_only.encode_pixels(np.zeros((1, 3, 32, 32), np.float32))
    image_only = ModelBundle.open(tiny_bundle, towers=("image",))
    assert image_only.encode_pixels(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 32)


def test_bad_inputs_are_rejected(tiny_bundle: Path) -> None:
    bundle = ModelBundle.open(tiny_bundle)
    with pytest.raises(ValueError, match=r"shape \(n, 77\)"):
        bundle.encode_text_ids(np.zeros((2, 76), np.int64))
    with pytest.raises(ValueError, match="must lie in"):
        bundle.encode_text_ids(np.full((1, 77), 49408, np.int64))
    with pytest.raises(ValueError, match="pixels must have shape"):
        bundle.encode_pixels(np.zeros((1, 3, 64, 64), np.float32))


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_precision_variants_load_and_stay_close(tiny_bundle: Path, precision: str) -> None:
    fp32 = ModelBundle.open(tiny_bundle)
    variant = ModelBundle.open(tiny_bundle, precision=precision)
    texts = corpus_texts()[:32]
    cos_text = (fp32.encode_texts(texts) * variant.encode_texts(texts)).sum(axis=1)
    images = probe_images(8, size=40)
    cos_image = (fp32.encode_images(images) * variant.encode_images(images)).sum(axis=1)
    floor = 0.999 if precision == "fp16" else 0.95
    assert cos_text.min() > floor and cos_image.min() > floor
    recorded = variant.manifest.variant(precision).cosine_to_fp32
    assert set(recorded) == {"text", "image"} and all(0 < s["min"] <= s["mean"] <= 1 for s in recorded.values())


def test_unknown_precision_lists_those_present(tiny_bundle: Path) -> None:
    with pytest.raises(BundleError, match=r"no 'int4' variant \(it has \['fp16', 'fp32', 'int8'\]\)"):
        ModelBundle.open(tiny_bundle, precision="int4")


@pytest.mark.parametrize("name", ["text.onnx", "image.onnx", "tokenizer.json"])
def test_flipped_byte_is_refused_naming_the_file(bundle_copy: Path, name: str) -> None:
    path = bundle_copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"{name}: sha256 [0-9a-f]{{64}} differs from the manifest"):
        ModelBundle.open(bundle_copy)


@pytest.mark.parametrize("name", ["text.onnx", "image.int8.onnx", "tokenizer.json"])
def test_missing_file_is_refused_naming_the_file(bundle_copy: Path, name: str) -> None:
    (bundle_copy / name).unlink()
    precision = "int8" if ".int8." in name else "fp32"
    with pytest.raises(BundleError, match=rf"{name}: the file listed in model.json is missing"):
        ModelBundle.open(bundle_copy, precision=precision)


def test_verify_bundle_checks_every_file(bundle_copy: Path) -> None:
    assert verify_bundle(bundle_copy).model_id == "tiny_clip/random-seed0"
    (bundle_copy / "notes.txt").write_text("stray")
    with pytest.raises(BundleError, match=r"files not listed in model.json: \['notes.txt'\]"):
        verify_bundle(bundle_copy)
    (bundle_copy / "notes.txt").unlink()
    data = bytearray((bundle_copy / "image.fp16.onnx").read_bytes())
    data[-1] ^= 0xFF
    (bundle_copy / "image.fp16.onnx").write_bytes(bytes(data))
    ModelBundle.open(bundle_copy)  # the fp32 towers are intact
    with pytest.raises(BundleError, match="image.fp16.onnx: sha256"):
        verify_bundle(bundle_copy)


def test_missing_manifest_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "model.json").unlink()
    with pytest.raises(BundleError, match="model.json: the manifest is missing"):
        ModelBundle.open(bundle_copy)


def test_manifest_dim_that_disagrees_with_the_graph_is_refused(bundle_copy: Path) -> None:
    _rewrite_manifest(bundle_copy, {"embed_dim": 64})
    with pytest.raises(
        BundleError, match=r"text.onnx: output shape \[.*32\] disagrees with the manifest's embed_dim 64"
    ):
        ModelBundle.open(bundle_copy)


def test_manifest_image_size_that_disagrees_with_the_graph_is_refused(bundle_copy: Path) -> None:
    data = json.loads((bundle_copy / "model.json").read_text())
    data["image"]["size"] = [224, 224]
    (bundle_copy / "model.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="image.onnx: input shape .* disagrees with the manifest"):
        ModelBundle.open(bundle_copy, towers=("image",))


def test_manifest_context_length_that_disagrees_is_refused(bundle_copy: Path) -> None:
    _rewrite_manifest(bundle_copy, {"context_length": 64})
    with pytest.raises(BundleError, match="text.onnx: input shape .* disagrees with the manifest"):
        ModelBundle.open(bundle_copy, towers=("text",))


def test_swapped_graph_with_matching_checksum_is_still_checked(bundle_copy: Path) -> None:
    """A graph replaced together with its checksum is caught by the shape check."""
    model = onnx.load(str(bundle_copy / "image.onnx"))
    # Keep only the first 16 of the 32 output dimensions.
    for node in model.graph.node:
        node.output[:] = ["raw" if o == "embedding" else o for o in node.output]
    consts = [
        onnx.helper.make_tensor(name, onnx.TensorProto.INT64, [1], [value])
        for name, value in [("s0", 0), ("s1", 16), ("ax", 1)]
    ]
    model.graph.initializer.extend(consts)
    model.graph.node.append(onnx.helper.make_node("Slice", ["raw", "s0", "s1", "ax"], ["embedding"]))
    del model.graph.output[:]
    model.graph.output.append(onnx.helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, ["batch", 16]))
    onnx.save(model, str(bundle_copy / "image.onnx"))
    data = json.loads((bundle_copy / "model.json").read_text())
    data["files"]["image.onnx"] = {
        "sha256": sha256_file(bundle_copy / "image.onnx"),
        "bytes": (bundle_copy / "image.onnx").stat().st_size,
    }
    (bundle_copy / "model.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"image.onnx: output shape \['batch', 16\] disagrees"):
        ModelBundle.open(bundle_copy)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"format_version": 99}, "format_version 99 is not supported"),
        ({"model_id": ""}, "model_id is empty"),
        ({"files": {}}, "has no checksum in 'files'"),
        ({"variants": {}}, "fp32 variant is missing"),
        ({"io": {"text_input": "ids", "image_input": "pixels", "output": "embedding"}}, "io names"),
    ],
)
def test_malformed_manifest_is_refused(bundle_copy: Path, edit: dict[str, object], message: str) -> None:
    _rewrite_manifest(bundle_copy, edit)
    with pytest.raises(BundleError, match=message):
        ModelBundle.open(bundle_copy)


def test_manifest_missing_field_is_named(bundle_copy: Path) -> None:
    data = json.loads((bundle_copy / "model.json").read_text())
    del data["embed_dim"]
    (bundle_copy / "model.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="model.json: required field 'embed_dim' is missing"):
        Manifest.load(bundle_copy)


def test_unavailable_provider_is_an_error_not_a_silent_fallback(tiny_bundle: Path) -> None:
    assert select_providers() == ["CPUExecutionProvider"]
    with pytest.raises(BundleError, match="TensorrtExecutionProvider.* not available"):
        ModelBundle.open(tiny_bundle, providers=["TensorrtExecutionProvider", "CPUExecutionProvider"])


def test_sessions_are_safe_to_share_between_threads(tiny_bundle: Path) -> None:
    bundle = ModelBundle.open(tiny_bundle)
    texts = corpus_texts()[:16]
    pixels = np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype(np.float32)
    want_text, want_image = bundle.encode_texts(texts), bundle.encode_pixels(pixels)
    failures: list[str] = []

    def work() -> None:
        for _ in range(5):
            if not np.allclose(bundle.encode_texts(texts), want_text, atol=1e-6):
                failures.append("text")
            if not np.allclose(bundle.encode_pixels(pixels), want_image, atol=1e-6):
                failures.append("image")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_serving_path_never_imports_torch(tiny_bundle: Path) -> None:
    code = (
        "import sys\n"
        "from crossmodal.bundle import ModelBundle, decode_image, preprocess_image\n"
        "import crossmodal.cli\n"
        f"b = ModelBundle.open({str(tiny_bundle)!r})\n"
        "b.encode_texts(['a cat'])\n"
        "crossmodal.cli.build_parser()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'open_clip', 'torchvision'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
