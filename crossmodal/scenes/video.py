"""Generated videos with a known timeline: coloured shapes that enter, move across and leave at set times.

The ground truth of moment search: each `Appearance` says which object (colour and shape, words the
default model knows) is on screen from `start` to `end` seconds. `render_video` draws the frames with the
scene renderer's shapes and encodes them with PyAV (H.264 in MP4 or MKV or MOV, VP9 in WebM), streaming
frame by frame, so a long camera-sized video costs no more memory than a short one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import av
import numpy as np
from av.video.stream import VideoStream
from PIL import Image

from crossmodal.scenes.render import object_colour, shape_mask
from crossmodal.scenes.spec import COLOURS, HELD_OUT_PAIRS, SHAPES, ObjectSpec

# Codec per container suffix: what the PyAV wheels can encode and what each container usually holds.
CODECS = {".mp4": "libx264", ".mkv": "libx264", ".mov": "libx264", ".webm": "libvpx-vp9"}
# Plain, muted backgrounds; a tone too close to an object's colour is not used with it.
_TONES: tuple[tuple[int, int, int], ...] = ((244, 244, 244), (200, 200, 200), (128, 128, 128), (60, 60, 62))
_MIN_CONTRAST = 110.0
# Object diameter as a share of the frame's shorter side: large enough for a 64-pixel model to see.
_DIAMETER = 0.42


@dataclass(frozen=True)
class Appearance:
    """One object's time on screen: it enters at `start`, moves from `x0` to `x1`, and leaves at `end`."""

    colour: str
    shape: str
    start: float
    end: float
    x0: float
    x1: float
    y: float

    @property
    def query(self) -> str:
        """The words that describe it, as a search query."""
        return f"a {self.colour} {self.shape}"


@dataclass(frozen=True)
class VideoSpec:
    """A whole video: its length, background tone and the appearances on it."""

    duration: float
    background: tuple[int, int, int]
    appearances: tuple[Appearance, ...]


def _contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=np.float64)))


def video_spec(seed: int, duration: float = 16.0, objects: int = 2) -> VideoSpec:
    """A random timeline, deterministic by seed: `objects` distinct shapes, each on screen 3-6 s (less in a
    video too short for that).

    Colour and shape pairs the default model was trained on only (never its held-out pairs), and no two
    objects of one video share a colour or a shape, so each query has one true moment per video.
    """
    rng = np.random.default_rng([seed, 16])
    colours: set[str] = set()
    shapes: set[str] = set()
    appearances: list[Appearance] = []
    slot = duration / objects
    while len(appearances) < objects:
        colour = str(rng.choice(list(COLOURS)))
        shape = str(rng.choice(SHAPES))
        if colour in colours or shape in shapes or (colour, shape) in HELD_OUT_PAIRS:
            continue
        colours.add(colour)
        shapes.add(shape)
        # Each object gets its own slot of the video, so appearances neither overlap nor touch.
        n = len(appearances)
        low = min(3.0, 0.5 * slot)
        length = float(rng.uniform(low, max(low, min(6.0, slot - 1.0))))
        margin = min(0.5, (slot - length) / 2)
        start = round(n * slot + float(rng.uniform(margin, max(margin, slot - length - margin))), 1)
        left_to_right = bool(rng.integers(2))
        x0, x1 = (0.3, 0.7) if left_to_right else (0.7, 0.3)
        appearances.append(Appearance(colour, shape, start, round(start + length, 1), x0, x1, 0.5))
    tones = [t for t in _TONES if all(_contrast(t, COLOURS[c]) >= _MIN_CONTRAST for c in colours)] or [_TONES[0]]
    return VideoSpec(duration, tones[int(rng.integers(len(tones)))], tuple(appearances))


def frames(spec: VideoSpec, width: int, height: int, fps: int) -> Iterator[Image.Image]:
    """The video's frames in order, one RGB image per 1/fps seconds."""
    background = Image.new("RGB", (width, height), spec.background)
    side = min(width, height)
    radius = 0.5 * _DIAMETER * side
    box = int(2 * radius + 4)
    masks = {a.shape: shape_mask(a.shape, box, box / 2, box / 2, radius) for a in spec.appearances}
    for number in range(round(spec.duration * fps)):
        seconds = number / fps
        image = background.copy()
        for a in spec.appearances:
            if a.start <= seconds < a.end:
                progress = (seconds - a.start) / (a.end - a.start)
                cx = (a.x0 + (a.x1 - a.x0) * progress) * width
                cy = a.y * height
                obj = ObjectSpec(a.shape, a.colour, "large", 0.5, 0.5)
                image.paste(object_colour(obj), (int(cx - box / 2), int(cy - box / 2)), masks[a.shape])
        yield image


def render_video(
    spec: VideoSpec, path: Path, *, width: int = 192, height: int = 192, fps: int = 10, codec: str | None = None
) -> Path:
    """Encode the video to `path` (the container from its suffix) and return the path."""
    codec = codec or CODECS[path.suffix.lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = cast(VideoStream, container.add_stream(codec, rate=fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "veryfast", "crf": "23"}
        elif codec == "libvpx-vp9":
            stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0"}
        for image in frames(spec, width, height, fps):
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
