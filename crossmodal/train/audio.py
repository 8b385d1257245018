"""Train an audio tower into an existing bundle's embedding space, bound to its frozen text tower.

The text tower is not trained: every caption is encoded once by the bundle's own ONNX text tower, and the
audio tower learns to land each sound next to its caption's vector. Text-to-image search is therefore
unchanged (the text and image towers are the same files), and text-to-audio works in the same space. The
loss is a cross-entropy over all training captions (which caption is this sound?) plus one minus the cosine
to the sound's caption: the text vectors of these captions are close together (mean cosine 0.95 in the
default model's space), so ranking alone leaves the audio vectors far from where a text query looks.

Features are the numpy front end that serves (crossmodal.bundle.audio), computed once per sound; the
network is a small 2-D convolutional stack over the log-mel, pooled over time and frequency.

Work in progress (issue 17, part 4): not yet wired to a command nor into the default bundle. Measured on the
held-out combinations (3,000 sounds, 600 steps, ~10 min on 2 shared cores): text->audio R@1 0.69, R@10
0.89; audio->text R@10 0.64; pitch binding 0.95. Low hums are still heard as medium (the fundamental is
weak beside its harmonics) and low bells as chirps.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from crossmodal.bundle.audio import AudioConfig, LogMel, fit_clip
from crossmodal.scenes import sounds
from crossmodal.scenes.sounds import SoundSpec, Split

# The built-in audio tower's front end: 16 kHz, 4 s clips (2 s apart on longer sounds), 64 ms windows every
# 16 ms (a 1024-point FFT: 16 Hz bins, so that low sounds' harmonics are told apart), 64 Slaney mels, dB
# floored 80 dB under the clip's peak. Short sounds are zero-padded, not tiled:
# tiling would change how many times a sound is heard.
BUILTIN_AUDIO = AudioConfig(
    sample_rate=sounds.RATE,
    clip_seconds=sounds.SECONDS,
    window_hop_seconds=2.0,
    short="pad",
    n_fft=1024,
    hop_length=256,
    win_length=1024,
    n_mels=64,
    f_min=30.0,
    f_max=8_000.0,
    top_db=80.0,
)


@dataclass
class AudioTrainConfig:
    """Everything that determines an audio-tower training run; equal configs give equal towers."""

    sounds: int = 6000
    steps: int = 1500
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    # Similarity scale of the cross-entropy; the captions' vectors differ by a few hundredths of cosine.
    logit_scale: float = 100.0
    cosine_weight: float = 1.0
    attribute_weight: float = 1.0
    max_mel_shift: int = 12
    channels: tuple[int, ...] = (32, 64, 96, 128)
    seed: int = 0
    threads: int = 2
    workers: int = 2
    eval_sounds: int = 300
    extra: dict[str, Any] = field(default_factory=dict)


ATTRIBUTES: tuple[tuple[str, ...], ...] = (
    sounds.TIMBRES,
    sounds.PITCHES,
    sounds.ENVELOPES,
    sounds.RHYTHMS,
    sounds.DURATIONS,
)


def attribute_labels(spec: SoundSpec) -> list[int]:
    """The index of each of the sound's attributes in its own list of values."""
    return [values.index(a) for values, a in zip(ATTRIBUTES, spec.attributes, strict=True)]


def additive_embedding(encode_texts: Callable[[list[str]], np.ndarray], combos: Sequence[SoundSpec]) -> np.ndarray:
    """A (values + 1, dim) matrix that maps one-hot attributes (and a bias) to the captions' text vectors.

    Fitted by least squares on training combinations only: the frozen text tower is close to additive in
    these words (R^2 0.90), and a held-out combination's vector predicted this way ranks its own caption
    first among all 324 for 94% of them, so the audio tower only has to hear each attribute.
    """
    targets = caption_targets(encode_texts, combos)
    onehots = np.array([one_hot(c) for c in combos])
    weights, *_ = np.linalg.lstsq(onehots, targets, rcond=None)
    return weights.astype(np.float32)


def one_hot(spec: SoundSpec) -> list[float]:
    """The sound's attributes as one-hot values in ATTRIBUTES order, then a 1 for the bias."""
    row = [float(a == v) for values, a in zip(ATTRIBUTES, spec.attributes, strict=True) for v in values]
    return [*row, 1.0]


class AudioTower(nn.Module):
    """Log-mel (batch, frames, mels) -> unnormalised embedding (batch, dim).

    A convolutional trunk hears the sound; one softmax head per attribute says which value it has; the
    embedding is the heads' probabilities times the text tower's additive fit (fixed). Pitch is heard from
    the spectrum averaged over time (where the energy is on the mel axis) and everything else from the
    trunk's features pooled over frequency, so no head can tell a timbre by its pitch: with one shared
    head, a high beep (never heard in training) was named after the timbres heard high (timbre accuracy 0
    on held-out combinations).
    """

    # Buffers (saved with the weights and exported as constants, never trained).
    mean: torch.Tensor
    std: torch.Tensor
    embedding: torch.Tensor

    def __init__(self, embedding: np.ndarray, channels: Sequence[int], n_mels: int, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))
        layers: list[nn.Module] = []
        previous = 1
        for width in channels:
            layers += [
                nn.Conv2d(previous, width, kernel_size=3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            previous = width
        self.body = nn.Sequential(*layers)
        self.sound = nn.Sequential(nn.Linear(4 * previous, 256), nn.ReLU(inplace=True))
        self.spectrum = nn.Sequential(nn.Linear(2 * n_mels, 64), nn.ReLU(inplace=True))
        self.heads = nn.ModuleList(
            nn.Linear(64 if values is sounds.PITCHES else 256, len(values)) for values in ATTRIBUTES
        )
        # Fixed, not learnt: trained, it drifts towards the training combinations' captions and away from
        # the composition that held-out ones need (text->audio R@1 0.04 on held-out sounds when it was learnt).
        self.register_buffer("embedding", torch.from_numpy(embedding))

    def attribute_logits(self, features: torch.Tensor, shift: int = 0) -> list[torch.Tensor]:
        """One (batch, values) logit tensor per attribute; ``shift`` moves what the trunk hears along the mels."""
        x = (features - self.mean) / self.std
        spectrum = self.spectrum(torch.cat([x.mean(dim=1), x.amax(dim=1)], dim=1))
        heard = torch.roll(x, shifts=shift, dims=2) if shift else x
        maps = self.body(heard.unsqueeze(1))  # (batch, channels, time, mels)
        over_time = torch.cat([maps.mean(dim=3), maps.amax(dim=3)], dim=1)
        sound = self.sound(torch.cat([over_time.mean(dim=2), over_time.amax(dim=2)], dim=1))
        return [
            head(spectrum if values is sounds.PITCHES else sound)
            for values, head in zip(ATTRIBUTES, self.heads, strict=True)
        ]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Embed a batch of log-mel spectrograms."""
        probabilities = [torch.softmax(logits, dim=1) for logits in self.attribute_logits(features)]
        bias = torch.ones(features.shape[0], 1, dtype=features.dtype)
        return torch.cat([*probabilities, bias], dim=1) @ self.embedding


def _features_of(spec: SoundSpec) -> np.ndarray:
    return LogMel(BUILTIN_AUDIO)(fit_clip(sounds.render_sound(spec), BUILTIN_AUDIO))


def features(specs: Sequence[SoundSpec], workers: int) -> np.ndarray:
    """The (n, frames, mels) float32 features of the sounds, rendered by ``workers`` processes."""
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            rows = pool.map(_features_of, specs, chunksize=64)
    else:
        rows = [_features_of(s) for s in specs]
    return np.stack(rows).astype(np.float32)


def caption_targets(encode_texts: Callable[[list[str]], np.ndarray], combos: Sequence[SoundSpec]) -> np.ndarray:
    """Per combination, the unit mean of its captions' text vectors over every template."""
    count = len(sounds.TEMPLATES)
    texts = [sounds.caption(c, t) for c in combos for t in range(count)]
    vectors = encode_texts(texts).reshape(len(combos), count, -1).mean(axis=1)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _combo_index(combos: Sequence[SoundSpec]) -> dict[tuple[str, ...], int]:
    return {c.attributes: i for i, c in enumerate(combos)}


def train_audio_tower(
    encode_texts: Callable[[list[str]], np.ndarray],
    dim: int,
    config: AudioTrainConfig,
    say: Callable[[str], None] = print,
) -> tuple[AudioTower, dict[str, Any]]:
    """Train a tower against the frozen text tower ``encode_texts``; returns it (eval mode) and the run's record."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    started = time.monotonic()
    combos = sounds.combinations(Split.TRAIN)
    index = _combo_index(combos)
    targets = torch.from_numpy(caption_targets(encode_texts, combos))
    specs = sounds.sample_specs(config.sounds, Split.TRAIN, config.seed)
    say(f"rendering {len(specs)} training sounds ({len(combos)} combinations) with {config.workers} workers")
    data = torch.from_numpy(features(specs, config.workers))
    labels = torch.tensor([index[s.attributes] for s in specs])
    rendered = time.monotonic() - started
    attributes = torch.tensor([attribute_labels(s) for s in specs])
    model = AudioTower(
        additive_embedding(encode_texts, combos),
        config.channels,
        BUILTIN_AUDIO.n_mels,
        float(data.mean()),
        float(data.std()),
    )
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    say(f"training {sum(p.numel() for p in model.parameters()):,} parameters for {config.steps} steps")
    loss_value = float("nan")
    for step in range(config.steps):
        lr = _lr(step, config)
        for group in optimiser.param_groups:
            group["lr"] = lr
        batch = torch.randint(len(specs), (config.batch_size,), generator=generator)
        x = _augment(data[batch], generator)
        # The trunk hears each batch moved up or down the mel axis: a timbre is the same at every pitch, so
        # a beep is a beep also where training never had one (held-out timbre accuracy 0.43 without).
        shift = int(torch.randint(-config.max_mel_shift, config.max_mel_shift + 1, (1,), generator=generator))
        heads = model.attribute_logits(x, shift)
        probabilities = [torch.softmax(h, dim=1) for h in heads]
        bias = torch.ones(x.shape[0], 1)
        out = nn.functional.normalize(torch.cat([*probabilities, bias], dim=1) @ model.embedding, dim=1)
        y = labels[batch]
        logits = config.logit_scale * out @ targets.T
        cosine = (out * targets[y]).sum(dim=1)
        # Each head is told its attribute: the embedding then composes what was heard, also for
        # combinations never heard together.
        heard = sum(nn.functional.cross_entropy(h, attributes[batch, i]) for i, h in enumerate(heads))
        loss = (
            nn.functional.cross_entropy(logits, y)
            + config.cosine_weight * (1.0 - cosine).mean()
            + config.attribute_weight * heard
        )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        loss_value = float(loss.detach())
        if step % 100 == 0 or step == config.steps - 1:
            elapsed = time.monotonic() - started
            say(f"step {step + 1}/{config.steps}  loss {loss_value:.4f}  lr {lr:.2e}  {elapsed:.0f} s")
    model.eval()
    record = {
        "config": asdict(config),
        "audio": BUILTIN_AUDIO.to_dict(),
        "render_seconds": round(rendered, 1),
        "train_seconds": round(time.monotonic() - started, 1),
        "final_loss": round(loss_value, 4),
        "held_out_pairs": sorted(f"{t}/{p}" for t, p in sounds.HELD_OUT),
    }
    return model, record


def _lr(step: int, config: AudioTrainConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # Loudness is not an attribute: shift each clip's level by up to +-6 dB (the features are in dB).
    shift = (torch.rand(x.shape[0], 1, 1, generator=generator) - 0.5) * 12.0
    return x + shift


def embed(model: AudioTower, data: np.ndarray, batch: int = 256) -> np.ndarray:
    """Unit embeddings of features with the trained tower."""
    out = []
    with torch.no_grad():
        for start in range(0, data.shape[0], batch):
            out.append(nn.functional.normalize(model(torch.from_numpy(data[start : start + batch])), dim=1).numpy())
    return np.concatenate(out)


def evaluate_audio(
    encode_audio: Callable[[np.ndarray], np.ndarray],
    encode_texts: Callable[[list[str]], np.ndarray],
    count: int,
    seed: int,
    workers: int = 1,
) -> dict[str, Any]:
    """Retrieval and binding on held-out sounds (combinations training never heard).

    text->audio: each held-out combination's plain caption against the held-out sounds, hit when a sound of
    that combination ranks within K. audio->text: each sound against the plain captions of every
    combination (training's and held-out), hit when its own is within K. Binding: each held-out sound, its
    caption against the same caption with the pitch changed (a high beep vs a low beep), and the swapped pair
    (the low one's sound): right when its own caption scores higher.
    """
    specs = sounds.sample_specs(count, Split.HELD_OUT, seed + 1)
    audio = encode_audio(features(specs, workers))
    every = sounds.combinations()
    captions = encode_texts([sounds.caption(c) for c in every])
    position = _combo_index(every)
    truth = np.array([position[s.attributes] for s in specs])
    held = sorted(set(truth.tolist()))
    scores = captions[held] @ audio.T  # (held-out captions, sounds)
    text_to_audio = {}
    for k in (1, 5, 10):
        top = np.argsort(-scores, axis=1)[:, :k]
        text_to_audio[f"R@{k}"] = float(np.mean([(truth[top[i]] == c).any() for i, c in enumerate(held)]))
    ranks = np.argsort(-(audio @ captions.T), axis=1)
    audio_to_text = {f"R@{k}": float(np.mean((ranks[:, :k] == truth[:, None]).any(axis=1))) for k in (1, 5, 10)}
    binding = _binding(audio, specs, encode_texts)
    return {
        "held_out_sounds": len(specs),
        "held_out_captions": len(held),
        "all_captions": len(every),
        "text_to_audio": text_to_audio,
        "audio_to_text": audio_to_text,
        "binding": binding,
    }


def _binding(
    audio: np.ndarray, specs: Sequence[SoundSpec], encode_texts: Callable[[list[str]], np.ndarray]
) -> dict[str, Any]:
    right = 0
    pairs: list[tuple[str, str]] = []
    for spec in specs:
        if spec.pitch == "medium":
            continue
        other = "low" if spec.pitch == "high" else "high"
        swapped = SoundSpec(spec.timbre, other, spec.envelope, spec.rhythm, spec.duration)
        pairs.append((sounds.caption(spec), sounds.caption(swapped)))
    if not pairs:
        return {"pitch_pairs": 0, "accuracy": float("nan")}
    own = encode_texts([p[0] for p in pairs])
    wrong = encode_texts([p[1] for p in pairs])
    kept = [a for a, s in zip(audio, specs, strict=True) if s.pitch != "medium"]
    for vector, mine, theirs in zip(kept, own, wrong, strict=True):
        right += int(vector @ mine > vector @ theirs)
    return {"pitch_pairs": len(pairs), "accuracy": right / len(pairs)}
