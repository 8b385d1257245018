"""Fixed probe inputs used to measure how closely exported towers follow their source."""

from __future__ import annotations

import itertools

import numpy as np
from PIL import Image, ImageDraw

_COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
_THINGS = ["circle", "square", "triangle", "star", "dog", "car", "house", "tree"]
_TEMPLATES = [
    "a photo of a {c} {t}",
    "A {c} {t} on a plain background.",
    "two {c} {t}s next to each other",
    "a small {c} {t} in the top-left corner!",
    "there's a big {c} {t} here & it's 3x larger",
    "{t}",
    "Une photo d'un {t} {c} — très jolie 😀",
    "the {t} is {c}; nothing else is in the picture, which is taken from far away at dusk",
]


def probe_texts(count: int = 64) -> list[str]:
    """Return ``count`` varied captions (short, long, punctuation, unicode), the same every call."""
    combos = itertools.product(_TEMPLATES, _COLOURS, _THINGS)
    rng = np.random.default_rng(1234)
    pool = [tmpl.format(c=c, t=t) for tmpl, c, t in combos]
    picks = rng.choice(len(pool), size=min(count, len(pool)), replace=False)
    return [pool[int(i)] for i in picks]


def probe_images(count: int = 16, size: int = 256) -> list[Image.Image]:
    """Return ``count`` synthetic RGB images (gradients, noise and shapes), the same every call."""
    rng = np.random.default_rng(4321)
    images = []
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(count):
        base = np.stack(
            [
                rng.uniform(0, 255) * xx + rng.uniform(0, 255) * (1 - yy),
                rng.uniform(0, 255) * yy,
                rng.uniform(0, 255) * (1 - xx),
            ],
            axis=-1,
        )
        base += rng.normal(0, 12, base.shape)
        img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), mode="RGB")
        draw = ImageDraw.Draw(img)
        for _ in range(1 + i % 4):
            x0, y0 = (int(v) for v in rng.integers(0, max(size * 3 // 4, 1), 2))
            w, h = (int(v) for v in rng.integers(max(size // 10, 1), max(size // 2, 2), 2))
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            if rng.random() < 0.5:
                draw.ellipse((x0, y0, x0 + w, y0 + h), fill=fill)
            else:
                draw.rectangle((x0, y0, x0 + w, y0 + h), fill=fill)
        images.append(img)
    return images


def cosine_stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Return the mean and minimum row-wise cosine similarity between two embedding matrices."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = num / np.maximum(den, 1e-12)
    return {"mean": round(float(cos.mean()), 6), "min": round(float(cos.min()), 6)}
