"""`crossmodal search`: query the gateway with a text, an image or sound file, or a stored id."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import grpc

from crossmodal.cli._common import add_connection_args, connect, hits_json, hits_table, parse_filter, write_html


def _handler(args: argparse.Namespace) -> int:
    if sum(x is not None for x in (args.text, args.image, args.audio, args.like)) != 1:
        print("give exactly one of: a text, --image FILE, --audio FILE or --like ID", file=sys.stderr)
        return 2
    with connect(args) as client:
        try:
            result = client.search(
                args.text,
                image=args.image.read_bytes() if args.image else None,
                audio=args.audio.read_bytes() if args.audio else None,
                like_id=args.like,
                k=args.k,
                target=args.target,
                filter=parse_filter(args.filter),
                require_complete=args.complete,
                include_video_frames=args.include_video_frames,
            )
        except grpc.RpcError as exc:
            print(f"search failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    if args.json:
        print(hits_json(result.hits, result.partial_shards))
    else:
        print(hits_table(result.hits))
        if result.partial_shards:
            print(f"(partial: shards {result.partial_shards} did not answer)")
    if result.query_truncated:
        print(
            "(the query sound is longer than the model's clip: only its first clip was searched with)", file=sys.stderr
        )
    if args.html:
        query_file = args.image or args.audio
        title = args.text or (
            f"like {args.like}" if args.like else f"{'image' if args.image else 'sound'} {query_file}"
        )
        write_html(args.html, [(f"{title} -> {args.target}", result.hits, str(query_file) if query_file else None)])
        print(f"results page: {args.html}", file=sys.stderr)
    return 0


def register(subparsers: Any) -> None:
    """Add the `search` subcommand."""
    parser = subparsers.add_parser("search", help="search by text, image, sound or stored id")
    parser.add_argument("text", nargs="?", help="the query sentence")
    parser.add_argument("--image", type=Path, help="query with this image file")
    parser.add_argument(
        "--audio",
        type=Path,
        metavar="FILE",
        help="query with this sound file (wav flac mp3 ogg opus m4a; its first clip)",
    )
    parser.add_argument("--like", metavar="ID", help="query with a stored item (more like this)")
    parser.add_argument("--k", type=int, default=10, help="number of results (default 10)")
    parser.add_argument(
        "--target",
        choices=("any", "image", "text", "video", "audio"),
        default="any",
        help="modality of results; video and audio answer moments (file  start-end  score)",
    )
    parser.add_argument(
        "--include-video-frames", action="store_true", help="with --target image: frames of videos may answer too"
    )
    parser.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="F",
        help="key=value, key=v1|v2 or tag:name; repeat to combine (AND)",
    )
    parser.add_argument("--complete", action="store_true", help="fail instead of answering from some shards")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--html", type=Path, metavar="FILE", help="also write a results page with thumbnails")
    add_connection_args(parser)
    parser.set_defaults(func=_handler)
