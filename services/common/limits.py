"""The contract's limits and the checks that enforce them, in one place for every service.

The gateway checks a whole request here before it encodes or fans anything out; the encoders and the
index shards run the same checks on what they are sent directly, so an internal caller cannot store
what the public API would refuse. The settable limits are one setting each (`CROSSMODAL_MAX_K`, ...),
read by every service from the same variable, so the gateway and the shards cannot disagree. The fixed
ones are part of the API (documented in `protos/crossmodal/v1/`) and change only with it.

Every check raises `LimitError` with a message that says what was wrong and what the limit is; each
service maps it to INVALID_ARGUMENT in its error table.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from crossmodal.v1 import types_pb2
from services.common.config import setting

MODALITIES = (
    int(types_pb2.MODALITY_IMAGE),
    int(types_pb2.MODALITY_TEXT),
    int(types_pb2.MODALITY_VIDEO),
    int(types_pb2.MODALITY_AUDIO),
)
MAX_ID_BYTES = 256
MAX_TAGS = 64
MAX_FILTER_CLAUSES = 16
MAX_FILTER_KEY_BYTES = 128
MAX_FILTER_VALUES = 64
MAX_FILTER_VALUE_BYTES = 1024
MAX_FILTER_TAGS_ALL = 16
MAX_FILTER_TAGS_ANY = 64


class LimitError(ValueError):
    """An input breaks a limit of the contract; the message says which and how to fix it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclasses.dataclass(frozen=True)
class Limits:
    """The settable limits, one environment variable each, read alike by every service."""

    max_k: int = setting("MAX_K", 1000, "Largest K a search may ask for.", min=1, max=100_000)
    max_batch: int = setting(
        "MAX_BATCH", 1000, "Most ids in one Delete or Get, or items in one internal upsert.", min=1, max=100_000
    )
    max_text_chars: int = setting("MAX_TEXT_CHARS", 2048, "Longest query or item text, in characters.", min=1)
    max_image_bytes: int = setting("MAX_IMAGE_BYTES", 20 * 1024 * 1024, "Largest query or item image, in bytes.", min=1)
    max_audio_bytes: int = setting(
        "MAX_AUDIO_BYTES", 20 * 1024 * 1024, "Largest sound file sent to the audio encoder, in bytes.", min=1
    )
    max_metadata_bytes: int = setting(
        "MAX_METADATA_BYTES", 4096, "Most bytes of metadata (keys, values and tags together) per item.", min=0
    )

    def check_k(self, k: int) -> None:
        """Refuse a K above the limit (0 means the default, which the caller fills in)."""
        if k < 0:
            raise LimitError(f"k={k} is negative")
        if k > self.max_k:
            raise LimitError(f"k={k} is above the limit of {self.max_k} (CROSSMODAL_MAX_K)")

    def check_batch(self, count: int, what: str = "ids") -> None:
        """Refuse an empty batch or one above CROSSMODAL_MAX_BATCH."""
        if count == 0:
            raise LimitError(f"no {what} given")
        if count > self.max_batch:
            raise LimitError(f"{count} {what}; the limit is {self.max_batch} (CROSSMODAL_MAX_BATCH)")

    def check_ids(self, ids: Sequence[str]) -> list[str]:
        """Refuse an empty or oversized list of ids, or any bad id; the ids as a list."""
        self.check_batch(len(ids))
        for item_id in ids:
            check_id(item_id)
        return list(ids)

    def check_text(self, text: str, what: str = "the text") -> None:
        """Refuse blank text or text above CROSSMODAL_MAX_TEXT_CHARS."""
        if not text.strip():
            raise LimitError(f"{what} is empty")
        if len(text) > self.max_text_chars:
            raise LimitError(
                f"{what} has {len(text)} characters; the limit is {self.max_text_chars} "
                "(CROSSMODAL_MAX_TEXT_CHARS); shorten it"
            )

    def check_image(self, data: bytes, what: str = "the image") -> None:
        """Refuse empty image bytes or more than CROSSMODAL_MAX_IMAGE_BYTES."""
        if not data:
            raise LimitError(f"{what} is empty")
        if len(data) > self.max_image_bytes:
            raise LimitError(
                f"{what} has {len(data)} bytes; the limit is {self.max_image_bytes} "
                "(CROSSMODAL_MAX_IMAGE_BYTES); send a smaller or more compressed file"
            )

    def check_audio(self, data: bytes, what: str = "the sound") -> None:
        """Refuse empty audio bytes or more than CROSSMODAL_MAX_AUDIO_BYTES."""
        if not data:
            raise LimitError(f"{what} is empty (0 bytes); send the bytes of an audio file")
        if len(data) > self.max_audio_bytes:
            raise LimitError(
                f"{what} has {len(data)} bytes; the limit is {self.max_audio_bytes} "
                "(CROSSMODAL_MAX_AUDIO_BYTES); send a shorter or more compressed file"
            )

    def check_metadata(self, metadata: Mapping[str, str], tags: Iterable[str]) -> None:
        """Refuse empty keys or tags, more than MAX_TAGS tags, or more than CROSSMODAL_MAX_METADATA_BYTES."""
        total = 0
        for key, value in metadata.items():
            if not key:
                raise LimitError("metadata has an empty key")
            total += utf8_len(key) + utf8_len(value)
        count = 0
        for tag in tags:
            if not tag:
                raise LimitError("tags contain an empty tag")
            total += utf8_len(tag)
            count += 1
        if count > MAX_TAGS:
            raise LimitError(f"{count} tags; the limit is {MAX_TAGS}")
        if total > self.max_metadata_bytes:
            raise LimitError(
                f"metadata and tags take {total} bytes; the limit is {self.max_metadata_bytes} "
                "(CROSSMODAL_MAX_METADATA_BYTES)"
            )


def utf8_len(text: str) -> int:
    """Length of `text` in UTF-8 bytes."""
    return len(text.encode("utf-8"))


def check_id(item_id: str, what: str = "id") -> None:
    """Refuse ids that are empty or longer than MAX_ID_BYTES."""
    if not item_id:
        raise LimitError(f"{what} is empty: give every item an id of 1-{MAX_ID_BYTES} bytes")
    if utf8_len(item_id) > MAX_ID_BYTES:
        raise LimitError(f"{what} {item_id[:40]!r}... is longer than {MAX_ID_BYTES} bytes")


def check_filter(
    clauses: Iterable[tuple[str, Sequence[str]]], tags_all: Sequence[str], tags_any: Sequence[str]
) -> None:
    """Refuse filters with too many or oversized clauses, values or tags, or empty keys or tags."""
    for count, (key, values) in enumerate(clauses, start=1):
        # Counted before each clause is read, so a 100,000-clause filter is refused at the 17th.
        if count > MAX_FILTER_CLAUSES:
            raise LimitError(f"more than {MAX_FILTER_CLAUSES} filter clauses")
        if not key or utf8_len(key) > MAX_FILTER_KEY_BYTES:
            raise LimitError(f"filter key must be 1-{MAX_FILTER_KEY_BYTES} bytes")
        if not 1 <= len(values) <= MAX_FILTER_VALUES:
            raise LimitError(f"filter clause on {key[:40]!r} needs 1-{MAX_FILTER_VALUES} values")
        if any(utf8_len(v) > MAX_FILTER_VALUE_BYTES for v in values):
            raise LimitError(f"a filter value is longer than {MAX_FILTER_VALUE_BYTES} bytes")
    if len(tags_all) > MAX_FILTER_TAGS_ALL and len(set(tags_all)) > MAX_FILTER_TAGS_ALL:
        raise LimitError(f"more than {MAX_FILTER_TAGS_ALL} tags in tags_all")
    if len(tags_any) > MAX_FILTER_TAGS_ANY and len(set(tags_any)) > MAX_FILTER_TAGS_ANY:
        raise LimitError(f"more than {MAX_FILTER_TAGS_ANY} tags in tags_any")
    if any(not t for t in tags_all) or any(not t for t in tags_any):
        raise LimitError("filter tags must not be empty")


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in float32 (cosine is unchanged; i8 quantisation needs values in [-1, 1])."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)


def check_vector(vector: np.ndarray, dim: int, what: str = "vector") -> None:
    """Refuse vectors of the wrong dimension, with NaN or Inf, or that float32 cannot scale to unit length."""
    if vector.ndim != 1 or vector.shape[0] == 0:
        raise LimitError(f"{what} is empty")
    if dim and vector.shape[0] != dim:
        raise LimitError(f"{what} has {vector.shape[0]} values; the collection's model has dimension {dim}")
    if not np.isfinite(vector).all():
        raise LimitError(f"{what} contains NaN or infinite values")
    norm = float(np.linalg.norm(vector.astype(np.float64)))
    if norm == 0.0 or not math.isfinite(norm):
        raise LimitError(f"{what} has zero length")
    # The shard normalises in float32: values whose squares overflow (|x| > ~1.8e19) or underflow
    # (|x| < ~1e-23) would become a zero, infinite or NaN vector there, and the graph would hold garbage.
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        unit_norm = float(np.linalg.norm(unit_rows(vector).astype(np.float64)))
    if not abs(unit_norm - 1.0) < 1e-3:
        raise LimitError(f"{what} cannot be scaled to unit length in float32 (length {norm:.3g}); send it normalised")


def check_modality(modality: int, allow_unspecified: bool) -> None:
    """Refuse unknown modality numbers (and MODALITY_UNSPECIFIED where an item needs one)."""
    if modality == 0 and allow_unspecified:
        return
    if modality not in MODALITIES:
        raise LimitError(f"modality {modality} is not MODALITY_IMAGE, MODALITY_TEXT, MODALITY_VIDEO or MODALITY_AUDIO")
