"""Draw a scene spec with Pillow: background, then each object through its own mask."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from crossmodal.scenes.spec import COLOURS, SIZES, BackgroundSpec, ObjectSpec, SceneSpec

Point = tuple[float, float]


def _regular(n: int, radius: float, start_deg: float) -> list[Point]:
    return [
        (
            radius * math.cos(math.radians(start_deg + 360 * i / n)),
            radius * math.sin(math.radians(start_deg + 360 * i / n)),
        )
        for i in range(n)
    ]


def _star() -> list[Point]:
    points = []
    for i in range(10):
        r = 1.0 if i % 2 == 0 else 0.42
        a = math.radians(-90 + 36 * i)
        points.append((r * math.cos(a), r * math.sin(a) + 0.06))
    return points


def _heart() -> list[Point]:
    points = []
    for i in range(64):
        t = 2 * math.pi * i / 64
        x = 16 * math.sin(t) ** 3
        y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
        points.append((x / 16.5, (y + 2.5) / 16.5))
    return points


_CROSS_ARM = 0.32
# Unit outlines (radius about 1, y down) of the polygonal shapes.
_OUTLINES: dict[str, list[Point]] = {
    "square": [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
    "triangle": [(x, y + 0.15) for x, y in _regular(3, 1.05, -90)],
    "star": _star(),
    "diamond": [(0.0, -1.0), (0.62, 0.0), (0.0, 1.0), (-0.62, 0.0)],
    "cross": [
        (-_CROSS_ARM, -0.9),
        (_CROSS_ARM, -0.9),
        (_CROSS_ARM, -_CROSS_ARM),
        (0.9, -_CROSS_ARM),
        (0.9, _CROSS_ARM),
        (_CROSS_ARM, _CROSS_ARM),
        (_CROSS_ARM, 0.9),
        (-_CROSS_ARM, 0.9),
        (-_CROSS_ARM, _CROSS_ARM),
        (-0.9, _CROSS_ARM),
        (-0.9, -_CROSS_ARM),
        (-_CROSS_ARM, -_CROSS_ARM),
    ],
    "heart": _heart(),
}


def _place(points: list[Point], cx: float, cy: float, radius: float, rotation: float) -> list[Point]:
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    return [(cx + radius * (x * c - y * s), cy + radius * (x * s + y * c)) for x, y in points]


def shape_mask(shape: str, width: int, cx: float, cy: float, radius: float, rotation: float = 0.0) -> Image.Image:
    """Return an 'L' mask of `width` x `width` pixels with `shape` drawn at (cx, cy) in pixels."""
    mask = Image.new("L", (width, width), 0)
    draw = ImageDraw.Draw(mask)
    if shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
    elif shape == "crescent":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
        a = math.radians(rotation - 25)
        ox, oy = cx + 0.5 * radius * math.cos(a), cy + 0.5 * radius * math.sin(a)
        r2 = 0.86 * radius
        draw.ellipse((ox - r2, oy - r2, ox + r2, oy + r2), fill=0)
    elif shape in _OUTLINES:
        draw.polygon(_place(_OUTLINES[shape], cx, cy, radius, rotation), fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return mask


def object_colour(obj: ObjectSpec) -> tuple[int, int, int]:
    """Return the jittered fill colour of an object."""
    base = COLOURS[obj.colour]
    return tuple(int(np.clip(b + d, 0, 255)) for b, d in zip(base, obj.shade, strict=True))  # type: ignore[return-value]


def render_background(bg: BackgroundSpec, width: int, rng: np.random.Generator) -> Image.Image:
    """Return the background of `width` x `width` pixels."""
    a = np.array(bg.tone_a, dtype=np.float32)
    b = np.array(bg.tone_b, dtype=np.float32)
    if bg.kind == "plain":
        return Image.new("RGB", (width, width), bg.tone_a)
    grid = (np.arange(width, dtype=np.float32) + 0.5) / width
    xx, yy = np.meshgrid(grid, grid)
    theta = math.radians(bg.angle)
    proj = xx * math.cos(theta) + yy * math.sin(theta)
    if bg.kind == "gradient":
        t = (proj - proj.min()) / max(float(proj.max() - proj.min()), 1e-6)
        pixels = a + (b - a) * t[..., None]
    elif bg.kind == "stripes":
        band = np.floor(proj / bg.period).astype(np.int64) % 2
        pixels = np.where(band[..., None] == 0, a, b)
    elif bg.kind == "noise":
        coarse = rng.normal(0.0, 1.0, size=(8, 8)).astype(np.float32)
        smooth = np.asarray(Image.fromarray(coarse, mode="F").resize((width, width), Image.Resampling.BICUBIC))
        fine = rng.normal(0.0, 0.5, size=(width, width)).astype(np.float32)
        pixels = a + (bg.noise * (smooth + fine))[..., None]
    else:
        raise ValueError(f"unknown background {bg.kind!r}")
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")


def render_scene(spec: SceneSpec, size: int = 128) -> Image.Image:
    """Render `spec` as a `size` x `size` RGB image; the same spec always gives the same pixels."""
    ss = max(1, spec.supersample)
    width = size * ss
    rng = np.random.default_rng(spec.render_seed)
    image = render_background(spec.background, width, rng)
    for obj in spec.objects:
        radius = 0.5 * SIZES[obj.size] * obj.scale * width
        mask = shape_mask(obj.shape, width, obj.x * width, obj.y * width, radius, obj.rotation)
        if spec.outline:
            ring = mask.filter(ImageFilter.MaxFilter(2 * ss + 1))
            image.paste((24, 24, 24), mask=ring)
        image.paste(object_colour(obj), mask=mask)
    if ss > 1:
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return image
