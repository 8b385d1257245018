"""PyAV decoding of every supported container, scene cuts in a real file, and each refusal of a bad file."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from crossmodal.scenes.video import Appearance, VideoSpec, render_video
from crossmodal.video import VideoError, VideoOptions, probe, sample_video
from tests.video.conftest import make_video


@pytest.mark.parametrize(("suffix", "codec"), [(".mp4", "h264"), (".webm", "vp9"), (".mkv", "h264"), (".mov", "h264")])
def test_each_container_decodes_to_one_frame_per_second(tmp_path: Path, suffix: str, codec: str) -> None:
    path, _ = make_video(tmp_path, "clip" + suffix, seed=1, duration=8.0)
    info, frames = sample_video(path, VideoOptions(rate=1.0))
    kept = list(frames)
    assert (info.codec, info.width, info.height) == (codec, 192, 192)
    assert info.duration == pytest.approx(8.0, abs=0.15)
    assert [round(f.seconds, 1) for f in kept if not f.scene_change] == [float(n) for n in range(8)]
    # Frames are sent as JPEG, scaled to at most max_side.
    assert all(f.jpeg[:2] == b"\xff\xd8" for f in kept)


def test_a_higher_rate_and_a_smaller_side(tmp_path: Path) -> None:
    path, _ = make_video(tmp_path, "clip.mp4", seed=2, duration=4.0)
    _, frames = sample_video(path, VideoOptions(rate=2.0, scene_threshold=0.0, max_side=64))
    kept = list(frames)
    assert [f.seconds for f in kept] == pytest.approx([n / 2 for n in range(8)])
    import io

    from PIL import Image

    assert Image.open(io.BytesIO(kept[0].jpeg)).size == (64, 64)


def test_a_cut_in_a_real_video_adds_a_scene_frame(tmp_path: Path) -> None:
    # The background stays, but a large shape appears at 2.35 s and another replaces it at 4.55 s.
    spec = VideoSpec(
        6.0,
        (244, 244, 244),
        (
            Appearance("black", "square", 2.35, 4.55, 0.5, 0.5, 0.5),
            Appearance("yellow", "circle", 4.55, 6.0, 0.5, 0.5, 0.5),
        ),
    )
    path = render_video(spec, tmp_path / "cuts.mp4", fps=20)
    _, frames = sample_video(path, VideoOptions(rate=1.0, scene_threshold=0.05))
    scenes = [round(f.seconds, 2) for f in frames if f.scene_change]
    assert scenes == [2.35, 4.55]


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.mp4"
    path.write_bytes(np.random.default_rng(1).bytes(5000))
    with pytest.raises(VideoError, match="not a readable video container") as caught:
        sample_video(path)
    assert caught.value.reason == "corrupt"


def test_truncated_file(tmp_path: Path) -> None:
    path, _ = make_video(tmp_path, "clip.mkv", seed=3)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    info, frames = sample_video(cut)
    assert info.duration == pytest.approx(16.0, abs=0.15)  # the header still says 16 s
    with pytest.raises(VideoError, match="cut short") as caught:
        list(frames)
    assert caught.value.reason == "truncated"


def test_audio_only_file(tmp_path: Path) -> None:
    path = tmp_path / "sound.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for n in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, n * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(VideoError, match="no video stream .*audio") as caught:
        probe(path)
    assert caught.value.reason == "no_video"


def test_unsupported_codec(tmp_path: Path) -> None:
    path, _ = make_video(tmp_path, "clip.mp4", seed=4, duration=3.0)
    # The same file with its sample entry renamed from H.264 to a codec no FFmpeg knows.
    odd = tmp_path / "odd.mp4"
    odd.write_bytes(path.read_bytes().replace(b"avc1", b"zzz1"))
    with pytest.raises(VideoError, match="has no decoder") as caught:
        sample_video(odd)
    assert caught.value.reason == "unsupported_codec"


def test_too_long_and_too_many_frames(tmp_path: Path) -> None:
    path, _ = make_video(tmp_path, "clip.webm", seed=5, duration=8.0)
    with pytest.raises(VideoError, match="8.0 s long; the limit is 5 s") as long:
        sample_video(path, VideoOptions(max_seconds=5))
    assert long.value.reason == "too_long"
    _, frames = sample_video(path, VideoOptions(rate=4.0, max_frames=10))
    with pytest.raises(VideoError, match="more than 10 sampled frames") as many:
        list(frames)
    assert many.value.reason == "too_many_frames"


def test_the_luma_thumbnail_matches_a_scaled_grey_frame(tmp_path: Path) -> None:
    from crossmodal.video.decode import grey_thumbnail

    path, _ = make_video(tmp_path, "clip.mp4", seed=6, duration=3.0)
    with av.open(str(path)) as container:
        for n, frame in enumerate(container.decode(video=0)):
            if n in (0, 15):
                scaled = frame.reformat(width=32, height=32, format="gray").to_ndarray().astype(int)
                ours = grey_thumbnail(frame)
                assert ours.shape == (32, 32) and ours.dtype == np.uint8
                assert np.abs(ours.astype(int) - scaled).mean() < 4, n
