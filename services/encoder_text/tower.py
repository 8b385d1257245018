"""The text half of the encoder: length checks, CLIP tokenization and the text tower."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from crossmodal.bundle import ModelBundle
from crossmodal.v1 import encoder_pb2
from services.common.encoder import Prepared

# Texts one tokenizer call handles: the tokenizer batches in Rust, and one request rarely has more.
TOKENIZE_CHUNK = 64
WARMUP_TEXTS = ["a photo of a red circle", "Une photo d'un chien — très jolie 😀 " * 20]


class TextTower:
    """Checks and tokenizes texts, and runs the bundle's text tower."""

    name = "text"
    content_field = "text"
    preprocess_chunk = TOKENIZE_CHUNK

    def __init__(self, bundle: ModelBundle, max_chars: int) -> None:
        self._bundle = bundle
        self._max_chars = max_chars

    def check(self, content: str) -> str | None:
        """Reject empty texts and texts over the character limit."""
        if not content.strip():
            return "the text is empty (or only whitespace); send at least one word"
        if len(content) > self._max_chars:
            return (
                f"the text has {len(content)} characters, over the limit of {self._max_chars} "
                "(CROSSMODAL_ENCODER_MAX_TEXT_CHARS); shorten it"
            )
        return None

    def prepare(self, contents: Sequence[str]) -> list[Prepared | str]:
        """Tokenize texts to fixed-length id rows, flagging those cut to the model's context."""
        ids, truncated = self._bundle.tokenizer.encode_batch(list(contents))
        return [Prepared(row, cut) for row, cut in zip(ids, truncated, strict=True)]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run the text tower on token ids (n, context_length)."""
        return self._bundle.encode_text_ids(batch)

    def warmup_contents(self) -> list[str]:
        """A short text and one longer than the context."""
        return list(WARMUP_TEXTS)

    def describe(self, info: encoder_pb2.GetModelInfoResponse) -> None:
        """Report the context length."""
        info.context_length = self._bundle.manifest.context_length
