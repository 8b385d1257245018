"""`crossmodal demo` (`make demo`): a local cluster, a generated gallery, videos and sounds, ingest and queries in
every direction."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crossmodal.cli._common import clock, hits_table, write_html
from crossmodal.cli.ingest import discover, run_ingest
from crossmodal.cli.up import add_cluster_args, spec_from
from crossmodal.client import Client, Hit, build_filter
from crossmodal.cluster import ClusterError, LocalCluster

if TYPE_CHECKING:
    from crossmodal.scenes.sounds import SoundSpec
    from crossmodal.scenes.video import VideoSpec

# The demo's sound set: short captioned sounds, and recordings made of several of them in a row.
SHORT_SOUNDS = 12
RECORDINGS = 2
SOUNDS_PER_RECORDING = 4

TEXT_QUERIES = (
    "a red circle",
    "a large blue square",
    "a small green triangle on the left",
    "a yellow star above a purple heart",
)


def make_sample_gallery(out: Path, count: int, seed: int) -> Path:
    """Render `count` validation scenes with captions into `out` (once) and return the JSONL path."""
    jsonl = out / "captions.jsonl"
    if jsonl.exists():
        print(f"gallery: reusing {jsonl}")
        return jsonl
    from crossmodal.scenes import Split, gallery_items, write_gallery

    print(f"gallery: rendering {count} scenes into {out} ...")
    started = time.perf_counter()
    tmp = out.with_name(out.name + ".tmp")
    write_gallery(tmp, gallery_items(count, seed=seed, split=Split.VAL))
    tmp.rename(out)
    print(f"gallery: done in {time.perf_counter() - started:.1f}s")
    return jsonl


def make_sample_videos(out: Path, count: int, seed: int) -> list[tuple[Path, VideoSpec]]:
    """Render `count` short videos of shapes entering and leaving at known times into `out` (once)."""
    from crossmodal.scenes.video import render_video, video_spec

    specs = [(out / f"clip-{n}.mp4", video_spec(seed + n)) for n in range(count)]
    if all(path.exists() for path, _ in specs):
        print(f"videos: reusing {count} in {out}")
        return specs
    print(f"videos: rendering {count} clips into {out} ...")
    for path, spec in specs:
        tmp = path.with_name("tmp-" + path.name)
        render_video(spec, tmp)
        tmp.rename(path)
    return specs


@dataclass(frozen=True)
class SoundSet:
    """The demo's sounds: each short file with its spec, and each recording with its parts and their times."""

    folder: Path
    captions: Path
    short: list[tuple[Path, SoundSpec]]
    recordings: list[tuple[Path, list[tuple[float, float, SoundSpec]]]]


def make_sample_sounds(out: Path, seed: int) -> SoundSet:
    """Render a dozen captioned sounds and two recordings of several sounds in a row into `out` (once).

    The captions go to `captions.jsonl` as text items `<file>#caption`, so that sounds can find their words.
    """
    from crossmodal.scenes.sounds import RATE, Split, caption, render_sound, sample_specs, write_wav

    specs = sample_specs(SHORT_SOUNDS + RECORDINGS * SOUNDS_PER_RECORDING, Split.HELD_OUT, seed)
    short = [(out / f"sound-{n:02d}.wav", spec) for n, spec in enumerate(specs[:SHORT_SOUNDS])]
    recordings = []
    for r in range(RECORDINGS):
        parts = specs[SHORT_SOUNDS + r * SOUNDS_PER_RECORDING :][:SOUNDS_PER_RECORDING]
        rendered = [render_sound(spec) for spec in parts]
        times, at = [], 0.0
        for spec, samples in zip(parts, rendered, strict=True):
            times.append((at, at + samples.shape[0] / RATE, spec))
            at += samples.shape[0] / RATE
        recordings.append((out / "recordings" / f"recording-{r}.wav", times, rendered))
    captions = out / "captions.jsonl"
    result = SoundSet(out, captions, short, [(path, times) for path, times, _ in recordings])
    if captions.exists():
        print(f"sounds: reusing {len(short)} sounds and {len(recordings)} recordings in {out}")
        return result
    print(f"sounds: rendering {len(short)} captioned sounds and {len(recordings)} recordings into {out} ...")
    (out / "recordings").mkdir(parents=True, exist_ok=True)
    for path, spec in short:
        write_wav(str(path), render_sound(spec))
    for path, _, rendered in recordings:
        write_wav(str(path), np.concatenate(rendered))
    lines = [
        json.dumps({"id": f"{path.name}#caption", "text": caption(spec), "metadata": {"sound": path.name}})
        for path, spec in short
    ]
    tmp = captions.with_name("tmp-" + captions.name)
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.rename(captions)  # last: its presence means the set is complete
    return result


def _sound_queries(client: Client, sounds: SoundSet, k: int, show: Any) -> None:
    """text -> audio and audio -> text on the short sounds, and a moment query on a recording, beside the truth."""
    from crossmodal.scenes.sounds import caption

    for path, spec in sounds.short[:4]:
        show(
            f"text -> audio: {caption(spec)!r} (truth: {path.name})",
            client.search(caption(spec), k=k, target="audio").hits,
        )
    # Among the sounds' captions only: the gallery's captions describe pictures.
    captions = build_filter({"sound": [path.name for path, _ in sounds.short]})
    for path, spec in sounds.short[4:7]:
        hits = client.search(audio=path.read_bytes(), k=k, target="text", filter=captions).hits
        show(f"audio -> text: {path.name} (truth: {caption(spec)!r})", hits, str(path))
    recording, times = sounds.recordings[0]
    start, end, spec = times[2]
    truth = f"in {recording.name} {clock(start)}-{clock(end)}"
    show(f"text -> audio moments: {caption(spec)!r} ({truth})", client.search(caption(spec), k=k, target="audio").hits)


def _video_moments(client: Client, videos: list[tuple[Path, VideoSpec]], k: int, show: Any) -> None:
    """Moment search on the demo videos: each object's query against when it was really on screen."""
    for path, spec in videos[:2]:
        for appearance in spec.appearances:
            hits = client.search(appearance.query, k=k, target="video").hits
            truth = f"on screen in {path.name} {clock(appearance.start)}-{clock(appearance.end)}"
            show(f"text -> video moments: {appearance.query!r} ({truth})", hits)


def _handler(args: argparse.Namespace) -> int:
    data = args.data_dir
    jsonl = make_sample_gallery(data / "gallery", args.count, args.seed)
    videos = make_sample_videos(data / "videos", args.videos, args.seed)
    sounds = make_sample_sounds(data / "sounds", args.seed)
    cluster = LocalCluster(spec_from(args), say=print)
    print(f"cluster: starting {args.shards} shard(s) x {args.replicas} replica(s), logs in {data / 'logs'}")
    try:
        cluster.start()
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        with Client(cluster.address) as client:
            print(f"cluster: gateway at {cluster.address}")
            if cluster.http is not None:
                print(
                    f"search page: {cluster.http_url}/ while the demo runs; to browse afterwards: "
                    f"crossmodal up --data-dir {data}, then open http://127.0.0.1:8080/"
                )
            audio = client.audio_sample_rate() > 0
            if not audio:
                print(
                    "audio: skipped: the cluster has no audio encoder (the model bundle has no audio tower, or "
                    "--no-audio); a bundle with audio.onnx adds the sound queries"
                )
            sources = discover([jsonl, data / "videos", *((sounds.folder, sounds.captions) if audio else ())])
            print(
                f"ingest: {len(sources)} items (images and their captions, {len(videos)} videos"
                + (
                    f", {len(sounds.short)} sounds, their captions and {len(sounds.recordings)} recordings)"
                    if audio
                    else ")"
                )
            )
            sent, acked, failures = run_ingest(client, sources, data / "ingest.acked", progress=not args.quiet)
            print(f"ingest: {acked} of {sent} acknowledged" + (f", failures: {dict(failures)}" if failures else ""))
            stats = client.stats()
            print(f"stats: {stats.total_count} items over {len(stats.shards)} shards, model {stats.model_id}")
            sections: list[tuple[str, list[Hit], str | None]] = []

            def show(title: str, hits: list[Hit], image: str | None = None) -> None:
                print(f"\n== {title}\n{hits_table(hits)}")
                sections.append((title, hits, image))

            for text in TEXT_QUERIES:
                show(f"text -> image: {text!r}", client.search(text, k=args.k, target="image").hits)
            first = next(s for s in sources if not s.id.endswith("#caption"))
            image_item = first.load()
            image_path = image_item.metadata["path"]
            show(
                f"image -> image: more like {first.id}",
                client.search(like_id=first.id, k=args.k, target="image").hits,
                image_path,
            )
            show(
                f"image -> text: captions for {first.id}",
                client.search(image=image_item.image, k=args.k, target="text").hits,
                image_path,
            )
            show(f"text -> text: {TEXT_QUERIES[0]!r}", client.search(TEXT_QUERIES[0], k=args.k, target="text").hits)
            _video_moments(client, videos, args.k, show)
            if audio:
                _sound_queries(client, sounds, args.k, show)
            page = data / "results.html"
            write_html(page, sections)
            print(f"\nresults page with thumbnails: {page.resolve()}")
    finally:
        cluster.stop()
    return 1 if failures else 0


def register(subparsers: Any) -> None:
    """Add the `demo` subcommand."""
    parser = subparsers.add_parser("demo", help="run the end-to-end demo on a generated gallery")
    add_cluster_args(parser, "data/demo")
    parser.add_argument("--count", type=int, default=500, help="scenes in the sample gallery (default 500)")
    parser.add_argument("--seed", type=int, default=7, help="gallery seed")
    parser.add_argument("--videos", type=int, default=4, help="generated videos for moment search (default 4)")
    parser.add_argument("--k", type=int, default=5, help="results per query")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(
        func=_handler, port=0, index_base_port=0, metrics_base_port=0, encoder_ports=(0, 0), http_port=0
    )
