"""Speech-like syllables for SynthWorld: a source-filter voice with speaker identity.

A glottal pulse train (Rosenberg pulse, plus breath noise) goes through cascaded formant resonators
(Klatt-style, one resonance per formant). Formant transitions crossfade the outputs of four fixed
filters (closure, consonant locus, half-way, vowel): a piecewise-linear approximation of a moving
vocal tract that vectorizes, because each filter is a multiplication of the source's spectrum.
Plosive bursts and the /s/ frication are shaped noise added on top.

Speaker identity = mean pitch, vocal-tract length (formant scale) and breathiness; six speakers
are used for training and two are held out (``TRAIN_SPEAKERS``, ``HELDOUT_SPEAKERS``).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import scipy.fft as sfft

from course_lib.data.synth import (F32, TAU, Attrs, Rng, col, decay, freqs, highpass, lowpass, normalize, nyq_cap,
                              resonance, shaped_noise, time_grid, unit_rms)


class Speaker(NamedTuple):
    id: str
    sex: str                  # "man" | "woman" | "child"
    description: str          # used in captions
    f0_hz: float              # mean pitch
    formant_scale: float      # ~ 1 / vocal-tract length: children > women > men
    breathiness: float        # share of aspiration noise in the source, 0..1


SPEAKERS = (
    Speaker("spk0", "man", "a man with a deep voice", 98.0, 0.93, 0.05),
    Speaker("spk1", "man", "a man", 128.0, 1.0, 0.12),
    Speaker("spk2", "woman", "a woman", 205.0, 1.15, 0.10),
    Speaker("spk3", "woman", "a woman with a breathy voice", 235.0, 1.2, 0.45),
    Speaker("spk4", "child", "a child", 290.0, 1.32, 0.15),
    Speaker("spk5", "man", "a man with a husky voice", 112.0, 0.97, 0.40),
    Speaker("spk6", "woman", "a woman with a low voice", 178.0, 1.1, 0.2),      # held out
    Speaker("spk7", "man", "a man with a high voice", 150.0, 1.05, 0.08),       # held out
)
TRAIN_SPEAKERS, HELDOUT_SPEAKERS = (0, 1, 2, 3, 4, 5), (6, 7)

VOWELS = {"a": (730, 1090, 2440, 3400), "i": (270, 2290, 3010, 3700), "o": (570, 840, 2410, 3400),
          "u": (300, 870, 2240, 3400), "e": (530, 1840, 2480, 3500)}   # Peterson & Barney, adult male
BANDWIDTHS = (70.0, 100.0, 160.0, 250.0)
# consonant -> (manner, locus formants F1..F3 Hz, segment length s, burst/frication band (lo, hi) Hz, level)
CONSONANTS = {
    "b": ("voiced_stop", (250, 900, 2100), 0.06, (60, 1500), 0.08),
    "d": ("voiced_stop", (300, 1750, 2700), 0.06, (3000, 6000), 0.35),
    "k": ("voiceless_stop", (300, 1400, 1900), 0.07, (1300, 2500), 0.6),
    "m": ("nasal", (250, 900, 2100), 0.09, None, 0.0),
    "n": ("nasal", (280, 1700, 2600), 0.09, None, 0.0),
    "s": ("fricative", (300, 1700, 2700), 0.13, (3800, 8000), 0.45),
}
SYLLABLES = ("ba", "di", "ko", "mu", "sa", "ne")


def glottal(ph: np.ndarray, open_q: np.ndarray) -> np.ndarray:
    """Rosenberg glottal-flow derivative for phase ``ph`` (cycles); ``open_q``: opening share of a period."""
    x = (ph - np.floor(ph)).astype(F32)
    close = F32(0.16)
    rise = np.sin(np.pi * np.minimum(x / open_q, 1)) / open_q
    fall = -np.sin(F32(np.pi / 2) * np.clip((x - open_q) / close, 0, 1)) / close
    return np.where(x < open_q, rise, np.where(x < open_q + close, fall, F32(0))) * F32(0.1)


def syllable(syl: str, r: Rng, sr: int, T: int, speakers: Sequence[int] = TRAIN_SPEAKERS) -> tuple[np.ndarray, Attrs]:
    """Consonant+vowel syllable ``syl`` spoken by a speaker drawn from ``speakers`` (indices into SPEAKERS)."""
    manner, locus, seg, band, burst_level = CONSONANTS[syl[0]]
    spk = np.asarray(speakers)[r.integers(0, len(speakers))]
    table = np.array([(s.f0_hz, s.formant_scale, s.breathiness) for s in SPEAKERS])[spk]
    f0m, scale, breath = table[:, 0] * r.uniform(0.92, 1.08), table[:, 1] * r.uniform(0.97, 1.03), table[:, 2]
    rate = r.uniform(0.85, 1.15)
    dur = T / sr
    cons, vow = seg * rate, r.uniform(0.25, 0.35) * rate
    fit = np.minimum(1.0, (dur - 0.06) / (0.12 + cons + vow))           # short clips: speak faster
    t0, cons, vow = r.uniform(0.03, 0.1) * fit, cons * fit, vow * fit
    tv = t0 + cons                                                       # vowel onset
    tend, d_tr = tv + vow, 0.06 * fit
    t, f = time_grid(T, sr), freqs(T, sr)
    ct0, ctv, ctend = col(t0), col(tv), col(tend)

    # Source: pitch falls ~12 % over the syllable, with a little vibrato-like drift.
    b = -0.12 * f0m / (tend - t0)
    a0 = f0m * 1.06 - b * t0
    tt = t.astype(np.float64)
    ph = col(a0).astype(np.float64) * tt + col(b / 2).astype(np.float64) * tt * tt \
        + col(0.01 * f0m / (TAU * 4.5)) * (1 - np.cos(TAU * F32(4.5) * t))
    voiced_from = tv + (0.06 if manner == "voiceless_stop" else 0.0)
    av = np.clip((t - col(voiced_from)) / F32(0.015), 0, 1) * np.exp(-np.maximum(t - ctend, 0) / F32(0.04))
    if manner in ("voiced_stop", "nasal"):                               # voice bar / nasal murmur
        av = av + np.clip((t - ct0) / F32(0.01), 0, 1) * (t < ctv) * F32(0.25 if manner == "voiced_stop" else 0.6)
    noise = r.white(T)
    asp = col(breath) * av
    if manner == "voiceless_stop":                                       # aspiration before voicing
        asp = asp + F32(0.5) * ((t >= ctv) & (t < col(voiced_from + 0.01)))
    src = av * glottal(ph, col(0.4 + 0.25 * breath)) + F32(0.1) * asp * noise

    # Filter: four fixed vocal-tract shapes, crossfaded along the syllable.
    vowel = np.array(VOWELS[syl[1]], dtype=F32)
    nasal = (250.0, 1000.0 if syl[0] == "m" else 1400.0, 2200.0, 3300.0)
    shapes = [(nasal, (60.0, 300.0, 350.0, 400.0), 700.0 if manner == "voiced_stop" else 1500.0),
              ((*locus, vowel[3]), BANDWIDTHS, None),
              (tuple((np.array(locus + (vowel[3],)) + vowel) / 2), BANDWIDTHS, None),
              (tuple(vowel), BANDWIDTHS, None)]
    times = [ctv - F32(0.01), ctv, ctv + col(d_tr / 2), ctv + col(d_tr)]
    u = sum(np.clip((t - times[j]) / (times[j + 1] - times[j]), 0, 1) for j in range(3))  # position in [0, 3]
    S = sfft.rfft(src, axis=-1)
    y = np.zeros((len(r), T), F32)
    for j, (formants, bws, lp) in enumerate(shapes):
        mag = np.ones_like(f)
        for fc, bw in zip(formants, bws):
            fc_s = col(nyq_cap(fc * scale, sr, 0.47))
            mag = mag * resonance(f, fc_s, F32(bw) * col(scale))
        if lp is not None:
            mag = mag * lowpass(f, F32(lp), 2)
        w = np.clip(F32(1) - np.abs(u - F32(j)), 0, 1)
        y += w * sfft.irfft(S * mag, n=T, axis=-1).astype(F32)
    y = unit_rms(y)

    if band is not None:                                                 # burst or frication noise
        lo, hi = nyq_cap(band[0] * np.sqrt(scale), sr, 0.4), nyq_cap(band[1] * np.sqrt(scale), sr, 0.48)
        fric = shaped_noise(r, T, highpass(f, col(lo), 3) * lowpass(f, col(hi), 2))
        if manner == "fricative":
            env = np.clip((t - ct0) / F32(0.04), 0, 1) * np.clip((ctv - t) / F32(0.02), 0, 1)
        else:
            env = decay(t - ctv, F32(0.006 if manner == "voiced_stop" else 0.012), 0.0005)
        y = y + F32(burst_level * 3) * fric * env
    level = r.uniform(0.5, 0.9)
    attrs = {"speaker_index": spk, "f0_hz": f0m, "formant_scale": scale, "breathiness": breath,
             "onset_s": t0, "duration_s": tend + 0.04 - t0, "level": level}
    return normalize(y, level), attrs
