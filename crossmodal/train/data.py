"""Training data: scenes rendered once into uint8 arrays (with hard-negative twins), captions per step."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from crossmodal.bundle.image import ImageConfig, resize_and_crop
from crossmodal.scenes.captions import describe
from crossmodal.scenes.render import render_scene
from crossmodal.scenes.spec import SHAPES, SceneSpec, Split, generate_specs, is_heldout_pair

# Canvas sizes the training scenes are drawn at before the tower's own resize: the model sees
# the resampling of images larger than its input as well as images drawn at its input size.
CANVAS_SIZES: tuple[int, ...] = (64, 64, 80, 96, 128, 160)
TWIN_STREAM = 11
# Bumped whenever the kinds of twins change, so cached renderings of older twin sets are not reused.
TWIN_VERSION = 3
# Share of hard-negative groups that change one object's shape. Without them a batch is told apart by
# colours, sizes and places alone and the towers never learn shapes (v3 ranked 'a red circle' and 'a red
# star' alike: text cosine 0.99, shape accuracy at chance).
SHAPE_TWIN_SHARE = 0.5
# Shapes drawn per shape group besides the original. With a single changed shape the towers told the
# pair apart by how much of the colour there is (80% of pairs) yet still could not name a shape; among
# four shapes of the same object that shortcut no longer works.
SHAPE_GROUP = 3
# Share of training captions at each level of detail: short queries must work as well as the
# gallery's full descriptions.
CAPTION_MIX: dict[str, float] = {"full": 0.5, "partial": 0.4, "minimal": 0.1}


def swap_positions(spec: SceneSpec) -> SceneSpec:
    """Return the scene with its first two objects trading places (objects stay in reading order)."""
    a, b = spec.objects[0], spec.objects[1]
    moved = (replace(b, x=a.x, y=a.y), replace(a, x=b.x, y=b.y))
    return replace(spec, objects=moved + spec.objects[2:])


def change_shape(spec: SceneSpec, rng: np.random.Generator, count: int) -> list[SceneSpec]:
    """Return `count` copies of the scene with one object drawn as other shapes (pairs training allows)."""
    i = int(rng.integers(len(spec.objects)))
    obj = spec.objects[i]
    shapes = [s for s in SHAPES if s != obj.shape and not is_heldout_pair(obj.colour, s)]
    picked = rng.choice(len(shapes), size=min(count, len(shapes)), replace=False)
    return [
        replace(spec, objects=spec.objects[:i] + (replace(obj, shape=shapes[int(k)]),) + spec.objects[i + 1 :])
        for k in picked
    ]


def make_twins(spec: SceneSpec, rng: np.random.Generator) -> list[SceneSpec]:
    """Return hard negatives: the scene with one object as SHAPE_GROUP other shapes, or a colour or place swap.

    Batches otherwise tell most scenes apart by their colours alone; twins make it matter what
    each object's shape is, which colour goes with which shape and which object is where.
    """
    if len(spec.objects) < 2 or rng.random() < SHAPE_TWIN_SHARE:
        return change_shape(spec, rng, SHAPE_GROUP)
    a, b = spec.objects[0], spec.objects[1]
    colour_swap_differs = a.colour != b.colour and a.shape != b.shape
    place_swap_differs = (a.shape, a.colour, a.size) != (b.shape, b.colour, b.size)
    if colour_swap_differs and (not place_swap_differs or rng.random() < 0.6):
        return [spec.with_colours_swapped()]
    if place_swap_differs:
        return [swap_positions(spec)]
    return change_shape(spec, rng, SHAPE_GROUP)


@dataclass
class SceneSet:
    """Rendered scenes (n, H, W, 3 uint8) with their specs; `twins[i]` are the rows of i's twins, -1 padded."""

    images: np.ndarray
    specs: list[SceneSpec]
    twins: np.ndarray
    base_count: int


def _render_one(args: tuple[SceneSpec, int, ImageConfig]) -> np.ndarray:
    spec, canvas, cfg = args
    return np.asarray(resize_and_crop(render_scene(spec, canvas), cfg).convert("RGB"), dtype=np.uint8)


def _jobs(specs: list[SceneSpec], seed: int, cfg: ImageConfig) -> list[tuple[SceneSpec, int, ImageConfig]]:
    rng = np.random.default_rng([seed, TWIN_STREAM, 1])
    canvases = rng.choice(CANVAS_SIZES, size=len(specs))
    return [(s, int(c), cfg) for s, c in zip(specs, canvases, strict=True)]


def render_specs(specs: list[SceneSpec], seed: int, cfg: ImageConfig, workers: int) -> np.ndarray:
    """Render specs at seeded canvas sizes and preprocess them to the tower's input size (uint8)."""
    jobs = _jobs(specs, seed, cfg)
    if workers > 1 and len(jobs) > 256:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            rows = pool.map(_render_one, jobs, chunksize=64)
    else:
        rows = [_render_one(j) for j in jobs]
    return np.stack(rows) if rows else np.zeros((0, cfg.height, cfg.width, 3), np.uint8)


def build_scene_set(
    n: int, *, seed: int, cfg: ImageConfig, twin_fraction: float, workers: int, cache_dir: Path | None = None
) -> SceneSet:
    """Render `n` training scenes plus twins for about `twin_fraction` of them; cached on disk by content."""
    specs = generate_specs(n, seed=seed, split=Split.TRAIN)
    rng = np.random.default_rng([seed, TWIN_STREAM])
    twins = np.full((n, SHAPE_GROUP), -1, dtype=np.int64)
    extra: list[SceneSpec] = []
    for i, spec in enumerate(specs):
        if rng.random() < twin_fraction:
            for k, other in enumerate(make_twins(spec, rng)):
                twins[i, k] = n + len(extra)
                extra.append(other)
    all_specs = specs + extra
    twins = np.concatenate([twins, np.full((len(extra), SHAPE_GROUP), -1, dtype=np.int64)])
    identity = [n, seed, twin_fraction, cfg.to_dict(), CANVAS_SIZES, len(extra), TWIN_VERSION]
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    cached = cache_dir / f"scenes-{key}.npy" if cache_dir else None
    if cached is not None and cached.is_file():
        images = np.load(cached)
    else:
        images = render_specs(all_specs, seed, cfg, workers)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".partial.npy")
            np.save(tmp, images)
            tmp.rename(cached)
    return SceneSet(images=images, specs=all_specs, twins=twins, base_count=n)


def sample_batch(scenes: SceneSet, batch_size: int, seed: int, step: int) -> tuple[np.ndarray, list[str]]:
    """Pick the rows and captions of one step; a function of (seed, step) alone, so resuming is exact."""
    rng = np.random.default_rng([seed, step])
    picks = rng.choice(scenes.base_count, size=batch_size, replace=False)
    rows: list[int] = []
    for i in picks:
        if len(rows) >= batch_size:
            break
        rows.append(int(i))
        # Twins share the batch with their originals: that is what makes them hard negatives.
        for j in scenes.twins[i]:
            if j >= 0 and len(rows) < batch_size:
                rows.append(int(j))
    index = np.array(rows, dtype=np.int64)
    levels = rng.choice(len(CAPTION_MIX), size=len(rows), p=list(CAPTION_MIX.values()))
    details = list(CAPTION_MIX)
    captions = [describe(scenes.specs[r], rng, detail=details[int(k)]) for r, k in zip(rows, levels, strict=True)]
    return index, captions
