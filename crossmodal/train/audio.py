"""Train an audio tower into an existing bundle's embedding space, bound to its frozen text tower.

The text tower is not trained: every caption is encoded once by the bundle's own ONNX text tower, and the
audio tower learns to land each sound next to its caption's vector. Text-to-image search is therefore
unchanged (the text and image towers are the same files), and text-to-audio works in the same space. The
loss is a cross-entropy over all training captions (which caption is this sound?) plus one minus the cosine
to the sound's caption: the text vectors of these captions are close together (mean cosine 0.95 in the
default model's space), so ranking alone leaves the audio vectors far from where a text query looks.

Features are the numpy front end that serves (crossmodal.bundle.audio), computed once per sound. The network
(AudioTower) has one head per attribute; pitch is read from the lowest strong component of the spectrum, and
the timbre trunk hears the sound aligned on that component, so that a timbre is not named by where it sits.

`crossmodal train-audio-tower` runs it and adds the tower to a bundle (crossmodal.export.audio_tower). The
default bundle's: 3,000 sounds, 600 steps, 6 minutes on 2 idle cores; on held-out combinations text->audio R@1
0.81 and R@10 1.0, audio->text R@10 0.84 (target 0.9: low bells are still heard as hums, low hums as noise),
pitch binding 0.90 (models/default/QUALITY.md).
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

from crossmodal.bundle.audio import AudioConfig, LogMel, fit_clip
from crossmodal.scenes import sounds
from crossmodal.scenes.sounds import SoundSpec, Split
from crossmodal.train.config import AudioTrainConfig

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


# The trunk hears every sound with its lowest component at least ALIGN_DB under the clip's peak moved to mel
# ALIGN_AT (see AudioTower.attribute_logits).
ALIGN_DB = 15.0
ALIGN_AT = 8


class AudioTower(nn.Module):
    """Log-mel (batch, frames, mels) -> unnormalised embedding (batch, dim).

    A convolutional trunk hears the sound; one softmax head per attribute says which value it has; the
    embedding is the heads' probabilities times the text tower's additive fit (fixed). Pitch is heard from
    where the lowest strong spectral component is, and everything else from the trunk, which hears the sound
    aligned on that component, so no head can tell a timbre by its pitch: with one shared
    head, a high beep (never heard in training) was named after the timbres heard high (timbre accuracy 0
    on held-out combinations).
    """

    # Buffers (saved with the weights and exported as constants, never trained).
    mean: torch.Tensor
    std: torch.Tensor
    embedding: torch.Tensor
    below: torch.Tensor
    mels: torch.Tensor

    def __init__(
        self,
        embedding: np.ndarray,
        channels: Sequence[int],
        n_mels: int,
        mean: float,
        std: float,
        sharpen: float = 1.0,
    ) -> None:
        super().__init__()
        self.sharpen = sharpen
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
        self.spectrum = nn.Sequential(nn.Linear(n_mels, 64), nn.ReLU(inplace=True))
        self.register_buffer("mels", torch.arange(n_mels))
        # below[j, m] is 0 where mel j <= m and very negative above: max over j of (spectrum + below) is the
        # loudest level at or under each mel (a cumulative maximum that exports as plain ONNX operators).
        below = torch.triu(torch.ones(n_mels, n_mels))
        self.register_buffer("below", (below - 1.0) * 1e4)
        self.heads = nn.ModuleList(
            nn.Linear(64 if values is sounds.PITCHES else 256, len(values)) for values in ATTRIBUTES
        )
        # Fixed, not learnt: trained, it drifts towards the training combinations' captions and away from
        # the composition that held-out ones need (text->audio R@1 0.04 on held-out sounds when it was learnt).
        self.register_buffer("embedding", torch.from_numpy(embedding))

    def attribute_logits(self, features: torch.Tensor, shift: int = 0, stretch: float = 1.0) -> list[torch.Tensor]:
        """One (batch, values) logit tensor per attribute; ``shift`` moves what the trunk hears along the mels
        and ``stretch`` widens or narrows it around the aligned component (training's augmentations)."""
        x = (features - self.mean) / self.std
        peaks = x.amax(dim=1)
        relative = peaks - peaks.amax(dim=1, keepdim=True)
        # Pitch is where the lowest strong component is: the loudest level at or below each mel, relative to
        # the clip's peak, reads "is there energy this low" whatever the harmonics above. The pitch head hears
        # nothing else: given the whole spectrum, a low hum (its harmonics fill the medium band, and training
        # heard hums only medium and high) was named medium 60 times of 71.
        lowest = (relative.unsqueeze(2) + self.below).amax(dim=1)
        pitch = self.spectrum(lowest)
        # The trunk hears each sound moved along the mels so that its lowest strong component sits at
        # ALIGN_AT: a timbre then looks alike at every pitch, and no head can name a timbre by where it is
        # (with the sound where it was, low bells were heard as the timbres training had heard low).
        first = torch.argmax((relative >= -ALIGN_DB / self.std).to(x.dtype), dim=1)
        index = (self.mels.unsqueeze(0) + first.unsqueeze(1) - (ALIGN_AT + shift)) % x.shape[2]
        heard = torch.gather(x, 2, index.unsqueeze(1).expand(-1, x.shape[1], -1))
        if stretch != 1.0:
            heard = _stretch(heard, stretch)
        maps = self.body(heard.unsqueeze(1))  # (batch, channels, time, mels)
        over_time = torch.cat([maps.mean(dim=3), maps.amax(dim=3)], dim=1)
        sound = self.sound(torch.cat([over_time.mean(dim=2), over_time.amax(dim=2)], dim=1))
        return [
            head(pitch if values is sounds.PITCHES else sound)
            for values, head in zip(ATTRIBUTES, self.heads, strict=True)
        ]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Embed a batch of log-mel spectrograms."""
        # Sharpened heads embed close to one caption's vector instead of a blend of several: a blend ranks
        # near its own caption but seldom first among 324 near-identical ones (held-out audio->text R@10
        # 0.77 unsharpened, 0.84 at 10; text->audio R@1 0.92 -> 0.82, still over its 0.5).
        heads = self.attribute_logits(features)
        probabilities = [torch.softmax(logits * self.sharpen, dim=1) for logits in heads]
        bias = torch.ones(features.shape[0], 1, dtype=features.dtype)
        return torch.cat([*probabilities, bias], dim=1) @ self.embedding


def _stretch(x: torch.Tensor, factor: float) -> torch.Tensor:
    """The spectrogram with its mel axis scaled by ``factor`` around ALIGN_AT (linear interpolation)."""
    n = x.shape[2]
    where = (ALIGN_AT + (torch.arange(n, dtype=x.dtype) - ALIGN_AT) / factor).clamp(0, n - 1)
    low = where.floor().long()
    high = (low + 1).clamp(max=n - 1)
    weight = where - low.to(x.dtype)
    return x[:, :, low] * (1 - weight) + x[:, :, high] * weight


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
        config.sharpen,
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
        stretch = 1.0
        if config.max_stretch > 1.0:
            stretch = config.max_stretch ** float(torch.rand(1, generator=generator) * 2 - 1)
        heads = model.attribute_logits(x, shift, stretch)
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


def audio_image_similarity(bundle: Any, seed: int, images: int = 100, count: int = 300) -> dict[str, Any]:
    """Image->audio through the shared space, as measured: the generated scenes and sounds share no concept.

    Reports the mean cosine of scene images to sounds beside that of sounds to their own captions, and how
    many distinct sounds the images' top hits are: an honest figure for "a photo finds related audio" when
    the training data gives photos and sounds nothing in common.
    """
    from crossmodal.scenes import Split as SceneSplit
    from crossmodal.scenes import gallery_items, render_scene

    scenes = gallery_items(images, seed=seed + 7, split=SceneSplit.HELDOUT)
    image_vectors = bundle.encode_images([render_scene(item.spec, 128) for item in scenes])
    specs = sounds.sample_specs(count, Split.HELD_OUT, seed + 1)
    audio = bundle.encode_audio_features(features(specs, 1))
    captions = bundle.encode_texts([sounds.caption(s) for s in specs])
    image_audio = image_vectors @ audio.T
    own = float(np.mean(np.sum(audio * captions, axis=1)))
    distinct = len(set(np.argmax(image_audio, axis=1).tolist()))
    return {
        "mean_cosine_image_audio": round(float(image_audio.mean()), 3),
        "mean_cosine_audio_own_caption": round(own, 3),
        "distinct_top1_sounds": distinct,
        "note": (
            f"scene images and sounds have mean cosine {image_audio.mean():.3f} (a sound and its own caption: "
            f"{own:.3f}); {images} images' top sounds are {distinct} distinct sounds of {count}. The generated "
            "scenes (coloured shapes) and sounds (beeps, bells) share no concept, so an image->audio ranking "
            "here means nothing; a bundle trained on paired images and sounds (or CLAP beside a CLIP of "
            "the same space) is what that direction needs."
        ),
    }
