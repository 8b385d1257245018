"""Sound ingest benchmark: audio-seconds stored per wall-second through IngestAudio, and moment search cost.

A long recording (captioned sounds of crossmodal/scenes/sounds.py in a row, as WAV at 16 kHz) goes into a
real local cluster (gateway, text, image and audio encoders, one index shard) with the default bundle's
built-in audio tower (models/default). In one run:

1. decode: `decode_audio` of the file alone (PyAV, resampled to the tower's rate), client side;
2. windows + encode + store: `Client.ingest_audio` of the already decoded PCM: the gateway cuts the
   windows, the audio tower encodes them, the windows and the record are written;
3. end to end: `Client.ingest_audio_file` (decode, then the stream);
4. search: median latency of a text query with target audio (K moments from K x 20 windows) beside the
   same query with target image and with "any" (which over-fetches to leave the windows out), `--queries`
   each, one at a time.

Median of `--rounds` rounds. Writes bench/results/sound_ingest.json and sound_ingest.md.

    .venv/bin/python bench/bench_sound_ingest.py           # a 10-minute recording, 3 rounds
    .venv/bin/python bench/bench_sound_ingest.py --quick   # 2 minutes, 1 round
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_encoders import DEFAULT_BUNDLE, machine  # noqa: E402
from crossmodal.bundle import Manifest, decode_audio  # noqa: E402
from crossmodal.bundle.audio import DecodeLimits, pcm16  # noqa: E402
from crossmodal.client import Client  # noqa: E402
from crossmodal.cluster import ClusterSpec, LocalCluster  # noqa: E402
from crossmodal.scenes.sounds import Split, render_sound, sample_specs, write_wav  # noqa: E402

RESULTS = ROOT / "bench" / "results"
QUERY = "a long steady medium hum, twice"


def recording(path: Path, seconds: float) -> float:
    """Write a recording of captioned sounds in a row, `seconds` long at least; its length."""
    specs = sample_specs(int(seconds // 4) + 1, Split.TRAIN, seed=3)
    samples = np.concatenate([render_sound(spec) for spec in specs])
    write_wav(str(path), samples)
    return samples.shape[0] / 16_000


def _latency_ms(search: Any, queries: int) -> float:
    times = []
    for _ in range(queries):
        started = time.perf_counter()
        search()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 1)


def measure(bundle: Path, sound: Path, seconds: float, rounds: int, queries: int, work: Path) -> dict[str, Any]:
    """Decode, windows + encode + store and end-to-end times, and search latencies, for one bundle."""
    decode, store, whole = [], [], []
    with (
        LocalCluster(ClusterSpec.on_free_ports(work, shards=1, bundle=bundle)) as cluster,
        Client(cluster.address) as client,
    ):
        rate = client.audio_sample_rate()
        for n in range(rounds):
            started = time.perf_counter()
            samples = decode_audio(sound.read_bytes(), rate, DecodeLimits(max_seconds=seconds + 10))
            pcm = pcm16(samples)
            decode.append(time.perf_counter() - started)
            started = time.perf_counter()
            client.ingest_audio(f"pre-{n}", [pcm], sample_rate=rate, duration=samples.shape[0] / rate)
            store.append(time.perf_counter() - started)
            started = time.perf_counter()
            ack = client.ingest_audio_file(f"file-{n}", sound)
            whole.append(time.perf_counter() - started)
        latency = {
            target: _latency_ms(lambda t=target: client.search(QUERY, k=10, target=t), queries)
            for target in ("audio", "image", "any")
        }
    d, s, w = statistics.median(decode), statistics.median(store), statistics.median(whole)
    return {
        "windows": ack.windows,
        "decode_seconds": round(d, 3),
        "windows_encode_store_seconds": round(s, 3),
        "end_to_end_seconds": round(w, 3),
        "audio_seconds_per_second": round(seconds / w, 1),
        "decode_share": round(d / (d + s), 3),
        "search_ms": latency,
        "rounds": rounds,
    }


def main(argv: list[str]) -> int:
    """Run the benchmark and write its results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a 2-minute recording, 1 round")
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args(argv)
    wanted, rounds = (120.0, 1) if args.quick else (args.seconds, args.rounds)
    name, bundle = "default", DEFAULT_BUNDLE
    audio = Manifest.load(bundle).audio
    assert audio is not None, f"{bundle} has no audio tower"
    info = machine()
    with tempfile.TemporaryDirectory(prefix="bench-sound-") as tmp:
        sound = Path(tmp) / "recording.wav"
        seconds = recording(sound, wanted)
        result = measure(bundle, sound, seconds, rounds, args.queries, Path(tmp) / "cluster")
        print(name, result, flush=True)
    RESULTS.mkdir(exist_ok=True)
    clip = {"clip_seconds": audio.clip_seconds, "hop_seconds": audio.window_hop_seconds, "rate": audio.sample_rate}
    payload = {
        "date": datetime.date.today().isoformat(),
        "sound_seconds": round(seconds, 1),
        "bundle": name,
        "audio": clip,
        "machine": info,
        "result": result,
    }
    (RESULTS / "sound_ingest.json").write_text(json.dumps(payload, indent=2))
    r = result
    lines = [
        f"## Sound ingest ({payload['date']}, {info['cpu_count']} cores)",
        "",
        f"A {seconds:.0f} s recording (16 kHz WAV of generated captioned sounds) into one local cluster (one "
        f"shard), bundle: {name}, clips of {audio.clip_seconds:g} s every {audio.window_hop_seconds:g} s at "
        f"{audio.sample_rate} Hz; median of {rounds} round(s); search latency the median of {args.queries} "
        "queries one at a time (K = 10).",
        "",
        "| windows | decode s | windows + encode + store s | end to end s | audio-s per s | decode share |",
        "|---|---|---|---|---|---|",
        f"| {r['windows']} | {r['decode_seconds']} | {r['windows_encode_store_seconds']} | "
        f"{r['end_to_end_seconds']} | {r['audio_seconds_per_second']} | {r['decode_share']:.0%} |",
        "",
        "| search | target audio (moments) | target image | any (sounds whole) |",
        "|---|---|---|---|",
        f"| p50 ms | {r['search_ms']['audio']} | {r['search_ms']['image']} | {r['search_ms']['any']} |",
    ]
    (RESULTS / "sound_ingest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
