"""The settings of a demo-model training run (no torch here, so the CLI parser stays light)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crossmodal.train.model import DemoArchitecture


@dataclass
class TrainConfig:
    """Everything that determines a training run; equal configs give equal models."""

    out_dir: str
    steps: int = 1000
    batch_size: int = 256
    scenes: int = 40000
    twin_fraction: float = 0.5
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_steps: int = 100
    weight_decay: float = 0.1
    # Initial similarity scale (CLIP starts at 1/0.07 and learns up to its cap of 100). Short CPU runs
    # learn shapes and bindings better starting at the cap; it stays learnable below it.
    logit_scale_init: float = 100.0
    seed: int = 0
    threads: int = 2
    workers: int = 2
    device: str = "cpu"
    checkpoint_every: int = 100
    cache_dir: str | None = ".cache/demo-scenes"
    arch: dict[str, Any] = field(default_factory=dict)  # DemoArchitecture overrides

    def architecture(self, vocab_size: int) -> DemoArchitecture:
        """Return the model architecture for a tokenizer of `vocab_size` tokens."""
        return DemoArchitecture(vocab_size=vocab_size, **self.arch)


@dataclass
class AudioTrainConfig:
    """Everything that determines an audio-tower training run; equal configs give equal towers."""

    sounds: int = 3000
    steps: int = 600
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    # Similarity scale of the cross-entropy; the captions' vectors differ by a few hundredths of cosine.
    logit_scale: float = 100.0
    cosine_weight: float = 1.0
    attribute_weight: float = 1.0
    # Mels the trunk's input is moved by at random, beside its alignment on the lowest strong component.
    max_mel_shift: int = 2
    # Largest factor the trunk's input is stretched or narrowed by along the mels (1: never).
    max_stretch: float = 1.6
    channels: tuple[int, ...] = (32, 64, 96, 128)
    # The heads' softmax is sharpened by this factor when embedding (training's loss uses it unsharpened).
    sharpen: float = 10.0
    seed: int = 0
    threads: int = 2
    workers: int = 2
