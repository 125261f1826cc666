"""DSP primitives behind SynthWorld, checked against naive reference implementations."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from course_lib.data import synth as S
from course_lib.data import synth_speech as V

SR = 16000


def rng(n: int, seed: int = 0) -> S.Rng:
    return S.Rng([np.random.default_rng([seed, i]) for i in range(n)])


def test_rng_streams_are_per_clip():
    a, b = rng(3).uniform(0, 1), S.Rng([np.random.default_rng([0, 1])]).uniform(0, 1)
    assert a[1] == b[0]                                          # clip 1 does not depend on clips 0 and 2
    w = rng(2).white(100_000)
    assert w.dtype == np.float32 and abs(w.std() - 1) < 0.01 and abs(w.mean()) < 0.01


def test_scatter_matches_loop():
    g = np.random.default_rng(0)
    grains = g.standard_normal((2, 5, 7)).astype(np.float32)
    starts = np.array([[0, 3, 3, 95, 120], [10, 50, 99, 0, 1]])
    want = np.zeros((2, 100))
    for e in range(2):
        for k in range(5):
            for j in range(7):
                if starts[e, k] + j < 100:
                    want[e, starts[e, k] + j] += grains[e, k, j]
    np.testing.assert_allclose(S.scatter(100, starts, grains), want, rtol=1e-6, atol=1e-6)


def test_partials_matches_naive_sum():
    theta = np.linspace(0, 20, 500, dtype=np.float32)[None]
    env, step = np.exp(-theta / 10), np.exp(-theta / 30)
    amps = [np.float32(1.0), np.float32(0.0), np.float32(0.5)]
    want = sum(a * env * step ** k * np.sin((k + 1) * theta) for k, a in enumerate(amps))
    np.testing.assert_allclose(S.partials(theta, amps, env, step), want, atol=1e-5)


def test_lowpass_magnitude_agrees_with_butterworth():
    f = S.freqs(1024, SR)
    w, h = scipy.signal.freqz(*scipy.signal.butter(2, 1000, fs=SR), worN=f[0], fs=SR)
    # analog prototype vs bilinear transform: close well below Nyquist
    low = f[0] < 3000
    np.testing.assert_allclose(S.lowpass(f, 1000.0, 2)[0, low], np.abs(h[low]), atol=0.03)


def test_resonance_peaks_at_formant():
    f = S.freqs(16000, SR)
    mag = S.resonance(f, np.float32(700), np.float32(80))[0]
    assert abs(f[0, np.argmax(mag)] - 700) < 10


def test_notes_end_exactly_after_release():
    dt = S.time_grid(SR, SR)
    y = S.voice("piano", S.col([220.0]), S.col([0.8]), S.col([0.3]), dt, SR)
    end = int((0.3 + S.RELEASE) * SR) + 1
    assert np.abs(y[0, :end]).max() > 0.1 and not y[0, end:].any()


@pytest.mark.parametrize("kind", S.DRUMS)
def test_drums_normalised_to_level(kind):
    y, a = S.drum(kind, rng(2), SR, SR)
    np.testing.assert_allclose(np.abs(y).max(-1), a["level"], rtol=1e-5)
    assert y.dtype == np.float32


def test_unknown_names_fail_with_the_choices():
    with pytest.raises(ValueError, match="kick"):
        S.drum("cowbell", rng(1), SR, SR)
    with pytest.raises(ValueError, match="piano"):
        S.voice("tuba", S.col([220.0]), S.col([1.0]), S.col([0.5]), S.time_grid(100, SR), SR)
    with pytest.raises(ValueError, match="rain"):
        S.texture("thunder", rng(1), SR, SR)


def test_glottal_pulse_is_zero_mean_per_period():
    ph = np.linspace(0, 10, 10_000, endpoint=False)[None]
    g = V.glottal(ph, np.float32(0.5))
    assert abs(g.mean()) < 0.01 * np.abs(g).max()             # a flow derivative: the flow returns to zero
