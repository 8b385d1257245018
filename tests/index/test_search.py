"""Search tests with known answers: modality, metadata and tag filters, selective filters, exact mode."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from crossmodal.v1.types_pb2 import MODALITY_VIDEO
from services.common.limits import LimitError
from services.index.domain import MODALITY_IMAGE, MODALITY_TEXT, Filter, Item, SearchQuery, make_filter
from services.index.shard import Shard
from tests.index.helpers import MODEL, brute_force, make_item, open_shard, vector_of, vectors

N = 2000
COLOURS = ("red", "green", "blue", "yellow", "black")
RARE = {37, 301, 555, 888, 1024, 1200, 1433, 1500, 1777, 1999}  # 0.5% of the items


def attributes(i: int) -> tuple[dict[str, str], tuple[str, ...]]:
    """Deterministic metadata and tags of item i."""
    metadata = {"colour": COLOURS[i % 5], "size": str(i % 3)}
    if i in RARE:
        metadata["rare"] = "yes"
    tags = ("even" if i % 2 == 0 else "odd", f"x{i % 7}")
    return metadata, tags


@pytest.fixture(scope="module", params=[20.0, 0.0], ids=["posting-lists", "graph-only"])
def corpus(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Shard, dict[str, Item]]]:
    """A shard with N items of known attributes, shared by the tests of this module (read-only).

    Built twice: with the default brute-force factor (selective filters use the posting lists) and
    with 0 (every filter over-fetches from the graph and widens), so both strategies face every test.
    """
    shard = open_shard(tmp_path_factory.mktemp("search"), brute_force_factor=request.param)
    x = vectors(100, N)
    items = {}
    for i in range(N):
        metadata, tags = attributes(i)
        items[f"item-{i}"] = make_item(i, x[i], metadata, tags)
    batch = list(items.values())
    for start in range(0, N, 500):
        shard.upsert(MODEL, batch[start : start + 500])
    yield shard, items
    shard.close()


def predicate(flt: Filter) -> Callable[[Item], bool]:
    """The reference implementation of a filter, written independently of Filter.matches."""

    def keep(item: Item) -> bool:
        if flt.modalities and item.modality not in flt.modalities:
            return False
        for key, values in flt.clauses:
            if item.metadata.get(key) not in values:
                return False
        if any(tag not in item.tags for tag in flt.tags_all):
            return False
        return not flt.tags_any or any(tag in item.tags for tag in flt.tags_any)

    return keep


FILTERS = {
    "texts": make_filter(MODALITY_TEXT, [], [], []),
    "images": make_filter(MODALITY_IMAGE, [], [], []),
    "equality": make_filter(0, [("colour", ["red"])], [], []),
    "membership": make_filter(0, [("colour", ["green", "black"])], [], []),
    "two clauses": make_filter(0, [("colour", ["blue"]), ("size", ["1", "2"])], [], []),
    "tags all": make_filter(0, [], ["odd", "x3"], []),
    "tags any": make_filter(0, [], [], ["x1", "x2"]),
    "everything": make_filter(MODALITY_IMAGE, [("colour", ["red", "blue"])], ["even"], ["x0", "x4", "x5"]),
    "rare": make_filter(0, [("rare", ["yes"])], [], []),
    "missing key": make_filter(0, [("no-such-key", ["x"])], [], []),
    "contradiction": make_filter(MODALITY_TEXT, [], ["even"], []),
    # Several modalities: images and texts cover every item (the filter drops away), video covers none.
    "images or texts": make_filter(0, [], [], [], modalities=[MODALITY_IMAGE, MODALITY_TEXT]),
    "images or video, red": make_filter(0, [("colour", ["red"])], [], [], modalities=[MODALITY_IMAGE, MODALITY_VIDEO]),
    "video": make_filter(MODALITY_VIDEO, [], [], []),
}


@pytest.mark.parametrize("name", list(FILTERS))
def test_exact_filtered_search_equals_brute_force(corpus: tuple[Shard, dict[str, Item]], name: str) -> None:
    shard, items = corpus
    flt = FILTERS[name]
    keep = predicate(flt)
    for query in vectors(101, 5):
        result = shard.search(SearchQuery(query, 10, flt, exact=True))
        assert [h.id for h in result.hits] == brute_force(items, query, 10, keep)


@pytest.mark.parametrize("name", list(FILTERS))
def test_approximate_filtered_search_finds_the_true_neighbours(
    corpus: tuple[Shard, dict[str, Item]], name: str
) -> None:
    shard, items = corpus
    flt = FILTERS[name]
    keep = predicate(flt)
    found = expected_total = 0
    for query in vectors(102, 20):
        hits = shard.search(SearchQuery(query, 10, flt)).hits
        ids = [h.id for h in hits]
        expected = brute_force(items, query, 10, keep)
        # Every hit passes the filter, appears once, and hits are sorted by score.
        assert all(keep(items[i]) for i in ids)
        assert len(ids) == len(set(ids))
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        # A filter never leaves the answer short while enough matching items exist.
        assert len(ids) == len(expected)
        found += len(set(ids) & set(expected))
        expected_total += len(expected)
    assert expected_total == 0 or found / expected_total >= 0.95


def test_a_selective_filter_still_returns_k_results(corpus: tuple[Shard, dict[str, Item]]) -> None:
    shard, items = corpus
    flt = FILTERS["rare"]
    rare_ids = {f"item-{i}" for i in RARE}
    for query in vectors(103, 5):
        result = shard.search(SearchQuery(query, 10, flt))
        assert {h.id for h in result.hits} == rare_ids
        if shard.settings.brute_force_factor:
            assert result.examined == 10  # exactly the posting list of rare=yes
        else:
            assert result.examined > 10  # the graph search had to widen
        # Asking for more than exist returns all of them, and asking for fewer returns the best ones.
        assert {h.id for h in shard.search(SearchQuery(query, 50, flt)).hits} == rare_ids
        top3 = [h.id for h in shard.search(SearchQuery(query, 3, flt)).hits]
        assert top3 == brute_force(items, query, 3, predicate(flt))


def test_hits_carry_score_modality_metadata_and_tags(corpus: tuple[Shard, dict[str, Item]]) -> None:
    shard, items = corpus
    query = items["item-42"].vector
    hit = shard.search(SearchQuery(query, 1)).hits[0]
    assert hit.id == "item-42"
    assert hit.score == pytest.approx(1.0, abs=1e-5)
    assert hit.modality == MODALITY_IMAGE
    assert hit.metadata == items["item-42"].metadata
    assert hit.tags == items["item-42"].tags
    assert hit.vector is None
    with_vector = shard.search(SearchQuery(query, 2, include_vectors=True)).hits
    assert np.array_equal(vector_of(with_vector[0].vector), items["item-42"].vector)
    assert np.array_equal(vector_of(with_vector[1].vector), items[with_vector[1].id].vector)


def test_unnormalised_queries_give_cosine_scores(corpus: tuple[Shard, dict[str, Item]]) -> None:
    shard, items = corpus
    query = vectors(104, 1)[0]
    plain = shard.search(SearchQuery(query, 5, exact=True)).hits
    scaled = shard.search(SearchQuery(query * 123.0, 5, exact=True)).hits
    assert [h.id for h in plain] == [h.id for h in scaled]
    for hit in plain:
        assert hit.score == pytest.approx(float(np.dot(items[hit.id].vector, query)), abs=1e-5)


@pytest.mark.parametrize("dtype", ["f16", "i8"])
def test_quantised_shards_still_find_neighbours(tmp_path: Path, dtype: str) -> None:
    shard = open_shard(tmp_path, dtype=dtype)
    x = vectors(105, 500)
    items = {f"item-{i}": make_item(i, x[i], *attributes(i)) for i in range(500)}
    shard.upsert(MODEL, list(items.values()))
    hits_found = 0
    for query in vectors(106, 10):
        ids = [h.id for h in shard.search(SearchQuery(query, 10, FILTERS["equality"])).hits]
        assert all(items[i].metadata["colour"] == "red" for i in ids)
        hits_found += len(set(ids) & set(brute_force(items, query, 10, predicate(FILTERS["equality"]))))
    assert hits_found / 100 >= 0.8
    for i in range(0, 500, 50):
        assert shard.search(SearchQuery(x[i], 1)).hits[0].id == f"item-{i}"
    if dtype == "i8":
        # i8 candidates are re-ranked with the exact float32 vectors from the store.
        query = vectors(110, 1)[0]
        hits = shard.search(SearchQuery(query, 10, include_vectors=True)).hits
        assert [h.id for h in hits] == brute_force(items, query, 10)
        for hit in hits:
            assert hit.score == pytest.approx(float(np.dot(items[hit.id].vector, query)), abs=1e-5)
            assert np.array_equal(vector_of(hit.vector), items[hit.id].vector)
    shard.close()


@pytest.mark.parametrize(
    ("clauses", "tags_all", "tags_any", "modality", "message"),
    [
        ([(f"k{i}", ["v"]) for i in range(17)], [], [], 0, "more than 16 filter clauses"),
        ([("", ["v"])], [], [], 0, "filter key"),
        ([("k" * 129, ["v"])], [], [], 0, "filter key"),
        ([("k", [])], [], [], 0, "needs 1-64 values"),
        ([("k", [str(i) for i in range(65)])], [], [], 0, "needs 1-64 values"),
        ([("k", ["v" * 1025])], [], [], 0, "longer than 1024"),
        ([], [f"t{i}" for i in range(17)], [], 0, "tags_all"),
        ([], [], [f"t{i}" for i in range(65)], 0, "tags_any"),
        ([], [""], [], 0, "must not be empty"),
        ([], [], [], 9, "modality 9"),
    ],
)
def test_bad_filters_are_refused(
    clauses: list[tuple[str, list[str]]],
    tags_all: list[str],
    tags_any: list[str],
    modality: int,
    message: str,
) -> None:
    with pytest.raises(LimitError, match=message):
        make_filter(modality, clauses, tags_all, tags_any)


def test_broad_parts_with_a_tiny_intersection_fall_back_to_an_exhaustive_pass(tmp_path: Path) -> None:
    # Each tag covers half the shard, so neither posting list is short enough for brute force, yet
    # only 3 items carry both: the graph over-fetch finds too few and the exhaustive pass must finish.
    shard = open_shard(tmp_path)
    x = vectors(107, 400)
    items = {}
    for i in range(400):
        tags = (("left",) if i < 200 else ()) + (("right",) if i >= 197 else ())
        items[f"item-{i}"] = make_item(i, x[i], {}, tags)
    shard.upsert(MODEL, list(items.values()))
    both = make_filter(0, [], ["left", "right"], [])
    for k in (1, 2, 3, 5):
        for query in vectors(108, 3):
            result = shard.search(SearchQuery(query, k, both))
            assert [h.id for h in result.hits] == brute_force(items, query, k, predicate(both))
            assert result.examined > k + 16  # past the first over-fetch
    shard.close()


def test_filters_follow_deletes_and_replacements(tmp_path: Path) -> None:
    shard = open_shard(tmp_path)
    x = vectors(109, 60)
    shard.upsert(MODEL, [make_item(i, x[i], {"colour": "red"}) for i in range(60)])
    red = make_filter(0, [("colour", ["red"])], [], [])
    blue = make_filter(0, [("colour", ["blue"])], [], [])
    shard.delete([f"item-{i}" for i in range(0, 60, 2)])
    shard.upsert(MODEL, [make_item(1, x[1], {"colour": "blue"})])
    red_ids = {h.id for h in shard.search(SearchQuery(x[0], 100, red)).hits}
    assert red_ids == {f"item-{i}" for i in range(3, 60, 2)}
    assert [h.id for h in shard.search(SearchQuery(x[0], 100, blue)).hits] == ["item-1"]
    shard.delete(["item-1"])
    assert shard.search(SearchQuery(x[0], 100, blue)).hits == []
    shard.close()
