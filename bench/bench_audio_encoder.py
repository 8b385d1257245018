"""Audio encoder benchmark: two audio towers on onnxruntime, the numpy front end, and encoder_audio over gRPC.

Two bundles: (a) the default bundle's built-in audio tower (models/default), and (b) the audio tower of the
laion/clap-htsat-unfused architecture (random weights, exported once with ``crossmodal export-model --family
clap`` into .cache/bundles/). For each, in one run so that the figures compare like with like:

1. Raw onnxruntime, CPU provider, in this process: clips/s at batch 1, 8 and 32, fp32 and int8 where
   the bundle has it (``ModelBundle.encode_audio_features``: features in, L2-normalised embeddings out),
   median over timed rounds.
   The tower is fed the log-mel of the clips the served runs send (its speed depends on its input).
2. The front end per second of audio: decoding (PyAV; a 60 s stereo tone as WAV, FLAC, MP3, OGG/Opus and
   M4A/AAC, so decoding, downmixing and resampling to the bundle's rate) and the log-mel of every window
   (``LogMel``), as CPU time per second of sound, on one thread.
3. Served: the real encoder_audio service (production defaults, max_batch 32, fp32) driven by 1 and 32
   closed-loop clients, each sending one clip-long WAV per Encode call. "Share of raw onnxruntime served"
   is computed exactly as bench/bench_encoders.py does for text and images (its `Scenario.targets`): the
   served items/s at the top client count over raw onnxruntime at the batch size nearest to the mean
   batch the server formed. The served figure includes decoding and the log-mel, the raw one does not.

    .venv/bin/python bench/bench_audio_encoder.py            # about 8-12 minutes on 2 cores (first run exports)
    .venv/bin/python bench/bench_audio_encoder.py --quick    # shorter windows and fewer rounds

Writes bench/results/audio_encoder.json and audio_encoder.md.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_encoders import (  # noqa: E402
    CACHE,
    DEFAULT_BUNDLE,
    Scenario,
    closed_loop,
    export,
    machine,
    serve,
    window,
)
from crossmodal.bundle import MANIFEST_FILE, Manifest, ModelBundle, decode_audio  # noqa: E402
from crossmodal.bundle.audio import AudioConfig, LogMel, fit_clip, wav_bytes, windows  # noqa: E402
from crossmodal.v1 import encoder_pb2  # noqa: E402
from tests.bundle.audio_bundles import encode_sound  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CLAP_BUNDLE = CACHE / "clap-htsat-unfused-random"
BATCHES = (1, 8, 32)
CLIENTS = (1, 32)
MAX_BATCH = 32
# Different clip-long tones the served runs send in turn, and whose log-mel the raw runs feed.
CLIP_COUNT = 16
SOUND_SECONDS = 60.0
# (container, codec, sample rate): 44.1 kHz where the codec allows it, so that every one is resampled.
FORMATS = (
    ("wav", "pcm_s16le", 44_100),
    ("flac", "flac", 44_100),
    ("mp3", "libmp3lame", 44_100),
    ("ogg", "libopus", 48_000),
    ("ipod", "aac", 44_100),
)


def clap_bundle() -> Path:
    """The full-size random-weight CLAP bundle (fp32 + int8), exported on the first run."""
    if not (CLAP_BUNDLE / MANIFEST_FILE).is_file():
        export(CLAP_BUNDLE, "--family", "clap", "--seed", "0")
    return CLAP_BUNDLE


def _cpu_seconds(fn: Callable[[], object], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.process_time()
        fn()
        times.append(time.process_time() - started)
    return times


def tower_throughput(path: Path, precision: str, batches: Sequence[int], seconds: float) -> dict[str, Any]:
    """Clips/s of the audio tower at each batch size: rounds until ``seconds`` have passed, median rate."""
    bundle = ModelBundle.open(path, precision=precision, towers=("audio",), providers=["CPUExecutionProvider"])
    config = bundle.audio_config
    # The log-mel of the very clips the served runs send: the tower's speed depends on its input (random
    # features ran ~30% slower than these on the CLAP tower), so raw and served must see the same.
    log_mel = LogMel(config)
    clips = [log_mel(fit_clip(decode_audio(w, config.sample_rate), config)) for w in clip_wavs(config, CLIP_COUNT)]
    out: dict[str, Any] = {}
    for batch in batches:
        features = np.stack([clips[i % len(clips)] for i in range(batch)]).astype(np.float32)
        bundle.encode_audio_features(features)  # warm-up: onnxruntime plans its memory on the first run
        rates: list[float] = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(rates) < 3:
            started = time.perf_counter()
            bundle.encode_audio_features(features)
            rates.append(batch / (time.perf_counter() - started))
        out[str(batch)] = {
            "clips_per_s": round(statistics.median(rates), 2),
            "audio_seconds_per_s": round(statistics.median(rates) * config.clip_seconds, 1),
            "rounds": len(rates),
            "spread": [round(min(rates), 2), round(max(rates), 2)],
        }
        print(f"audio tower {precision} batch {batch}: {out[str(batch)]}", flush=True)
    return out


def _log_mels(log_mel: LogMel, samples: np.ndarray) -> list[np.ndarray]:
    return [log_mel(w.samples) for w in windows(samples, log_mel.config)]


def front_end_costs(config: AudioConfig, rounds: int) -> dict[str, Any]:
    """CPU seconds per second of audio: decode (+ downmix + resample) and the log-mel of every window."""
    log_mel = LogMel(config)
    out: dict[str, Any] = {}
    for fmt, codec, rate in FORMATS:
        data = encode_sound(fmt, codec, rate, "stereo", SOUND_SECONDS)
        samples = decode_audio(data, config.sample_rate)
        seconds = samples.shape[0] / config.sample_rate
        decode = _cpu_seconds(functools.partial(decode_audio, data, config.sample_rate), rounds)
        count = sum(1 for _ in windows(samples, config))
        mel = _cpu_seconds(functools.partial(_log_mels, log_mel, samples), rounds)
        out[fmt] = {
            "source": f"{codec} {rate} Hz stereo, {seconds:.0f} s, {len(data) / 1e6:.1f} MB",
            "windows": count,
            "decode_ms_per_audio_s": round(1e3 * statistics.median(decode) / seconds, 3),
            "log_mel_ms_per_audio_s": round(1e3 * statistics.median(mel) / seconds, 3),
            "log_mel_ms_per_window": round(1e3 * statistics.median(mel) / count, 2),
        }
        print(f"front end {fmt}: {out[fmt]}", flush=True)
    return out


def clip_wavs(config: AudioConfig, count: int) -> list[bytes]:
    """`count` clip-long tones of different pitches as 16-bit mono WAV at 44.1 kHz (so each is resampled)."""
    rate = 44_100
    t = np.arange(int(rate * config.clip_seconds)) / rate
    out = []
    for n in range(count):
        pcm = (0.3 * np.sin(2 * np.pi * (220.0 + 35.0 * n) * t) * 32767).astype("<i2")
        out.append(wav_bytes(pcm.tobytes(), rate))
    return out


def served(label: str, path: Path, raw: dict[str, Any], args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """encoder_audio under 1 and 32 closed-loop clients, and the share of raw onnxruntime it serves."""
    manifest = Manifest.load(path)
    assert manifest.audio is not None
    requests = [
        encoder_pb2.EncodeRequest(items=[encoder_pb2.EncodeItem(key="clip", audio=sound)])
        for sound in clip_wavs(manifest.audio, CLIP_COUNT)
    ]
    raw_rates = {batch: row["clips_per_s"] for batch, row in raw.items()}
    scenario = Scenario(label, manifest.model_id, "fp32", "audio", MAX_BATCH, raw_rates)
    server = serve(path, "fp32", "audio", MAX_BATCH, "cpu", workdir)
    try:
        for clients in CLIENTS:
            warmup, duration = window(raw_rates, MAX_BATCH, clients, args)
            result = asyncio.run(closed_loop(server, requests, "audio", clients, warmup, duration))
            scenario.batched.append(result)
            print(f"served {label} clients={clients}: {result}", flush=True)
    finally:
        server.terminate()
    # The machine's load drifts between the raw run and the served one: measure raw again, now, at the batch
    # size the share compares with, and compare with the mean of the two raw figures (both are reported).
    top = scenario.at(scenario.batched, CLIENTS[-1])
    near = scenario.raw_near(top.mean_batch) if top else None
    raw_after = None
    if near is not None:
        batch, before = near
        raw_after = tower_throughput(path, "fp32", [batch], args.raw_seconds)[str(batch)]["clips_per_s"]
        scenario.raw_items_per_s[str(batch)] = round((before + raw_after) / 2, 2)
    targets = scenario.targets()
    return {
        "runs": [asdict(r) for r in scenario.batched],
        "share_of_raw": targets.get("batched_over_raw"),
        "raw_batch": targets.get("raw_batch"),
        "raw_before_and_after": [near[1] if near else None, raw_after],
        "single_client_p50_ms": targets.get("single_client_p50_ms"),
        "raw_b1_ms": round(1000.0 / raw_rates["1"], 2),
    }


def measure(label: str, path: Path, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Every figure of one bundle."""
    manifest = Manifest.load(path)
    assert manifest.audio is not None, f"{path} has no audio tower"
    tower = {
        p: tower_throughput(path, p, BATCHES, args.raw_seconds) for p in ("fp32", "int8") if p in manifest.variants
    }
    fp32 = manifest.variants["fp32"].audio
    assert fp32 is not None
    config = manifest.audio
    return {
        "bundle": str(path),
        "model_id": manifest.model_id,
        "audio_mb": round(manifest.files[fp32].bytes / 1e6, 2),
        "input": f"{config.clip_seconds:g} s clips, {config.sample_rate} Hz, {config.frames}x{config.n_mels} log-mel",
        "tower": tower,
        "served": served(label, path, tower["fp32"], args, workdir),
        "front_end": front_end_costs(config, 2 if args.quick else 5),
    }


def markdown(result: dict[str, Any]) -> str:
    """The results as a Markdown section."""
    info = result["machine"]
    lines = [
        f"## Audio encoder ({result['date']})",
        "",
        f"onnxruntime {info['onnxruntime']} CPU provider, {info['cpu_count']} cores, load average at start "
        f"{info['load_average_at_start'][0]:.1f} (the machine was shared with other work). Raw: the audio tower "
        "alone in this process, features in, embeddings out. Served: the encoder_audio service (max_batch "
        f"{MAX_BATCH}, fp32) over gRPC on loopback, one clip-long 44.1 kHz WAV per call, so decoding, resampling "
        "and the log-mel are included; share of raw = served clips/s at 32 clients over raw at the batch size "
        "nearest the server's mean batch (as bench_encoders.py computes it for text and images), raw being the "
        "mean of a measurement before the served runs and one right after them.",
        "",
        "| bundle | audio tower | precision | raw clips/s b=1 | b=8 | b=32 |",
        "|---|---|---|---:|---:|---:|",
    ]
    for label, bundle in result["bundles"].items():
        for precision, by_batch in bundle["tower"].items():
            rates = " | ".join(str(by_batch[str(b)]["clips_per_s"]) for b in BATCHES)
            lines.append(f"| {label} | {bundle['audio_mb']} MB; {bundle['input']} | {precision} | {rates} |")
    lines += [
        "",
        "| bundle | served clips/s, 1 client (p50 ms) | served clips/s, 32 clients (p50 ms, mean batch) "
        "| share of raw (raw b=; raw before / after) |",
        "|---|---:|---:|---:|",
    ]
    for label, bundle in result["bundles"].items():
        runs = {r["clients"]: r for r in bundle["served"]["runs"]}
        one, many = runs[CLIENTS[0]], runs[CLIENTS[-1]]
        lines.append(
            f"| {label} | {one['items_per_s']} ({one['p50_ms']}) "
            f"| {many['items_per_s']} ({many['p50_ms']}, {many['mean_batch']}) "
            f"| {bundle['served']['share_of_raw']} (b={bundle['served']['raw_batch']}; "
            f"{' / '.join(str(r) for r in bundle['served']['raw_before_and_after'])}) |"
        )
    lines += [
        "",
        f"Front end, one thread, CPU time per second of a {SOUND_SECONDS:.0f} s stereo sound (decode includes the "
        "downmix and the resampling to the bundle's rate; log-mel covers every window of the bundle's clip length):",
        "",
        "| bundle | source | decode ms / audio s | log-mel ms / audio s | total ms / audio s |",
        "|---|---|---:|---:|---:|",
    ]
    for label, bundle in result["bundles"].items():
        for row in bundle["front_end"].values():
            total = round(row["decode_ms_per_audio_s"] + row["log_mel_ms_per_audio_s"], 3)
            lines.append(
                f"| {label} | {row['source']} | {row['decode_ms_per_audio_s']} | {row['log_mel_ms_per_audio_s']} "
                f"| {total} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write the results; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing windows and fewer rounds")
    parser.add_argument("--bundle", type=Path, help="measure this bundle (with an audio tower) instead of the two")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for audio_encoder.json and .md")
    args = parser.parse_args(argv)
    # The served runs' warm-up and measured seconds (bench_encoders.window lengthens them for slow towers), and
    # the least time of each raw measurement.
    args.warmup, args.duration = (2.0, 5.0) if args.quick else (3.0, 15.0)
    args.raw_seconds = 5.0 if args.quick else 15.0
    info = machine()
    if args.bundle is not None:
        chosen = {args.bundle.name: args.bundle}
    else:
        chosen = {"default": DEFAULT_BUNDLE, "CLAP-sized (laion/clap-htsat-unfused, random)": clap_bundle()}
    with tempfile.TemporaryDirectory(prefix="bench-audio-") as tmp:
        measured = {label: measure(label, path, args, Path(tmp)) for label, path in chosen.items()}
    result = {"date": time.strftime("%Y-%m-%d"), "machine": info, "bundles": measured}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "audio_encoder.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "audio_encoder.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
