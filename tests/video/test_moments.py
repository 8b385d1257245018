"""Span merging (services/gateway/moments.py): frames of several videos into ranked moments."""

from __future__ import annotations

from crossmodal.v1 import index_pb2
from services.gateway.moments import Frame, frame_of, merge_moments


def frames(video: str, scores: dict[float, float], interval: float = 1.0, duration: float = 0.0) -> list[Frame]:
    return [Frame(video, t, s, interval, duration) for t, s in scores.items()]


def spans(moments: list) -> list[tuple[str, float, float, float, float]]:
    return [(m.video, m.start, m.end, m.best_seconds, round(m.score, 3)) for m in moments]


def test_consecutive_frames_close_to_the_best_form_one_moment() -> None:
    found = frames("a", {4.0: 0.60, 5.0: 0.79, 6.0: 0.80, 7.0: 0.78, 8.0: 0.70})
    assert spans(merge_moments(found, k=5, margin=0.03)) == [("a", 5.0, 8.0, 6.0, 0.8)]


def test_a_gap_splits_a_video_into_several_moments_ranked_by_best_frame() -> None:
    found = frames("a", {1.0: 0.80, 2.0: 0.79, 5.0: 0.81, 6.0: 0.80})
    assert spans(merge_moments(found, k=5, margin=0.05)) == [("a", 5.0, 7.0, 5.0, 0.81), ("a", 1.0, 3.0, 1.0, 0.8)]


def test_gaps_up_to_one_and_a_half_intervals_are_bridged_and_scene_frames_count() -> None:
    # 2.0 -> 3.4 (a scene-change frame) -> 4.5: no gap above 1.5 s, one moment.
    found = frames("a", {2.0: 0.8, 3.4: 0.8, 4.5: 0.8})
    assert spans(merge_moments(found, k=5, margin=0.01)) == [("a", 2.0, 5.5, 2.0, 0.8)]
    # At 2 frames/s the same times are too far apart: three moments.
    found = frames("a", {2.0: 0.8, 3.4: 0.8, 4.5: 0.8}, interval=0.5)
    assert len(merge_moments(found, k=5, margin=0.01)) == 3


def test_k_counts_moments_across_videos() -> None:
    found = frames("a", {1.0: 0.9, 2.0: 0.9}) + frames("b", {1.0: 0.7}) + frames("c", {3.0: 0.8, 9.0: 0.8})
    moments = merge_moments(found, k=3, margin=0.0)
    assert [(m.video, m.start) for m in moments] == [("a", 1.0), ("c", 3.0), ("c", 9.0)]


def test_a_moment_ends_at_the_video_end_and_a_frame_seen_twice_counts_once() -> None:
    found = frames("a", {14.0: 0.8, 15.0: 0.8}, duration=15.4) + frames("a", {15.0: 0.8}, duration=15.4)
    assert spans(merge_moments(found, k=5, margin=0.0)) == [("a", 14.0, 15.4, 14.0, 0.8)]


def test_frame_of_reads_a_frame_hit_and_skips_a_video_record() -> None:
    meta = {"video_id": "clip#1.mp4", "frame_seconds": "12.500", "frame_interval": "0.5", "video_duration": "20"}
    frame = frame_of(index_pb2.SearchHit(id="clip#1.mp4#frame=25", score=0.5, metadata=meta))
    assert frame is not None
    assert (frame.video, frame.seconds, frame.interval, frame.duration) == ("clip#1.mp4", 12.5, 0.5, 20.0)
    record = index_pb2.SearchHit(id="clip#1.mp4", score=0.5, metadata={"video_frames": "40"})
    assert frame_of(record) is None
    # An id whose frame marker names another video is not taken for a frame of this one.
    assert frame_of(index_pb2.SearchHit(id="other#frame=3", metadata=meta)) is None
