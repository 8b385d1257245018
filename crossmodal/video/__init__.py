"""Video in the SDK: decoding with PyAV, frame sampling with scene changes, and the errors of bad files."""

from crossmodal.video.decode import (
    VIDEO_SUFFIXES,
    SampledFrame,
    VideoError,
    VideoInfo,
    VideoOptions,
    probe,
    sample_video,
    thumbnail_at,
)
from crossmodal.video.sampling import FrameSampler, change_score

__all__ = [
    "VIDEO_SUFFIXES",
    "FrameSampler",
    "SampledFrame",
    "VideoError",
    "VideoInfo",
    "VideoOptions",
    "change_score",
    "probe",
    "sample_video",
    "thumbnail_at",
]
