"""Shared helpers of the index tests: settings, deterministic items and a brute-force reference."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from services.index.config import ShardSettings
from services.index.domain import MODALITY_IMAGE, MODALITY_TEXT, Item
from services.index.shard import Shard

DIM = 32
MODEL = "test-model"


def settings(**overrides: object) -> ShardSettings:
    """Small, fast shard settings for tests (threads=1 keeps results reproducible on 2 cores)."""
    base = ShardSettings(threads=1, compact_min_deleted=10, snapshot_interval_seconds=3600.0)
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def open_shard(path: Path, number: int = 0, **overrides: object) -> Shard:
    """A shard in `path`/shard-<number> with test settings."""
    return Shard(number, path / f"shard-{number}", settings(**overrides))


def vectors(seed: int, n: int, dim: int = DIM) -> np.ndarray:
    """`n` random unit float32 vectors, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_item(
    i: int,
    vector: np.ndarray,
    metadata: Mapping[str, str] | None = None,
    tags: tuple[str, ...] = (),
    prefix: str = "item",
) -> Item:
    """Item `prefix-i`: even numbers are images, odd ones texts."""
    modality = MODALITY_IMAGE if i % 2 == 0 else MODALITY_TEXT
    return Item(f"{prefix}-{i}", modality, vector, dict(metadata or {}), tags)


def brute_force(
    items: Mapping[str, Item], query: np.ndarray, k: int, keep: Callable[[Item], bool] = lambda _: True
) -> list[str]:
    """Ids of the exact top-k items by cosine similarity among those `keep` accepts."""
    kept = [item for item in items.values() if keep(item)]
    if not kept:
        return []
    matrix = np.stack([item.vector / np.linalg.norm(item.vector) for item in kept])
    scores = matrix @ (query / np.linalg.norm(query))
    order = np.argsort(-scores, kind="stable")[:k]
    return [kept[i].id for i in order]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors."""
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def vector_of(value: np.ndarray | None) -> np.ndarray:
    """The vector a result carries (failing when it carries none)."""
    assert value is not None, "the result carries no vector"
    return value
