"""Every check of a public request, run before anything is encoded, written or fanned out to a shard.

The rules themselves live in `services.common.limits`; this module applies them to the gateway's
messages, so a request the shards would refuse never reaches them (a 100,000-clause filter is refused
here, not copied to every shard).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from crossmodal.v1 import gateway_pb2, types_pb2
from services.common.limits import LimitError, Limits, check_filter, check_id, check_modality, check_vector
from services.common.placement import PART_MARKERS
from services.gateway.moments import AUDIO_DURATION_KEY, RESERVED_KEYS

if TYPE_CHECKING:
    from services.gateway.config import GatewayConfig

# Room kept in an item's metadata for what the gateway adds to every frame or window (its keys and the
# longest values: a 256-byte parent id, times and counts).
_FRAME_METADATA_BYTES = sum(len(k) for k in RESERVED_KEYS) + 256 + 8 * 16


def check_search(request: gateway_pb2.SearchRequest, limits: Limits, dim: int) -> None:
    """Refuse a search whose query, K, target or filter breaks a limit."""
    limits.check_k(request.k)
    check_modality(request.target, allow_unspecified=True)
    check_filter_message(request.filter)
    which = request.WhichOneof("query")
    if which is None:
        raise LimitError("the search has no query: set one of text, image, audio, vector or like_id")
    if which == "text":
        limits.check_text(request.text, "the query text")
    elif which == "image":
        limits.check_image(request.image, "the query image")
    elif which == "audio":
        limits.check_audio(request.audio, "the query sound")
    elif which == "vector":
        check_vector(np.asarray(request.vector.values, dtype=np.float32), dim, "the query vector")
    else:
        check_id(request.like_id, "like_id")


def check_filter_message(message: types_pb2.Filter) -> None:
    """Refuse a filter with too many or oversized clauses or tags."""
    check_filter(((c.key, c.any_of) for c in message.clauses), message.tags_all, message.tags_any)


def check_item(item: gateway_pb2.IngestRequest, limits: Limits) -> None:
    """Refuse an item without an id or content, or whose content or metadata breaks a limit."""
    check_id(item.id)
    _check_not_part(item.id)
    which = item.WhichOneof("content")
    if which is None:
        raise LimitError("the item has no content: set image, text or audio")
    if which == "text":
        limits.check_text(item.text, "the item text")
    elif which == "audio":
        limits.check_audio(item.audio, "the item sound")
        # The one reserved key a caller may set: its length, which the encoder's decoded length replaces.
        _check_not_reserved(
            {k: v for k, v in item.metadata.items() if k != AUDIO_DURATION_KEY}, f"sound {item.id[:40]!r}"
        )
    else:
        limits.check_image(item.image, "the item image")
    limits.check_metadata(item.metadata, item.tags)


def _check_not_part(item_id: str) -> None:
    for marker in PART_MARKERS:
        if marker in item_id:
            raise LimitError(
                f"id {item_id[:60]!r} contains {marker!r}, which names the frames of a video or the windows of a "
                "sound; choose another id"
            )


def _check_not_reserved(metadata: Mapping[str, str], name: str) -> None:
    reserved = sorted(set(metadata) & RESERVED_KEYS)
    if reserved:
        raise LimitError(f"{name}: metadata keys {reserved} are reserved for what the gateway stores")


def _check_part_metadata(metadata: Mapping[str, str], tags: Sequence[str], name: str, limits: Limits) -> None:
    """Refuse reserved keys, or metadata that leaves no room for what the gateway adds to each part."""
    _check_not_reserved(metadata, name)
    padded = Limits(max_metadata_bytes=max(limits.max_metadata_bytes - _FRAME_METADATA_BYTES, 0))
    try:
        padded.check_metadata(metadata, tags)
    except LimitError as exc:
        raise LimitError(
            f"{name}: {exc.message}, less {_FRAME_METADATA_BYTES} bytes each frame or window needs for its "
            "parent's id and its time"
        ) from None


def check_sample_rate(rate: int, name: str, config: GatewayConfig) -> None:
    """Refuse a PCM sample rate outside the gateway's range."""
    low, high = config.audio_min_sample_rate, config.audio_max_sample_rate
    if not low <= rate <= high:
        raise LimitError(
            f"{name}: sample rate {rate} Hz is outside {low}-{high} Hz "
            "(CROSSMODAL_GATEWAY_AUDIO_MIN_SAMPLE_RATE, _MAX_SAMPLE_RATE); resample it"
        )


def check_audio_header(header: gateway_pb2.AudioHeader, config: GatewayConfig) -> None:
    """Refuse a sound whose id, sample rate, length or metadata breaks a limit."""
    name = f"sound {header.id[:40]!r}"
    check_id(header.id, "the sound id")
    _check_not_part(header.id)
    check_sample_rate(header.sample_rate, name, config)
    duration = header.duration_seconds
    if not math.isfinite(duration) or duration < 0:
        raise LimitError(f"{name}: duration {duration} s is not a length")
    if duration > config.audio_max_seconds:
        raise LimitError(
            f"{name} is {duration:.1f} s long; the limit is {config.audio_max_seconds:g} s "
            "(CROSSMODAL_GATEWAY_AUDIO_MAX_SECONDS): cut it into parts"
        )
    _check_part_metadata(header.metadata, header.tags, name, config.limits)


def check_video_header(header: gateway_pb2.VideoHeader, config: GatewayConfig) -> None:
    """Refuse a video whose id, length, sampling interval, audio sample rate or metadata breaks a limit."""
    max_seconds = config.video_max_seconds
    check_id(header.id, "the video id")
    _check_not_part(header.id)
    duration = header.duration_seconds
    if not math.isfinite(duration) or duration < 0:
        raise LimitError(f"video {header.id[:40]!r}: duration {duration} s is not a length")
    if duration > max_seconds:
        raise LimitError(
            f"video {header.id[:40]!r} is {duration:.1f} s long; the limit is {max_seconds:g} s "
            "(CROSSMODAL_GATEWAY_VIDEO_MAX_SECONDS): cut it into parts"
        )
    interval = header.sample_interval_seconds
    if not math.isfinite(interval) or interval < 0 or interval > 3600:
        raise LimitError(f"video {header.id[:40]!r}: sample interval {interval} s is not 0-3600 s")
    if header.audio_sample_rate:
        check_sample_rate(header.audio_sample_rate, f"video {header.id[:40]!r}", config)
    # Every frame stores the video's metadata and the gateway's frame keys: that must fit in one item.
    _check_part_metadata(header.metadata, header.tags, f"video {header.id[:40]!r}", config.limits)


def check_video_frame(
    frame: gateway_pb2.VideoFrame, header: gateway_pb2.VideoHeader, previous: float, count: int, config: GatewayConfig
) -> None:
    """Refuse a frame past the frame limit or the video's length, out of time order, or too large."""
    name = f"video {header.id[:40]!r}"
    if count >= config.video_max_frames:
        raise LimitError(
            f"{name} has more than {config.video_max_frames} frames (CROSSMODAL_GATEWAY_VIDEO_MAX_FRAMES): "
            "sample fewer frames per second or cut it into parts"
        )
    seconds = frame.seconds
    if not math.isfinite(seconds) or seconds < previous:
        raise LimitError(f"{name}: frame {count} at {seconds} s is not after the previous one ({previous} s)")
    if seconds > config.video_max_seconds:
        raise LimitError(
            f"{name}: frame {count} at {seconds:.1f} s is past the limit of {config.video_max_seconds:g} s "
            "(CROSSMODAL_GATEWAY_VIDEO_MAX_SECONDS): cut it into parts"
        )
    if header.duration_seconds and seconds > header.duration_seconds + 1.0:
        raise LimitError(f"{name}: frame {count} at {seconds:.1f} s is past its duration {header.duration_seconds} s")
    config.limits.check_image(frame.image, f"{name}: frame {count}")
