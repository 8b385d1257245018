"""Moments: the frames (or audio windows) a search found, merged into spans of videos or sounds.

Target MODALITY_VIDEO merges frames; target MODALITY_AUDIO merges the windows of long sounds and of videos'
audio tracks the same way, a window standing for its span (its `interval` is the clip length, so the moment
ends where its last window ends). A short sound stored whole is a moment of its own, 0 to its length.

A pure function over frame hits, so every rule is tested without a cluster. Per video, the frames
scoring within `margin` of that video's best frame match; matching frames at most `gap_factor` sampling
intervals apart (scene-change frames included, which only shorten the gaps) form one moment. A moment
spans from its first frame to one interval after its last (a frame stands for the time until the next
regular sample), cut at the video's end; its score is its best frame's. Moments of all videos are ranked
by score (ties: earlier start, then video id), and K counts moments, so one video may answer several.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from crossmodal.v1 import index_pb2
from services.common.placement import parent_of, video_of

# Metadata every stored frame carries beside its video's own.
VIDEO_ID_KEY = "video_id"
FRAME_SECONDS_KEY = "frame_seconds"
FRAME_INTERVAL_KEY = "frame_interval"
VIDEO_DURATION_KEY = "video_duration"
SCENE_CHANGE_KEY = "scene_change"
# Metadata of the video's own record: how many frames it has (what Delete and re-ingest remove).
VIDEO_FRAMES_KEY = "video_frames"
FRAME_KEYS = (VIDEO_ID_KEY, FRAME_SECONDS_KEY, FRAME_INTERVAL_KEY, VIDEO_DURATION_KEY, SCENE_CHANGE_KEY)
# What is left out of a moment's metadata: it describes one frame, not the video.
FRAME_ONLY_KEYS = (VIDEO_ID_KEY, FRAME_SECONDS_KEY, SCENE_CHANGE_KEY)

# Sounds: every sound (short item, window, record) carries its length; a window also its parent and span.
AUDIO_DURATION_KEY = "duration_seconds"
AUDIO_ID_KEY = "audio_id"
WINDOW_START_KEY = "window_start"
WINDOW_END_KEY = "window_end"
WINDOW_LENGTH_KEY = "window_length"
# Metadata of the record of a long sound or of a video with sound: how many audio windows it has.
AUDIO_WINDOWS_KEY = "audio_windows"
WINDOW_KEYS = (AUDIO_ID_KEY, WINDOW_START_KEY, WINDOW_END_KEY, WINDOW_LENGTH_KEY, AUDIO_DURATION_KEY)
WINDOW_ONLY_KEYS = (AUDIO_ID_KEY, VIDEO_ID_KEY, WINDOW_START_KEY, WINDOW_END_KEY, WINDOW_LENGTH_KEY)
# Keys the gateway writes on records, frames and windows: refused in the metadata callers send.
RESERVED_KEYS = frozenset({*FRAME_KEYS, VIDEO_FRAMES_KEY, *WINDOW_KEYS, AUDIO_WINDOWS_KEY})


@dataclass(frozen=True)
class Frame:
    """One frame hit: its video, time, score, the video's sampling interval and length (0: unknown)."""

    video: str
    seconds: float
    score: float
    interval: float
    duration: float
    hit: index_pb2.SearchHit | None = None


@dataclass(frozen=True)
class Moment:
    """A span of a video: start and end seconds, the best frame's time and score, and that frame."""

    video: str
    start: float
    end: float
    best_seconds: float
    score: float
    best: Frame


def frame_of(hit: index_pb2.SearchHit) -> Frame | None:
    """The frame a hit is, or None when it is not a frame (the record of a whole video)."""
    video = hit.metadata.get(VIDEO_ID_KEY)
    if not video or video_of(hit.id) != video:
        return None
    try:
        seconds = float(hit.metadata[FRAME_SECONDS_KEY])
        interval = float(hit.metadata.get(FRAME_INTERVAL_KEY, "1"))
        duration = float(hit.metadata.get(VIDEO_DURATION_KEY, "0"))
    except (KeyError, ValueError):
        return None
    return Frame(video, seconds, hit.score, interval, duration, hit)


def sound_of(hit: index_pb2.SearchHit) -> Frame | None:
    """What an audio hit stands for in a moment search: a window of its parent, a short sound whole, or None
    for the record of a long sound (its windows answer for it)."""
    if AUDIO_WINDOWS_KEY in hit.metadata:
        return None
    try:
        duration = float(hit.metadata.get(AUDIO_DURATION_KEY, "0"))
        parent = parent_of(hit.id)
        if parent is None:
            return Frame(hit.id, 0.0, hit.score, max(duration, 0.0), duration, hit)
        start = float(hit.metadata[WINDOW_START_KEY])
        length = float(hit.metadata[WINDOW_LENGTH_KEY])
    except (KeyError, ValueError):
        return None
    return Frame(parent, start, hit.score, length, duration, hit)


def merge_moments(frames: Iterable[Frame], k: int, margin: float, gap_factor: float = 1.5) -> list[Moment]:
    """The K best moments made of `frames` (any order, several videos)."""
    by_video: dict[str, list[Frame]] = {}
    for frame in frames:
        by_video.setdefault(frame.video, []).append(frame)
    moments: list[Moment] = []
    for video, found in by_video.items():
        best = max(f.score for f in found)
        # One frame per time (a frame found twice, e.g. from a stale copy, counts once).
        matching = sorted({f.seconds: f for f in found if f.score >= best - margin}.values(), key=lambda f: f.seconds)
        run: list[Frame] = []
        for frame in matching:
            if run and frame.seconds - run[-1].seconds > gap_factor * frame.interval:
                moments.append(_moment(video, run))
                run = []
            run.append(frame)
        moments.append(_moment(video, run))
    moments.sort(key=lambda m: (-m.score, m.start, m.video))
    return moments[:k]


def _moment(video: str, run: list[Frame]) -> Moment:
    top = max(run, key=lambda f: (f.score, -f.seconds))
    last = run[-1]
    end = last.seconds + last.interval
    if last.duration > 0:
        end = min(end, last.duration)
    return Moment(video, run[0].seconds, max(end, last.seconds), top.seconds, top.score, top)
