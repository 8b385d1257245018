"""`crossmodal train-audio-tower`: train the built-in audio tower into a bundle's space and add it to the bundle."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from crossmodal.cluster import DEFAULT_BUNDLE

# Held-out sounds the quality report measures (600: each held-out caption is asked ~28 times over).
EVAL_SOUNDS = 600
# Probe sounds the exported ONNX tower is compared with PyTorch on.
PROBE_SOUNDS = 64


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train-audio-tower` subcommand."""
    from crossmodal.train.config import AudioTrainConfig

    d = AudioTrainConfig()
    p = subparsers.add_parser(
        "train-audio-tower",
        help="train an audio tower on generated captioned sounds, bound to a bundle's frozen text tower, and add it",
        description=(
            "Train the built-in audio tower (CPU, seeded) against the bundle's own text tower, so text->image "
            "answers stay the same and text->audio works in the same space; export it to ONNX (every precision "
            "the bundle has), measure it on held-out sounds and write the bundle with it, plus the audio part "
            "of quality.json and QUALITY.md."
        ),
    )
    p.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE, help="bundle whose text tower is used")
    p.add_argument("--out", type=Path, default=None, help="where to write the bundle (default: --bundle, replaced)")
    p.add_argument("--sounds", type=int, default=d.sounds, help="training sounds to render")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=d.workers, help="processes rendering the sounds")
    p.add_argument("--eval-sounds", type=int, default=EVAL_SOUNDS, help="held-out sounds of the quality report")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Train, export into the bundle, and write the audio quality report."""
    from crossmodal.bundle import ModelBundle
    from crossmodal.bundle.errors import BundleError
    from crossmodal.export.audio_tower import add_audio_tower
    from crossmodal.export.exporter import ExportError
    from crossmodal.scenes import sounds
    from crossmodal.train.audio import BUILTIN_AUDIO, features, train_audio_tower
    from crossmodal.train.config import AudioTrainConfig
    from crossmodal.train.report import audio_markdown, audio_quality, to_markdown

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    bundle_dir = args.bundle.resolve()
    out = (args.out or args.bundle).resolve()
    try:
        text = ModelBundle.open(bundle_dir, towers=("text",), providers=["CPUExecutionProvider"])
    except BundleError as exc:
        say(f"error: {exc}")
        return 1
    config = AudioTrainConfig(
        sounds=args.sounds,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
        workers=args.workers,
    )
    model, record = train_audio_tower(text.encode_texts, config, say)
    say(f"trained in {record['train_seconds']:.0f} s (final loss {record['final_loss']})")
    probes = features(sounds.sample_specs(PROBE_SOUNDS, sounds.Split.TRAIN, args.seed + 99), args.workers)
    source = {
        "kind": "crossmodal-audio",
        # Every setting that decides the tower, so the line reproduces it whatever the defaults become.
        "command": "crossmodal train-audio-tower "
        + shlex.join(
            f"--{name.replace('_', '-')}={getattr(args, name)}"
            for name in ("sounds", "steps", "batch_size", "lr", "seed", "threads")
        ),
        **{k: v for k, v in record.items() if k != "audio"},
        "data": "crossmodal.scenes.sounds, train split (held-out timbre/pitch pairs never heard)",
    }
    try:
        manifest = add_audio_tower(model, probes, bundle_dir, out, audio=BUILTIN_AUDIO, source=source, progress=say)
    except (BundleError, ExportError) as exc:
        say(f"error: {exc}")
        return 1
    say(f"measuring the audio tower on {args.eval_sounds} held-out sounds")
    report_path = out / "quality.json"
    # The audio part joins the bundle's quality report (eval-model's), or starts one.
    report = json.loads(report_path.read_text()) if report_path.is_file() else {"model_id": manifest.model_id}
    audio = audio_quality(out, precisions=sorted(manifest.variants), sounds=args.eval_sounds, threads=args.threads)
    report["audio"] = audio
    report_path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    markdown = to_markdown(report) if "results" in report else "\n".join(audio_markdown(audio))
    (out / "QUALITY.md").write_text(markdown, encoding="utf-8")
    for precision, result in audio["results"].items():
        held = result["heldout"]
        say(
            f"{precision}: text->audio R@1 {held['text_to_audio']['R@1']:.3f} R@10 {held['text_to_audio']['R@10']:.3f}"
            f"  audio->text R@10 {held['audio_to_text']['R@10']:.3f}  binding {held['binding']['accuracy']:.3f}"
        )
    print(f"bundle {manifest.model_id} with its audio tower written to {out}")
    return 0
