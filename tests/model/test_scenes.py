"""The procedural scene generator: vocabulary, determinism, splits, captions and gallery files."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from crossmodal.scenes import (
    BACKGROUNDS,
    COLOURS,
    HELD_OUT_PAIRS,
    SHAPES,
    SIZES,
    Split,
    binding_query,
    describe,
    gallery_items,
    generate_specs,
    is_heldout_pair,
    lexicon,
    read_gallery,
    render_scene,
    write_gallery,
)
from crossmodal.scenes.captions import COLOUR_WORDS, DETAILS, SIZE_WORDS
from crossmodal.scenes.render import shape_mask
from crossmodal.train.data import SHAPE_GROUP, make_twins, swap_positions


def test_vocabulary_is_as_large_as_the_issue_asks() -> None:
    assert len(SHAPES) >= 8 and len(COLOURS) >= 10 and 2 <= len(SIZES) <= 3
    assert set(BACKGROUNDS) == {"plain", "gradient", "noise", "stripes"}


def test_same_seed_gives_same_scenes_and_pixels() -> None:
    a = generate_specs(20, seed=5, split=Split.TRAIN)
    b = generate_specs(20, seed=5, split=Split.TRAIN)
    assert a == b
    for spec_a, spec_b in zip(a[:5], b[:5], strict=True):
        assert np.array_equal(np.asarray(render_scene(spec_a, 96)), np.asarray(render_scene(spec_b, 96)))
    assert generate_specs(20, seed=6, split=Split.TRAIN) != a


def test_scenes_are_addressable_by_index() -> None:
    whole = generate_specs(10, seed=1, split=Split.VAL)
    assert generate_specs(4, seed=1, split=Split.VAL, start=6) == whole[6:]


def test_training_never_shows_held_out_pairs_and_held_out_always_does() -> None:
    train = generate_specs(1500, seed=0, split=Split.TRAIN)
    held = generate_specs(300, seed=0, split=Split.HELDOUT)
    assert not any(is_heldout_pair(o.colour, o.shape) for s in train for o in s.objects)
    assert all(any(is_heldout_pair(o.colour, o.shape) for o in s.objects) for s in held)
    # Every shape and every colour keeps seen pairs, so unseen pairs are combinations of known parts.
    assert {s for _, s in HELD_OUT_PAIRS} == set(SHAPES)
    assert {c for c, _ in HELD_OUT_PAIRS} == set(COLOURS)


def test_scene_space_is_covered() -> None:
    specs = generate_specs(1500, seed=2, split=Split.TRAIN)
    counts = {len(s.objects) for s in specs}
    layouts = {s.layout for s in specs}
    assert counts == {1, 2, 3}
    assert layouts == {"single", "pair_h", "pair_v", "row", "column"}
    assert {s.background.kind for s in specs} == set(BACKGROUNDS)
    assert {o.place for s in specs for o in s.objects if o.place} == {
        "left",
        "right",
        "top",
        "bottom",
        "centre",
    }
    assert {o.shape for s in specs for o in s.objects} == set(SHAPES)


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_draws_a_distinct_blob(shape: str) -> None:
    mask = np.asarray(shape_mask(shape, 64, 32, 32, 20)) > 0
    fill = mask.mean()
    assert 0.05 < fill < 0.8
    others = [np.asarray(shape_mask(s, 64, 32, 32, 20)) > 0 for s in SHAPES if s != shape]
    assert all((mask != o).mean() > 0.02 for o in others)


def test_objects_are_drawn_in_their_colour_where_they_are() -> None:
    spec = next(
        s
        for s in generate_specs(200, seed=3, split=Split.TRAIN)
        if s.layout == "pair_h" and s.background.kind == "plain"
    )
    img = np.asarray(render_scene(spec, 128)).astype(int)
    for obj in spec.objects:
        x, y = int(obj.x * 128), int(obj.y * 128)
        patch = img[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3)
        # Shapes such as crosses and crescents may leave the exact centre uncovered: look nearby.
        nearest = np.min(np.linalg.norm(patch - np.array(COLOURS[obj.colour]), axis=1))
        assert nearest < 60 or obj.shape in ("crescent", "heart", "star")


def test_captions_vary_and_stay_inside_the_lexicon() -> None:
    specs = generate_specs(400, seed=4, split=Split.TRAIN)
    rng = np.random.default_rng(0)
    words = set(lexicon())
    captions = [describe(s, rng, detail=DETAILS[i % 3]) for i, s in enumerate(specs)]
    assert len(set(captions)) == len(captions)
    seen: set[str] = set()
    for caption in captions:
        tokens = caption.replace(",", " , ").replace(":", " : ").split()
        assert set(tokens) <= words, caption
        seen.update(tokens)
    # Synonyms are used, not only the plain names.
    assert {"crimson", "scarlet"} & seen and {"big", "large", "huge"} <= seen
    assert any(w in seen for w in SIZE_WORDS["small"][1:]) and any(w in seen for w in COLOUR_WORDS["blue"][1:])


def test_full_captions_name_every_object_and_relation() -> None:
    specs = [s for s in generate_specs(100, seed=8, split=Split.TRAIN) if s.layout == "pair_h"]
    rng = np.random.default_rng(1)
    for spec in specs[:10]:
        text = describe(spec, rng, detail="full", plain_words=True)
        for obj in spec.objects:
            assert f"{obj.size} {obj.colour} {obj.shape}" in text
        assert "left" in text or "right" in text
        assert "background" in text


def test_swaps_give_hard_negatives() -> None:
    spec = next(
        s
        for s in generate_specs(100, seed=9, split=Split.TRAIN)
        if len(s.objects) == 2
        and s.objects[0].colour != s.objects[1].colour
        and s.objects[0].shape != s.objects[1].shape
    )
    swapped = spec.with_colours_swapped()
    assert [o.shape for o in swapped.objects] == [o.shape for o in spec.objects]
    assert [o.colour for o in swapped.objects] == [o.colour for o in spec.objects][::-1]
    moved = swap_positions(spec)
    assert [o.shape for o in moved.objects] == [o.shape for o in spec.objects][::-1]
    assert (moved.objects[0].x, moved.objects[0].y) == (spec.objects[0].x, spec.objects[0].y)
    rng = np.random.default_rng(0)
    kinds = set()
    for _ in range(40):
        twins = make_twins(spec, rng)
        assert twins and spec not in twins
        if twins in ([swapped], [moved]):
            kinds.add("swap")
        else:
            # Otherwise the same object is drawn as SHAPE_GROUP other shapes, in pairs training may show.
            assert len(twins) == SHAPE_GROUP
            changed = [[(a, b) for a, b in zip(spec.objects, t.objects, strict=True) if a != b] for t in twins]
            assert all(len(c) == 1 for c in changed)
            assert len({spec.objects.index(c[0][0]) for c in changed}) == 1
            assert len({c[0][1].shape for c in changed} | {changed[0][0][0].shape}) == SHAPE_GROUP + 1
            for (before, after), *_ in changed:
                assert replace(after, shape=before.shape) == before
                assert not is_heldout_pair(after.colour, after.shape)
            kinds.add("shape")
    assert kinds == {"swap", "shape"}
    single = next(s for s in generate_specs(50, seed=9, split=Split.TRAIN) if len(s.objects) == 1)
    twins = make_twins(single, rng)
    assert len({t.objects[0].shape for t in twins} | {single.objects[0].shape}) == SHAPE_GROUP + 1
    assert all(replace(t.objects[0], shape=single.objects[0].shape) == single.objects[0] for t in twins)
    first, second = spec.objects[0], spec.objects[1]
    query = binding_query(spec)
    assert query.endswith(
        f"{first.colour} {first.shape} and {'an' if second.colour[0] in 'aeiou' else 'a'} "
        f"{second.colour} {second.shape}"
    )


def test_gallery_files(tmp_path: Path) -> None:
    items = gallery_items(12, seed=3, split=Split.HELDOUT)
    jsonl = write_gallery(tmp_path, items, size=64)
    records = read_gallery(jsonl)
    assert [r["id"] for r in records] == [it.id for it in items]
    raw = json.loads(jsonl.read_text().splitlines()[0])
    assert set(raw) == {"id", "path", "caption", "attributes"} and raw["path"].startswith("images/")
    assert raw["attributes"]["objects"][0]["shape"] in SHAPES
    assert all(Path(r["path"]).is_file() for r in records)
    assert gallery_items(12, seed=3, split=Split.HELDOUT) == items


def test_make_gallery_command(tmp_path: Path) -> None:
    from crossmodal.cli import main

    assert main(["make-gallery", str(tmp_path / "g"), "--count", "5", "--split", "train", "--size", "48"]) == 0
    lines = (tmp_path / "g" / "captions.jsonl").read_text().splitlines()
    assert len(lines) == 5
    assert len(list((tmp_path / "g" / "images").glob("*.png"))) == 5
