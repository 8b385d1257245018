"""Encoder benchmark: throughput and latency of encoder_text and encoder_image through gRPC.

For each bundle (the project's default bundle and a random-init ViT-B-32), precision (fp32, int8)
and tower, it measures raw onnxruntime throughput in this process at batch 1 and at max_batch,
then starts the real service three times: with dynamic batching (max_batch 32, production
defaults: a batch runs as soon as the inference thread is free), with batching and the old fixed
wait (CROSSMODAL_ENCODER_MAX_WAIT_MS=5, the default before issue 15), and without batching
(max_batch 1); it drives each with 1, 8 and 32 concurrent closed-loop clients, each sending one
item per Encode call. It writes bench/results/encoders.json and encoders.md.

    .venv/bin/python bench/bench_encoders.py            # everything (about 10-15 minutes on 2 cores)
    .venv/bin/python bench/bench_encoders.py --quick    # default bundle only, short runs

The ViT-B-32 bundle is exported once into .cache/bundles/ (about a minute and 600 MB; needs the
`export` extra). Targets (issue 5): at 32 clients, batched throughput >= 3x unbatched, and
>= 80% of raw onnxruntime throughput at the same batch size. Targets (issue 15): one client's p50
latency within 1 ms of raw onnxruntime at batch 1 plus preprocessing one item, and at 32 clients
no less throughput than with the old 5 ms wait. Mean batch sizes come from the server's
crossmodal_encoder_batch_size histogram (sum / count over the measured window).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crossmodal.bundle import MANIFEST_FILE, ModelBundle, decode_image, preprocess_image  # noqa: E402
from crossmodal.v1 import encoder_pb2, encoder_pb2_grpc  # noqa: E402
from services.encoder.config import PROVIDER_ALIASES  # noqa: E402
from tests.support import ServiceProcess, metric_value  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CACHE = ROOT / ".cache" / "bundles"
DEFAULT_BUNDLE = ROOT / "models" / "default"
VIT_BUNDLE = CACHE / "vit-b-32-random"
TINY_BUNDLE = CACHE / "tiny-random"
CLIENTS = (1, 8, 32)
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black", "grey", "pink"]
SHAPES = ["circle", "square", "triangle", "star", "ring", "cross", "diamond", "hexagon"]


@dataclass
class LoadResult:
    """What one closed-loop load run measured."""

    clients: int
    items_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    mean_batch: float
    seconds: float


@dataclass
class Scenario:
    """One bundle, precision and tower, with its raw and served figures."""

    bundle: str
    model_id: str
    precision: str
    tower: str
    max_batch: int = 32
    raw_items_per_s: dict[str, float] = field(default_factory=dict)
    preprocess_ms_per_item: float = 0.0
    batched: list[LoadResult] = field(default_factory=list)
    unbatched: list[LoadResult] = field(default_factory=list)
    # Batched with the old fixed wait (CROSSMODAL_ENCODER_MAX_WAIT_MS = old_wait_ms).
    waited: list[LoadResult] = field(default_factory=list)
    old_wait_ms: float = 5.0

    def at(self, runs: list[LoadResult], clients: int) -> LoadResult | None:
        """The run with `clients` clients (of several rounds, the one with the median throughput), if any."""
        matching = sorted((r for r in runs if r.clients == clients), key=lambda r: r.items_per_s)
        return matching[(len(matching) - 1) // 2] if matching else None

    def raw_near(self, batch: float) -> tuple[int, float] | None:
        """The raw throughput measured at the batch size nearest to `batch`, with that size."""
        rates = {int(b): v for b, v in self.raw_items_per_s.items() if v > 0}
        if not rates:
            return None
        nearest = min(rates, key=lambda b: (abs(b - batch), -b))
        return nearest, rates[nearest]

    def targets(self) -> dict[str, Any]:
        """The issue's two targets at the highest client count measured.

        The overhead target compares with raw onnxruntime at the batch size the server actually
        formed (its mean batch), which is what "at the same batch size" means for a live server.
        """
        top = max((r.clients for r in self.batched), default=0)
        batched, unbatched = self.at(self.batched, top), self.at(self.unbatched, top)
        near = self.raw_near(batched.mean_batch) if batched else None
        raw = near[1] if near else None
        out: dict[str, Any] = {"clients": top, "raw_batch": near[0] if near else None}
        if batched and unbatched and unbatched.items_per_s:
            out["batched_over_unbatched"] = round(batched.items_per_s / unbatched.items_per_s, 2)
            out["speedup_target_met"] = out["batched_over_unbatched"] >= 3.0
        if batched and raw:
            out["batched_over_raw"] = round(batched.items_per_s / raw, 3)
            out["overhead_target_met"] = out["batched_over_raw"] >= 0.8
        waited = self.at(self.waited, top)
        if batched and waited and waited.items_per_s:
            out["batched_over_old_wait"] = round(batched.items_per_s / waited.items_per_s, 3)
        lone = self.at(self.batched, 1)
        if lone and self.raw_items_per_s.get("1"):
            floor = 1000.0 / self.raw_items_per_s["1"] + self.preprocess_ms_per_item
            out["single_client_p50_ms"] = lone.p50_ms
            out["raw_b1_plus_preprocess_ms"] = round(floor, 2)
            out["single_client_overhead_ms"] = round(lone.p50_ms - floor, 2)
            out["single_client_target_met"] = lone.p50_ms - floor <= 1.0
        lone_waited = self.at(self.waited, 1)
        if lone and lone_waited:
            out["single_client_p50_ms_old_wait"] = lone_waited.p50_ms
        return out


# --- inputs --------------------------------------------------------------------------------------


def make_texts(count: int) -> list[str]:
    """Varied captions, short and long, the same on every run."""
    rng = np.random.default_rng(7)
    out = []
    for i in range(count):
        colour, shape = COLOURS[i % len(COLOURS)], SHAPES[(i // len(COLOURS)) % len(SHAPES)]
        words = [f"a photo of a {colour} {shape}"]
        for _ in range(int(rng.integers(0, 4))):
            words.append(f"next to a {rng.choice(COLOURS)} {rng.choice(SHAPES)}")
        out.append(" ".join(words))
    return out


def make_images(count: int, size: int = 320) -> list[bytes]:
    """JPEG pictures (gradients, noise and shapes) of a typical thumbnail size, the same on every run."""
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    out = []
    for _ in range(count):
        base = np.stack([rng.uniform(0, 255) * xx, rng.uniform(0, 255) * yy, rng.uniform(0, 255) * (1 - xx)], -1)
        base += rng.normal(0, 10, base.shape)
        img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(img)
        for _ in range(3):
            x0, y0 = (int(v) for v in rng.integers(0, size - 60, 2))
            draw.ellipse((x0, y0, x0 + 50, y0 + 50), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


# --- bundles -------------------------------------------------------------------------------------


def export(out: Path, *args: str) -> None:
    """Export a bundle with `crossmodal export-model` (needs the `export` extra)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-c",
        "import sys; from crossmodal.cli import main; sys.exit(main(sys.argv[1:]))",
        "export-model",
        str(out),
        "--precision",
        "int8",
        "--overwrite",
        "--quiet",
        *args,
    ]
    print(f"exporting {out.name} ...", flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def bundles(args: argparse.Namespace) -> dict[str, Path]:
    """The bundles to measure, exported first where needed."""
    if args.bundle is not None:
        return {args.bundle.name: args.bundle}
    out: dict[str, Path] = {}
    if (DEFAULT_BUNDLE / MANIFEST_FILE).is_file():
        out["default"] = DEFAULT_BUNDLE
    else:
        # Before the default bundle is committed, a tiny random model stands in (same code paths).
        if not (TINY_BUNDLE / MANIFEST_FILE).is_file():
            export(TINY_BUNDLE, "--model-config", str(ROOT / "tests" / "data" / "tiny_clip.json"))
        out["tiny (default missing)"] = TINY_BUNDLE
    if not args.quick and not args.skip_vit:
        if not (VIT_BUNDLE / MANIFEST_FILE).is_file():
            export(VIT_BUNDLE, "--arch", "ViT-B-32")
        out["ViT-B-32 random"] = VIT_BUNDLE
    return out


# --- raw onnxruntime -----------------------------------------------------------------------------


def raw_throughput(
    path: Path,
    precision: str,
    tower: str,
    batches: Sequence[int],
    seconds: float,
    providers: list[str] | None,
) -> tuple[dict[str, float], float, str]:
    """Items/s of the bare tower in this process at each batch size; preprocessing ms per image."""
    bundle = ModelBundle.open(path, precision=precision, providers=providers, towers=(tower,))
    model_id = bundle.model_id
    largest = max(batches)
    if tower == "text":
        texts = make_texts(largest)
        ids, _ = bundle.tokenizer.encode_batch(texts)
        # One text per call, as the single-client runs send them.
        started = time.perf_counter()
        for text in texts:
            bundle.tokenizer.encode_batch([text])
        prep_ms = (time.perf_counter() - started) * 1000 / len(texts)
        feed: np.ndarray = ids
        run: Callable[[np.ndarray], np.ndarray] = bundle.encode_text_ids
    else:
        payloads = make_images(largest)
        started = time.perf_counter()
        cfg = bundle.image_config
        rows = [
            preprocess_image(decode_image(p, max_bytes=1 << 26, max_pixels=1 << 28, scale_for=cfg), cfg)
            for p in payloads
        ]
        prep_ms = (time.perf_counter() - started) * 1000 / len(payloads)
        feed, run = np.stack(rows), bundle.encode_pixels
    out: dict[str, float] = {}
    for batch in batches:
        x = feed[:batch]
        run(x)  # warm-up
        done, started = 0, time.perf_counter()
        while True:
            run(x)
            done += batch
            elapsed = time.perf_counter() - started
            if elapsed >= seconds and done >= 2 * batch:
                break
        out[str(batch)] = round(done / elapsed, 2)
    del bundle
    gc.collect()
    return out, round(prep_ms, 3), model_id


# --- load ----------------------------------------------------------------------------------------


def batch_stats(metrics: str, tower: str) -> tuple[float, float]:
    """(count, sum) of the server's batch-size histogram."""
    return (
        metric_value(metrics, "crossmodal_encoder_batch_size_count", tower=tower),
        metric_value(metrics, "crossmodal_encoder_batch_size_sum", tower=tower),
    )


async def closed_loop(
    server: ServiceProcess,
    requests: Sequence[encoder_pb2.EncodeRequest],
    tower: str,
    clients: int,
    warmup_s: float,
    duration_s: float,
) -> LoadResult:
    """Run `clients` clients that each send one request after the other; measure after the warm-up."""
    latencies: list[float] = []
    counts = {"items": 0, "requests": 0, "errors": 0}
    loop = asyncio.get_running_loop()
    start = loop.time()
    window = (start + warmup_s, start + warmup_s + duration_s)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = encoder_pb2_grpc.EncoderServiceStub(channel)

        async def client(index: int) -> None:
            i = index
            while True:
                sent = loop.time()
                if sent >= window[1]:
                    return
                try:
                    response = await stub.Encode(requests[i % len(requests)], timeout=120)
                    ok = all(r.status.code == 0 for r in response.results)
                except grpc.aio.AioRpcError:
                    ok = False
                done = loop.time()
                i += clients
                if sent >= window[0] and done <= window[1]:
                    latencies.append(done - sent)
                if window[0] <= done <= window[1]:
                    counts["requests"] += 1
                    counts["items"] += len(requests[0].items) if ok else 0
                    counts["errors"] += 0 if ok else 1

        async def scrape_at(when: float) -> str:
            await asyncio.sleep(max(0.0, when - loop.time()))
            return await asyncio.to_thread(server.metrics)

        first = asyncio.create_task(scrape_at(window[0]))
        last = asyncio.create_task(scrape_at(window[1]))
        await asyncio.gather(*(client(c) for c in range(clients)))
        before, after = batch_stats(await first, tower), batch_stats(await last, tower)
    batches = after[0] - before[0]
    lat = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return LoadResult(
        clients=clients,
        items_per_s=round(counts["items"] / duration_s, 2),
        p50_ms=round(float(np.percentile(lat, 50)), 2),
        p99_ms=round(float(np.percentile(lat, 99)), 2),
        requests=counts["requests"],
        errors=counts["errors"],
        mean_batch=round((after[1] - before[1]) / batches, 2) if batches else 0.0,
        seconds=round(duration_s, 1),
    )


def serve(
    path: Path,
    precision: str,
    tower: str,
    max_batch: int,
    providers: str,
    workdir: Path,
    max_wait_ms: float | None = None,
) -> ServiceProcess:
    """Start the tower's service with production defaults except the bundle, precision, max_batch (and wait)."""
    env = {
        "CROSSMODAL_ENCODER_PROVIDERS": providers,
        "CROSSMODAL_ENCODER_BUNDLE": str(path),
        "CROSSMODAL_ENCODER_PRECISION": precision,
        "CROSSMODAL_ENCODER_MAX_BATCH": str(max_batch),
        "CROSSMODAL_ENCODER_MAX_REQUEST_ITEMS": "64",
    }
    if max_wait_ms is not None:
        env["CROSSMODAL_ENCODER_MAX_WAIT_MS"] = str(max_wait_ms)
    module = f"services.encoder_{tower}"
    name = f"{tower}-{precision}-{max_batch}-{max_wait_ms}"
    return ServiceProcess(module, workdir / name, env).wait_ready(timeout=600)


def window(raw: dict[str, float], max_batch: int, clients: int, args: argparse.Namespace) -> tuple[float, float]:
    """Warm-up and measured seconds: at least the requested ones, and long enough for several rounds.

    One round (every client answered once) takes about clients / raw throughput at the batch size
    the server can form; a slow model or a busy machine needs a longer window to see a few rounds.
    """
    batch = min(max_batch, clients)
    rates = {int(b): v for b, v in raw.items() if v > 0}
    rate = rates.get(batch) or rates[min(rates, key=lambda b: abs(b - batch))]
    round_s = clients / rate
    return max(args.warmup, 1.5 * round_s), min(max(args.duration, 4 * round_s), 180.0)


def measure(scenario: Scenario, path: Path, args: argparse.Namespace, workdir: Path) -> None:
    """Fill `scenario` with the raw figures and the served runs of both modes."""
    batches = sorted({1, args.max_batch, *args.batches})
    raw, prep_ms, model_id = raw_throughput(
        path, scenario.precision, scenario.tower, batches, args.raw_seconds, args.provider_names
    )
    scenario.raw_items_per_s, scenario.preprocess_ms_per_item, scenario.model_id = raw, prep_ms, model_id
    print(f"  raw onnxruntime items/s by batch size: {raw}", flush=True)
    if args.raw_only:
        return
    if scenario.tower == "text":
        payloads: list[encoder_pb2.EncodeItem] = [encoder_pb2.EncodeItem(text=t) for t in make_texts(256)]
    else:
        payloads = [encoder_pb2.EncodeItem(image=b) for b in make_images(64)]
    requests = [encoder_pb2.EncodeRequest(items=[p]) for p in payloads]
    scenario.old_wait_ms = args.old_wait_ms
    modes: list[tuple[int, float | None, list[LoadResult]]] = [(args.max_batch, None, scenario.batched)]
    if args.old_wait_ms > 0:
        modes.append((args.max_batch, args.old_wait_ms, scenario.waited))
    if not args.no_unbatched:
        modes.append((1, None, scenario.unbatched))
    # Every mode's server is up at once and the modes take turns at each client count, round after
    # round: on a machine shared with other work, runs taken back to back see the most similar load,
    # and the median of the rounds is what the targets use. An idle server costs the others nothing.
    servers: list[ServiceProcess] = []
    try:
        for max_batch, max_wait_ms, _ in modes:
            servers.append(
                serve(path, scenario.precision, scenario.tower, max_batch, args.providers, workdir, max_wait_ms)
            )
        for clients in args.clients:
            for _ in range(args.rounds):
                for server, (max_batch, max_wait_ms, runs) in zip(servers, modes, strict=True):
                    warmup, duration = window(raw, max_batch, clients, args)
                    result = asyncio.run(closed_loop(server, requests, scenario.tower, clients, warmup, duration))
                    runs.append(result)
                    wait = "default" if max_wait_ms is None else f"{max_wait_ms:g}"
                    print(
                        f"  max_batch={max_batch:<2} wait={wait:<7} clients={clients:<2} "
                        f"{result.items_per_s:9.1f} items/s  "
                        f"p50 {result.p50_ms:8.1f} ms  p99 {result.p99_ms:8.1f} ms  "
                        f"mean batch {result.mean_batch:5.1f}  errors {result.errors}",
                        flush=True,
                    )
    finally:
        for server in servers:
            server.terminate()


# --- report --------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Where the figures were taken."""
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
        "load_average_at_start": os.getloadavg(),
    }


def markdown(scenarios: list[Scenario], info: dict[str, Any], args: argparse.Namespace) -> str:
    """The figures as Markdown tables."""
    load = ", ".join(f"{x:.2f}" for x in info["load_average_at_start"])
    lines = [
        "# Encoder benchmark",
        "",
        f"{info['cpu_count']} CPU cores, {info['platform']}, onnxruntime {info['onnxruntime']} "
        f"(providers: {args.providers or 'default'}), load average at start {load}. Closed-loop clients "
        f"send one item per Encode call; at least {args.duration:g} s measured after {args.warmup:g} s of "
        "warm-up, longer where four rounds of all clients take longer (column s). "
        "Raw = the bare onnxruntime tower in this process on prepared inputs (no gRPC, queueing or "
        "preprocessing); preprocess = decoding and preprocessing one image (or tokenizing one text) on "
        f"one thread. The servers of all modes run at once and take turns at each client count, {args.rounds} "
        "round(s); the target columns use the median round. Old wait = the batched server with "
        f"CROSSMODAL_ENCODER_MAX_WAIT_MS={args.old_wait_ms:g} (the default before issue 15); batched = the "
        "production default (no wait).",
    ]
    if not args.raw_only and scenarios:
        lines += [
            "",
            f"## Targets at {max(args.clients)} clients",
            "",
            "| bundle | precision | tower | raw b=1 items/s | raw b=max_batch items/s | batched items/s "
            "(mean batch) | old wait items/s (mean batch) | batched / old wait (>= 1) | unbatched items/s "
            "| batched / unbatched (>= 3) | batched / raw at its mean batch (>= 0.8) | preprocess ms/item "
            "| 1 client p50 ms (old wait) | raw b=1 + preprocess ms | 1 client overhead ms (<= 1) |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in scenarios:
            t = s.targets()
            b, u = s.at(s.batched, t["clients"]), s.at(s.unbatched, t["clients"])
            w = s.at(s.waited, t["clients"])
            lines.append(
                f"| {s.bundle} | {s.precision} | {s.tower} | {s.raw_items_per_s.get('1', 0):.1f} "
                f"| {s.raw_items_per_s.get(str(s.max_batch), 0):.1f} "
                f"| {b.items_per_s if b else 0:.1f} ({b.mean_batch if b else 0:g}) "
                f"| {w.items_per_s if w else 0:.1f} ({w.mean_batch if w else 0:g}) "
                f"| {t.get('batched_over_old_wait', '-')} "
                f"| {u.items_per_s if u else 0:.1f} | {t.get('batched_over_unbatched', '-')} "
                f"| {t.get('batched_over_raw', '-')} (b={t.get('raw_batch')}) | {s.preprocess_ms_per_item:.2f} "
                f"| {t.get('single_client_p50_ms', '-')} ({t.get('single_client_p50_ms_old_wait', '-')}) "
                f"| {t.get('raw_b1_plus_preprocess_ms', '-')} | {t.get('single_client_overhead_ms', '-')} |"
            )
    if scenarios:
        sizes = list(scenarios[0].raw_items_per_s)
        lines += [
            "",
            "## Raw onnxruntime throughput by batch size (items/s)",
            "",
            "| bundle | precision | tower | " + " | ".join(f"b={b}" for b in sizes) + " |",
            "|---|---|---|" + "---:|" * len(sizes),
        ]
        for s in scenarios:
            values = " | ".join(f"{s.raw_items_per_s.get(b, 0):.1f}" for b in sizes)
            lines.append(f"| {s.bundle} | {s.precision} | {s.tower} | {values} |")
    if not args.raw_only:
        lines += [
            "",
            "## All runs",
            "",
            "| bundle | precision | tower | max_batch | max_wait ms | clients | items/s | p50 ms | p99 ms "
            "| mean batch | errors | s |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in scenarios:
            modes = ((s.max_batch, 0.0, s.batched), (s.max_batch, s.old_wait_ms, s.waited), (1, 0.0, s.unbatched))
            for max_batch, wait_ms, runs in modes:
                for r in runs:
                    lines.append(
                        f"| {s.bundle} | {s.precision} | {s.tower} | {max_batch} | {wait_ms:g} | {r.clients} "
                        f"| {r.items_per_s:.1f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.mean_batch:.1f} "
                        f"| {r.errors} | {r.seconds:g} |"
                    )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="default bundle only, short runs")
    parser.add_argument("--skip-vit", action="store_true", help="leave out the ViT-B-32 bundle")
    parser.add_argument("--bundle", type=Path, help="measure this bundle only")
    parser.add_argument("--precisions", default="fp32,int8", help="comma-separated precisions")
    parser.add_argument("--towers", default="text,image", help="comma-separated towers")
    parser.add_argument("--providers", default="", help="CROSSMODAL_ENCODER_PROVIDERS for all runs (e.g. cuda)")
    parser.add_argument("--clients", default=",".join(map(str, CLIENTS)), help="comma-separated client counts")
    parser.add_argument("--max-batch", type=int, default=32, help="max_batch of the batched server")
    parser.add_argument("--batches", default="8,16", help="more batch sizes for the raw measurement")
    parser.add_argument("--raw-only", action="store_true", help="measure raw onnxruntime throughput only")
    parser.add_argument("--no-unbatched", action="store_true", help="leave out the max_batch=1 server")
    parser.add_argument(
        "--old-wait-ms",
        type=float,
        default=5.0,
        help="also run the batched server with this fixed CROSSMODAL_ENCODER_MAX_WAIT_MS (0: leave it out)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs of each mode at each client count (taking turns)")
    parser.add_argument("--duration", type=float, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per run")
    parser.add_argument("--raw-seconds", type=float, help="seconds per raw onnxruntime measurement")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for encoders.json and encoders.md")
    args = parser.parse_args(argv)
    args.precisions = [p for p in args.precisions.split(",") if p]
    args.towers = [t for t in args.towers.split(",") if t]
    args.clients = [int(c) for c in args.clients.split(",") if c]
    args.batches = [int(b) for b in args.batches.split(",") if b]
    names = [p.strip() for p in args.providers.split(",") if p.strip()]
    args.provider_names = [PROVIDER_ALIASES.get(p.lower(), p) for p in names] or None
    args.duration = args.duration or (2.0 if args.quick else 6.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 2.0)
    args.raw_seconds = args.raw_seconds or (1.0 if args.quick else 4.0)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write the results; the exit status."""
    args = parse_args(argv)
    info = machine()
    scenarios: list[Scenario] = []
    with tempfile.TemporaryDirectory(prefix="bench-encoders-") as tmp:
        for name, path in bundles(args).items():
            for precision in args.precisions:
                for tower in args.towers:
                    print(f"{name} {precision} {tower}", flush=True)
                    scenario = Scenario(
                        bundle=name, model_id="", precision=precision, tower=tower, max_batch=args.max_batch
                    )
                    measure(scenario, path, args, Path(tmp))
                    scenarios.append(scenario)
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": info,
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "max_batch": args.max_batch,
            "providers": args.providers,
            "clients": args.clients,
            "quick": args.quick,
            "raw_only": args.raw_only,
            "old_wait_ms": args.old_wait_ms,
            "rounds": args.rounds,
        },
        "scenarios": [{**asdict(s), "targets": s.targets()} for s in scenarios],
    }
    (args.out / "encoders.json").write_text(json.dumps(payload, indent=2) + "\n")
    report = markdown(scenarios, info, args)
    (args.out / "encoders.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
