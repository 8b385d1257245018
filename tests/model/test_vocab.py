"""The demo model's reduced CLIP vocabulary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from crossmodal.bundle.tokenizer import ClipTokenizer, build_tokenizer
from crossmodal.scenes import Split, describe, generate_specs
from crossmodal.train.vocab import build_demo_tokenizer, write_demo_tokenizer


def test_reduced_vocabulary_splits_captions_exactly_like_full_clip(tmp_path: Path) -> None:
    path = write_demo_tokenizer(tmp_path / "tokenizer.json")
    reduced = ClipTokenizer.from_file(path, 64)
    full = ClipTokenizer(build_tokenizer(), 64)
    assert reduced.vocab_size < 1500 < full.vocab_size
    rng = np.random.default_rng(0)
    captions = [describe(s, rng, detail="full") for s in generate_specs(300, seed=0, split=Split.TRAIN)]
    captions += ["a red circle", "a huge gray hexagon next to a ring"]
    reduced_vocab = {v: k for k, v in Tokenizer.from_file(str(path)).get_vocab().items()}
    full_vocab = {v: k for k, v in build_tokenizer().get_vocab().items()}
    for a, b in zip(reduced.encode_words(captions), full.encode_words(captions), strict=True):
        assert [reduced_vocab[i] for i in a] == [full_vocab[i] for i in b]


def test_end_token_has_the_highest_id() -> None:
    # open_clip pools the text tower at the argmax of the ids: the end token must be the largest.
    tok = ClipTokenizer(build_demo_tokenizer(), 48)
    ids, truncated = tok.encode_batch(["a small crimson crescent moon above a tiny emerald rhombus"])
    assert not truncated[0]
    assert int(ids[0].argmax()) == int(np.flatnonzero(ids[0] == tok.eot_id)[0])
    assert tok.eot_id == tok.vocab_size - 1


def test_unknown_words_still_encode() -> None:
    tok = ClipTokenizer(build_demo_tokenizer(), 16)
    ids, _ = tok.encode_batch(["zyzzyva"])
    assert ids[0, 0] == tok.sot_id and tok.eot_id in ids[0]
