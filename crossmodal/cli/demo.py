"""`crossmodal demo` (`make demo`): a local cluster, a generated gallery, ingest and queries in every direction."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crossmodal.cli._common import clock, hits_table, write_html
from crossmodal.cli.ingest import discover, run_ingest
from crossmodal.cli.up import add_cluster_args, spec_from
from crossmodal.client import Client, Hit
from crossmodal.cluster import ClusterError, LocalCluster

if TYPE_CHECKING:
    from crossmodal.scenes.video import VideoSpec

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
            sources = discover([jsonl, data / "videos"])
            print(f"ingest: {len(sources)} items (images and their captions, and {len(videos)} videos)")
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
