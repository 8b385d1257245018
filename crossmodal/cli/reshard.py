"""`crossmodal reshard --shards N`: move the write log's partitions between shards online, with progress.

The gateway drives the move (its admin RPC `Reshard`); this command starts or resumes it and prints what
the gateway streams. Killing the command (or the gateway) leaves the move where it was: run the same
command again to finish it. `--dry-run` prints the plan and changes nothing.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import grpc

from crossmodal.cli._common import add_connection_args, connect
from crossmodal.v1 import gateway_pb2


def plan_table(progress: gateway_pb2.ReshardProgress) -> str:
    """The plan as a table: partitions and items per shard, before and after."""
    rows = [("shard", "partitions now", "after", "items now", "items in", "items out")]
    for row in progress.plan:
        rows.append(
            (
                str(row.shard),
                str(row.partitions_before),
                str(row.partitions_after),
                str(row.items_before),
                str(row.items_incoming),
                str(row.items_outgoing),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def _handler(args: argparse.Namespace) -> int:
    if args.shards < 1:
        print("--shards must be at least 1", file=sys.stderr)
        return 2
    with connect(args) as client:
        try:
            for progress in client.reshard(args.shards, dry_run=args.dry_run):
                if progress.phase == "plan":
                    print(progress.message, flush=True)
                    print(plan_table(progress), flush=True)
                else:
                    print(f"[map v{progress.map_version} {progress.phase}] {progress.message}", flush=True)
        except grpc.RpcError as exc:
            print(f"reshard failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                print("the move stays where it was: run the same command again to resume it", file=sys.stderr)
            return 1
    return 0


def register(subparsers: Any) -> None:
    """Add the `reshard` subcommand."""
    parser = subparsers.add_parser(
        "reshard", help="move the partitions of the write log to N shards, online (grow or shrink the cluster)"
    )
    parser.add_argument("--shards", type=int, required=True, help="the number of shards that should own the data")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    add_connection_args(parser)
    parser.set_defaults(func=_handler)
