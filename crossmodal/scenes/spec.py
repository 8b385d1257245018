"""The scene vocabulary (shapes, colours, sizes, places, backgrounds) and seeded scene sampling."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "diamond",
    "cross",
    "heart",
    "crescent",
)

# Saturated, well separated hues so that a 64-pixel model can tell them apart after shade jitter.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 32, 32),
    "orange": (246, 138, 18),
    "yellow": (242, 218, 28),
    "green": (34, 158, 52),
    "blue": (32, 72, 222),
    "purple": (132, 48, 184),
    "pink": (246, 128, 192),
    "brown": (122, 74, 34),
    "black": (22, 22, 22),
    "white": (250, 250, 250),
}

# Object diameter as a fraction of the canvas side.
SIZES: dict[str, float] = {"small": 0.17, "medium": 0.25, "large": 0.34}

# Centre of a lone object for each named place, as fractions of the canvas.
PLACES: dict[str, tuple[float, float]] = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "centre": (0.5, 0.5),
}

BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "noise", "stripes")

# (colour, shape) pairs that the training split never shows; the held-out split always has one.
# Each shape loses two colours and each colour is missing from at least one shape. The pairs
# that README examples and the foreign-drawing checks use (red circle, blue square, green
# triangle) are deliberately left in training.
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {
        ("orange", "circle"),
        ("pink", "circle"),
        ("yellow", "square"),
        ("black", "square"),
        ("purple", "triangle"),
        ("white", "triangle"),
        ("red", "star"),
        ("brown", "star"),
        ("green", "diamond"),
        ("blue", "diamond"),
        ("pink", "cross"),
        ("yellow", "cross"),
        ("blue", "heart"),
        ("white", "heart"),
        ("green", "crescent"),
        ("purple", "crescent"),
    }
)


class Split(enum.StrEnum):
    """Which part of the scene space to draw from."""

    TRAIN = "train"  # seen (colour, shape) pairs only
    VAL = "val"  # seen pairs, seeds disjoint from training
    HELDOUT = "heldout"  # every scene contains at least one pair that training never shows


_SPLIT_STREAM = {Split.TRAIN: 0, Split.VAL: 1, Split.HELDOUT: 2}

# Layout of a scene by object count: one object sits at a named place, two stand in a relation,
# three form a row or a column.
LAYOUTS: dict[int, tuple[str, ...]] = {1: ("single",), 2: ("pair_h", "pair_v"), 3: ("row", "column")}
# Single-object scenes have few distinct descriptions, so they are kept rare to keep galleries
# discriminable; two-object scenes carry the binding test.
OBJECT_COUNT_WEIGHTS: dict[int, float] = {1: 0.2, 2: 0.45, 3: 0.35}


@dataclass(frozen=True)
class ObjectSpec:
    """One drawn object: what it is and where its centre lies (fractions of the canvas)."""

    shape: str
    colour: str
    size: str
    x: float
    y: float
    rotation: float = 0.0  # degrees of jitter around the shape's canonical pose
    scale: float = 1.0  # size jitter factor
    shade: tuple[int, int, int] = (0, 0, 0)  # per-channel colour offset
    place: str | None = None  # named place, for lone objects


@dataclass(frozen=True)
class BackgroundSpec:
    """A background kind with its two tones and pattern parameters."""

    kind: str
    tone_a: tuple[int, int, int]
    tone_b: tuple[int, int, int]
    angle: float = 0.0  # gradient or stripe direction, degrees
    period: float = 0.1  # stripe period, fraction of the canvas
    noise: float = 0.0  # noise amplitude (0-255 scale)


@dataclass(frozen=True)
class SceneSpec:
    """Everything needed to render a scene and to describe it."""

    layout: str
    objects: tuple[ObjectSpec, ...]
    background: BackgroundSpec
    render_seed: int
    outline: bool = False  # draw a thin dark outline around each object
    supersample: int = 2  # 1 = aliased Pillow drawing, as simple third-party code would make

    def attributes(self) -> dict[str, Any]:
        """Return a JSON-ready description of the scene's content."""
        objects = []
        for obj in self.objects:
            item: dict[str, Any] = {
                "shape": obj.shape,
                "colour": obj.colour,
                "size": obj.size,
                "x": round(obj.x, 4),
                "y": round(obj.y, 4),
            }
            if obj.place is not None:
                item["place"] = obj.place
            objects.append(item)
        return {"layout": self.layout, "objects": objects, "background": self.background.kind}

    def to_json(self) -> dict[str, Any]:
        """Return the full spec (render parameters included) as JSON-ready data."""
        return asdict(self)

    def with_colours_swapped(self) -> SceneSpec:
        """Return the same scene with the colours of its first two objects exchanged."""
        first, second = self.objects[0], self.objects[1]
        swapped = (
            replace(first, colour=second.colour, shade=second.shade),
            replace(second, colour=first.colour, shade=first.shade),
        )
        return replace(self, objects=swapped + self.objects[2:])


def is_heldout_pair(colour: str, shape: str) -> bool:
    """Say whether a (colour, shape) pair is reserved for the held-out split."""
    return (colour, shape) in HELD_OUT_PAIRS


def scene_rng(seed: int, split: Split, index: int) -> np.random.Generator:
    """Return the generator for scene `index` of a split, independent of every other scene."""
    return np.random.default_rng([seed, _SPLIT_STREAM[split], index])


_SEEN_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (c, s) for s in SHAPES for c in COLOURS if (c, s) not in HELD_OUT_PAIRS
)
_ALL_PAIRS: tuple[tuple[str, str], ...] = tuple((c, s) for s in SHAPES for c in COLOURS)
_HELD_PAIRS: tuple[tuple[str, str], ...] = tuple(sorted(HELD_OUT_PAIRS))

# Neutral and pastel tones that backgrounds are made of; a tone too close to an object's colour
# is rejected per scene.
_BACKGROUND_TONES: tuple[tuple[int, int, int], ...] = (
    (255, 255, 255),
    (244, 244, 244),
    (222, 222, 222),
    (196, 196, 196),
    (160, 160, 160),
    (128, 128, 128),
    (92, 92, 92),
    (60, 60, 62),
    (236, 226, 204),
    (214, 226, 240),
    (222, 238, 220),
    (240, 222, 226),
)
_MIN_CONTRAST = 90.0


def _contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=np.float64)))


def _pick_tone(rng: np.random.Generator, colours: list[tuple[int, int, int]]) -> tuple[int, int, int]:
    ok = [t for t in _BACKGROUND_TONES if all(_contrast(t, c) >= _MIN_CONTRAST for c in colours)]
    pool = ok or list(_BACKGROUND_TONES)
    return pool[int(rng.integers(len(pool)))]


def sample_background(rng: np.random.Generator, colours: list[tuple[int, int, int]]) -> BackgroundSpec:
    """Draw a background whose tones contrast with every object colour."""
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    tone_a = _pick_tone(rng, colours)
    tone_b = _pick_tone(rng, colours)
    if kind in ("gradient", "stripes"):
        for _ in range(6):
            if _contrast(tone_a, tone_b) >= 30:
                break
            tone_b = _pick_tone(rng, colours)
    angle = float(rng.choice([0.0, 90.0, 45.0, 135.0])) + float(rng.uniform(-10, 10))
    return BackgroundSpec(
        kind=kind,
        tone_a=tone_a,
        tone_b=tone_b if kind in ("gradient", "stripes") else tone_a,
        angle=angle,
        period=float(rng.uniform(0.07, 0.16)),
        noise=float(rng.uniform(12, 30)) if kind == "noise" else 0.0,
    )


def _centres(layout: str, rng: np.random.Generator, n: int) -> list[tuple[float, float, str | None]]:
    jitter = lambda: float(rng.uniform(-0.04, 0.04))  # noqa: E731 - tiny local helper
    if layout == "single":
        place = tuple(PLACES)[int(rng.integers(len(PLACES)))]
        x, y = PLACES[place]
        return [(x + jitter(), y + jitter(), place)]
    if layout == "pair_h":
        return [(0.27 + jitter(), 0.5 + 2 * jitter(), None), (0.73 + jitter(), 0.5 + 2 * jitter(), None)]
    if layout == "pair_v":
        return [(0.5 + 2 * jitter(), 0.27 + jitter(), None), (0.5 + 2 * jitter(), 0.73 + jitter(), None)]
    if layout == "row":
        return [(0.18 + i * 0.32 + jitter() / 2, 0.5 + 2 * jitter(), None) for i in range(n)]
    if layout == "column":
        return [(0.5 + 2 * jitter(), 0.18 + i * 0.32 + jitter() / 2, None) for i in range(n)]
    raise ValueError(f"unknown layout {layout!r}")


def sample_scene(rng: np.random.Generator, split: Split) -> SceneSpec:
    """Draw one scene of `split`; objects are listed left to right or top to bottom."""
    counts = list(OBJECT_COUNT_WEIGHTS)
    weights = np.array([OBJECT_COUNT_WEIGHTS[c] for c in counts])
    n = counts[int(rng.choice(len(counts), p=weights / weights.sum()))]
    layouts = LAYOUTS[n]
    layout = layouts[int(rng.integers(len(layouts)))]
    pool = _SEEN_PAIRS if split in (Split.TRAIN, Split.VAL) else _ALL_PAIRS
    pairs = [pool[int(rng.integers(len(pool)))] for _ in range(n)]
    if split is Split.HELDOUT:
        pairs[int(rng.integers(n))] = _HELD_PAIRS[int(rng.integers(len(_HELD_PAIRS)))]
    size_names = tuple(SIZES)
    # Three objects in a row leave room for a third of the canvas each: no large ones there.
    allowed_sizes = size_names if n < 3 else size_names[:2]
    objects = []
    for (colour, shape), (x, y, place) in zip(pairs, _centres(layout, rng, n), strict=True):
        size = allowed_sizes[int(rng.integers(len(allowed_sizes)))]
        objects.append(
            ObjectSpec(
                shape=shape,
                colour=colour,
                size=size,
                x=x,
                y=y,
                rotation=float(rng.uniform(-15, 15)),
                # A large lone object in the centre may grow further: drawings by others often fill the frame.
                scale=float(rng.uniform(0.9, 1.8 if place == "centre" and size == "large" else 1.1)),
                shade=tuple(int(v) for v in rng.integers(-20, 21, size=3)),  # type: ignore[arg-type]
                place=place,
            )
        )
    background = sample_background(rng, [COLOURS[o.colour] for o in objects])
    return SceneSpec(
        layout=layout,
        objects=tuple(objects),
        background=background,
        render_seed=int(rng.integers(2**31)),
        outline=bool(rng.random() < 0.1),
        supersample=int(rng.choice([1, 2, 2, 3])),
    )


def generate_specs(n: int, *, seed: int, split: Split, start: int = 0) -> list[SceneSpec]:
    """Return scenes `start .. start+n-1` of a split; the same arguments give the same scenes."""
    return [sample_scene(scene_rng(seed, split, i), split) for i in range(start, start + n)]
