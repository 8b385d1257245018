"""Video ingest benchmark: video-seconds ingested per wall-second at 1 frame/s, and decoding vs encoding.

It renders a camera-sized H.264 video (1280x720, 30 frames/s, 60 s; shapes entering and leaving, made
with crossmodal.scenes.video, under a changing sensor-like grain so that the bitrate is a phone camera's,
about 15 Mbit/s, not the few kbit/s of flat generated colour) into a temporary folder and measures, in one
run per bundle (the default bundle and ViT-B-32 with random weights, exported once into .cache/bundles/ as
bench_encoders.py does):

1. decode: `crossmodal.video.sample_video` over the whole file alone (PyAV decode of every frame, the
   scene-change test, scaling and JPEG of the kept frames), client side;
2. encode + store: `Client.ingest_video` of the already decoded frames into a real local cluster
   (gateway, both encoders, one index shard): the image tower and the writes, no decoding;
3. end to end: `Client.ingest_video_file`, decoding streamed while the gateway encodes.

The decode share is decode / (decode + encode + store); end to end is less than the sum because the two
overlap. Median of `--rounds` rounds. Writes bench/results/video.json and video.md.

    .venv/bin/python bench/bench_video.py           # 60 s video, 3 rounds
    .venv/bin/python bench/bench_video.py --quick   # 20 s video, 1 round, default bundle only
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
from typing import Any, cast

import av
import numpy as np
from av.video.stream import VideoStream

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_encoders import VIT_BUNDLE, export, machine  # noqa: E402
from crossmodal.bundle import MANIFEST_FILE  # noqa: E402
from crossmodal.client import Client, VideoFrame  # noqa: E402
from crossmodal.cluster import DEFAULT_BUNDLE, ClusterSpec, LocalCluster  # noqa: E402
from crossmodal.scenes.video import VideoSpec, frames, video_spec  # noqa: E402
from crossmodal.video import VideoOptions, sample_video  # noqa: E402

RESULTS = ROOT / "bench" / "results"
WIDTH, HEIGHT, FPS = 1280, 720, 30


def render_camera(spec: VideoSpec, path: Path) -> None:
    """Encode the video with grain that changes every frame (8 patterns in turn), as H.264 at CRF 23."""
    rng = np.random.default_rng(0)
    grain = [rng.integers(-12, 13, size=(HEIGHT, WIDTH, 1), dtype=np.int16) for _ in range(8)]
    with av.open(str(path), mode="w") as container:
        stream = cast(VideoStream, container.add_stream("libx264", rate=FPS))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for n, image in enumerate(frames(spec, WIDTH, HEIGHT, FPS)):
            pixels = np.clip(np.asarray(image, dtype=np.int16) + grain[n % len(grain)], 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def measure(bundle: Path, video: Path, duration: float, rounds: int, work: Path) -> dict[str, Any]:
    """Decode, encode + store and end-to-end times for one bundle (median over rounds)."""
    options = VideoOptions(rate=1.0)
    decode, store, whole = [], [], []
    with (
        LocalCluster(ClusterSpec.on_free_ports(work, shards=1, bundle=bundle)) as cluster,
        Client(cluster.address) as client,
    ):
        for n in range(rounds):
            started = time.perf_counter()
            info, frames = sample_video(video, options)
            decoded = [VideoFrame(f.seconds, f.jpeg, f.scene_change) for f in frames]
            decode.append(time.perf_counter() - started)
            started = time.perf_counter()
            client.ingest_video(f"pre-{n}", decoded, duration=info.duration)
            store.append(time.perf_counter() - started)
            started = time.perf_counter()
            ack = client.ingest_video_file(f"file-{n}", video, options=options)
            whole.append(time.perf_counter() - started)
    d, s, w = statistics.median(decode), statistics.median(store), statistics.median(whole)
    return {
        "frames": ack.frames,
        "decode_seconds": round(d, 3),
        "encode_store_seconds": round(s, 3),
        "end_to_end_seconds": round(w, 3),
        "video_seconds_per_second": round(duration / w, 2),
        "decode_share": round(d / (d + s), 3),
        "encode_share": round(s / (d + s), 3),
        "rounds": rounds,
    }


def main(argv: list[str]) -> int:
    """Run the benchmark and write its results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 s video, 1 round, default bundle only")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    duration, rounds = (20.0, 1) if args.quick else (args.seconds, args.rounds)
    bundles = {"default": DEFAULT_BUNDLE}
    if not args.quick:
        if not (VIT_BUNDLE / MANIFEST_FILE).is_file():
            export(VIT_BUNDLE, "--arch", "ViT-B-32")
        bundles["ViT-B-32 (int8, random weights)"] = VIT_BUNDLE
    info = machine()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-video-") as tmp:
        video = Path(tmp) / "camera.mp4"
        started = time.perf_counter()
        render_camera(video_spec(1, duration=duration, objects=4), video)
        megabits = video.stat().st_size * 8 / duration / 1e6
        print(
            f"rendered {duration:g} s of 720p30 H.264 ({megabits:.1f} Mbit/s) in {time.perf_counter() - started:.1f}s"
        )
        for name, bundle in bundles.items():
            results[name] = measure(bundle, video, duration, rounds, Path(tmp) / name.split()[0])
            print(name, results[name], flush=True)
        size = video.stat().st_size
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "date": datetime.date.today().isoformat(),
        "video": {"seconds": duration, "width": 1280, "height": 720, "fps": 30, "codec": "h264", "bytes": size},
        "rate": 1.0,
        "machine": info,
        "bundles": results,
    }
    (RESULTS / "video.json").write_text(json.dumps(payload, indent=2))
    lines = [
        f"## Video ingest ({payload['date']}, {info['cpu_count']} cores)",
        "",
        f"{duration:g} s of 1280x720 H.264 at 30 frames/s ({size / 1e6:.1f} MB, {size * 8 / duration / 1e6:.1f} "
        "Mbit/s: generated shapes under a changing grain), sampled at 1 frame/s plus "
        "scene changes; one local cluster per bundle (one shard); median of "
        f"{rounds} round(s).",
        "",
        "| bundle | frames | decode s | encode + store s | end to end s | video-s per s | decode share |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['frames']} | {r['decode_seconds']} | {r['encode_store_seconds']} | "
            f"{r['end_to_end_seconds']} | {r['video_seconds_per_second']} | {r['decode_share']:.0%} |"
        )
    (RESULTS / "video.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
