"""A reduced CLIP vocabulary: just the BPE merges that the scene captions use, in CLIP's rank order."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer

from crossmodal.bundle.tokenizer import (
    END_OF_WORD,
    ClipTokenizer,
    build_tokenizer,
    bytes_to_unicode,
    read_bpe_merges,
)
from crossmodal.scenes.captions import lexicon

# Everyday words a first user is likely to type beside the caption lexicon; words outside the
# vocabulary still encode (byte by byte) but the model has never seen them.
EXTRA_WORDS: tuple[str, ...] = (
    "grey", "gray", "shape", "shapes", "object", "objects", "with", "one", "two", "next", "near",
    "beside", "round", "big", "and", "or", "is", "are", "in", "of", "the", "picture", "scene",
    "cyan", "magenta", "violet", "dot", "ring", "oval", "rectangle", "hexagon", "pentagon",
)  # fmt: skip


def _word_symbols(word: str) -> list[str]:
    byte_map = bytes_to_unicode()
    chars = [byte_map[b] for b in word.encode("utf-8")]
    return chars[:-1] + [chars[-1] + END_OF_WORD]


def merges_used(words: Iterable[str], merges: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Return the merges that CLIP's BPE applies to `words`, in their original rank order.

    BPE always applies the lowest-ranked merge present, so a word keeps exactly the tokens it
    gets from the full vocabulary under any subset of merges that holds the ones it used.
    """
    ranks = {pair: i for i, pair in enumerate(merges)}
    used: set[int] = set()
    for word in words:
        symbols = _word_symbols(word)
        while len(symbols) > 1:
            pairs = [(ranks.get((a, b)), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:], strict=False))]
            ranked = [(r, i) for r, i in pairs if r is not None]
            if not ranked:
                break
            rank, _ = min(ranked)
            used.add(rank)
            a, b = merges[rank]
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and symbols[i] == a and symbols[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
    return [merges[r] for r in sorted(used)]


def demo_words() -> list[str]:
    """Return the words the demo vocabulary covers: every caption word plus a few common ones."""
    splitter = ClipTokenizer(build_tokenizer([]), context_length=2)
    words: set[str] = set()
    for phrase in (*lexicon(), *EXTRA_WORDS):
        words.update(splitter.split_words(phrase))
    return sorted(words)


def build_demo_tokenizer() -> Tokenizer:
    """Build the reduced-vocabulary CLIP tokenizer of the demo model (same ids on every run)."""
    return build_tokenizer(merges_used(demo_words(), read_bpe_merges()))


def write_demo_tokenizer(path: Path) -> Path:
    """Write the demo model's `tokenizer.json` to `path` and return it."""
    build_demo_tokenizer().save(str(path))
    return path
