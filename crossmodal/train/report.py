"""The quality report of a bundle (JSON and Markdown), measured through the bundle as services run it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crossmodal.bundle.loader import ModelBundle
from crossmodal.bundle.manifest import Manifest
from crossmodal.scenes.spec import HELD_OUT_PAIRS, Split
from crossmodal.train.evaluate import evaluate

# The targets, checked on the held-out gallery.
TARGETS: dict[str, float] = {"t2i_R@10": 0.90, "t2i_R@1": 0.50, "binding": 0.80}
# The audio tower's targets (issue 17), checked on sounds whose timbre/pitch pair training never heard.
AUDIO_TARGETS: dict[str, float] = {"t2a_R@1": 0.50, "t2a_R@10": 0.90, "a2t_R@10": 0.90, "binding": 0.80}


def quality_report(
    bundle_dir: Path,
    *,
    precisions: Sequence[str] = ("fp32", "int8"),
    gallery_size: int = 1000,
    seed: int = 1234,
    image_size: int = 128,
    threads: int = 2,
) -> dict[str, Any]:
    """Measure every precision of a bundle on held-out and in-distribution galleries."""
    results: dict[str, Any] = {}
    model_id = ""
    source: dict[str, Any] = {}
    for precision in precisions:
        bundle = ModelBundle.open(
            bundle_dir, precision=precision, providers=["CPUExecutionProvider"], intra_op_threads=threads
        )
        model_id = bundle.model_id
        source = bundle.manifest.source
        started = time.monotonic()
        held = evaluate(bundle, seed=seed, gallery_size=gallery_size, split=Split.HELDOUT, image_size=image_size)
        seen = evaluate(
            bundle,
            seed=seed,
            gallery_size=gallery_size,
            split=Split.VAL,
            image_size=image_size,
            foreign=False,
        )
        held_t2i = held["retrieval"]["text_to_image"]
        results[precision] = {
            "heldout": held,
            "val": seen,
            "targets_met": {
                "t2i_R@10": held_t2i["R@10"] >= TARGETS["t2i_R@10"],
                "t2i_R@1": held_t2i["R@1"] >= TARGETS["t2i_R@1"],
                "binding": (held["binding"]["accuracy"] or 0.0) >= TARGETS["binding"],
            },
            "eval_seconds": round(time.monotonic() - started, 1),
        }
    report: dict[str, Any] = {
        "model_id": model_id,
        "bundle": str(bundle_dir),
        "training_command": source.get("command"),
        "train_seconds": source.get("train_seconds"),
        "gallery_size": gallery_size,
        "seed": seed,
        "targets": TARGETS,
        "held_out_pairs": sorted(f"{c} {s}" for c, s in HELD_OUT_PAIRS),
        "results": results,
    }
    if "audio" in Manifest.load(bundle_dir).towers:
        report["audio"] = audio_quality(bundle_dir, precisions=precisions, threads=threads)
    return report


def audio_quality(
    bundle_dir: Path,
    *,
    precisions: Sequence[str] = ("fp32", "int8"),
    sounds: int = 600,
    seed: int = 0,
    threads: int = 2,
    workers: int = 2,
) -> dict[str, Any]:
    """Measure a bundle's audio tower through ONNX on held-out generated sounds (crossmodal.train.audio)."""
    from crossmodal.train.audio import audio_image_similarity, evaluate_audio

    results: dict[str, Any] = {}
    for precision in precisions:
        bundle = ModelBundle.open(
            bundle_dir, precision=precision, providers=["CPUExecutionProvider"], intra_op_threads=threads
        )
        started = time.monotonic()
        held = evaluate_audio(bundle.encode_audio_features, bundle.encode_texts, sounds, seed, workers=workers)
        if "image" in bundle.towers:
            held["image_to_audio"] = audio_image_similarity(bundle, seed)
        results[precision] = {
            "heldout": held,
            "targets_met": {
                "t2a_R@1": held["text_to_audio"]["R@1"] >= AUDIO_TARGETS["t2a_R@1"],
                "t2a_R@10": held["text_to_audio"]["R@10"] >= AUDIO_TARGETS["t2a_R@10"],
                "a2t_R@10": held["audio_to_text"]["R@10"] >= AUDIO_TARGETS["a2t_R@10"],
                "binding": held["binding"]["accuracy"] >= AUDIO_TARGETS["binding"],
            },
            "eval_seconds": round(time.monotonic() - started, 1),
        }
    source = Manifest.load(bundle_dir).source.get("audio", {})
    return {
        "sounds": sounds,
        "seed": seed,
        "targets": AUDIO_TARGETS,
        "training_command": source.get("command"),
        "train_seconds": source.get("train_seconds"),
        "held_out_pairs": source.get("held_out_pairs", []),
        "results": results,
    }


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def to_markdown(report: dict[str, Any]) -> str:
    """Render a quality report as Markdown (the README quotes its table)."""
    precisions = list(report["results"])
    lines = [
        f"# Quality of `{report['model_id']}`",
        "",
        f"Measured by `crossmodal eval-model` through the ONNX bundle (the services' tokenizer and "
        f"preprocessing) on {report['gallery_size']} generated scenes per gallery, seed {report['seed']}. "
        "**Held-out** scenes each contain at least one colour/shape pair that training never showed; "
        "**seen** scenes (val split) use only pairs seen in training, with fresh seeds. "
        f"Chance level of R@10 is {10 / report['gallery_size']:.3f}.",
        "",
        "| metric | target | "
        + " | ".join(f"{p} held-out" for p in precisions)
        + " | "
        + " | ".join(f"{p} seen" for p in precisions)
        + " |",
        "| --- | --- | " + " | ".join("---" for _ in precisions * 2) + " |",
    ]
    targets = {
        "text->image R@1": "0.50",
        "text->image R@10": "0.90",
        "binding (a red X and a blue Y)": "0.80",
    }
    rows: list[tuple[str, Any]] = []
    for direction, label in (("text_to_image", "text->image"), ("image_to_text", "image->text")):
        for k in ("R@1", "R@5", "R@10"):
            rows.append((f"{label} {k}", lambda r, d=direction, k=k: r["retrieval"][d][k]))
    rows.append(("binding (a red X and a blue Y)", lambda r: r["binding"]["accuracy"]))
    rows.append(("binding (full caption)", lambda r: r["binding"]["accuracy_full_caption"]))
    for name, get in rows:
        held = [_fmt(get(report["results"][p]["heldout"])) for p in precisions]
        seen = [_fmt(get(report["results"][p]["val"])) for p in precisions]
        lines.append(f"| {name} | {targets.get(name, '')} | " + " | ".join(held + seen) + " |")
    lines.append("")
    first = report["results"][precisions[0]]["heldout"]
    lines.append(
        f"Binding: {first['binding']['pairs']} two-object scenes per gallery; the query names each "
        "object's colour and shape, and the scene must outrank the same scene with the two colours swapped."
    )
    foreign: dict[str, dict[str, Any]] = {
        p: report["results"][p]["heldout"]["foreign_drawings"]
        for p in precisions
        if report["results"][p]["heldout"].get("foreign_drawings")
    }
    if foreign:
        f0 = next(iter(foreign.values()))
        queries = list(f0["named_queries_top1"])
        lines += [
            "",
            "## Drawings made by other code",
            "",
            "Filled circles, squares, triangles, diamonds and crosses in 7 plain colours on white or grey, "
            "drawn directly with Pillow at 100-300 px (not by the scene generator), named zero-shot among "
            f"every 'a {{colour}} {{shape}}' of that set ({f0['candidates']} candidates, "
            f"{f0['drawings']} drawings).",
            "",
            "| precision | colour+shape | colour | shape | " + " | ".join(queries) + " |",
            "| --- | --- | --- | --- | " + " | ".join("---" for _ in queries) + " |",
        ]
        for p, f in foreign.items():
            named = " | ".join("top-1" if v else "missed" for v in f["named_queries_top1"].values())
            scores = " | ".join(_fmt(f[k]) for k in ("accuracy", "colour_accuracy", "shape_accuracy"))
            lines.append(f"| {p} | {scores} | {named} |")
    lines += [
        "",
        "## How it was made",
        "",
        f"- Training command: `{report.get('training_command')}`",
        f"- Training time: {_fmt(report.get('train_seconds'))} s on the build machine (2 CPU cores, shared).",
        f"- Held-out colour/shape pairs: {', '.join(report['held_out_pairs'])}.",
        "",
    ]
    if report.get("audio"):
        lines += audio_markdown(report["audio"])
    return "\n".join(lines)


def audio_markdown(audio: dict[str, Any]) -> list[str]:
    """The audio tower's section of QUALITY.md."""
    precisions = list(audio["results"])
    first = audio["results"][precisions[0]]["heldout"]
    lines = [
        "## Audio tower",
        "",
        f"Measured through the ONNX bundle (the services' numpy log-mel) on {first['held_out_sounds']} generated "
        f"sounds (seed {audio['seed']}) whose timbre/pitch pair training never heard "
        f"({', '.join(audio['held_out_pairs'])}). text->audio: each of the {first['held_out_captions']} held-out "
        "captions against those sounds (hit: a sound of that caption within K). audio->text: each sound against "
        f"all {first['all_captions']} captions (hit: its own within K; chance at R@10 "
        f"{10 / first['all_captions']:.3f}). Binding: the sound's caption against the same caption with the "
        f"pitch swapped (high/low), {first['binding']['pitch_pairs']} pairs.",
        "",
        "| metric | target | " + " | ".join(f"{p} held-out" for p in precisions) + " |",
        "| --- | --- | " + " | ".join("---" for _ in precisions) + " |",
    ]
    targets = {"text->audio R@1": "0.50", "text->audio R@10": "0.90", "audio->text R@10": "0.90"}
    for direction, label in (("text_to_audio", "text->audio"), ("audio_to_text", "audio->text")):
        for k in ("R@1", "R@5", "R@10"):
            values = [_fmt(audio["results"][p]["heldout"][direction][k]) for p in precisions]
            lines.append(f"| {label} {k} | {targets.get(f'{label} {k}', '')} | " + " | ".join(values) + " |")
    values = [_fmt(audio["results"][p]["heldout"]["binding"]["accuracy"]) for p in precisions]
    lines.append("| binding (a high X vs a low X) | 0.80 | " + " | ".join(values) + " |")
    image = first.get("image_to_audio")
    if image:
        lines += ["", f"image->audio through the shared space: {image['note']}"]
    lines += [
        "",
        f"- Training command: `{audio.get('training_command')}`",
        f"- Training time: {_fmt(audio.get('train_seconds'))} s on the build machine (2 CPU cores, shared).",
        "",
    ]
    return lines
