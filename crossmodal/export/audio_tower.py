"""Add an audio tower trained into an existing bundle's space to that bundle: ONNX per precision, measured, verified.

The bundle's other files (text and image towers, tokenizer) are copied unchanged, so everything the bundle
answered before it answers the same; the model id stays, because the space is the same. The new directory
appears only when complete and verified, like every export.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from crossmodal.bundle.audio import AudioConfig
from crossmodal.bundle.manifest import AUDIO_INPUT, Manifest
from crossmodal.bundle.probes import cosine_stats
from crossmodal.export.clap import _file_entries, _tower_file
from crossmodal.export.exporter import (
    ExportError,
    Progress,
    _export_onnx,
    _prepare_dir,
    _run_onnx,
    _write_verified,
)
from crossmodal.export.precision import convert_fp16, quantize_int8

# The fp32 ONNX tower must give the PyTorch tower's embeddings (cosine), as for every other export.
COSINE_FLOOR = 0.9999


def add_audio_tower(
    model: nn.Module,
    features: np.ndarray,
    bundle_dir: str | Path,
    out_dir: str | Path,
    *,
    audio: AudioConfig,
    source: dict[str, Any],
    progress: Progress | None = None,
) -> Manifest:
    """Write ``bundle_dir`` plus ``model`` as its audio tower to ``out_dir`` (which may be ``bundle_dir``).

    ``features`` are probe log-mels (n, frames, mels) computed with ``audio``: the fp32 ONNX tower is measured
    against ``model`` on them (refused below COSINE_FLOOR) and every other precision the bundle has against
    fp32. ``source`` is recorded in the manifest's source under ``"audio"``.
    """
    say = progress or (lambda _msg: None)
    bundle_dir, out_dir = Path(bundle_dir), Path(out_dir)
    manifest = Manifest.load(bundle_dir)
    if manifest.audio is not None:
        say(f"{bundle_dir} already has an audio tower; it is replaced")
    staging = _prepare_dir(out_dir, overwrite=True)
    try:
        audio_files = {v.audio for v in manifest.variants.values() if v.audio}
        for name in manifest.files:
            if name not in audio_files:
                shutil.copyfile(bundle_dir / name, staging / name)
        for extra in ("QUALITY.md", "quality.json"):
            if (bundle_dir / extra).is_file():
                shutil.copyfile(bundle_dir / extra, staging / extra)
        variants = _audio_variants(model.eval(), features, staging, manifest, say)
        updated = dataclasses.replace(
            manifest,
            audio=audio,
            variants=variants,
            files=_file_entries_of(staging, manifest),
            source={**manifest.source, "audio": source},
        )
        _write_verified(updated, staging, out_dir, sorted(variants), say)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return updated


def _audio_variants(
    model: nn.Module, features: np.ndarray, staging: Path, manifest: Manifest, say: Progress
) -> dict[str, Any]:
    """Every variant of the bundle with its audio file made (fp32 exported, the others converted) and measured."""
    fp32 = staging / _tower_file("audio", "fp32")
    say(f"exporting the audio tower to {fp32.name}")
    _export_onnx(model, torch.from_numpy(features[:2]), fp32, AUDIO_INPUT)
    with torch.no_grad():
        reference_torch = model(torch.from_numpy(features)).numpy()
    reference = _run_onnx(fp32, AUDIO_INPUT, features, "fp32")
    to_torch = cosine_stats(reference, reference_torch)
    say(f"fp32 ONNX vs PyTorch cosine: {to_torch}")
    if to_torch["min"] < COSINE_FLOOR:
        raise ExportError(f"the audio tower's ONNX graph differs from PyTorch (cosine {to_torch}); not written")
    variants = {}
    for precision, variant in manifest.variants.items():
        if precision == "fp32":
            variants[precision] = dataclasses.replace(
                variant,
                audio=fp32.name,
                cosine_to_fp32={**variant.cosine_to_fp32, "audio": {"mean": 1.0, "min": 1.0}},
                cosine_to_torch={**variant.cosine_to_torch, "audio": to_torch},
            )
            continue
        converted = staging / _tower_file("audio", precision)
        (quantize_int8 if precision == "int8" else convert_fp16)(fp32, converted)
        to_fp32 = cosine_stats(_run_onnx(converted, AUDIO_INPUT, features, precision), reference)
        say(f"{precision} audio tower vs fp32 cosine: {to_fp32}")
        variants[precision] = dataclasses.replace(
            variant, audio=converted.name, cosine_to_fp32={**variant.cosine_to_fp32, "audio": to_fp32}
        )
    return variants


def _file_entries_of(staging: Path, manifest: Manifest) -> dict[str, Any]:
    """The checksummed files of the staged bundle (its reports, QUALITY.md and quality.json, are not towers)."""
    entries = _file_entries(staging)
    return {name: entry for name, entry in entries.items() if name in manifest.files or name.startswith("audio.")}
