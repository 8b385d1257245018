"""Benchmark the precision variants of a model bundle: latency, throughput, size and cosine to fp32.

Usage: python bench/bench_precision.py --bundle PATH [--threads N] [--runs N]
Writes bench/results/precision.json and bench/results/precision.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crossmodal.bundle import Manifest, ModelBundle, preprocess_images  # noqa: E402
from crossmodal.bundle.probes import cosine_stats, probe_images, probe_texts  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def _interleaved_ms(calls: dict[str, Any], runs: int) -> dict[str, dict[str, float]]:
    """Time each call ``runs`` times, round-robin, so that load from other processes hits all alike."""
    for fn in calls.values():
        fn()  # warm-up: first runs allocate and pick kernels
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(runs):
        for key, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[key].append((time.perf_counter() - start) * 1000)
    return {k: {"median": round(statistics.median(v), 2), "min": round(min(v), 2)} for k, v in times.items()}


def bench(bundle_dir: Path, threads: int, runs: int, batch: int) -> dict[str, Any]:
    """Measure every variant of the bundle at ``bundle_dir``; returns the figures as a dict."""
    manifest = Manifest.load(bundle_dir)
    precisions = ["fp32", *(p for p in ("int8", "fp16") if p in manifest.variants)]
    bundles = {p: ModelBundle.open(bundle_dir, precision=p, intra_op_threads=threads) for p in precisions}
    fp32 = bundles["fp32"]
    ids, _ = fp32.tokenizer.encode_batch(probe_texts(64))
    pixels = preprocess_images(probe_images(16), fp32.image_config)
    batch_ids = np.repeat(ids, -(-batch // len(ids)), axis=0)[:batch]
    batch_px = np.repeat(pixels, -(-batch // len(pixels)), axis=0)[:batch]
    ref = {"text": fp32.encode_text_ids(ids), "image": fp32.encode_pixels(pixels)}
    calls: dict[str, Any] = {}
    for p, b in bundles.items():
        calls[f"{p}/text/1"] = lambda b=b: b.encode_text_ids(ids[:1])
        calls[f"{p}/image/1"] = lambda b=b: b.encode_pixels(pixels[:1])
        calls[f"{p}/text/{batch}"] = lambda b=b: b.encode_text_ids(batch_ids)
        calls[f"{p}/image/{batch}"] = lambda b=b: b.encode_pixels(batch_px)
    timings = _interleaved_ms(calls, runs)
    out: dict[str, Any] = {
        "bundle": str(bundle_dir),
        "model_id": manifest.model_id,
        "threads": threads,
        "runs": runs,
        "batch": batch,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        },
        "variants": {},
    }
    for p, b in bundles.items():
        variant = manifest.variant(p)
        out["variants"][p] = {
            "target": variant.target,
            "bytes": {t: manifest.files[variant.file_for(t)].bytes for t in ("text", "image")},
            "ms": {key.split("/", 1)[1]: value for key, value in timings.items() if key.startswith(f"{p}/")},
            "cosine_to_fp32": {
                "text": cosine_stats(b.encode_text_ids(ids), ref["text"]),
                "image": cosine_stats(b.encode_pixels(pixels), ref["image"]),
            },
            "recorded_cosine_to_fp32": variant.cosine_to_fp32,
        }
    return out


def to_markdown(result: dict[str, Any]) -> str:
    """Render the figures as a markdown table."""
    batch = result["batch"]
    machine = result["machine"]
    lines = [
        f"# Precision variants: {result['model_id']}",
        "",
        f"intra-op threads: {result['threads']}, rounds: {result['runs']} (variants interleaved), "
        f"{machine['cores']} cores, load average at the end {machine['load_average']}",
        "",
        "Latency in ms, median (min) over the rounds.",
        "",
        f"| variant | text b=1 | image b=1 | text b={batch} | image b={batch} "
        "| text cos min/mean | image cos min/mean | MB text+image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, v in result["variants"].items():
        ct, ci = v["cosine_to_fp32"]["text"], v["cosine_to_fp32"]["image"]
        mb = (v["bytes"]["text"] + v["bytes"]["image"]) / 1e6
        cells = [
            f"{v['ms'][k]['median']} ({v['ms'][k]['min']})"
            for k in ("text/1", "image/1", f"text/{batch}", f"image/{batch}")
        ]
        lines.append(
            f"| {name} ({v['target']}) | {' | '.join(cells)} "
            f"| {ct['min']:.4f} / {ct['mean']:.4f} | {ci['min']:.4f} / {ci['mean']:.4f} | {mb:.1f} |"
        )
    lines.append("")
    lines.append("fp16 targets CUDA; on CPU it runs with reduced graph optimisation, so CPU timings are not its speed.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its JSON and markdown results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = bench(args.bundle, args.threads, args.runs, args.batch)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "precision.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = to_markdown(result)
    (args.out / "precision.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
