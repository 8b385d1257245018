"""Any Hugging Face tokenizer.json as a bundle's tokenizer: special tokens, truncation and padding as transformers
applies them (``padding="max_length", truncation=True``), on the 242-text corpus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from crossmodal.bundle import BundleError
from crossmodal.bundle.tokenizer import ClipTokenizer, HfTokenizer, load_tokenizer
from tests.bundle.conftest import corpus_texts


def _roberta_like() -> Tokenizer:
    # Byte-level BPE with <s> ... </s> around every text and <pad>, as CLAP's RoBERTa text tower has.
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(corpus_texts(), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))]
    )
    return tok


def _bert_like() -> Tokenizer:
    # WordPiece, lower-cased and accent-stripped, [CLS] ... [SEP], padded with [PAD] (declared in the file).
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    trainer = trainers.WordPieceTrainer(vocab_size=500, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(corpus_texts(), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def _reference(tok: Tokenizer, text: str, length: int, start: list[int], end: list[int], pad: int) -> list[int]:
    """What transformers returns: the content truncated to leave room for the special tokens, then padded."""
    bare = Tokenizer.from_str(tok.to_str())
    bare.no_padding()
    content = bare.encode(text, add_special_tokens=False).ids[: length - len(start) - len(end)]
    ids = start + content + end
    return ids + [pad] * (length - len(ids))


@pytest.mark.parametrize(
    ("make", "pad_token", "start", "end"),
    [(_roberta_like, "<pad>", "<s>", "</s>"), (_bert_like, None, "[CLS]", "[SEP]")],
    ids=["roberta-bpe", "bert-wordpiece"],
)
@pytest.mark.parametrize("length", [77, 12])
def test_ids_match_transformers_semantics_on_the_corpus(
    tmp_path: Path, make: object, pad_token: str | None, start: str, end: str, length: int
) -> None:
    source = make()  # type: ignore[operator]
    path = tmp_path / "tokenizer.json"
    source.save(str(path))
    tok = load_tokenizer(path, length, "huggingface", pad_token)
    assert isinstance(tok, HfTokenizer)
    texts = corpus_texts()
    ids, truncated = tok.encode_batch(texts)
    assert ids.shape == (len(texts), length) and ids.dtype == np.int64
    pad = source.token_to_id(pad_token or "[PAD]")
    begin, finish = [source.token_to_id(start)], [source.token_to_id(end)]
    for row, text in enumerate(texts):
        assert ids[row].tolist() == _reference(source, text, length, begin, finish, pad), repr(text)
    assert any(truncated) and not all(truncated)
    with_specials = [len(source.encode(t).ids) for t in texts]
    assert truncated == [n > length for n in with_specials]
    assert tok.decode(tok.encode_batch(["a red circle"])[0][0]).replace(" ", "") == "aredcircle"


def test_a_tokenizer_without_a_pad_token_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    _roberta_like().save(str(path))
    with pytest.raises(BundleError, match=r"declares no padding: name its pad token in the manifest"):
        load_tokenizer(path, 16, "huggingface")
    with pytest.raises(BundleError, match="no padding token '<nope>'"):
        load_tokenizer(path, 16, "huggingface", "<nope>")
    with pytest.raises(BundleError, match="tokenizer kind 'sentencepiece' is not one of"):
        load_tokenizer(path, 16, "sentencepiece")


def test_clip_kind_stays_the_clip_tokenizer() -> None:
    path = Path(__file__).resolve().parents[2] / "models" / "default" / "tokenizer.json"
    assert isinstance(load_tokenizer(path, 48), ClipTokenizer)
