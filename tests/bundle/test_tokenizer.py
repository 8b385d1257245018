"""Tokenizer parity with open_clip on the checked-in corpus, truncation, padding and reduced vocabularies."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from crossmodal.bundle import BundleError, ClipTokenizer, build_tokenizer, read_bpe_merges
from crossmodal.bundle.tokenizer import clean_text, write_bpe_merges, write_tokenizer_json
from tests.bundle.conftest import corpus_texts


@pytest.fixture(scope="module")
def full_tokenizer_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tokenizer_json(tmp_path_factory.mktemp("tok") / "tokenizer.json")


@pytest.fixture(scope="module")
def open_clip_tokenizer() -> object:
    pytest.importorskip("torch")
    from crossmodal.export._torch_compat import import_open_clip

    return import_open_clip().tokenizer.SimpleTokenizer()


def test_corpus_is_large_and_varied() -> None:
    texts = corpus_texts()
    assert len(texts) >= 200
    assert len(set(texts)) == len(texts)
    assert "" in texts and any(t and not t.strip() for t in texts)
    assert any(len(t) > 500 for t in texts)
    assert any("&amp;" in t for t in texts) and any(ord(c) > 0xFFFF for t in texts for c in t)


@pytest.mark.parametrize("context_length", [77, 16, 5])
def test_ids_match_open_clip_on_corpus(
    full_tokenizer_json: Path, open_clip_tokenizer: object, context_length: int
) -> None:
    texts = corpus_texts()
    tok = ClipTokenizer.from_file(full_tokenizer_json, context_length)
    ids, truncated = tok.encode_batch(texts)
    expected = open_clip_tokenizer(texts, context_length=context_length).numpy()  # type: ignore[operator]
    assert ids.dtype == np.int64 and ids.shape == (len(texts), context_length)
    mismatched = [texts[i] for i in range(len(texts)) if not np.array_equal(ids[i], expected[i])]
    assert mismatched == []
    # Truncated rows keep the end token in the last slot; the others are padded with zeros.
    lengths = [len(w) for w in tok.encode_words(texts)]
    assert truncated == [n > context_length - 2 for n in lengths]
    for row, n, cut in zip(ids, lengths, truncated, strict=True):
        if cut:
            assert row[-1] == tok.eot_id and tok.eot_id not in row[:-1]
        else:
            assert row[n + 1] == tok.eot_id and not row[n + 2 :].any()
    assert any(truncated) and not all(truncated)


def test_empty_and_whitespace_texts_are_start_end_only(full_tokenizer_json: Path) -> None:
    tok = ClipTokenizer.from_file(full_tokenizer_json, 8)
    ids, truncated = tok.encode_batch(["", "   \t\n"])
    assert ids.tolist() == [[tok.sot_id, tok.eot_id, 0, 0, 0, 0, 0, 0]] * 2
    assert truncated == [False, False]


def test_html_entities_and_case_are_cleaned_like_open_clip() -> None:
    assert clean_text("  Tom &amp;amp; JERRY\n\t&lt;b&gt; ") == "tom & jerry <b>"


def test_decode_round_trips_plain_text(full_tokenizer_json: Path) -> None:
    tok = ClipTokenizer.from_file(full_tokenizer_json, 77)
    ids, _ = tok.encode_batch(["a photo of two red circles, 3 squares!"])
    assert tok.decode(ids[0]) == "a photo of two red circles , 3 squares !"
    ids, _ = tok.encode_batch(["Café 😀 日本 &amp;"])
    assert tok.decode(ids[0]) == "café 😀 日本 &"


def test_standalone_tokenizer_json_agrees_on_cleaned_text(full_tokenizer_json: Path) -> None:
    """Loaded on its own by `tokenizers`, the file splits and merges as open_clip does (cleaning aside)."""
    raw = Tokenizer.from_file(str(full_tokenizer_json))
    tok = ClipTokenizer.from_file(full_tokenizer_json, 77)
    # Special-token strings glued to punctuation are the documented exception.
    texts = [t for t in corpus_texts() if "_of_text>" not in t]
    for text in texts:
        expected = [tok.sot_id, *tok.encode_words([text])[0], tok.eot_id]
        assert raw.encode(clean_text(text)).ids == expected, text


def test_reduced_vocabulary_matches_open_clip_with_same_merges(tmp_path: Path, open_clip_tokenizer: object) -> None:
    from crossmodal.export._torch_compat import import_open_clip

    merges = read_bpe_merges(limit=2000)
    bpe_gz = tmp_path / "merges.txt.gz"
    write_bpe_merges(bpe_gz, merges)
    reference = import_open_clip().tokenizer.SimpleTokenizer(bpe_path=str(bpe_gz))
    path = write_tokenizer_json(tmp_path / "tokenizer.json", merges)
    tok = ClipTokenizer.from_file(path, 77)
    assert tok.vocab_size == 512 + 2000 + 2 == reference.vocab_size
    texts = corpus_texts()
    ids, _ = tok.encode_batch(texts)
    assert np.array_equal(ids, reference(texts).numpy())


def _closed_subset(merges: list[tuple[str, str]]) -> list[tuple[str, str]]:
    from crossmodal.bundle.tokenizer import clip_vocab

    known = set(clip_vocab([], []))
    kept = []
    for left, right in merges:
        if left in known and right in known:
            kept.append((left, right))
            known.add(left + right)
    return kept


def test_subset_of_merges_keeps_rank_order() -> None:
    merges = _closed_subset(read_bpe_merges(limit=5000)[::3])
    tok = ClipTokenizer(build_tokenizer(merges), 77)
    assert tok.eot_id == tok.vocab_size - 1 == 512 + len(merges) + 1
    ids, _ = tok.encode_batch(["every text stays encodable: 東京 😀"])
    assert (ids < tok.vocab_size).all() and ids[0, 0] == tok.sot_id
    assert tok.decode(ids[0]) == "every text stays encodable : 東京 😀"


def test_merges_that_depend_on_missing_merges_are_refused() -> None:
    merges = read_bpe_merges(limit=5000)[::7]
    with pytest.raises(BundleError, match="reduced vocabulary must keep"):
        build_tokenizer(merges)


def test_concurrent_encoding_is_consistent(full_tokenizer_json: Path) -> None:
    tok = ClipTokenizer.from_file(full_tokenizer_json, 77)
    texts = corpus_texts()
    expected, _ = tok.encode_batch(texts)
    results: list[np.ndarray] = []

    def work() -> None:
        for _ in range(3):
            results.append(tok.encode_batch(texts)[0])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 12 and all(np.array_equal(r, expected) for r in results)


def test_malformed_tokenizer_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(BundleError, match="tokenizer.json"):
        ClipTokenizer.from_file(bad, 77)


def test_context_length_too_small_is_refused(full_tokenizer_json: Path) -> None:
    with pytest.raises(ValueError, match="context_length"):
        ClipTokenizer.from_file(full_tokenizer_json, 1)
