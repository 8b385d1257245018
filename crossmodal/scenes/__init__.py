"""Procedural scenes: coloured shapes on varied backgrounds, with captions, deterministic by seed."""

from crossmodal.scenes.captions import binding_query, describe, lexicon
from crossmodal.scenes.gallery import GalleryItem, gallery_items, read_gallery, write_gallery
from crossmodal.scenes.render import render_scene
from crossmodal.scenes.spec import (
    BACKGROUNDS,
    COLOURS,
    HELD_OUT_PAIRS,
    PLACES,
    SHAPES,
    SIZES,
    ObjectSpec,
    SceneSpec,
    Split,
    generate_specs,
    is_heldout_pair,
    sample_scene,
    scene_rng,
)

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "HELD_OUT_PAIRS",
    "PLACES",
    "SHAPES",
    "SIZES",
    "GalleryItem",
    "ObjectSpec",
    "SceneSpec",
    "Split",
    "binding_query",
    "describe",
    "gallery_items",
    "generate_specs",
    "is_heldout_pair",
    "lexicon",
    "read_gallery",
    "render_scene",
    "sample_scene",
    "scene_rng",
    "write_gallery",
]
