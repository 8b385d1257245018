"""The text tower: the contract's text limits, CLIP tokenization and the bundle's text model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from crossmodal.bundle import ModelBundle
from services.encoder.config import EncoderConfig
from services.encoder.engine import Prepared
from services.encoder.errors import InvalidItemError

# Texts one tokenizer call handles: the tokenizer batches in Rust, and one request rarely has more.
TOKENIZE_CHUNK = 64
# Up to this many characters in a request are tokenized on the event loop (~80 us; a pool hop costs more).
INLINE_CHARS = 256
WARMUP_TEXTS = ["a photo of a red circle", "Une photo d'un chien — très jolie 😀 " * 20]


class TextTower:
    """Checks and tokenizes texts, and runs the bundle's text tower."""

    preprocess_chunk = TOKENIZE_CHUNK

    def __init__(self, bundle: ModelBundle, config: EncoderConfig) -> None:
        self._bundle = bundle
        self._limits = config.limits

    def check(self, content: str) -> None:
        """Refuse blank texts and texts over CROSSMODAL_MAX_TEXT_CHARS (`LimitError`)."""
        self._limits.check_text(content)

    def cheap(self, contents: Sequence[str]) -> bool:
        """Short requests (a search's query) are tokenized on the event loop."""
        return sum(len(text) for text in contents) <= INLINE_CHARS

    def prepare(self, contents: Sequence[str]) -> list[Prepared | InvalidItemError]:
        """Tokenize texts to fixed-length id rows, flagging those cut to the model's context."""
        ids, truncated = self._bundle.tokenizer.encode_batch(list(contents))
        return [Prepared(row, cut) for row, cut in zip(ids, truncated, strict=True)]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run the text tower on token ids (n, context_length)."""
        return self._bundle.encode_text_ids(batch)

    def warmup_contents(self) -> list[str]:
        """A short text and one longer than the context."""
        return list(WARMUP_TEXTS)

    def describe(self) -> Mapping[str, int]:
        """The context length, in tokens."""
        return {"context_length": self._bundle.manifest.context_length}
