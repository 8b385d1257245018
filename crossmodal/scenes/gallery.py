"""Write a gallery of rendered scenes: PNG files plus a JSONL of id, path, caption and attributes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossmodal.scenes.captions import describe
from crossmodal.scenes.render import render_scene
from crossmodal.scenes.spec import SceneSpec, Split, generate_specs

CAPTION_STREAM = 7  # keeps caption randomness apart from scene sampling


@dataclass(frozen=True)
class GalleryItem:
    """One scene of a gallery with its identifier and full-detail caption."""

    id: str
    spec: SceneSpec
    caption: str

    def record(self, path: str) -> dict[str, Any]:
        """Return the JSONL record of this item, pointing at `path`."""
        return {"id": self.id, "path": path, "caption": self.caption, "attributes": self.spec.attributes()}


def caption_rng(seed: int, split: Split, index: int) -> np.random.Generator:
    """Return the generator for the gallery caption of scene `index`."""
    return np.random.default_rng([seed, CAPTION_STREAM, list(Split).index(split), index])


def gallery_items(n: int, *, seed: int, split: Split, start: int = 0) -> list[GalleryItem]:
    """Return `n` scenes of a split with ids and full-detail captions, deterministically."""
    specs = generate_specs(n, seed=seed, split=split, start=start)
    return [
        GalleryItem(
            id=f"{split.value}-{start + i:06d}",
            spec=spec,
            caption=describe(spec, caption_rng(seed, split, start + i), detail="full"),
        )
        for i, spec in enumerate(specs)
    ]


def write_gallery(
    out_dir: Path, items: list[GalleryItem], *, size: int = 128, jsonl_name: str = "captions.jsonl"
) -> Path:
    """Render `items` as PNG files under `out_dir/images` and write their JSONL; return its path."""
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    jsonl = out_dir / jsonl_name
    with jsonl.open("w", encoding="utf-8") as handle:
        for item in items:
            rel = f"images/{item.id}.png"
            render_scene(item.spec, size).save(out_dir / rel, optimize=False)
            handle.write(json.dumps(item.record(rel), sort_keys=True) + "\n")
    return jsonl


def read_gallery(jsonl: Path) -> list[dict[str, Any]]:
    """Read a gallery JSONL; each record's `path` is made absolute."""
    records = []
    for line in jsonl.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            record["path"] = str((jsonl.parent / record["path"]).resolve())
            records.append(record)
    return records
