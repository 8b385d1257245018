"""Turn an open_clip model into a model bundle: ONNX towers, tokenizer.json and model.json."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

import crossmodal
from crossmodal.bundle.errors import BundleError
from crossmodal.bundle.image import INTERPOLATIONS, RESIZE_MODES, ImageConfig, preprocess_images
from crossmodal.bundle.loader import ModelBundle
from crossmodal.bundle.manifest import (
    IMAGE_INPUT,
    OUTPUT,
    PRECISIONS,
    TEXT_INPUT,
    FileEntry,
    Manifest,
    Variant,
    sha256_file,
)
from crossmodal.bundle.probes import cosine_stats, probe_images, probe_texts
from crossmodal.bundle.tokenizer import ClipTokenizer, write_tokenizer_json
from crossmodal.export._torch_compat import import_open_clip
from crossmodal.export.precision import convert_fp16, quantize_int8

EXPORTER_NAME = "crossmodal.export"
OPSET = 17
TOKENIZER_FILE = "tokenizer.json"
TOWER_FILES = {
    "fp32": ("text.onnx", "image.onnx"),
    "fp16": ("text.fp16.onnx", "image.fp16.onnx"),
    "int8": ("text.int8.onnx", "image.int8.onnx"),
}
PRECISION_TARGETS = {"fp32": "any", "fp16": "cuda", "int8": "cpu"}
# Probe sets used for every measured cosine (fixed, so figures are comparable across exports).
N_PROBE_TEXTS = 64
N_PROBE_IMAGES = 16

Progress = Callable[[str], None]


class ExportError(Exception):
    """The model cannot be exported; the message says why and what to do."""


class _TextTower(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        clip: Any = self.model
        return clip.encode_text(input_ids)


class _ImageTower(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        clip: Any = self.model
        return clip.encode_image(pixels)


@dataclass(frozen=True)
class LoadedModel:
    """An open_clip model ready to export, with where it came from and a default model id."""

    model: nn.Module
    source: dict[str, Any]
    model_id: str
    context_length: int


def load_open_clip_model(
    architecture: str | None = None,
    *,
    pretrained: str | None = None,
    checkpoint: Path | None = None,
    model_config: Path | None = None,
    cache_dir: Path | None = None,
    seed: int = 0,
) -> LoadedModel:
    """Create an open_clip model from a named architecture, a local checkpoint or a config file.

    ``architecture`` names a built-in open_clip config (e.g. ``ViT-B-32``); ``model_config`` is a
    JSON file with ``embed_dim``, ``vision_cfg`` and ``text_cfg`` (its architecture name is the
    file's stem unless ``architecture`` is given). ``pretrained`` is an open_clip tag (needs the
    network) and ``checkpoint`` a local weights file; with neither, weights are random
    (seeded), which is only useful for tests.
    """
    open_clip = import_open_clip()
    if pretrained and checkpoint:
        raise ExportError("give a pretrained tag or a checkpoint file, not both")
    if model_config is not None:
        if not model_config.is_file():
            raise ExportError(f"model config {model_config} does not exist")
        try:
            cfg = json.loads(model_config.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ExportError(f"model config {model_config} is not readable JSON ({exc})") from exc
        missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in cfg]
        if missing:
            raise ExportError(f"model config {model_config} lacks {missing}")
        architecture = architecture or model_config.stem
        # open_clip keys configs by file stem; registering the file makes create_model find it.
        open_clip.add_model_config(model_config)
        if architecture not in open_clip.list_models():
            raise ExportError(f"model config {model_config} did not register as {architecture!r}")
    if not architecture:
        raise ExportError("name an architecture (e.g. ViT-B-32) or give a model config file")
    if architecture not in open_clip.list_models():
        raise ExportError(
            f"unknown architecture {architecture!r}; open_clip knows e.g. "
            f"{', '.join(m for m in open_clip.list_models() if m.startswith('ViT-B'))}"
        )
    model_cfg = open_clip.get_model_config(architecture) or {}
    text_cfg = model_cfg.get("text_cfg", {})
    if text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name"):
        raise ExportError(
            f"{architecture} uses a Hugging Face text tower/tokenizer; bundles support "
            "open_clip's CLIP BPE tokenizer only"
        )
    torch.manual_seed(seed)
    source: dict[str, Any] = {"architecture": architecture}
    if model_config is not None:
        source["model_config"] = json.loads(model_config.read_text(encoding="utf-8"))
    if checkpoint is not None:
        if not checkpoint.is_file():
            raise ExportError(f"checkpoint {checkpoint} does not exist")
        weights: str | None = str(checkpoint)
        source.update(kind="checkpoint", checkpoint=checkpoint.name, checkpoint_sha256=sha256_file(checkpoint))
        model_id = f"{architecture}@{source['checkpoint_sha256'][:12]}"
    elif pretrained:
        weights = pretrained
        source.update(kind="pretrained", pretrained=pretrained)
        model_id = f"{architecture}/{pretrained}"
    else:
        weights = None
        source.update(kind="random", seed=seed)
        model_id = f"{architecture}/random-seed{seed}"
    try:
        model = open_clip.create_model(
            architecture,
            pretrained=weights,
            cache_dir=str(cache_dir) if cache_dir else None,
            require_pretrained=weights is not None,
        )
    except Exception as exc:  # hub, file and config failures all surface here with varied types
        if pretrained:
            raise ExportError(
                f"could not get pretrained weights {pretrained!r} for {architecture} "
                f"({type(exc).__name__}: {exc}). "
                "Downloading needs network access to the model hub; where there is none, fetch the "
                "checkpoint elsewhere and pass it with --checkpoint."
            ) from exc
        raise ExportError(f"could not create {architecture} ({type(exc).__name__}: {exc})") from exc
    model.eval()
    context_length = int(getattr(model, "context_length", 0) or text_cfg.get("context_length", 77))
    return LoadedModel(model=model, source=source, model_id=model_id, context_length=context_length)


def image_config_from_model(model: nn.Module, overrides: dict[str, Any] | None = None) -> ImageConfig:
    """Read the image preprocessing an open_clip model was built with, applying ``overrides``."""
    open_clip = import_open_clip()
    cfg = dict(open_clip.get_model_preprocess_cfg(model))
    cfg.update({k: v for k, v in (overrides or {}).items() if v is not None})
    size = cfg.get("size", getattr(model.visual, "image_size", 224))
    size_hw = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    mean = cfg.get("mean") or (0.48145466, 0.4578275, 0.40821073)
    std = cfg.get("std") or (0.26862954, 0.26130258, 0.27577711)
    mean = (mean,) * 3 if isinstance(mean, float | int) else tuple(mean)
    std = (std,) * 3 if isinstance(std, float | int) else tuple(std)
    interpolation = cfg.get("interpolation") or "bicubic"
    if interpolation == "random":
        interpolation = "bicubic"  # open_clip's eval transform uses bicubic for "random"
    resize_mode = cfg.get("resize_mode") or "shortest"
    if interpolation not in INTERPOLATIONS or resize_mode not in RESIZE_MODES:
        raise ExportError(f"unsupported preprocessing {interpolation=} {resize_mode=}")
    return ImageConfig(
        size=size_hw,
        resize_mode=resize_mode,
        interpolation=interpolation,
        mean=(float(mean[0]), float(mean[1]), float(mean[2])),
        std=(float(std[0]), float(std[1]), float(std[2])),
        fill_color=int(cfg.get("fill_color", 0) or 0),
    )


def _export_onnx(module: nn.Module, example: torch.Tensor, path: Path, input_name: str) -> None:
    dynamic = {input_name: {0: "batch"}, OUTPUT: {0: "batch"}}
    # nn.MultiheadAttention's inference fast path traces to an op ONNX cannot express.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings():
            # The text tower's argmax pooling indexes with non-negative positions only; the
            # exporter's caution about negative indices does not apply.
            warnings.filterwarnings("ignore", message="Exporting aten::index operator")
            # dynamo=False is deliberate: the torch.export-based exporter needs onnxscript, which
            # the export extra does not ship; the tracer's notes concern shapes constant here.
            warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                module,
                (example,),
                str(path),
                input_names=[input_name],
                output_names=[OUTPUT],
                dynamic_axes=dynamic,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    onnx.checker.check_model(str(path))


def _run_onnx(path: Path, feed_name: str, feed: np.ndarray, precision: str) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if precision == "fp16":
        # See crossmodal.bundle.loader: full optimisation crashes on fp16 graphs on CPU.
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    return np.asarray(session.run([OUTPUT], {feed_name: feed})[0], dtype=np.float32)


def _prepare_dir(out_dir: Path, overwrite: bool) -> Path:
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ExportError(f"{out_dir} exists and is not empty; pass overwrite=True (--overwrite) to replace it")
    staging = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def _publish(staging: Path, out_dir: Path) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)


def _write_verified(
    manifest: Manifest, staging: Path, out_dir: Path, precisions: Sequence[str], say: Callable[[str], None]
) -> None:
    """Write the manifest, open every precision of the staged bundle as a service would, then publish it."""
    manifest.check()
    manifest.write(staging)
    say("verifying the bundle")
    for precision in precisions:
        try:
            ModelBundle.open(staging, precision=precision, providers=["CPUExecutionProvider"])
        except BundleError as exc:
            raise ExportError(f"the written bundle does not verify ({exc})") from exc
    _publish(staging, out_dir)


def export_bundle(
    model: nn.Module,
    out_dir: str | Path,
    *,
    model_id: str,
    context_length: int,
    source: dict[str, Any],
    precisions: Sequence[str] = ("fp32", "int8"),
    tokenizer_json: Path | None = None,
    image_config: ImageConfig | None = None,
    preprocess_overrides: dict[str, Any] | None = None,
    progress: Progress | None = None,
    overwrite: bool = False,
) -> Manifest:
    """Export an open_clip model to a verified bundle directory and return its manifest.

    Writes ``text.onnx`` / ``image.onnx`` (fp32, opset 17, dynamic batch, projected and
    unnormalised embeddings), one pair per extra precision (``*.int8.onnx``, ``*.fp16.onnx``),
    ``tokenizer.json`` (open_clip's full vocabulary, or a copy of ``tokenizer_json``) and
    ``model.json``. Measures the fp32 towers against PyTorch and every variant against fp32 on
    fixed probes, records the figures in the manifest, and refuses (ExportError) an fp32
    export whose cosine to PyTorch is below 0.999. The directory appears only when complete.
    """
    say = progress or (lambda _msg: None)
    out_dir = Path(out_dir)
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise ExportError(f"unknown precisions {unknown}; choose from {PRECISIONS}")
    wanted = ["fp32", *(p for p in PRECISIONS if p in precisions and p != "fp32")]
    model = model.float().eval().cpu()
    model_ctx = int(getattr(model, "context_length", context_length))
    if model_ctx != context_length:
        raise ExportError(f"context_length {context_length} differs from the model's {model_ctx}")
    img_cfg = image_config or image_config_from_model(model, preprocess_overrides)

    staging = _prepare_dir(out_dir, overwrite)
    try:
        tok_path = staging / TOKENIZER_FILE
        if tokenizer_json is None:
            say("building tokenizer.json from open_clip's BPE vocabulary")
            write_tokenizer_json(tok_path)
        else:
            shutil.copyfile(tokenizer_json, tok_path)
        tokenizer = ClipTokenizer.from_file(tok_path, context_length)
        model_vocab = getattr(model, "vocab_size", None)
        if model_vocab is not None and tokenizer.vocab_size > int(model_vocab):
            raise ExportError(
                f"the tokenizer has {tokenizer.vocab_size} tokens but the model embeds only {model_vocab}"
            )

        texts = probe_texts(N_PROBE_TEXTS)
        ids, _ = tokenizer.encode_batch(texts)
        pixels = preprocess_images(probe_images(N_PROBE_IMAGES), img_cfg)
        clip: Any = model
        with torch.no_grad():
            torch_text = clip.encode_text(torch.from_numpy(ids)).float().numpy()
            torch_image = clip.encode_image(torch.from_numpy(pixels)).float().numpy()
        embed_dim = int(torch_text.shape[1])
        if torch_image.shape[1] != embed_dim:
            raise ExportError(f"text ({embed_dim}) and image ({torch_image.shape[1]}) embeddings differ in size")

        fp32_text, fp32_image = (staging / f for f in TOWER_FILES["fp32"])
        say(f"exporting the text tower to {fp32_text.name}")
        _export_onnx(_TextTower(model).eval(), torch.from_numpy(ids[:2]), fp32_text, TEXT_INPUT)
        say(f"exporting the image tower to {fp32_image.name}")
        _export_onnx(_ImageTower(model).eval(), torch.from_numpy(pixels[:2]), fp32_image, IMAGE_INPUT)

        ref_text = _run_onnx(fp32_text, TEXT_INPUT, ids, "fp32")
        ref_image = _run_onnx(fp32_image, IMAGE_INPUT, pixels, "fp32")
        to_torch = {"text": cosine_stats(ref_text, torch_text), "image": cosine_stats(ref_image, torch_image)}
        say(f"fp32 ONNX vs PyTorch cosine: {to_torch}")
        worst = min(s["min"] for s in to_torch.values())
        if worst < 0.999:
            raise ExportError(f"the ONNX towers disagree with PyTorch (cosine {to_torch}); export refused")

        variants = {
            "fp32": Variant(
                precision="fp32",
                text=fp32_text.name,
                image=fp32_image.name,
                cosine_to_fp32={"text": {"mean": 1.0, "min": 1.0}, "image": {"mean": 1.0, "min": 1.0}},
                cosine_to_torch=to_torch,
                target="any",
            )
        }
        for precision in wanted[1:]:
            text_file, image_file = (staging / f for f in TOWER_FILES[precision])
            convert = quantize_int8 if precision == "int8" else convert_fp16
            say(f"making the {precision} variant")
            convert(fp32_text, text_file)
            convert(fp32_image, image_file)
            cos = {
                "text": cosine_stats(_run_onnx(text_file, TEXT_INPUT, ids, precision), ref_text),
                "image": cosine_stats(_run_onnx(image_file, IMAGE_INPUT, pixels, precision), ref_image),
            }
            say(f"{precision} vs fp32 cosine: {cos}")
            variants[precision] = Variant(
                precision=precision,
                text=text_file.name,
                image=image_file.name,
                cosine_to_fp32=cos,
                target=PRECISION_TARGETS[precision],
            )

        files = {
            p.name: FileEntry(sha256=sha256_file(p), bytes=p.stat().st_size)
            for p in sorted(staging.iterdir())
            if p.is_file()
        }
        logit_scale = getattr(model, "logit_scale", None)
        manifest = Manifest(
            model_id=model_id,
            embed_dim=embed_dim,
            context_length=context_length,
            vocab_size=tokenizer.vocab_size,
            image=img_cfg,
            files=files,
            variants=variants,
            tokenizer_file=TOKENIZER_FILE,
            logit_scale=None if logit_scale is None else round(float(logit_scale.detach().exp()), 6),
            exporter={
                "name": EXPORTER_NAME,
                "version": crossmodal.__version__,
                "onnx_opset": OPSET,
                "torch": torch.__version__,
                "open_clip": getattr(import_open_clip(), "__version__", "unknown"),
                "onnx": onnx.__version__,
                "probes": {"texts": N_PROBE_TEXTS, "images": N_PROBE_IMAGES},
            },
            source=source,
        )
        _write_verified(manifest, staging, out_dir, wanted, say)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    say(f"bundle written to {out_dir}")
    return manifest
