"""Text tokenizers on the `tokenizers` library: CLIP's, token-for-token identical to open_clip's, and any
Hugging Face ``tokenizer.json`` (SigLIP, multilingual CLIP, CLAP's RoBERTa) with its own special tokens.

open_clip tokenizes in three stages: clean the text (ftfy, HTML unescape twice, collapse
whitespace, lower-case), split it with one regular expression, then byte-level BPE with a
``</w>`` end-of-word suffix. The BPE stage runs in Rust from ``tokenizer.json``; the first two
run here in Python with the very same libraries (``ftfy`` and ``regex``), because the
``tokenizers`` normalizers cannot reproduce ftfy and its regex engine (Oniguruma) need not agree
with Python's ``regex`` module on every Unicode class. Splitting here and passing the words
as pre-tokenized input keeps the ids identical to open_clip's on any input.

The ``tokenizer.json`` written by :func:`build_tokenizer` is also self-contained: loaded on its
own by ``tokenizers`` it applies the same split pattern and BPE (without ftfy cleaning).
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import json
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import ftfy
import numpy as np
import regex
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from crossmodal.bundle.errors import BundleError

SOT_TOKEN = "<start_of_text>"
EOT_TOKEN = "<end_of_text>"
END_OF_WORD = "</w>"
PAD_ID = 0
# open_clip's shipped vocabulary holds 49152 - 256 - 2 merges after its header line.
FULL_VOCAB_MERGES = 49152 - 256 - 2
OPEN_CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
_WORD_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Map every byte to a printable character, the byte-level alphabet CLIP's BPE works on."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def clean_text(text: str) -> str:
    """Clean text exactly as open_clip's default ('lower') tokenizer does before splitting it."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).strip().lower()


def _split_pattern(special_tokens: Sequence[str]) -> str:
    return "|".join([*(regex.escape(t) for t in special_tokens), _WORD_PATTERN])


def open_clip_bpe_path() -> Path:
    """Locate open_clip's shipped BPE merges file without importing open_clip (and torch)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise BundleError("open_clip is not installed; install the `export` extra or pass a tokenizer.json")
    path = Path(next(iter(spec.submodule_search_locations))) / OPEN_CLIP_BPE_FILE
    if not path.is_file():
        raise BundleError("open_clip's BPE vocabulary is missing", path=str(path))
    return path


def read_bpe_merges(path: Path | None = None, limit: int | None = None) -> list[tuple[str, str]]:
    """Read BPE merges from an open_clip-style gzip file (first line is a header), in rank order.

    ``limit`` keeps only the first ``limit`` merges: this is how a reduced vocabulary is made
    (every text stays encodable because the 512 byte symbols are always in the vocabulary).
    """
    source = path or open_clip_bpe_path()
    with gzip.open(source) as fh:
        lines = fh.read().decode("utf-8").split("\n")
    count = FULL_VOCAB_MERGES if limit is None else min(limit, FULL_VOCAB_MERGES)
    merges = []
    for line in lines[1 : 1 + count]:
        parts = line.split()
        if len(parts) != 2:
            raise BundleError(f"malformed merge line {line!r}", path=str(source))
        merges.append((parts[0], parts[1]))
    return merges


def write_bpe_merges(path: Path, merges: Sequence[tuple[str, str]]) -> None:
    """Write merges as an open_clip-style gzip file (for ``SimpleTokenizer(bpe_path=...)``)."""
    # No trailing newline: open_clip would read the empty last line as one more (empty) token.
    body = "#version: crossmodal\n" + "\n".join(f"{a} {b}" for a, b in merges)
    with gzip.open(path, "wb") as fh:
        fh.write(body.encode("utf-8"))


def clip_vocab(merges: Sequence[tuple[str, str]], special_tokens: Sequence[str]) -> list[str]:
    """Return the vocabulary in id order: bytes, bytes with ``</w>``, one token per merge, specials."""
    base = list(bytes_to_unicode().values())
    vocab = base + [b + END_OF_WORD for b in base] + ["".join(m) for m in merges]
    return vocab + list(special_tokens)


def build_tokenizer(
    merges: Sequence[tuple[str, str]] | None = None,
    *,
    extra_special_tokens: Sequence[str] = (),
) -> Tokenizer:
    """Build a CLIP BPE ``tokenizers.Tokenizer`` from merges (default: open_clip's full vocabulary).

    Ids follow open_clip's ``SimpleTokenizer`` built from the same merges: 256 byte symbols,
    the same 256 with ``</w>``, one id per merge in rank order, then ``<start_of_text>``,
    ``<end_of_text>`` and any extra special tokens. Save the result with ``.save(path)``.
    """
    merges = list(merges) if merges is not None else read_bpe_merges()
    specials = [SOT_TOKEN, EOT_TOKEN, *extra_special_tokens]
    vocab = clip_vocab(merges, specials)
    if len(set(vocab)) != len(vocab):
        raise BundleError("the BPE merges produce duplicate vocabulary entries")
    known = set(vocab)
    for rank, (left, right) in enumerate(merges):
        if left not in known or right not in known:
            raise BundleError(
                f"merge {rank} ({left!r}, {right!r}) uses a symbol that is neither a byte nor made "
                "by another merge; a reduced vocabulary must keep every merge its merges depend on"
            )
    ids = {token: i for i, token in enumerate(vocab)}
    tok = Tokenizer(models.BPE(vocab=ids, merges=merges, end_of_word_suffix=END_OF_WORD))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex("(?i)" + _split_pattern(specials)), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    # The end-of-word marker becomes the byte-level symbol for a space before bytes are restored.
    space = bytes_to_unicode()[ord(" ")]
    tok.decoder = decoders.Sequence([decoders.Replace(END_OF_WORD, space), decoders.ByteLevel()])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SOT_TOKEN} $A {EOT_TOKEN}",
        special_tokens=[(SOT_TOKEN, ids[SOT_TOKEN]), (EOT_TOKEN, ids[EOT_TOKEN])],
    )
    return tok


def write_tokenizer_json(path: Path, merges: Sequence[tuple[str, str]] | None = None) -> Path:
    """Write a ``tokenizer.json`` for ``merges`` (default: open_clip's full vocabulary); returns its path."""
    build_tokenizer(merges).save(str(path))
    return path


class ClipTokenizer:
    """Turns texts into fixed-length CLIP token id arrays; thread-safe, identical to open_clip's tokenizer."""

    def __init__(self, tokenizer: Tokenizer, context_length: int) -> None:
        if context_length < 2:
            raise ValueError(f"context_length must be at least 2, got {context_length}")
        # Words arrive already split by Python's `regex` (see the module docstring), so the
        # serving copy only maps bytes; re-splitting with Oniguruma could disagree on rare
        # Unicode classes and case folds.
        self._tok = Tokenizer.from_str(tokenizer.to_str())
        self._tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        self.context_length = context_length
        model = json.loads(tokenizer.to_str())["model"]
        if model.get("type") != "BPE" or model.get("end_of_word_suffix") != END_OF_WORD:
            raise BundleError(f"tokenizer is not a CLIP byte-level BPE with a {END_OF_WORD} suffix")
        sot = tokenizer.token_to_id(SOT_TOKEN)
        eot = tokenizer.token_to_id(EOT_TOKEN)
        if sot is None or eot is None:
            raise BundleError(f"tokenizer has no {SOT_TOKEN} / {EOT_TOKEN} tokens")
        self.sot_id: int = sot
        self.eot_id: int = eot
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        specials = [t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special]
        self._pattern = regex.compile(_split_pattern(specials), regex.IGNORECASE)

    @classmethod
    def from_file(cls, path: str | Path, context_length: int) -> ClipTokenizer:
        """Load a ``tokenizer.json`` written by :func:`build_tokenizer` (or the exporter)."""
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed files
            raise BundleError(f"not a loadable tokenizer.json ({exc})", path=str(path)) from exc
        try:
            return cls(tok, context_length)
        except BundleError as exc:
            raise BundleError(str(exc), path=str(path)) from exc

    def split_words(self, text: str) -> list[str]:
        """Clean ``text`` and split it into the words that BPE encodes, as open_clip does."""
        return list(self._pattern.findall(clean_text(text)))

    def encode_words(self, texts: Sequence[str]) -> list[list[int]]:
        """Return the unpadded BPE ids of each text, without start and end tokens."""
        words = [self.split_words(t) for t in texts]
        encodings = self._tok.encode_batch(words, is_pretokenized=True, add_special_tokens=False)
        return [e.ids for e in encodings]

    def encode_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        """Encode texts to int64 ids of shape (n, context_length) and whether each was truncated.

        Each row is ``<start_of_text> ids <end_of_text>`` padded with 0; a text too long keeps
        its first ``context_length - 2`` ids and the end token stays in the last slot.
        """
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        truncated: list[bool] = []
        room = self.context_length - 2
        for row, ids in enumerate(self.encode_words(texts)):
            truncated.append(len(ids) > room)
            ids = ids[:room]
            out[row, 0] = self.sot_id
            out[row, 1 : 1 + len(ids)] = ids
            out[row, 1 + len(ids)] = self.eot_id
        return out, truncated

    def decode(self, ids: Iterable[int]) -> str:
        """Turn ids back into (cleaned) text, dropping special tokens and padding."""
        return self._tok.decode([int(i) for i in ids if i != PAD_ID], skip_special_tokens=True).strip()

    def to_json(self) -> str:
        """Return the tokenizer as ``tokenizer.json`` text."""
        return self._tok.to_str()


TOKENIZER_KINDS = ("clip", "huggingface")


class HfTokenizer:
    """Turns texts into fixed-length id arrays with any Hugging Face ``tokenizer.json``; thread-safe.

    The file's own normalizer, pre-tokenizer, model and post-processor (its special tokens) apply, as in
    ``transformers``; a text too long is truncated to ``context_length`` ids with the post-processor's end
    tokens kept, and shorter ones are padded with ``pad_token`` (from the manifest, else the file's padding
    settings) up to ``context_length``.
    """

    def __init__(self, tokenizer: Tokenizer, context_length: int, pad_token: str | None = None) -> None:
        if context_length < 2:
            raise ValueError(f"context_length must be at least 2, got {context_length}")
        self._tok = Tokenizer.from_str(tokenizer.to_str())
        pad = pad_token or (self._tok.padding or {}).get("pad_token")
        pad_id = None if pad is None else self._tok.token_to_id(pad)
        if pad_id is None:
            raise BundleError(
                f"the tokenizer has no padding token {pad!r}: name one in the manifest's tokenizer.pad_token"
                if pad
                else "the tokenizer.json declares no padding: name its pad token in the manifest (tokenizer.pad_token)"
            )
        self.pad_id: int = pad_id
        self.context_length = context_length
        self._tok.enable_truncation(max_length=context_length)
        self._tok.enable_padding(length=context_length, pad_id=pad_id, pad_token=pad)
        self.vocab_size: int = self._tok.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_file(cls, path: str | Path, context_length: int, pad_token: str | None = None) -> HfTokenizer:
        """Load any Hugging Face ``tokenizer.json``."""
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed files
            raise BundleError(f"not a loadable tokenizer.json ({exc})", path=str(path)) from exc
        try:
            return cls(tok, context_length, pad_token)
        except BundleError as exc:
            raise BundleError(str(exc), path=str(path)) from exc

    def encode_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        """Encode texts to int64 ids of shape (n, context_length) and whether each was truncated."""
        encodings = self._tok.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64).reshape(len(texts), self.context_length)
        return ids, [bool(e.overflowing) for e in encodings]

    def decode(self, ids: Iterable[int]) -> str:
        """Turn ids back into text, dropping special tokens and padding."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True).strip()


TextTokenizer = ClipTokenizer | HfTokenizer


def load_tokenizer(
    path: str | Path, context_length: int, kind: str = "clip", pad_token: str | None = None
) -> TextTokenizer:
    """The bundle's tokenizer: CLIP's BPE (``kind="clip"``) or any Hugging Face ``tokenizer.json``."""
    if kind == "clip":
        return ClipTokenizer.from_file(path, context_length)
    if kind == "huggingface":
        return HfTokenizer.from_file(path, context_length, pad_token)
    raise BundleError(f"tokenizer kind {kind!r} is not one of {TOKENIZER_KINDS}", path=str(path))
