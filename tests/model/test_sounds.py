"""The sound synthesiser: deterministic, every attribute audible, and held-out combinations kept out of training."""

from __future__ import annotations

import numpy as np

from crossmodal.bundle import ModelBundle
from crossmodal.scenes import sounds
from crossmodal.scenes.sounds import SoundSpec, Split
from crossmodal.train.audio import additive_embedding, attribute_labels, caption_targets, one_hot
from tests.support import ROOT


def _events(samples: np.ndarray) -> int:
    """How many separate bursts of sound there are (20 ms frames above a tenth of the peak energy)."""
    frames = samples[: samples.shape[0] // 320 * 320].reshape(-1, 320)
    loud = (frames**2).mean(axis=1) > 0.1 * (frames**2).mean(axis=1).max()
    return int(np.count_nonzero(loud[1:] & ~loud[:-1]) + loud[0])


def _dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.argmax(spectrum) * sounds.RATE / samples.shape[0])


def test_rendering_is_deterministic_and_bounded() -> None:
    spec = SoundSpec("bell", "medium", "fading", "twice", "long", seed=5)
    a, b = sounds.render_sound(spec), sounds.render_sound(spec)
    assert a.dtype == np.float32 and a.shape == (int(sounds.SECONDS * sounds.RATE),)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a).max() <= 1.0
    assert not np.array_equal(a, sounds.render_sound(SoundSpec(*spec.attributes, seed=6)))


def test_rhythm_pitch_and_duration_are_audible() -> None:
    for rhythm, count in zip(sounds.RHYTHMS, (1, 2, 3), strict=True):
        for seed in range(3):
            beep = sounds.render_sound(SoundSpec("beep", "medium", "steady", rhythm, "long", seed=seed))
            assert _events(beep) == count, (rhythm, seed)
    pitches = [
        _dominant_hz(sounds.render_sound(SoundSpec("beep", p, "steady", "once", "long"))) for p in sounds.PITCHES
    ]
    for (low, high), hz in zip((sounds.PITCH_HZ[p] for p in sounds.PITCHES), pitches, strict=True):
        assert low - 5 <= hz <= high + 5
    loud = [
        np.count_nonzero(np.abs(sounds.render_sound(SoundSpec("hum", "low", "steady", "once", d))) > 0.05)
        for d in sounds.DURATIONS
    ]
    assert loud[1] > 2 * loud[0]


def test_held_out_combinations_never_reach_training_but_every_value_does() -> None:
    train = sounds.combinations(Split.TRAIN)
    held = sounds.combinations(Split.HELD_OUT)
    assert len(train) + len(held) == len(sounds.combinations()) == 324
    assert {(s.timbre, s.pitch) for s in held} == set(sounds.HELD_OUT)
    assert not any(s.held_out for s in sounds.sample_specs(500, Split.TRAIN, seed=0))
    for values in (sounds.TIMBRES, sounds.PITCHES, sounds.ENVELOPES, sounds.RHYTHMS, sounds.DURATIONS):
        assert set(values) <= {a for s in train for a in s.attributes}
    assert attribute_labels(SoundSpec("bell", "high", "rising", "three times", "short")) == [5, 2, 2, 2, 0]
    assert sounds.caption(held[0]) == "a short steady high beep, once"


def test_the_text_towers_vectors_of_held_out_captions_follow_from_their_words() -> None:
    """What the audio tower relies on: fitted on training captions only, the additive map predicts held-out ones."""
    bundle = ModelBundle.open(ROOT / "models" / "default", towers=("text",))
    weights = additive_embedding(bundle.encode_texts, sounds.combinations(Split.TRAIN))
    held = sounds.combinations(Split.HELD_OUT)
    onehots = np.array([one_hot(s) for s in held])
    predicted = onehots @ weights
    predicted /= np.linalg.norm(predicted, axis=1, keepdims=True)
    truth = caption_targets(bundle.encode_texts, held)
    assert float((predicted * truth).sum(axis=1).mean()) > 0.95
