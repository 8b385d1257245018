"""Unit tests of the catalog's posting lists."""

from __future__ import annotations

from services.index.catalog import Catalog
from services.index.domain import MODALITY_IMAGE, MODALITY_TEXT, Entry, make_filter


def entry(name: str, modality: int = MODALITY_IMAGE, tags: tuple[str, ...] = (), **metadata: str) -> Entry:
    """A catalog entry."""
    return Entry(name, modality, metadata, tags, 1)


def listed(catalog: Catalog, **parts: object) -> tuple[int, set[int]] | None:
    """(bound, keys) of the narrowest part of a filter built from `parts`."""
    flt = make_filter(
        int(parts.get("modality", 0)),  # type: ignore[call-overload]
        parts.get("clauses", []),  # type: ignore[arg-type]
        parts.get("tags_all", []),  # type: ignore[arg-type]
        parts.get("tags_any", []),  # type: ignore[arg-type]
    )
    found = catalog.narrowest(flt)
    return None if found is None else (found[0], set(found[1]()))


def test_the_narrowest_part_lists_every_match() -> None:
    catalog = Catalog()
    catalog.add(1, entry("a", colour="red", tags=("x", "y")))
    catalog.add(2, entry("b", colour="red", tags=("x",)))
    catalog.add(3, entry("c", MODALITY_TEXT, colour="blue", tags=("y", "y")))
    catalog.add(4, entry("d", MODALITY_TEXT, colour="green"))
    assert listed(catalog) is None
    assert listed(catalog, clauses=[("colour", ["red"])]) == (2, {1, 2})
    assert listed(catalog, clauses=[("colour", ["blue", "green", "pink"])]) == (2, {3, 4})
    assert listed(catalog, modality=MODALITY_TEXT, clauses=[("colour", ["red", "blue"])]) == (2, {3, 4})
    assert listed(catalog, tags_all=["x", "y"], clauses=[("colour", ["red", "blue"])]) == (2, {1, 2})
    assert listed(catalog, tags_any=["y"]) == (2, {1, 3})
    assert listed(catalog, clauses=[("shape", ["round"])]) == (0, set())


def test_postings_shrink_and_grow_with_removals() -> None:
    catalog = Catalog()
    for key in range(3):
        catalog.add(key, entry(f"i{key}", colour="red", tags=("t",), unique=f"u{key}"))
    assert listed(catalog, clauses=[("unique", ["u1"])]) == (1, {1})
    assert catalog.remove(1) is not None
    assert catalog.remove(1) is None
    assert listed(catalog, clauses=[("unique", ["u1"])]) == (0, set())
    assert listed(catalog, clauses=[("colour", ["red"])]) == (2, {0, 2})
    catalog.remove(0)
    assert listed(catalog, tags_all=["t"]) == (1, {2})
    catalog.add(9, entry("i9", colour="red", tags=("t",)))
    assert listed(catalog, tags_all=["t"]) == (2, {2, 9})
    catalog.remove(2)
    catalog.remove(9)
    assert listed(catalog, tags_all=["t"]) == (0, set())
    assert len(catalog) == 0
    assert catalog._postings == {}
