"""Procedural sounds with captions, deterministic by seed: the training and test data of the built-in audio tower.

A sound is a few events of one timbre (beep, hum, chirp, click, noise, bell) at one pitch (low, medium, high),
shaped by one loudness envelope (steady, fading, rising), repeated once, twice or three times, each event short
or long. Its caption names those five attributes ("a short fading high bell, three times"). Some attribute
combinations are held out of training (`HELD_OUT`), so that a test asks about sounds whose combination the
tower never heard, only its parts: every value of every attribute occurs in training.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

import numpy as np

TIMBRES: tuple[str, ...] = ("beep", "hum", "chirp", "click", "noise", "bell")
PITCHES: tuple[str, ...] = ("low", "medium", "high")
ENVELOPES: tuple[str, ...] = ("steady", "fading", "rising")
RHYTHMS: tuple[str, ...] = ("once", "twice", "three times")
DURATIONS: tuple[str, ...] = ("short", "long")
# Fundamental frequency ranges in Hz: each pitch an octave or more from the next, all below 4 kHz so that
# a bell's partials stay under the Nyquist frequency of 16 kHz audio.
PITCH_HZ: dict[str, tuple[float, float]] = {"low": (110.0, 220.0), "medium": (440.0, 700.0), "high": (1500.0, 2600.0)}
EVENT_SECONDS: dict[str, tuple[float, float]] = {"short": (0.12, 0.25), "long": (0.55, 0.8)}
RATE = 16_000
SECONDS = 4.0
# (timbre, pitch) pairs never rendered for training: about a fifth of the pairs, each timbre and pitch still
# heard with the other two. A test asks for exactly these.
HELD_OUT: frozenset[tuple[str, str]] = frozenset(
    {("beep", "high"), ("hum", "low"), ("chirp", "medium"), ("bell", "low")}
)
TEMPLATES: tuple[str, ...] = (
    "a {duration} {envelope} {pitch} {timbre}, {rhythm}",
    "the sound of a {duration} {envelope} {pitch} {timbre}, {rhythm}",
    "{rhythm}: a {duration} {pitch} {timbre}, {envelope}",
)


class Split(Enum):
    """Which combinations a set of sounds draws from."""

    TRAIN = "train"
    HELD_OUT = "held_out"


@dataclass(frozen=True)
class SoundSpec:
    """One sound: its five attributes, and the seed of the details that are not attributes."""

    timbre: str
    pitch: str
    envelope: str
    rhythm: str
    duration: str
    seed: int = 0

    @property
    def attributes(self) -> tuple[str, str, str, str, str]:
        """The attributes in caption order."""
        return (self.timbre, self.pitch, self.envelope, self.rhythm, self.duration)

    @property
    def held_out(self) -> bool:
        """Whether training never hears this combination."""
        return (self.timbre, self.pitch) in HELD_OUT


def caption(spec: SoundSpec, template: int = 0) -> str:
    """The sound's caption in one of the templates (0, the plainest, is what tests query with)."""
    return TEMPLATES[template % len(TEMPLATES)].format(
        duration=spec.duration, envelope=spec.envelope, pitch=spec.pitch, timbre=spec.timbre, rhythm=spec.rhythm
    )


def combinations(split: Split | None = None) -> list[SoundSpec]:
    """Every attribute combination (seed 0) of a split, or of both when ``split`` is None."""
    specs = [SoundSpec(*combo) for combo in itertools.product(TIMBRES, PITCHES, ENVELOPES, RHYTHMS, DURATIONS)]
    if split is None:
        return specs
    return [s for s in specs if s.held_out == (split is Split.HELD_OUT)]


def sample_specs(count: int, split: Split, seed: int) -> list[SoundSpec]:
    """``count`` sounds of a split, combinations drawn uniformly, each with its own rendering seed."""
    rng = np.random.default_rng([seed, 0 if split is Split.TRAIN else 1])
    pool = combinations(split)
    picks = rng.integers(len(pool), size=count)
    seeds = rng.integers(2**31, size=count)
    return [SoundSpec(*pool[int(p)].attributes, seed=int(s)) for p, s in zip(picks, seeds, strict=True)]


def _envelope(kind: str, n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n, endpoint=False)
    if kind == "fading":
        shape = np.exp(-5.0 * t)
    elif kind == "rising":
        shape = 0.05 + 0.95 * t**1.5
    else:
        shape = np.ones(n)
    # 5 ms ramps at both ends: no click where an event starts or stops, whatever the timbre.
    ramp = min(n // 2, int(0.005 * RATE))
    if ramp:
        shape[:ramp] *= np.linspace(0.0, 1.0, ramp)
        shape[-ramp:] *= np.linspace(1.0, 0.0, ramp)
    return shape


def _event(timbre: str, f0: float, n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / RATE
    if timbre == "beep":
        return np.sin(2 * np.pi * f0 * t)
    if timbre == "hum":
        # A buzzy tone: harmonics falling off slowly, with a slight vibrato.
        phase = 2 * np.pi * f0 * t + 0.3 * np.sin(2 * np.pi * 5.0 * t)
        return np.sum([np.sin(k * phase) / k for k in range(1, 8)], axis=0) / 1.8
    if timbre == "chirp":
        # An upward sweep over an octave during the event.
        sweep = f0 * (1.0 + t / max(t[-1], 1e-9))
        return np.sin(2 * np.pi * np.cumsum(sweep) / RATE)
    if timbre == "click":
        # A train of clicks (about 12 per second), each a decaying resonance at the pitch.
        out = np.zeros(n)
        ring = np.exp(-np.arange(int(0.02 * RATE)) / (0.003 * RATE)) * np.sin(
            2 * np.pi * f0 * np.arange(int(0.02 * RATE)) / RATE
        )
        period = int(RATE / rng.uniform(10.0, 14.0))
        for start in range(0, n, period):
            piece = ring[: n - start]
            out[start : start + piece.shape[0]] += piece
        return out
    if timbre == "noise":
        # White noise band-passed around the pitch (an octave wide), in the frequency domain.
        spectrum = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1.0 / RATE)
        spectrum *= np.exp(-0.5 * (np.log2(np.maximum(freqs, 1.0) / f0) / 0.35) ** 2)
        band = np.fft.irfft(spectrum, n)
        return band / (np.abs(band).max() + 1e-9)
    if timbre == "bell":
        # Inharmonic partials that decay, the higher ones faster.
        partials = ((1.0, 1.0, 2.0), (2.76, 0.6, 3.5), (5.40, 0.35, 6.0), (8.93, 0.2, 9.0))
        return np.sum([a * np.exp(-d * t) * np.sin(2 * np.pi * f0 * r * t) for r, a, d in partials], axis=0) / 1.6
    raise ValueError(f"unknown timbre {timbre!r}")


def render_sound(spec: SoundSpec) -> np.ndarray:
    """The sound as mono float32 at 16 kHz, ``SECONDS`` long, peak at most 1."""
    rng = np.random.default_rng([spec.seed, TIMBRES.index(spec.timbre), PITCHES.index(spec.pitch)])
    total = int(SECONDS * RATE)
    out = np.zeros(total)
    low, high = PITCH_HZ[spec.pitch]
    # Pitches drawn on a log scale, so that each pitch band is covered evenly by octaves.
    f0 = math.exp(rng.uniform(math.log(low), math.log(high)))
    count = RHYTHMS.index(spec.rhythm) + 1
    event = int(rng.uniform(*EVENT_SECONDS[spec.duration]) * RATE)
    gap = int(rng.uniform(0.15, 0.35) * RATE)
    span = count * event + (count - 1) * gap
    start = int(rng.uniform(0.05, max(0.06, SECONDS - span / RATE - 0.05)) * RATE)
    gain = rng.uniform(0.3, 0.9)
    for k in range(count):
        at = start + k * (event + gap)
        piece = _event(spec.timbre, f0, event, rng) * _envelope(spec.envelope, event)
        out[at : at + event] += gain * piece[: max(0, total - at)]
    out += rng.uniform(0.002, 0.01) * rng.standard_normal(total)
    peak = np.abs(out).max()
    return (out / peak if peak > 1.0 else out).astype(np.float32)


def sound_set(count: int, split: Split, seed: int) -> Iterator[tuple[SoundSpec, np.ndarray]]:
    """``count`` sounds of a split with their samples, rendered one at a time."""
    for spec in sample_specs(count, split, seed):
        yield spec, render_sound(spec)


def write_wav(path: str, samples: np.ndarray, rate: int = RATE) -> None:
    """Write mono float samples as a 16-bit PCM WAV file."""
    from crossmodal.bundle.audio import pcm16, wav_bytes  # noqa: PLC0415 (only the demo and tests write files)

    with open(path, "wb") as out:
        out.write(wav_bytes(pcm16(samples), rate))
