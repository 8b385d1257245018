"""Frame sampling and scene-change detection, on synthetic thumbnails (no video file needed)."""

from __future__ import annotations

import numpy as np
import pytest

from crossmodal.video import FrameSampler, change_score

FLAT = np.full((32, 32), 100, dtype=np.uint8)
OTHER = np.full((32, 32), 200, dtype=np.uint8)


def test_regular_frames_fall_on_the_rate_grid() -> None:
    sampler = FrameSampler(rate=1.0, scene_threshold=0.0)
    kept = [t / 10 for t in range(0, 55) if sampler.offer(t / 10, FLAT) == "regular"]
    assert kept == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_a_late_frame_does_not_shift_the_grid() -> None:
    sampler = FrameSampler(rate=2.0, scene_threshold=0.0)
    times = [0.0, 0.7, 1.2, 1.5, 2.0]  # a gap from 0 to 0.7 skips the 0.5 slot
    assert [sampler.offer(t, FLAT) for t in times] == ["regular", "regular", "regular", "regular", "regular"]
    sampler = FrameSampler(rate=2.0, scene_threshold=0.0)
    assert [sampler.offer(t, FLAT) for t in (0.0, 0.2, 0.4, 0.5, 0.9)] == ["regular", None, None, "regular", None]


def test_a_cut_adds_a_scene_frame_between_regular_ones() -> None:
    sampler = FrameSampler(rate=1.0, scene_threshold=0.12)
    decisions = {}
    for n in range(30):
        t = n / 10
        decisions[t] = sampler.offer(t, FLAT if t < 1.5 else OTHER)
    assert decisions[1.5] == "scene"
    assert [t for t, why in decisions.items() if why] == [0.0, 1.0, 1.5, 2.0]


def test_cuts_closer_than_the_minimum_gap_are_skipped() -> None:
    sampler = FrameSampler(rate=1.0, scene_threshold=0.12, min_gap=0.25)
    pictures = [FLAT, FLAT, OTHER, FLAT, OTHER, OTHER, OTHER, FLAT]  # cuts at 0.2, 0.3, 0.4 and 0.7
    decisions = [sampler.offer(n / 10, p) for n, p in enumerate(pictures)]
    # 0.2 and 0.4 are within 0.25 s of the frame kept before them.
    assert decisions == ["regular", None, None, "scene", None, None, None, "scene"]


def test_change_score_is_the_mean_grey_difference() -> None:
    assert change_score(FLAT, FLAT) == 0.0
    assert change_score(FLAT, OTHER) == pytest.approx(100 / 255)
    half = FLAT.copy()
    half[:16] = 200
    assert change_score(FLAT, half) == pytest.approx(50 / 255)


def test_a_rate_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="above 0"):
        FrameSampler(rate=0, scene_threshold=0.1)
