"""Quality figures of a model on scenes: retrieval recall, attribute binding, foreign drawings (no torch)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageDraw

from crossmodal.scenes.captions import binding_query
from crossmodal.scenes.gallery import GalleryItem, gallery_items
from crossmodal.scenes.render import render_scene
from crossmodal.scenes.spec import Split, is_heldout_pair

KS: tuple[int, ...] = (1, 5, 10)


class Encoder(Protocol):
    """Anything that embeds texts and images into one L2-normalised space (a ModelBundle does)."""

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts; rows are L2-normalised."""
        ...

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed images; rows are L2-normalised."""
        ...


def _batched(encode: Any, items: Sequence[Any], batch: int = 256) -> np.ndarray:
    parts = [np.asarray(encode(list(items[i : i + batch])), dtype=np.float32) for i in range(0, len(items), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def recall_at_k(similarity: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """Recall@k for queries (rows) whose match is the same-index column; ties count against the match."""
    n = similarity.shape[0]
    correct = similarity[np.arange(n), np.arange(n)][:, None]
    rank = (similarity >= correct).sum(axis=1) - 1  # other columns scoring at least the match
    return {f"R@{k}": round(float((rank < k).mean()), 4) for k in ks}


@dataclass(frozen=True)
class Drawing:
    """A drawing made independently of the scene generator, with what it shows."""

    image: Image.Image
    colour: str
    shape: str


# Plain RGB values such as anyone might pick; not the generator's palette.
_FOREIGN_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 170, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 220, 0),
    "orange": (255, 140, 0),
    "purple": (128, 0, 128),
    "black": (0, 0, 0),
}
FOREIGN_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")


def foreign_drawings() -> list[Drawing]:
    """Draw simple shapes the way a quick script would: one filled shape on white or grey, various sizes."""
    out: list[Drawing] = []
    backgrounds = ((255, 255, 255), (128, 128, 128), (200, 200, 200))
    canvases = (100, 224, 300)
    for ci, (colour, rgb) in enumerate(_FOREIGN_COLOURS.items()):
        for si, shape in enumerate(FOREIGN_SHAPES):
            for k, canvas in enumerate(canvases):
                bg = backgrounds[(ci + si + k) % len(backgrounds)]
                if colour == "black" and bg == (128, 128, 128):
                    bg = (255, 255, 255)
                img = Image.new("RGB", (canvas, canvas), bg)
                draw = ImageDraw.Draw(img)
                half = canvas * (0.18 + 0.06 * ((ci + 2 * si + k) % 3))
                cx = cy = canvas / 2
                if shape == "circle":
                    draw.ellipse((cx - half, cy - half, cx + half, cy + half), fill=rgb)
                elif shape == "square":
                    draw.rectangle((cx - half, cy - half, cx + half, cy + half), fill=rgb)
                elif shape == "triangle":
                    draw.polygon([(cx, cy - half), (cx + half, cy + half), (cx - half, cy + half)], fill=rgb)
                elif shape == "diamond":
                    draw.polygon(
                        [(cx, cy - half), (cx + 0.7 * half, cy), (cx, cy + half), (cx - 0.7 * half, cy)],
                        fill=rgb,
                    )
                else:
                    arm = half / 3
                    draw.rectangle((cx - half, cy - arm, cx + half, cy + arm), fill=rgb)
                    draw.rectangle((cx - arm, cy - half, cx + arm, cy + half), fill=rgb)
                out.append(Drawing(image=img, colour=colour, shape=shape))
    return out


def evaluate_foreign(encoder: Encoder) -> dict[str, Any]:
    """Zero-shot naming of foreign drawings among every 'a {colour} {shape}' of their vocabulary."""
    drawings = foreign_drawings()
    labels = [(c, s) for c in _FOREIGN_COLOURS for s in FOREIGN_SHAPES]
    text = _batched(encoder.encode_texts, [f"a {c} {s}" for c, s in labels])
    image = _batched(encoder.encode_images, [d.image for d in drawings])
    best = (image @ text.T).argmax(axis=1)
    guessed = [labels[int(i)] for i in best]
    both = np.mean([g == (d.colour, d.shape) for g, d in zip(guessed, drawings, strict=True)])
    colour = np.mean([g[0] == d.colour for g, d in zip(guessed, drawings, strict=True)])
    shape = np.mean([g[1] == d.shape for g, d in zip(guessed, drawings, strict=True)])
    # The issue's own examples: each query's best drawing must be the one it names.
    named = [("red", "circle"), ("blue", "square"), ("green", "triangle")]
    hits = []
    for c, s in named:
        scores = image @ _batched(encoder.encode_texts, [f"a {c} {s}"])[0]
        top = drawings[int(scores.argmax())]
        hits.append((top.colour, top.shape) == (c, s))
    return {
        "drawings": len(drawings),
        "candidates": len(labels),
        "accuracy": round(float(both), 4),
        "colour_accuracy": round(float(colour), 4),
        "shape_accuracy": round(float(shape), 4),
        "named_queries_top1": {f"a {c} {s}": bool(h) for (c, s), h in zip(named, hits, strict=True)},
    }


def binding_pairs(items: Sequence[GalleryItem]) -> list[GalleryItem]:
    """Return the two-object scenes whose colour swap changes what they show."""
    return [
        it
        for it in items
        if len(it.spec.objects) == 2
        and it.spec.objects[0].colour != it.spec.objects[1].colour
        and it.spec.objects[0].shape != it.spec.objects[1].shape
    ]


def evaluate_binding(encoder: Encoder, items: Sequence[GalleryItem], image_size: int) -> dict[str, Any]:
    """Share of two-object scenes whose image outranks its colour-swapped twin for 'a red X and a blue Y'."""
    pairs = binding_pairs(items)
    if not pairs:
        return {"pairs": 0, "accuracy": None, "accuracy_full_caption": None}
    originals = _batched(encoder.encode_images, [render_scene(it.spec, image_size) for it in pairs])
    swapped = _batched(
        encoder.encode_images, [render_scene(it.spec.with_colours_swapped(), image_size) for it in pairs]
    )
    bare = _batched(encoder.encode_texts, [binding_query(it.spec) for it in pairs])
    full = _batched(encoder.encode_texts, [it.caption for it in pairs])
    wins_bare = (bare * originals).sum(1) > (bare * swapped).sum(1)
    wins_full = (full * originals).sum(1) > (full * swapped).sum(1)
    return {
        "pairs": len(pairs),
        "accuracy": round(float(wins_bare.mean()), 4),
        "accuracy_full_caption": round(float(wins_full.mean()), 4),
        "example_query": binding_query(pairs[0].spec),
    }


def evaluate_retrieval(encoder: Encoder, items: Sequence[GalleryItem], image_size: int) -> dict[str, Any]:
    """Text->image and image->text recall with every item's caption and image in one gallery."""
    text = _batched(encoder.encode_texts, [it.caption for it in items])
    image = _batched(encoder.encode_images, [render_scene(it.spec, image_size) for it in items])
    sim = text @ image.T
    unseen = np.array([any(is_heldout_pair(o.colour, o.shape) for o in it.spec.objects) for it in items], dtype=bool)
    return {
        "gallery": len(items),
        "chance_R@10": round(min(1.0, 10 / max(len(items), 1)), 4),
        "text_to_image": recall_at_k(sim),
        "image_to_text": recall_at_k(sim.T),
        "scenes_with_unseen_pairs": int(unseen.sum()),
        "_similarity": sim,
    }


def evaluate(
    encoder: Encoder,
    *,
    seed: int = 1234,
    gallery_size: int = 1000,
    split: Split = Split.HELDOUT,
    image_size: int = 128,
    foreign: bool = True,
) -> dict[str, Any]:
    """All quality figures on `gallery_size` generated scenes of `split` (held-out by default)."""
    items = gallery_items(gallery_size, seed=seed, split=split)
    retrieval = evaluate_retrieval(encoder, items, image_size)
    retrieval.pop("_similarity")
    report: dict[str, Any] = {
        "split": split.value,
        "seed": seed,
        "image_size": image_size,
        "retrieval": retrieval,
        "binding": evaluate_binding(encoder, items, image_size),
    }
    if foreign:
        report["foreign_drawings"] = evaluate_foreign(encoder)
    return report


def rank_floor(gallery: int, k: int) -> float:
    """Chance level of Recall@k in a gallery of `gallery` items."""
    return min(1.0, k / gallery) if gallery else math.nan
