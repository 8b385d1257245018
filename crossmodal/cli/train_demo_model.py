"""`crossmodal train-demo-model`: train the built-in demo CLIP on procedural scenes and export its bundle."""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

from crossmodal.cluster import DEFAULT_BUNDLE

DEFAULT_MODEL_ID = "crossmodal-demo-v2"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train-demo-model` subcommand."""
    from crossmodal.train.config import TrainConfig

    d = TrainConfig(out_dir="")
    p = subparsers.add_parser(
        "train-demo-model",
        help="train the demo CLIP on generated scenes (CPU) and export it as a model bundle",
        description=__doc__,
    )
    p.add_argument("--out", type=Path, default=DEFAULT_BUNDLE, help="bundle directory to write")
    p.add_argument("--work-dir", type=Path, default=Path(".cache/demo-train"), help="checkpoints and the training log")
    p.add_argument("--model-id", default=DEFAULT_MODEL_ID)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--scenes", type=int, default=d.scenes, help="distinct training scenes to render")
    p.add_argument("--twin-fraction", type=float, default=d.twin_fraction, help="share of scenes given a hard negative")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument(
        "--logit-scale-init", type=float, default=d.logit_scale_init, help="initial similarity scale (at most 100)"
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=d.workers, help="processes rendering the scenes")
    p.add_argument("--device", default=d.device)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--scene-cache", default=d.cache_dir, help="where rendered scenes are cached ('' for none)")
    p.add_argument(
        "--arch",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="architecture override, e.g. resnet_width=24 or vision_kind=vit",
    )
    p.add_argument("--no-resume", action="store_true", help="start afresh even if a checkpoint exists")
    p.add_argument("--precisions", default="fp32,int8", help="comma-separated bundle precisions")
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="train at most this many steps now, checkpoint and exit (resume later)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Train (resuming from the work dir's checkpoint when present), then export the bundle."""
    from crossmodal.export import export_bundle
    from crossmodal.train.config import TrainConfig
    from crossmodal.train.loop import train

    arch: dict[str, int | str] = {}
    for item in args.arch:
        key, _, value = item.partition("=")
        arch[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value.strip()
    cfg = TrainConfig(
        out_dir=str(args.work_dir),
        steps=args.steps,
        batch_size=args.batch_size,
        scenes=args.scenes,
        twin_fraction=args.twin_fraction,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        logit_scale_init=args.logit_scale_init,
        seed=args.seed,
        threads=args.threads,
        workers=args.workers,
        device=args.device,
        checkpoint_every=args.checkpoint_every,
        cache_dir=args.scene_cache or None,
        arch=arch,
    )
    result = train(cfg, resume=not args.no_resume, progress=not args.no_progress, stop_after=args.stop_after)
    if len(result.losses) < cfg.steps:
        print(f"stopped at step {len(result.losses)} of {cfg.steps}; run again to resume", file=sys.stderr)
        return 0
    print(
        f"trained {cfg.steps} steps in {result.seconds:.0f} s (final loss {result.losses[-1]:.3f})",
        file=sys.stderr,
    )
    source = {
        "kind": "crossmodal-demo",
        "command": "crossmodal " + shlex.join(sys.argv[1:]),
        "train_config": {k: v for k, v in asdict(cfg).items() if k not in ("out_dir", "cache_dir")},
        "architecture": result.architecture.to_dict(),
        "open_clip_config": result.architecture.open_clip_config(),
        "train_seconds": round(result.seconds, 1),
        "final_loss": round(sum(result.losses[-20:]) / max(1, len(result.losses[-20:])), 4),
        "data": "crossmodal.scenes, train split (held-out colour/shape pairs never shown)",
    }
    manifest = export_bundle(
        result.model,
        args.out,
        model_id=args.model_id,
        context_length=result.architecture.context_length,
        source=source,
        precisions=tuple(p.strip() for p in args.precisions.split(",") if p.strip()),
        tokenizer_json=result.tokenizer_path,
        image_config=result.image_config,
        progress=lambda msg: print(msg, file=sys.stderr),
        overwrite=True,
    )
    print(f"bundle {manifest.model_id} written to {args.out}")
    return 0
