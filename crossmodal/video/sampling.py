"""Which decoded frames of a video are kept: one every 1/rate seconds, plus the first frame after a cut.

Pure logic over (time, small grey picture) pairs, so it is tested without any video file. A cut is a
frame whose picture differs from the previous decoded frame's by more than `scene_threshold` (the mean
absolute difference of 32 x 32 grey thumbnails, 0-1). Scene-change frames closer than `min_gap` seconds
to the last kept frame are skipped, so a flash or a fast pan does not flood the index.
"""

from __future__ import annotations

import numpy as np

# File suffixes `crossmodal ingest` takes as videos (MP4/M4V, MOV, MKV, WebM: whatever codec they hold).
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm"})
# Side of the grey thumbnail compared between consecutive frames.
THUMB_SIDE = 32


def change_score(previous: np.ndarray, current: np.ndarray) -> float:
    """How different two grey thumbnails (uint8) are: mean absolute difference scaled to 0-1."""
    return float(np.mean(np.abs(previous.astype(np.int16) - current.astype(np.int16)))) / 255.0


class FrameSampler:
    """Decides, frame by frame in time order, which frames to keep and why."""

    def __init__(self, rate: float, scene_threshold: float, min_gap: float = 0.25) -> None:
        if rate <= 0:
            raise ValueError(f"the sampling rate must be above 0 frames/s, not {rate}")
        self.interval = 1.0 / rate
        self.scene_threshold = scene_threshold
        self.min_gap = min_gap
        self._next_regular = 0.0
        self._last_kept: float | None = None
        self._previous: np.ndarray | None = None

    def offer(self, seconds: float, thumb: np.ndarray) -> str | None:
        """'regular' or 'scene' when the frame at `seconds` is kept, None when it is not."""
        previous, self._previous = self._previous, thumb
        if seconds + 1e-6 >= self._next_regular:
            # The next regular time is on the grid 0, 1/rate, 2/rate ...: a late frame does not shift it.
            steps = int((seconds + 1e-6 - self._next_regular) // self.interval) + 1
            self._next_regular += steps * self.interval
            self._last_kept = seconds
            return "regular"
        cut = (
            self.scene_threshold > 0
            and previous is not None
            and change_score(previous, thumb) > self.scene_threshold
            and (self._last_kept is None or seconds - self._last_kept >= self.min_gap)
        )
        if cut:
            self._last_kept = seconds
            return "scene"
        return None
