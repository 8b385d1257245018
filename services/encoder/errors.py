"""Errors the encoder domain raises; the servicer maps each class to one gRPC status code.

Besides these, the servicer's table maps the shared `LimitError` (an input over a contract limit) and
the batcher's `QueueFullError` and `BatcherClosedError`.
"""

from __future__ import annotations


class EncoderError(Exception):
    """Base class of the encoder's own errors."""


class InvalidItemError(EncoderError):
    """An item the tower cannot encode: no content, the other modality, or an image that does not decode."""


class EncoderNotReadyError(EncoderError):
    """A call arrived before the bundle was loaded and warmed up; retry shortly."""


class InferenceError(EncoderError):
    """The onnxruntime call of a batch failed; a bug or a broken model, not the caller's fault."""
