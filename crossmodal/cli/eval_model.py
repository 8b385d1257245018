"""`crossmodal eval-model`: measure a bundle's retrieval quality on generated scenes (JSON + Markdown)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from crossmodal.cluster import DEFAULT_BUNDLE


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `eval-model` subcommand."""
    p = subparsers.add_parser(
        "eval-model",
        help="text<->image recall, attribute binding and foreign drawings of a bundle on generated scenes",
        description=(
            "Evaluate a model bundle through onnxruntime, with the tokenizer and preprocessing the "
            "services use, on a held-out gallery (unseen colour/shape pairs) and a seen one. Writes "
            "quality.json and QUALITY.md."
        ),
    )
    p.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    p.add_argument(
        "--precision",
        action="append",
        dest="precisions",
        help="fp32, int8, ... (repeatable; default all two)",
    )
    p.add_argument("--gallery-size", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--image-size", type=int, default=128, help="side of the rendered gallery images")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="where to write quality.json and QUALITY.md (default: the bundle)",
    )
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Run the evaluation and write the report files."""
    from crossmodal.bundle.errors import BundleError
    from crossmodal.train.report import quality_report, to_markdown

    precisions = args.precisions or ["fp32", "int8"]
    try:
        report = quality_report(
            args.bundle,
            precisions=precisions,
            gallery_size=args.gallery_size,
            seed=args.seed,
            image_size=args.image_size,
            threads=args.threads,
        )
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = args.out_dir or args.bundle
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    markdown = to_markdown(report)
    (out / "QUALITY.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    return 0
