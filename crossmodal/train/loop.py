"""The contrastive training loop of the demo model: seeded, checkpointed, resumable (imports torch)."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from crossmodal.bundle.image import ImageConfig, preprocess_images
from crossmodal.bundle.tokenizer import ClipTokenizer
from crossmodal.train.config import TrainConfig
from crossmodal.train.data import SceneSet, build_scene_set, sample_batch
from crossmodal.train.model import DemoArchitecture, build_model
from crossmodal.train.vocab import build_demo_tokenizer

CHECKPOINT = "checkpoint.pt"
# CLIP's cap on the similarity scale (the learned temperature's inverse).
MAX_LOGIT_SCALE = 100.0
TOKENIZER = "tokenizer.json"


@dataclass
class TrainResult:
    """What a finished run leaves behind."""

    model: Any
    architecture: DemoArchitecture
    tokenizer_path: Path
    image_config: ImageConfig
    losses: list[float]
    seconds: float


def image_config_for(arch: DemoArchitecture) -> ImageConfig:
    """The preprocessing the demo model trains with and the bundle will record."""
    return ImageConfig(size=(arch.image_size, arch.image_size))


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # As open_clip does: no decay on gains, biases, embeddings and the temperature.
    decay: list[torch.nn.Parameter] = []
    keep: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        no_decay = p.ndim < 2 or "embedding" in name or "logit_scale" in name or name.endswith("bn") or "ln" in name
        (keep if no_decay else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": keep, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy over the batch's image-text similarities, times `scale` (not its log)."""
    image = F.normalize(image, dim=-1)
    text = F.normalize(text, dim=-1)
    logits = scale * image @ text.T
    labels = torch.arange(len(image), device=image.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def pixels_from_uint8(batch: np.ndarray, cfg: ImageConfig, device: str) -> torch.Tensor:
    """Normalise uint8 (n, H, W, 3) rows exactly as the bundle's preprocessing does."""
    mean = torch.tensor(cfg.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float() / 255.0
    return (x - mean) / std


def _save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    step: int,
    cfg: TrainConfig,
    losses: list[float],
) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "config": asdict(cfg),
            "losses": losses,
        },
        tmp,
    )
    os.replace(tmp, path)


def _resume_state(path: Path, cfg: TrainConfig) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    saved = dict(state["config"])
    mine = asdict(cfg)
    # Runtime-only settings may change between the interrupted run and the resumed one.
    for key in ("threads", "workers", "device", "checkpoint_every", "cache_dir", "out_dir"):
        saved.pop(key, None)
        mine.pop(key, None)
    if saved != mine:
        raise ValueError(f"{path} was written by a different configuration: {saved} != {mine}")
    return state


def train(
    cfg: TrainConfig, *, resume: bool = True, progress: bool = True, stop_after: int | None = None
) -> TrainResult:
    """Train the demo model; with `resume`, continue from `out_dir/checkpoint.pt` when present.

    `stop_after` ends this invocation after that many steps (with a checkpoint), for training
    in slices; a later call with the same config carries on exactly where it stopped.
    """
    started = time.monotonic()
    if not 0 < cfg.logit_scale_init <= MAX_LOGIT_SCALE:
        raise ValueError(f"logit_scale_init must be in (0, {MAX_LOGIT_SCALE:g}], not {cfg.logit_scale_init}")
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_path = out / TOKENIZER
    build_demo_tokenizer().save(str(tokenizer_path))
    arch_probe = cfg.architecture(1)
    tokenizer = ClipTokenizer.from_file(tokenizer_path, arch_probe.context_length)
    arch = cfg.architecture(tokenizer.vocab_size)
    image_cfg = image_config_for(arch)

    torch.manual_seed(cfg.seed)
    model = build_model(arch).to(cfg.device)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(cfg.logit_scale_init))
    opt = _optimizer(model, cfg)
    start, losses = 0, []
    ckpt = out / CHECKPOINT
    state = _resume_state(ckpt, cfg) if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, losses = int(state["step"]), list(state["losses"])

    scenes: SceneSet | None = None
    if start < cfg.steps:
        say = tqdm.write if progress else (lambda _m: None)
        say(f"rendering {cfg.scenes} training scenes (+ twins) at {arch.image_size}px")
        scenes = build_scene_set(
            cfg.scenes,
            seed=cfg.seed,
            cfg=image_cfg,
            twin_fraction=cfg.twin_fraction,
            workers=cfg.workers,
            cache_dir=Path(cfg.cache_dir) if cfg.cache_dir else None,
        )
    model.train()
    bar = tqdm(total=cfg.steps, initial=start, disable=not progress, desc="train", unit="step", dynamic_ncols=True)
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    for step in range(start, end):
        assert scenes is not None
        rows, captions = sample_batch(scenes, cfg.batch_size, cfg.seed, step)
        ids, _ = tokenizer.encode_batch(captions)
        pixels = pixels_from_uint8(scenes.images[rows], image_cfg, cfg.device)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        # open_clip's forward returns the scale itself (logit_scale.exp()), clamped below after each step.
        image_features, text_features, scale = model(pixels, torch.from_numpy(ids).to(cfg.device))[:3]
        loss = contrastive_loss(image_features, text_features, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(MAX_LOGIT_SCALE))
        losses.append(round(float(loss.item()), 5))
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{_lr_at(step, cfg):.1e}", refresh=False)
        done = step + 1
        if done % cfg.checkpoint_every == 0 or done == end:
            _save_checkpoint(ckpt, model, opt, done, cfg, losses)
    bar.close()
    model.eval()
    (out / "train_log.json").write_text(json.dumps({"config": asdict(cfg), "losses": losses}) + "\n", encoding="utf-8")
    return TrainResult(
        model=model.cpu(),
        architecture=arch,
        tokenizer_path=tokenizer_path,
        image_config=image_cfg,
        losses=losses,
        seconds=time.monotonic() - started,
    )


class TorchEncoder:
    """Embeds with a PyTorch CLIP through the same tokenizer and preprocessing as the bundle."""

    def __init__(self, model: Any, tokenizer: ClipTokenizer, image_cfg: ImageConfig, device: str = "cpu") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.image_cfg = image_cfg
        self.device = device

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts; rows are L2-normalised."""
        ids, _ = self.tokenizer.encode_batch(list(texts))
        out = self.model.encode_text(torch.from_numpy(ids).to(self.device), normalize=True)
        return np.asarray(out.float().cpu().numpy(), dtype=np.float32)

    @torch.no_grad()
    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed images; rows are L2-normalised."""
        pixels = torch.from_numpy(preprocess_images(list(images), self.image_cfg)).to(self.device)
        out = self.model.encode_image(pixels, normalize=True)
        return np.asarray(out.float().cpu().numpy(), dtype=np.float32)
