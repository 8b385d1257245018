"""`crossmodal export-model`: export an open_clip model to a model bundle (needs the `export` extra)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from crossmodal.bundle.manifest import PRECISIONS


def register(subparsers: Any) -> None:
    """Add the `export-model` subcommand."""
    parser = subparsers.add_parser(
        "export-model",
        help="export an open_clip model to a model bundle directory",
        description=(
            "Export an open_clip CLIP model (named architecture with a pretrained tag, a local "
            "checkpoint, or a custom architecture config) to a bundle: text.onnx, image.onnx, "
            "tokenizer.json and model.json, plus optional fp16 (GPU) and int8 (CPU) variants."
        ),
    )
    parser.add_argument("out_dir", type=Path, help="bundle directory to create")
    parser.add_argument("--arch", help="open_clip architecture name, e.g. ViT-B-32")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--pretrained", help="open_clip pretrained tag, e.g. laion2b_s34b_b79k (needs network)")
    source.add_argument("--checkpoint", type=Path, help="local checkpoint file with the model's weights")
    parser.add_argument(
        "--model-config", type=Path, help="custom architecture: JSON with embed_dim, vision_cfg, text_cfg"
    )
    parser.add_argument("--model-id", help="model id stored in the bundle (default: derived from the source)")
    parser.add_argument(
        "--precision",
        action="append",
        choices=PRECISIONS,
        help="extra variant (repeatable): fp16 for GPUs, int8 for CPUs; fp32 is always written",
    )
    parser.add_argument("--tokenizer-json", type=Path, help="use this tokenizer.json instead of open_clip's vocabulary")
    parser.add_argument("--seed", type=int, default=0, help="seed for random weights (no pretrained, no checkpoint)")
    parser.add_argument("--cache-dir", type=Path, help="where open_clip caches downloaded weights")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle directory")
    parser.add_argument("--quiet", action="store_true", help="print only the final summary")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Run the export and print a JSON summary; returns 1 with a message on failure."""
    try:
        from crossmodal.export import ExportError, export_bundle, load_open_clip_model
    except ImportError as exc:
        print(f"export-model needs the `export` extra (torch, open_clip): {exc}", file=sys.stderr)
        return 1
    if not args.arch and not args.model_config:
        print("export-model: give --arch NAME or --model-config FILE", file=sys.stderr)
        return 2

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"[export-model] {message}", file=sys.stderr)

    try:
        loaded = load_open_clip_model(
            args.arch,
            pretrained=args.pretrained,
            checkpoint=args.checkpoint,
            model_config=args.model_config,
            cache_dir=args.cache_dir,
            seed=args.seed,
        )
        manifest = export_bundle(
            loaded.model,
            args.out_dir,
            model_id=args.model_id or loaded.model_id,
            context_length=loaded.context_length,
            source=loaded.source,
            precisions=tuple(dict.fromkeys(["fp32", *(args.precision or [])])),
            tokenizer_json=args.tokenizer_json,
            progress=progress,
            overwrite=args.overwrite,
        )
    except ExportError as exc:
        print(f"export-model: {exc}", file=sys.stderr)
        return 1
    summary = {
        "bundle": str(args.out_dir),
        "model_id": manifest.model_id,
        "embed_dim": manifest.embed_dim,
        "variants": {
            name: {"files": [v.text, v.image], "cosine_to_fp32": v.cosine_to_fp32}
            for name, v in manifest.variants.items()
        },
    }
    print(json.dumps(summary, indent=2))
    return 0
