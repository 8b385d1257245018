"""Audio encoder benchmark: a CLAP-sized audio tower on onnxruntime, and the numpy front end in front of it.

Measures, in one run so that the figures compare like with like:

1. The audio tower of the laion/clap-htsat-unfused architecture (random weights, exported once with
   ``crossmodal export-model --family clap`` into .cache/bundles/) on onnxruntime's CPU provider:
   clips/s at batch 1 and 32, fp32 and int8 (``ModelBundle.encode_audio_features``: features in,
   L2-normalised embeddings out), median over timed rounds.
2. The front end per second of audio: decoding (PyAV; a 60 s stereo tone as WAV, FLAC and MP3 at 44.1 kHz,
   so decoding, downmixing and resampling to 48 kHz) and the log-mel of every 10 s window (``LogMel``), as CPU time per
   second of sound, on one thread.

    .venv/bin/python bench/bench_audio_encoder.py            # about 3-5 minutes on 2 cores (first run exports)
    .venv/bin/python bench/bench_audio_encoder.py --quick    # fewer rounds

Writes bench/results/audio_encoder.json and audio_encoder.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_encoders import CACHE, export, machine  # noqa: E402
from crossmodal.bundle import MANIFEST_FILE, ModelBundle, decode_audio  # noqa: E402
from crossmodal.bundle.audio import AudioConfig, LogMel, windows  # noqa: E402
from tests.bundle.audio_bundles import encode_sound  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CLAP_BUNDLE = CACHE / "clap-htsat-unfused-random"
BATCHES = (1, 32)
SOUND_SECONDS = 60.0
FORMATS = (("wav", "pcm_s16le", 44_100), ("flac", "flac", 44_100), ("mp3", "libmp3lame", 44_100))


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
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    for batch in batches:
        features = rng.normal(-40.0, 20.0, (batch, config.frames, config.n_mels)).astype(np.float32)
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


def markdown(result: dict[str, Any]) -> str:
    """The results as a Markdown section."""
    info = result["machine"]
    lines = [
        f"## Audio encoder ({result['date']})",
        "",
        f"CLAP-sized audio tower (laion/clap-htsat-unfused architecture, random weights, {result['audio_mb']} MB fp32) "
        f"on onnxruntime {info['onnxruntime']} CPU, {info['cpu_count']} cores, load average at start "
        f"{info['load_average_at_start'][0]:.1f}. Input: log-mel features of 10 s clips (1001 x 64).",
        "",
        "| precision | batch | clips/s | audio seconds/s | rounds |",
        "|---|---:|---:|---:|---:|",
    ]
    for precision, by_batch in result["tower"].items():
        for batch, row in by_batch.items():
            lines.append(
                f"| {precision} | {batch} | {row['clips_per_s']} | {row['audio_seconds_per_s']} | {row['rounds']} |"
            )
    lines += [
        "",
        f"Front end, one thread, CPU time per second of a {SOUND_SECONDS:.0f} s sound (decode includes the downmix "
        "and the resampling to 48 kHz; log-mel covers every 10 s window, 5 s apart):",
        "",
        "| source | decode ms / audio s | log-mel ms / audio s | log-mel ms / window |",
        "|---|---:|---:|---:|",
    ]
    for row in result["front_end"].values():
        lines.append(
            f"| {row['source']} | {row['decode_ms_per_audio_s']} | {row['log_mel_ms_per_audio_s']} "
            f"| {row['log_mel_ms_per_window']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write the results; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing windows and fewer rounds")
    parser.add_argument("--bundle", type=Path, help="measure this text+audio bundle instead of the CLAP export")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for audio_encoder.json and .md")
    args = parser.parse_args(argv)
    path = args.bundle or clap_bundle()
    info = machine()
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    seconds = 5.0 if args.quick else 20.0
    tower = {p: tower_throughput(path, p, BATCHES, seconds) for p in ("fp32", "int8") if p in manifest["variants"]}
    config = AudioConfig.from_dict(manifest["audio"])
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "bundle": str(path),
        "audio_mb": round(manifest["files"][manifest["variants"]["fp32"]["audio"]]["bytes"] / 1e6, 1),
        "machine": info,
        "tower": tower,
        "front_end": front_end_costs(config, 2 if args.quick else 5),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "audio_encoder.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "audio_encoder.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
