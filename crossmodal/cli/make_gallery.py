"""`crossmodal make-gallery`: render procedural scenes to PNG files with a JSONL of their captions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SPLIT_CHOICES = ("train", "val", "heldout")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `make-gallery` subcommand."""
    p = subparsers.add_parser(
        "make-gallery",
        help="render generated scenes (images + captions.jsonl), deterministic by seed",
        description=(
            "Render procedural scenes of coloured shapes to OUT_DIR/images/*.png and write "
            "OUT_DIR/captions.jsonl with one {id, path, caption, attributes} record per scene. "
            "The heldout split only holds scenes with a colour/shape pair that training never shows."
        ),
    )
    p.add_argument("out_dir", type=Path, help="directory to write (created if missing)")
    p.add_argument("--count", type=int, default=1000, help="number of scenes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=SPLIT_CHOICES, default="heldout")
    p.add_argument("--start", type=int, default=0, help="index of the first scene (to extend a gallery)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Render the requested scenes and write the JSONL."""
    from crossmodal.scenes import Split, gallery_items, write_gallery

    if args.count < 0 or args.size < 16:
        print("--count must be >= 0 and --size >= 16", file=sys.stderr)
        return 2
    items = gallery_items(args.count, seed=args.seed, split=Split(args.split), start=args.start)
    jsonl = write_gallery(args.out_dir, items, size=args.size)
    print(f"wrote {len(items)} scenes to {args.out_dir} ({jsonl.name})")
    return 0
