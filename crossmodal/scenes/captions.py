"""Captions for scene specs from varied templates and synonyms, so a text tower must learn words."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from crossmodal.scenes.spec import SceneSpec

# The plain name comes first and is repeated so that it stays the most frequent wording.
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "red", "crimson", "scarlet"),
    "orange": ("orange", "orange", "tangerine"),
    "yellow": ("yellow", "yellow", "golden"),
    "green": ("green", "green", "emerald"),
    "blue": ("blue", "blue", "cobalt", "azure"),
    "purple": ("purple", "purple", "violet"),
    "pink": ("pink", "pink", "rosy"),
    "brown": ("brown", "brown", "chocolate"),
    "black": ("black", "black", "dark"),
    "white": ("white", "white", "ivory"),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "circle", "disc", "round dot"),
    "square": ("square", "square", "box"),
    "triangle": ("triangle",),
    "star": ("star", "star", "five-pointed star"),
    "diamond": ("diamond", "diamond", "rhombus"),
    "cross": ("cross", "cross", "plus sign"),
    "heart": ("heart",),
    "crescent": ("crescent", "crescent", "crescent moon"),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "small", "little", "tiny"),
    "medium": ("medium", "medium-sized", "mid-sized"),
    "large": ("large", "big", "huge"),
}
PLACE_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "at the left", "in the left half"),
    "right": ("on the right", "at the right", "in the right half"),
    "top": ("at the top", "near the top", "in the upper half"),
    "bottom": ("at the bottom", "near the bottom", "in the lower half"),
    "centre": ("in the centre", "in the center", "in the middle"),
}
RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("left of", "to the left of", "on the left of"),
    "right": ("right of", "to the right of", "on the right of"),
    "above": ("above", "over", "on top of"),
    "below": ("below", "under", "beneath"),
}
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {
    "plain": ("plain", "solid", "uniform"),
    "gradient": ("gradient", "shaded", "fading"),
    "noise": ("noisy", "grainy", "speckled"),
    "stripes": ("striped", "stripy"),
}
PREFIXES: tuple[str, ...] = ("", "", "", "a picture of ", "an image of ", "a drawing of ", "a photo of ")
BACKGROUND_LEADS: tuple[str, ...] = ("on a", "against a", "over a")
# Words that templates use outside the tables above; with the tables they make the lexicon.
TEMPLATE_WORDS: tuple[str, ...] = (
    "a",
    "an",
    "and",
    "the",
    "there",
    "is",
    "which",
    "from",
    "to",
    "left",
    "right",
    "top",
    "bottom",
    "middle",
    "of",
    "on",
    "in",
    "at",
    "shapes",
    "three",
    "row",
    "column",
    "background",
    "a",
    "picture",
    "image",
    "drawing",
    "photo",
    ",",
    ":",
)


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _article(phrase: str) -> str:
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


class _Namer:
    """Chooses the wording of one caption; `full` keeps every attribute."""

    def __init__(self, rng: np.random.Generator, full: bool, plain_words: bool, with_size: bool = True) -> None:
        self.rng = rng
        self.full = full
        self.plain = plain_words
        self.with_size = with_size and (full or rng.random() > 0.3)

    def word(self, table: dict[str, tuple[str, ...]], key: str) -> str:
        return table[key][0] if self.plain else _pick(self.rng, table[key])

    def noun(self, spec: SceneSpec, i: int, *, definite: bool = False) -> str:
        obj = spec.objects[i]
        words = [self.word(COLOUR_WORDS, obj.colour), self.word(SHAPE_WORDS, obj.shape)]
        if self.with_size:
            words.insert(0, self.word(SIZE_WORDS, obj.size))
        phrase = " ".join(words)
        return "the " + phrase if definite else _article(phrase)


def _single(spec: SceneSpec, n: _Namer) -> str:
    obj = spec.objects[0]
    noun = n.noun(spec, 0)
    if not n.full and n.rng.random() < 0.25:
        return noun
    place = n.word(PLACE_WORDS, obj.place or "centre")
    form = int(n.rng.integers(3))
    if form == 0:
        return f"{noun} {place}"
    if form == 1:
        return f"{place} there is {noun}"
    return f"{place}, {noun}"


def _pair(spec: SceneSpec, n: _Namer) -> str:
    horizontal = spec.layout == "pair_h"
    first, second = n.noun(spec, 0), n.noun(spec, 1)
    if not n.full and n.rng.random() < 0.2:
        return f"{first} and {second}" if n.rng.random() < 0.5 else f"{second} and {first}"
    fwd, back = ("left", "right") if horizontal else ("above", "below")
    place_a, place_b = ("left", "right") if horizontal else ("top", "bottom")
    form = int(n.rng.integers(4))
    if form == 0:
        return f"{first} {n.word(RELATION_WORDS, fwd)} {second}"
    if form == 1:
        return f"{second} {n.word(RELATION_WORDS, back)} {first}"
    if form == 2:
        return f"{first} {n.word(PLACE_WORDS, place_a)} and {second} {n.word(PLACE_WORDS, place_b)}"
    return f"{second} {n.word(PLACE_WORDS, place_b)} and {first} {n.word(PLACE_WORDS, place_a)}"


def _triple(spec: SceneSpec, n: _Namer) -> str:
    row = spec.layout == "row"
    a, b, c = (n.noun(spec, i) for i in range(3))
    if not n.full and n.rng.random() < 0.15:
        return f"{a}, {b} and {c}"
    forward, backward = (
        ("from left to right", "from right to left") if row else ("from top to bottom", "from bottom to top")
    )
    form = int(n.rng.integers(5))
    if form == 0:
        return f"{a}, {b} and {c} {forward}"
    if form == 1:
        return f"{forward}: {a}, {b} and {c}"
    if form == 2:
        return f"{c}, {b} and {a} {backward}"
    if form == 3:
        ends = ("left", "right") if row else ("top", "bottom")
        return (
            f"{a} {n.word(PLACE_WORDS, ends[0])}, {b} {n.word(PLACE_WORDS, 'centre')} "
            f"and {c} {n.word(PLACE_WORDS, ends[1])}"
        )
    kind = "row" if row else "column"
    return f"a {kind} of three shapes {forward}: {a}, {b} and {c}"


DETAILS: tuple[str, ...] = ("full", "partial", "minimal")


def _minimal(spec: SceneSpec, n: _Namer) -> str:
    nouns = [n.noun(spec, i) for i in range(len(spec.objects))]
    if n.rng.random() < 0.5:
        nouns = [nouns[int(i)] for i in n.rng.permutation(len(nouns))]
    return nouns[0] if len(nouns) == 1 else ", ".join(nouns[:-1]) + " and " + nouns[-1]


def describe(spec: SceneSpec, rng: np.random.Generator, *, detail: str = "full", plain_words: bool = False) -> str:
    """Caption `spec`: "full" names every attribute, "partial" drops some at random, "minimal"
    names only each object's colour and shape (as users often type: "a red circle and a blue square")."""
    if detail not in DETAILS:
        raise ValueError(f"detail must be one of {DETAILS}, got {detail!r}")
    full = detail == "full"
    n = _Namer(rng, full, plain_words, with_size=detail != "minimal")
    count = len(spec.objects)
    if detail == "minimal":
        body = _minimal(spec, n)
    else:
        body = _single(spec, n) if count == 1 else _pair(spec, n) if count == 2 else _triple(spec, n)
    # A prefix only reads well before a noun phrase ("a picture of a red circle ...").
    prefix = "" if plain_words or not body.startswith("a") else _pick(rng, PREFIXES)
    text = prefix + body
    if full or rng.random() < (0.15 if detail == "minimal" else 0.5):
        lead = "on a" if plain_words else _pick(rng, BACKGROUND_LEADS)
        text = f"{text} {lead} {n.word(BACKGROUND_WORDS, spec.background.kind)} background"
    return text


def binding_query(spec: SceneSpec) -> str:
    """Return the bare 'a red X and a blue Y' query of a two-object scene, in plain words."""
    first, second = spec.objects[0], spec.objects[1]
    return f"{_article(first.colour + ' ' + first.shape)} and {_article(second.colour + ' ' + second.shape)}"


def lexicon() -> list[str]:
    """Return every word any caption can contain, so a reduced vocabulary can cover them all."""
    words: set[str] = set(TEMPLATE_WORDS)
    tables = (COLOUR_WORDS, SHAPE_WORDS, SIZE_WORDS, PLACE_WORDS, RELATION_WORDS, BACKGROUND_WORDS)
    for table in tables:
        for options in table.values():
            for phrase in options:
                words.update(phrase.split())
    for phrase in (*PREFIXES, *BACKGROUND_LEADS):
        words.update(phrase.split())
    return sorted(words)
