"""Decoding a video file with PyAV into sampled frames ready to send, and the refusals of bad files.

Decoding is streamed: frames are decoded one at a time, the kept ones are scaled down and JPEG-encoded
at once, and nothing else is held, so memory stays bounded whatever the video's length. Every way a file
can be unusable raises `VideoError` with its own `reason` and a message that says what to do:

| reason | when |
|---|---|
| `corrupt` | the container or a packet cannot be read (not a video, damaged data) |
| `truncated` | the file ends well before the duration its header gives (a partial download or copy) |
| `no_video` | the file has no video stream (audio only, subtitles) |
| `unsupported_codec` | the video stream's codec has no decoder in this build of FFmpeg |
| `too_long` | longer than `VideoOptions.max_seconds` |
| `too_many_frames` | more sampled frames than `VideoOptions.max_frames` |

The status code of all of them is INVALID_ARGUMENT: the input is at fault, and sending it again fails
the same way. The gateway checks the duration and frame limits again with its own settings.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
import grpc
import numpy as np
from PIL import Image

from crossmodal.video.sampling import THUMB_SIDE, VIDEO_SUFFIXES, FrameSampler

__all__ = ["VIDEO_SUFFIXES", "SampledFrame", "VideoError", "VideoInfo", "VideoOptions", "probe", "sample_video"]
# 8-bit pixel formats whose first plane is the luma (grey) picture, with limited (16-235) or full range.
_LIMITED_LUMA = frozenset({"yuv420p", "yuv422p", "yuv444p", "nv12", "nv21"})
_FULL_LUMA = frozenset({"yuvj420p", "yuvj422p", "yuvj444p", "gray"})
# Luma samples averaged per thumbnail pixel and side: 4 x 4 is enough to see a cut and costs ~0.2 ms a frame.
_SUBSAMPLES = 4
# A file whose decoded frames end this many seconds (or two sampling intervals) before its stated
# duration is truncated; encoders leave the last frame up to a frame duration short of it.
_TRUNCATION_SLACK = 1.0


class VideoError(Exception):
    """A video file that cannot be ingested: `reason` says which kind of problem, the message what to do."""

    def __init__(self, reason: str, message: str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.code = code


@dataclass(frozen=True)
class VideoOptions:
    """How a video is sampled and the limits a file must meet."""

    # Regularly sampled frames per second (the default 1: one frame every second).
    rate: float = 1.0
    # Mean grey-level change (0-1) between consecutive frames that counts as a cut; 0 disables cut frames.
    scene_threshold: float = 0.12
    # Frames are scaled so that their longer side is at most this many pixels before they are sent.
    max_side: int = 384
    # JPEG quality of the frames sent.
    jpeg_quality: int = 90
    # Longest video accepted, in seconds.
    max_seconds: float = 4 * 3600.0
    # Most sampled frames of one video.
    max_frames: int = 20_000


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video."""

    duration: float
    width: int
    height: int
    codec: str
    container: str
    # Whether the file has a sound track (`audio_track` decodes it).
    audio: bool = False


@dataclass(frozen=True)
class SampledFrame:
    """One kept frame: its time, the frame as JPEG bytes, and whether a cut (not the rate) picked it."""

    seconds: float
    jpeg: bytes
    scene_change: bool


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except av.error.FileNotFoundError:
        raise
    except (av.error.FFmpegError, ValueError, UnicodeDecodeError) as exc:
        raise VideoError(
            "corrupt",
            f"{path.name}: not a readable video container ({_ffmpeg_reason(exc)}); the file is damaged, "
            "incomplete or not a video",
        ) from None


def _ffmpeg_reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kinds: list[str] = sorted({str(s.type) for s in container.streams}) or ["no streams"]
        raise VideoError("no_video", f"{path.name}: no video stream (it holds {', '.join(kinds)}); nothing to index")
    stream = container.streams.video[0]
    name = stream.codec_context.name if stream.codec_context is not None else ""
    if not name or name not in av.codecs_available:
        tag = getattr(stream.codec_context, "codec_tag", "") if stream.codec_context is not None else ""
        raise VideoError(
            "unsupported_codec",
            f"{path.name}: the video codec {name or tag or 'unknown'!r} has no decoder in this FFmpeg build; "
            "re-encode it to H.264 or VP9 (e.g. ffmpeg -i in -c:v libx264 out.mp4)",
        )
    return stream


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return 0.0


def probe(path: str | Path) -> VideoInfo:
    """The container's description of a video; raises VideoError when it cannot be used."""
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        return VideoInfo(
            _duration(container, stream),
            stream.width,
            stream.height,
            stream.codec_context.name,
            container.format.name,
            bool(container.streams.audio),
        )


def _check_length(path: Path, seconds: float, options: VideoOptions) -> None:
    if seconds > options.max_seconds:
        raise VideoError(
            "too_long",
            f"{path.name}: {seconds:.1f} s long; the limit is {options.max_seconds:g} s (cut it into parts, "
            "or raise the limit)",
        )


def sample_video(path: str | Path, options: VideoOptions = VideoOptions()) -> tuple[VideoInfo, Iterator[SampledFrame]]:
    """The video's description and its kept frames, decoded lazily in time order.

    The description is read (and the length checked) at once; the frames are decoded as the iterator is
    consumed, which raises VideoError mid-way for a file that turns out damaged or truncated.
    """
    path = Path(path)
    info = probe(path)
    _check_length(path, info.duration, options)
    return info, _frames(path, info, options)


def _target_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height, 1))
    # Even sizes: some pixel formats need them, and it costs nothing visible.
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def grey_thumbnail(frame: av.VideoFrame) -> np.ndarray:
    """The frame as a THUMB_SIDE x THUMB_SIDE full-range grey picture (uint8), for the scene-change test.

    Read straight from the luma plane of the usual 8-bit YUV formats: scaling every decoded frame of a
    720p video with swscale cost three times its decoding (1.9 ms against 0.55 ms a frame on 2 cores).
    """
    name = frame.format.name
    if name not in _LIMITED_LUMA and name not in _FULL_LUMA:
        return np.ascontiguousarray(frame.reformat(width=THUMB_SIDE, height=THUMB_SIDE, format="gray").to_ndarray())
    plane = frame.planes[0]
    luma = np.frombuffer(memoryview(plane), np.uint8).reshape(frame.height, plane.line_size)
    grid = THUMB_SIDE * _SUBSAMPLES
    rows = (np.arange(grid) * frame.height) // grid
    cols = (np.arange(grid) * frame.width) // grid
    means = luma[np.ix_(rows, cols)].reshape(THUMB_SIDE, _SUBSAMPLES, THUMB_SIDE, _SUBSAMPLES).mean(axis=(1, 3))
    if name in _LIMITED_LUMA:
        means = (means - 16.0) * (255.0 / 219.0)
    return np.clip(means, 0, 255).astype(np.uint8)


def _frames(path: Path, info: VideoInfo, options: VideoOptions) -> Iterator[SampledFrame]:
    sampler = FrameSampler(options.rate, options.scene_threshold)
    size = _target_size(info.width, info.height, options.max_side)
    kept = 0
    last = -1.0
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"  # frame threads: decoding is most of the cost of a large video
        try:
            for number, frame in enumerate(container.decode(stream)):
                seconds = float(frame.time) if frame.time is not None else number / float(stream.average_rate or 25)
                last = max(last, seconds)
                _check_length(path, seconds, options)
                why = sampler.offer(seconds, grey_thumbnail(frame))
                if why is None:
                    continue
                kept += 1
                if kept > options.max_frames:
                    raise VideoError(
                        "too_many_frames",
                        f"{path.name}: more than {options.max_frames} sampled frames; lower the rate or raise "
                        "the limit",
                    )
                image = frame.reformat(width=size[0], height=size[1], format="rgb24").to_image()
                buffer = io.BytesIO()
                image.save(buffer, "JPEG", quality=options.jpeg_quality)
                yield SampledFrame(seconds, buffer.getvalue(), why == "scene")
        except av.error.FFmpegError as exc:
            raise VideoError(
                "corrupt",
                f"{path.name}: damaged video data after {max(last, 0):.1f} s ({_ffmpeg_reason(exc)}); "
                "nothing of it was stored",
            ) from None
    if kept == 0 or (info.duration and last < info.duration - max(_TRUNCATION_SLACK, 2 / options.rate)):
        raise VideoError(
            "truncated",
            f"{path.name}: the frames end at {max(last, 0):.1f} s but the file says it lasts {info.duration:.1f} s; "
            "it was cut short (an incomplete download or copy?): nothing of it was stored",
        )


def audio_track(path: str | Path, sample_rate: int, max_seconds: float, chunk_bytes: int) -> Iterator[bytes]:
    """The video's first sound track as 16-bit mono PCM at `sample_rate`, in pieces of about `chunk_bytes`.

    Decoded lazily (a second pass over the file, after its frames); raises VideoError for damaged sound
    data or a track longer than `max_seconds`. A sound codec this FFmpeg cannot decode gives no samples.
    """
    path = Path(path)
    pending = bytearray()
    held = 0
    with _open(path) as container:
        if not container.streams.audio:
            return
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    pending += bytes(out.planes[0])[: out.samples * 2]
                    held += out.samples
                if held > max_seconds * sample_rate:
                    _check_length(path, held / sample_rate, VideoOptions(max_seconds=max_seconds))
                while len(pending) >= chunk_bytes:
                    yield bytes(pending[:chunk_bytes])
                    del pending[:chunk_bytes]
            for out in resampler.resample(None):
                pending += bytes(out.planes[0])[: out.samples * 2]
        except av.error.FFmpegError as exc:
            raise VideoError(
                "corrupt",
                f"{path.name}: damaged sound data after {held / sample_rate:.1f} s ({_ffmpeg_reason(exc)}); "
                "nothing of it was stored",
            ) from None
    if pending:
        yield bytes(pending)


def thumbnail_at(path: str | Path, seconds: float, size: int = 160) -> Image.Image | None:
    """The frame shown at `seconds`, scaled to fit `size` pixels; None when it cannot be decoded."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if seconds > 0 and stream.time_base:
                container.seek(int(seconds / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.time is None or frame.time + 1e-3 >= seconds:
                    image = frame.to_image()
                    image.thumbnail((size, size))
                    return image
    except (av.error.FFmpegError, IndexError, OSError, ValueError):
        return None
    return None
