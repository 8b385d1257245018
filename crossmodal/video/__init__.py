"""Video in the SDK: decoding with PyAV (frames and sound track), frame sampling with scene changes, and the
errors of bad files."""

from crossmodal.video.decode import (
    VIDEO_SUFFIXES,
    SampledFrame,
    VideoError,
    VideoInfo,
    VideoOptions,
    audio_track,
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
    "audio_track",
    "change_score",
    "probe",
    "sample_video",
    "thumbnail_at",
]
