"""`crossmodal export-model`: export an open_clip CLIP or a transformers CLAP model to a bundle (the `export` extra)."""

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
        help="export an open_clip (text+image) or CLAP (text+audio) model to a model bundle directory",
        description=(
            "Export a model to a bundle, verified against PyTorch before it is written. "
            "--family open_clip (default): a CLIP model (named architecture with a pretrained tag, a local "
            "checkpoint, or a custom architecture config) to text.onnx, image.onnx, tokenizer.json and "
            "model.json. --family clap: a Hugging Face transformers ClapModel (unfused, e.g. "
            "laion/clap-htsat-unfused: --pretrained NAME downloads it and needs the network, --checkpoint DIR "
            "loads a save_pretrained folder, neither gives random weights for tests) to text.onnx, "
            "audio.onnx, tokenizer.json and model.json with the feature extractor's audio settings. "
            "Both: optional fp16 (GPU) and int8 (CPU) variants."
        ),
    )
    parser.add_argument("out_dir", type=Path, help="bundle directory to create")
    parser.add_argument(
        "--family",
        choices=("open_clip", "clap"),
        default="open_clip",
        help="model family: open_clip (text+image, default) or clap (transformers ClapModel, text+audio)",
    )
    parser.add_argument("--arch", help="open_clip architecture name, e.g. ViT-B-32 (open_clip only)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--pretrained",
        help="open_clip pretrained tag (e.g. laion2b_s34b_b79k) or, with --family clap, a model hub name "
        "(e.g. laion/clap-htsat-unfused); needs the network",
    )
    source.add_argument(
        "--checkpoint",
        type=Path,
        help="open_clip: local weights file; clap: a folder written by ClapModel and ClapProcessor.save_pretrained",
    )
    parser.add_argument(
        "--model-config",
        type=Path,
        help="custom architecture: open_clip JSON with embed_dim, vision_cfg, text_cfg; clap JSON of ClapConfig "
        "fields merged over clap-htsat-unfused (random weights only)",
    )
    parser.add_argument(
        "--context-length",
        type=int,
        help="clap only: tokens per text (default 77, as LAION's CLAP was trained)",
    )
    parser.add_argument("--model-id", help="model id stored in the bundle (default: derived from the source)")
    parser.add_argument(
        "--precision",
        action="append",
        choices=PRECISIONS,
        help="extra variant (repeatable): fp16 for GPUs, int8 for CPUs; fp32 is always written",
    )
    parser.add_argument(
        "--tokenizer-json", type=Path, help="use this tokenizer.json instead of open_clip's or the CLAP model's"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for random weights (no pretrained, no checkpoint)")
    parser.add_argument("--cache-dir", type=Path, help="where open_clip / transformers cache downloaded weights")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle directory")
    parser.add_argument("--quiet", action="store_true", help="print only the final summary")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Run the export and print a JSON summary; returns 1 with a message on failure."""
    try:
        from crossmodal.export import (
            ExportError,
            export_bundle,
            export_clap_bundle,
            load_clap_model,
            load_open_clip_model,
        )
    except ImportError as exc:
        print(f"export-model needs the `export` extra (torch, open_clip, transformers): {exc}", file=sys.stderr)
        return 1
    if args.family == "clap" and args.arch:
        print(
            "export-model: --arch names open_clip architectures; CLAP takes --pretrained, --checkpoint or "
            "--model-config",
            file=sys.stderr,
        )
        return 2
    if args.family == "open_clip" and args.context_length is not None:
        print("export-model: --context-length applies to --family clap only", file=sys.stderr)
        return 2
    if args.family == "open_clip" and not args.arch and not args.model_config:
        print("export-model: give --arch NAME or --model-config FILE", file=sys.stderr)
        return 2

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"[export-model] {message}", file=sys.stderr)

    precisions = tuple(dict.fromkeys(["fp32", *(args.precision or [])]))
    try:
        if args.family == "clap":
            progress("loading the CLAP model")
            clap = load_clap_model(
                pretrained=args.pretrained,
                checkpoint=args.checkpoint,
                model_config=args.model_config,
                cache_dir=args.cache_dir,
                seed=args.seed,
            )
            length = {} if args.context_length is None else {"context_length": args.context_length}
            manifest = export_clap_bundle(
                clap,
                args.out_dir,
                model_id=args.model_id,
                precisions=precisions,
                **length,
                tokenizer_json=args.tokenizer_json,
                progress=progress,
                overwrite=args.overwrite,
            )
            return _summarise(args.out_dir, manifest)
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
            precisions=precisions,
            tokenizer_json=args.tokenizer_json,
            progress=progress,
            overwrite=args.overwrite,
        )
    except ExportError as exc:
        print(f"export-model: {exc}", file=sys.stderr)
        return 1
    return _summarise(args.out_dir, manifest)


def _summarise(out_dir: Path, manifest: Any) -> int:
    # The same JSON summary for both families: towers, files and the measured cosines of each variant.
    summary = {
        "bundle": str(out_dir),
        "model_id": manifest.model_id,
        "embed_dim": manifest.embed_dim,
        "towers": list(manifest.towers),
        "variants": {
            name: {
                "files": list(v.files.values()),
                "cosine_to_fp32": v.cosine_to_fp32,
                **({"cosine_to_torch": v.cosine_to_torch} if v.cosine_to_torch else {}),
            }
            for name, v in manifest.variants.items()
        },
    }
    print(json.dumps(summary, indent=2))
    return 0
