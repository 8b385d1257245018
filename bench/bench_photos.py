"""Photo benchmark: decoding and preprocessing 12 MP camera JPEGs, and ingesting a folder of them end to end.

It generates photo-like 4032x3024 JPEGs from a seed (smooth colour fields, shapes, blur and sensor-like
noise, quality 95, EXIF orientation tags 1, 3, 6 and 8; about 3-6 MB each) into a temporary folder and
measures, all in one run so that the ratios compare like with like:

1. Decode + preprocess of one photo on one thread, the full decode (as before issue 15) against the
   scaled decode the encoder now uses (``decode_image(..., scale_for=cfg)``), for the default bundle's
   and ViT-B-32's input sizes; wall and CPU time, median and spread over rounds.
2. The cosine between the embeddings of the two paths (default bundle, ViT-B-32 fp32 and int8).
3. The raw pipeline in one process: decode + preprocess (on a pool of one thread per core) and the
   ViT-B-32 int8 image tower at batch 32, photos/s.
4. `crossmodal ingest` of the folder into a real local cluster (LocalCluster: gateway, both encoders,
   two index shards) with the same bundle, photos/s, and its share of the raw pipeline (the two
   alternate round by round); the image encoder's mean batch size from its metrics.

    .venv/bin/python bench/bench_photos.py            # 128 photos (about 6 minutes on 2 cores, more the first time)
    .venv/bin/python bench/bench_photos.py --quick    # 16 photos, fewer rounds

The photos are never committed: they are generated into a temporary folder on every run. The ViT-B-32
bundle (random weights) is exported once into .cache/bundles/ as bench_encoders.py does. Targets (issue
15): decode + preprocess <= 0.2 of the full decode's time; cosine >= 0.995; ingest >= 0.8 of the raw
pipeline. Writes bench/results/photos.json and photos.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_encoders import VIT_BUNDLE, export, machine  # noqa: E402
from crossmodal.bundle import MANIFEST_FILE, ImageConfig, ModelBundle, decode_image, preprocess_image  # noqa: E402
from crossmodal.cluster import DEFAULT_BUNDLE, ClusterSpec, LocalCluster  # noqa: E402
from tests.support import metric_value  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CACHE = ROOT / ".cache" / "bench-photos"
PHOTO_SIZE = (4032, 3024)
ORIENTATIONS = (1, 6, 3, 8)
LIMITS = {"max_bytes": 64 << 20, "max_pixels": 50_000_000}


# --- inputs --------------------------------------------------------------------------------------


def make_photo(seed: int, size: tuple[int, int] = PHOTO_SIZE, orientation: int = 1) -> bytes:
    """A photo-like JPEG: smooth colour fields, shapes, a slight blur and sensor-like noise, with an EXIF tag."""
    rng = np.random.default_rng(seed)
    width, height = size
    # Smooth gradients: a coarse random colour grid blown up with a bicubic filter.
    coarse = rng.uniform(0, 255, (height // 256 + 2, width // 256 + 2, 3)).astype(np.uint8)
    img = Image.fromarray(coarse, "RGB").resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(height // 20, height // 4))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        else:
            draw.rectangle((x - r, y - r // 2, x + r, y + r // 2), fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(3))
    # Sensor noise is what makes camera JPEGs large: without it the file would be a few hundred KB.
    pixels = np.asarray(img).astype(np.int16)
    pixels += rng.integers(-10, 11, pixels.shape, dtype=np.int16)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(buf, "JPEG", quality=95, exif=exif)
    return buf.getvalue()


def _write_photo(args: tuple[Path, int]) -> int:
    path, seed = args
    data = make_photo(seed, orientation=ORIENTATIONS[seed % len(ORIENTATIONS)])
    path.write_bytes(data)
    return len(data)


def make_folder(folder: Path, count: int, seed: int) -> list[Path]:
    """A folder of exactly the `count` photos from `seed` on; generated (in parallel processes) when not cached.

    Photos are cached by seed in CACHE/all and linked into `folder`, so that folders of different
    sizes share the photos they have in common.
    """
    store = CACHE / "all"
    store.mkdir(parents=True, exist_ok=True)
    jobs = [(store / f"IMG_{seed + i:04d}.jpg", seed + i) for i in range(count)]
    missing = [job for job in jobs if not job[0].is_file()]
    if missing:
        with concurrent.futures.ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(_write_photo, missing))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.iterdir():
        stale.unlink()
    out = []
    for path, _ in jobs:
        os.link(path, folder / path.name)
        out.append(folder / path.name)
    return out


# --- 1. decode + preprocess ----------------------------------------------------------------------


def _time(fn: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def decode_costs(photos: Sequence[bytes], cfg: ImageConfig, rounds: int) -> dict[str, Any]:
    """Milliseconds per photo of decode + preprocess, full against scaled, interleaved photo by photo."""
    paths: dict[str, Callable[[bytes], object]] = {
        "full": lambda d: preprocess_image(decode_image(d, **LIMITS), cfg),
        "scaled": lambda d: preprocess_image(decode_image(d, **LIMITS, scale_for=cfg), cfg),
        "full decode only": lambda d: decode_image(d, **LIMITS),
        "scaled decode only": lambda d: decode_image(d, **LIMITS, scale_for=cfg),
    }
    samples: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in paths}
    ratios: list[float] = []
    for _ in range(rounds):
        # Interleaved, so that a burst of load from other processes hits both paths alike.
        for data in photos:
            costs = {}
            for name, fn in paths.items():
                wall, cpu = _time(lambda fn=fn, data=data: fn(data))
                samples[name]["wall"].append(wall)
                samples[name]["cpu"].append(cpu)
                costs[name] = wall
            ratios.append(costs["scaled"] / costs["full"])
    out: dict[str, Any] = {}
    for name, s in samples.items():
        out[name] = {
            "wall_ms_median": round(statistics.median(s["wall"]), 2),
            "wall_ms_min": round(min(s["wall"]), 2),
            "wall_ms_max": round(max(s["wall"]), 2),
            "cpu_ms_median": round(statistics.median(s["cpu"]), 2),
        }
    out["ratio_wall_median"] = round(out["scaled"]["wall_ms_median"] / out["full"]["wall_ms_median"], 3)
    out["ratio_cpu_median"] = round(out["scaled"]["cpu_ms_median"] / out["full"]["cpu_ms_median"], 3)
    out["ratio_per_photo_p10_p90"] = [round(float(np.percentile(ratios, q)), 3) for q in (10, 90)]
    sample = decode_image(photos[0], **LIMITS, scale_for=cfg)
    out["scaled_decode_size"] = list(sample.size)
    return out


# --- 2. cosine -----------------------------------------------------------------------------------


def cosines(bundle: ModelBundle, photos: Sequence[bytes]) -> dict[str, float]:
    """Cosine between each photo's embedding through the full decode and through the scaled decode."""
    cfg = bundle.image_config
    full = np.stack([preprocess_image(decode_image(d, **LIMITS), cfg) for d in photos])
    scaled = np.stack([preprocess_image(decode_image(d, **LIMITS, scale_for=cfg), cfg) for d in photos])
    a, b = bundle.encode_pixels(full), bundle.encode_pixels(scaled)
    cos = np.sum(a * b, axis=1)  # both L2-normalised
    # For scale: how close two different photos are (a model that maps everything alike would pass anything).
    between = (a @ a.T)[np.triu_indices(len(a), 1)]
    return {
        "min": round(float(cos.min()), 5),
        "mean": round(float(cos.mean()), 5),
        "photos": len(photos),
        "different_photos_max": round(float(between.max()), 4) if len(between) else float("nan"),
    }


# --- 3 and 4. raw pipeline and ingest, interleaved ------------------------------------------------


class RawPipeline:
    """Read + scaled decode + preprocess (a pool of one thread per core) + the tower at `batch`, in this process."""

    def __init__(self, bundle: ModelBundle, files: Sequence[Path], batch: int) -> None:
        self.bundle, self.files, self.batch = bundle, list(files), batch
        self.cfg = bundle.image_config
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
        self.inference_s = 0.0
        bundle.encode_pixels(np.zeros((batch, 3, self.cfg.height, self.cfg.width), np.float32))  # warm-up

    def prepare(self, path: Path) -> np.ndarray:
        """One photo from disk to the tower's input, as the encoder does it."""
        return preprocess_image(decode_image(path.read_bytes(), **LIMITS, scale_for=self.cfg), self.cfg)

    def run(self, threads: bool = True) -> float:
        """Photos/s over the whole folder: each batch decoded (on the pool, or on this thread), then encoded."""
        started = time.perf_counter()
        self.inference_s = 0.0
        for s in range(0, len(self.files), self.batch):
            chunk = self.files[s : s + self.batch]
            rows = list(self.pool.map(self.prepare, chunk)) if threads else [self.prepare(p) for p in chunk]
            t = time.perf_counter()
            self.bundle.encode_pixels(np.stack(rows))
            self.inference_s += time.perf_counter() - t
        return len(self.files) / (time.perf_counter() - started)

    def tower_only(self) -> float:
        """Photos/s of the tower alone at `batch`, on prepared inputs."""
        x = np.stack([self.prepare(p) for p in self.files[: self.batch]])
        started = time.perf_counter()
        self.bundle.encode_pixels(x)
        return len(x) / (time.perf_counter() - started)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def _ingest_once(cluster: LocalCluster, folder: Path, count: int, state: Path) -> dict[str, Any]:
    """One `crossmodal ingest` of the whole folder (sending every photo): its wall time, rate and batches."""
    encoder = cluster.by_name("encoder_image")
    cli = [sys.executable, "-m", "crossmodal.cli", "ingest", str(folder), "--address", cluster.address]
    before = _scrape(encoder.metrics_port)
    started = time.perf_counter()
    done = subprocess.run(
        [*cli, "--quiet", "--restart", "--state", str(state)], cwd=ROOT, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    acked = re.search(r"ingested (\d+) of", done.stdout)
    if acked is None:
        raise RuntimeError(f"crossmodal ingest failed ({done.returncode}): {done.stdout}{done.stderr}")
    after = _scrape(encoder.metrics_port)
    batches = [metric_value(m, "crossmodal_encoder_batch_size_count", tower="image") for m in (before, after)]
    items = [metric_value(m, "crossmodal_encoder_batch_size_sum", tower="image") for m in (before, after)]

    def spent(name: str) -> float:
        return metric_value(after, name, tower="image") - metric_value(before, name, tower="image")

    return {
        "seconds": round(seconds, 2),
        "photos_per_s": round(int(acked.group(1)) / seconds, 2),
        "failed": count - int(acked.group(1)),
        "mean_batch": round((items[1] - items[0]) / max(batches[1] - batches[0], 1), 2),
        # Where the encoder's time went: seconds inside onnxruntime calls (one at a time), and
        # thread-seconds of decoding and preprocessing in its pool (two threads on two cores).
        "encoder_inference_s": round(spent("crossmodal_encoder_inference_seconds_sum"), 2),
        "encoder_preprocess_thread_s": round(spent("crossmodal_encoder_preprocess_seconds_sum"), 2),
        "cli_output": done.stdout.strip().splitlines()[-3:],
    }


def end_to_end(
    bundle_path: Path,
    precision: str,
    files: Sequence[Path],
    rounds: int,
    workdir: Path,
    max_message_bytes: int,
) -> dict[str, Any]:
    """Raw pipeline and `crossmodal ingest` into one local cluster, alternated round by round.

    Alternating makes each ratio compare two runs taken seconds apart, when the load of other
    processes on the machine is most alike. The cluster's first ingest (cold: onnxruntime's first
    batches, connections) is reported apart.
    """
    folder = files[0].parent
    # The gateway sends an ingest batch (32 items) to the image encoder in one Encode call: 32 photos
    # of 4-6 MB are over the default 64 MiB gRPC message limit, and the call fails (see the README).
    env = {"CROSSMODAL_MAX_MESSAGE_BYTES": str(max_message_bytes)} if max_message_bytes else {}
    spec = ClusterSpec.on_free_ports(workdir / "cluster", bundle=bundle_path, precision=precision, env=env)
    raw = RawPipeline(ModelBundle.open(bundle_path, precision=precision, towers=("image",)), files, batch=32)
    out: dict[str, Any] = {"batch": raw.batch, "rounds": []}
    try:
        with LocalCluster(spec, say=lambda _m: None) as cluster:
            out["cold_ingest"] = _ingest_once(cluster, folder, len(files), workdir / "state-cold")
            print(f"  cold ingest: {out['cold_ingest']}", flush=True)
            for r in range(rounds):
                raw_rate = raw.run()
                ingest = _ingest_once(cluster, folder, len(files), workdir / f"state-{r}")
                ratio = ingest["photos_per_s"] / raw_rate
                out["rounds"].append(
                    {
                        "raw_photos_per_s": round(raw_rate, 2),
                        "raw_inference_s": round(raw.inference_s, 2),
                        "ingest": ingest,
                        "ratio": round(ratio, 3),
                    }
                )
                print(f"  round {r + 1}: raw {raw_rate:.2f} photos/s, ingest {ingest}, ratio {ratio:.3f}", flush=True)
        out["raw_one_thread_photos_per_s"] = round(raw.run(threads=False), 2)
        out["tower_only_photos_per_s"] = round(raw.tower_only(), 2)
    finally:
        raw.pool.shutdown()
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "crossmodal.cli", "--help"], cwd=ROOT, capture_output=True, check=True)
    out["cli_start_s"] = round(time.perf_counter() - started, 2)
    ratios = [r["ratio"] for r in out["rounds"]]
    out["ratio_median"] = round(statistics.median(ratios), 3)
    out["ratio_min_max"] = [min(ratios), max(ratios)]
    out["raw_photos_per_s_median"] = round(statistics.median(r["raw_photos_per_s"] for r in out["rounds"]), 2)
    out["ingest_photos_per_s_median"] = round(statistics.median(r["ingest"]["photos_per_s"] for r in out["rounds"]), 2)
    return out


# --- report --------------------------------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    """The figures as Markdown."""
    info, s = result["machine"], result["settings"]
    load = ", ".join(f"{x:.2f}" for x in info["load_average_at_start"])
    lines = [
        "# Photo benchmark (12 MP JPEGs)",
        "",
        f"{info['cpu_count']} CPU cores, onnxruntime {info['onnxruntime']}, load average at start {load}. "
        f"{s['photos']} generated {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEGs (quality 95, EXIF orientations "
        f"{', '.join(map(str, ORIENTATIONS))}), {s['mean_mb']:.2f} MB on average "
        f"({s['min_mb']:.2f}-{s['max_mb']:.2f}).",
        "",
        "## Decode + preprocess of one photo, one thread (ms)",
        "",
        f"{s['decode_photos']} photos x {s['rounds']} rounds, full and scaled interleaved. Target: scaled / full "
        "<= 0.2.",
        "",
        "| input | full wall median (min-max) | scaled wall median (min-max) | full decode only | scaled decode "
        "only | decoded size | scaled / full wall | scaled / full CPU | per-photo ratio p10-p90 |",
        "|---|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for name, d in result["decode"].items():
        f, sc = d["full"], d["scaled"]
        lines.append(
            f"| {name} | {f['wall_ms_median']:.1f} ({f['wall_ms_min']:.1f}-{f['wall_ms_max']:.1f}) "
            f"| {sc['wall_ms_median']:.1f} ({sc['wall_ms_min']:.1f}-{sc['wall_ms_max']:.1f}) "
            f"| {d['full decode only']['wall_ms_median']:.1f} | {d['scaled decode only']['wall_ms_median']:.1f} "
            f"| {'x'.join(map(str, d['scaled_decode_size']))} | {d['ratio_wall_median']} | {d['ratio_cpu_median']} "
            f"| {d['ratio_per_photo_p10_p90'][0]}-{d['ratio_per_photo_p10_p90'][1]} |"
        )
    lines += [
        "",
        "## Cosine, scaled decode against full decode (target >= 0.995)",
        "",
        "| bundle | min | mean | photos | for scale: max cosine between two different photos |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, c in result["cosine"].items():
        lines.append(f"| {name} | {c['min']} | {c['mean']} | {c['photos']} | {c['different_photos_max']} |")
    e2e = result.get("e2e")
    if e2e:
        lines += [
            "",
            f"## Ingest end to end ({result['e2e_bundle']}), against the raw pipeline",
            "",
            f"{s['photos']} photos. Raw: read + scaled decode + preprocess on a pool of {info['cpu_count']} threads, "
            f"then the image tower at batch {e2e['batch']}, in one process. Ingest: `crossmodal ingest FOLDER` "
            "into a LocalCluster (gateway, both encoders, 2 shards) on this machine, wall time of the command "
            "including its start (CLI start alone: "
            f"{e2e['cli_start_s']} s). Raw and ingest alternate round by round; the ratio is per round. "
            "Target: ingest / raw >= 0.8. "
            f"CROSSMODAL_MAX_MESSAGE_BYTES={s['max_message_bytes'] or 'default (64 MiB)'} for every process of the "
            "cluster (the gateway splits an Encode call larger than that by size).",
            "",
            "| round | raw photos/s (of which inference s) | ingest photos/s | ingest s | failed "
            "| encoder mean batch | encoder inference s | encoder preprocess thread-s | ingest / raw |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        cold = e2e["cold_ingest"]
        lines.append(
            f"| cold (first ingest) | - | {cold['photos_per_s']} | {cold['seconds']} | {cold['failed']} "
            f"| {cold['mean_batch']} | {cold['encoder_inference_s']} | {cold['encoder_preprocess_thread_s']} | - |"
        )
        for i, r in enumerate(e2e["rounds"], 1):
            g = r["ingest"]
            lines.append(
                f"| {i} | {r['raw_photos_per_s']} ({r['raw_inference_s']}) | {g['photos_per_s']} | {g['seconds']} "
                f"| {g['failed']} "
                f"| {g['mean_batch']} | {g['encoder_inference_s']} | {g['encoder_preprocess_thread_s']} "
                f"| {r['ratio']} |"
            )
        lines += [
            "",
            f"Median ingest / raw: **{e2e['ratio_median']}** (rounds {e2e['ratio_min_max'][0]}-"
            f"{e2e['ratio_min_max'][1]}); raw on one thread {e2e['raw_one_thread_photos_per_s']} photos/s; "
            f"the tower alone at batch {e2e['batch']} {e2e['tower_only_photos_per_s']} photos/s.",
        ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="16 photos, fewer rounds")
    parser.add_argument("--photos", type=int, help="photos to generate for the ingest (default 128, quick 16)")
    parser.add_argument("--decode-photos", type=int, default=8, help="photos timed for decode + preprocess")
    parser.add_argument("--rounds", type=int, help="rounds of the decode timing (default 5, quick 2)")
    parser.add_argument(
        "--ingest-runs", type=int, help="rounds of raw + ingest after a cold ingest (default 3, quick 1)"
    )
    parser.add_argument("--precision", default="int8", help="ViT-B-32 variant for the raw pipeline and the ingest")
    parser.add_argument("--skip-vit", action="store_true", help="default bundle only (no ViT-B-32, no ingest)")
    parser.add_argument("--seed", type=int, default=1500, help="seed of the first photo")
    parser.add_argument(
        "--max-message-bytes",
        type=int,
        default=0,
        help="CROSSMODAL_MAX_MESSAGE_BYTES of the cluster (0: the services' default, 64 MiB)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for photos.json and photos.md")
    args = parser.parse_args(argv)
    args.photos = args.photos or (16 if args.quick else 128)
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.ingest_runs = args.ingest_runs or (1 if args.quick else 3)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write the results; the exit status."""
    args = parse_args(argv)
    info = machine()
    result: dict[str, Any] = {"machine": info, "decode": {}, "cosine": {}}
    bundles = {"default": DEFAULT_BUNDLE}
    if not args.skip_vit:
        if not (VIT_BUNDLE / MANIFEST_FILE).is_file():
            export(VIT_BUNDLE, "--arch", "ViT-B-32")
        bundles["ViT-B-32"] = VIT_BUNDLE
    with tempfile.TemporaryDirectory(prefix="bench-photos-") as tmp:
        # Generated, never committed; cached under the git-ignored .cache/ so that a rerun skips the minutes.
        folder = CACHE / "ingest"
        started = time.perf_counter()
        files = make_folder(folder, args.photos, args.seed)
        sizes = [p.stat().st_size / 1e6 for p in files]
        print(f"generated {len(files)} photos in {time.perf_counter() - started:.0f} s, {np.mean(sizes):.2f} MB avg")
        decode_set = [p.read_bytes() for p in files[: args.decode_photos]]
        result["settings"] = {
            "photos": len(files),
            "decode_photos": len(decode_set),
            "rounds": args.rounds,
            "mean_mb": float(np.mean(sizes)),
            "min_mb": float(np.min(sizes)),
            "max_mb": float(np.max(sizes)),
            "precision": args.precision,
            "seed": args.seed,
            "max_message_bytes": args.max_message_bytes,
        }
        for name, path in bundles.items():
            cfg = ModelBundle.open(path, towers=("image",), intra_op_threads=1).image_config
            label = f"{name} ({cfg.height}x{cfg.width})"
            result["decode"][label] = decode_costs(decode_set, cfg, args.rounds)
            print(f"decode + preprocess, {label}: {result['decode'][label]}", flush=True)
            precisions = ("fp32",) if name == "default" else ("fp32", args.precision)
            for precision in precisions:
                bundle = ModelBundle.open(path, precision=precision, towers=("image",))
                result["cosine"][f"{name} {precision}"] = cosines(bundle, decode_set)
                print(f"cosine {name} {precision}: {result['cosine'][f'{name} {precision}']}", flush=True)
        if not args.skip_vit:
            result["e2e_bundle"] = f"ViT-B-32 {args.precision}"
            result["e2e"] = end_to_end(
                VIT_BUNDLE, args.precision, files, args.ingest_runs, Path(tmp) / "ingest", args.max_message_bytes
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "photos.json").write_text(json.dumps(result, indent=2) + "\n")
    report = markdown(result)
    (args.out / "photos.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
