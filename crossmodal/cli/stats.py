"""`crossmodal stats`: per-shard counts, replica health and the model in use."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import grpc

from crossmodal.cli._common import add_connection_args, connect


def _handler(args: argparse.Namespace) -> int:
    with connect(args) as client:
        try:
            stats = client.stats()
        except grpc.RpcError as exc:
            print(f"stats failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    print(f"model {stats.model_id} (dim {stats.dim}), {stats.total_count} items")
    for shard, replicas in sorted(stats.shards.items()):
        for replica in replicas:
            state = f"{replica.count} items" if replica.healthy else f"DOWN ({replica.error})"
            print(f"  shard {shard}  {replica.address:<22} {state}")
    return 0


def register(subparsers: Any) -> None:
    """Add the `stats` subcommand."""
    parser = subparsers.add_parser("stats", help="per-shard counts, replica health and model id")
    add_connection_args(parser)
    parser.set_defaults(func=_handler)
