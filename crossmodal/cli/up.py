"""`crossmodal up`: run the whole suite locally as processes, restarting any that dies, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from crossmodal.bundle.manifest import PRECISIONS
from crossmodal.cluster import (
    DEFAULT_BUNDLE,
    LOG_MODES,
    MAX_TEXT_ENCODERS,
    ClusterError,
    ClusterSpec,
    LocalCluster,
)

DEFAULT_HTTP_PORT = 8080


def add_cluster_args(parser: argparse.ArgumentParser, data_dir: str) -> None:
    """Options describing a local cluster."""
    parser.add_argument("--data-dir", type=Path, default=Path(data_dir), help=f"data and logs (default {data_dir})")
    parser.add_argument("--shards", type=int, default=2, help="number of shards (default 2)")
    parser.add_argument("--replicas", type=int, default=1, help="replicas per shard (default 1)")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE, help="model bundle directory")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="bundle variant")
    parser.add_argument("--port", type=int, default=50051, help="gateway port (0: any free port)")
    parser.add_argument("--encoder-ports", type=int, nargs=2, default=(50052, 50053), metavar=("TEXT", "IMAGE"))
    parser.add_argument(
        "--audio-encoder-port",
        type=int,
        default=None,
        help=f"port of the audio encoder, started when the bundle has an audio tower (0: any free port; default "
        f"{ClusterSpec.audio_encoder_port}, or a free port when --port is 0)",
    )
    parser.add_argument(
        "--no-audio",
        action="store_true",
        help="do not start the audio encoder even if the bundle has an audio tower (saves its memory; the "
        "gateway then refuses audio queries and audio items)",
    )
    parser.add_argument(
        "--text-encoders", type=int, default=1, help="text encoder processes; those after the first use free ports"
    )
    parser.add_argument("--index-base-port", type=int, default=50060, help="first shard port (0: free ports)")
    parser.add_argument("--metrics-base-port", type=int, default=9100, help="first metrics port (0: free ports)")
    parser.add_argument(
        "--log",
        choices=LOG_MODES,
        default=None,
        help="the write log: a local NATS JetStream server (single), three (cluster) or none; "
        "default: single with more than one replica per shard (required then), none otherwise",
    )
    parser.add_argument(
        "--http-port",
        type=int,
        default=None,
        help=f"port of the HTTP/JSON API and search page (0: any free port; -1: do not start it; default "
        f"{DEFAULT_HTTP_PORT}, or a free port when --port is 0)",
    )
    parser.add_argument(
        "--media-root",
        type=Path,
        action="append",
        default=None,
        help="a folder whose files the search page may show as thumbnails and media (repeatable; default: "
        "<data-dir>/gallery and <data-dir>/videos, where `crossmodal demo` renders its media)",
    )
    parser.add_argument(
        "--no-restart",
        action="store_true",
        help="leave a child that exits stopped instead of restarting it (to watch an outage, as the alert tests do)",
    )


# The folders under the data directory where `crossmodal demo` renders its gallery and its videos.
DEMO_MEDIA = ("gallery", "videos")


def media_roots_default(data_dir: Path) -> list[Path]:
    """The folders the search page may read when none is named: the data directory's demo media, where present."""
    return [data_dir / name for name in DEMO_MEDIA if (data_dir / name).is_dir()]


def spec_from(args: argparse.Namespace) -> ClusterSpec:
    """The cluster the options describe."""
    if args.shards < 1 or args.replicas < 1:
        raise SystemExit("--shards and --replicas must be at least 1")
    if not 1 <= args.text_encoders <= MAX_TEXT_ENCODERS:
        raise SystemExit(f"--text-encoders must be 1-{MAX_TEXT_ENCODERS}")
    # A gateway on a free port means "no fixed ports" (tests, several clusters at once): the same for HTTP
    # and the audio encoder when their ports are not given.
    http_port = args.http_port
    if http_port is None:
        http_port = 0 if args.port == 0 else DEFAULT_HTTP_PORT
    audio_port = args.audio_encoder_port
    if audio_port is None:
        audio_port = 0 if args.port == 0 else ClusterSpec.audio_encoder_port
    return ClusterSpec(
        data_dir=args.data_dir,
        shards=args.shards,
        replicas=args.replicas,
        bundle=args.bundle,
        precision=args.precision,
        gateway_port=args.port,
        text_encoder_port=args.encoder_ports[0],
        image_encoder_port=args.encoder_ports[1],
        audio_encoder_port=audio_port,
        audio=not args.no_audio,
        index_base_port=args.index_base_port,
        metrics_base_port=args.metrics_base_port,
        text_encoders=args.text_encoders,
        log=args.log or "",
        http_port=http_port if http_port >= 0 else None,
        media_roots=tuple(args.media_root if args.media_root is not None else media_roots_default(args.data_dir)),
    )


def say(message: str) -> None:
    """Print a line at once: the supervisor speaks from its own thread while the output may be a file."""
    print(message, flush=True)


def _audio_note(cluster: LocalCluster) -> str:
    """Why the cluster serves no audio, when it does not."""
    if "audio" in cluster.encoders:
        return ""
    if not cluster.spec.audio:
        return " (audio encoder left off by --no-audio: audio queries and items are refused)"
    return " (the bundle has no audio tower)"


def _handler(args: argparse.Namespace) -> int:
    cluster = LocalCluster(spec_from(args), say=say, supervise=not args.no_restart)
    spec = cluster.spec
    print(
        f"starting {spec.shards} shard(s) x {spec.replicas} replica(s), write log: {spec.log}, "
        f"logs in {spec.data_dir / 'logs'}",
        flush=True,
    )
    # The children lead sessions of their own, so a signal to `up` never reaches them: while they start,
    # SIGTERM interrupts like Ctrl-C does, and start() stops those already running before it re-raises.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        cluster.start()
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("interrupted while starting; stopped", file=sys.stderr, flush=True)
        return 130
    stop = threading.Event()
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        print(f"\ncrossmodal is up: gateway at {cluster.address}; metrics of each process listed above")
        if cluster.log is not None:
            print(f"  write log (NATS JetStream): {cluster.log.url}, stored in {spec.data_dir / 'log'}")
        print(f"  towers: {', '.join(cluster.encoders)}{_audio_note(cluster)}")
        print("  a process that exits is restarted on its ports and data (back-off 0.5 s doubling to 30 s)")
        if cluster.http is not None:
            roots = ", ".join(str(r) for r in spec.media_roots) or "none (add --media-root FOLDER)"
            print(f"  search page and HTTP/JSON API: {cluster.http_url}/ (OpenAPI: {cluster.http_url}/v1/openapi.json)")
            print(f"  thumbnails are served for files under: {roots}")
        print("  try: crossmodal search 'a red circle' --address", cluster.address)
        print("press Ctrl-C to stop", flush=True)
        stop.wait()
    except KeyboardInterrupt:
        pass  # a signal that came before the handlers above were in place: stop all the same
    finally:
        print("stopping...", flush=True)
        cluster.stop()
        print("stopped", flush=True)
    return 0


def register(subparsers: Any) -> None:
    """Add the `up` subcommand."""
    parser = subparsers.add_parser("up", help="start the whole suite locally (Ctrl-C stops it)")
    add_cluster_args(parser, "data/cluster")
    parser.set_defaults(func=_handler)
