"""Sound generators behind SynthWorld: vectorized numpy DSP, one function per sound class.

Every class renderer has the signature ``render(r: Rng, sr: int, T: int) -> (audio (E, T), attrs)``:
it draws its parameters from ``r`` (E independent per-clip random streams, so a clip never depends
on the batch it was rendered in), renders all E clips at once with array operations (no Python
loop over samples), and returns float32 audio peak-normalised to its ``level`` attribute plus a
dict of per-clip attribute arrays of shape (E,).

Techniques, each chosen because it vectorizes: noise is shaped by multiplying its spectrum with a
magnitude response (then enveloped, so filtering never smears an onset); pitched notes are additive
or FM synthesis with per-partial decays (the modal equivalent of Karplus-Strong); sparse events
(rain drops, crackles, bubbles, chirps) are grains scatter-added with ``np.bincount``.

Families and classes here: drums (``DRUMS``, :func:`drum`), pitched notes (``INSTRUMENTS``,
:func:`note`, :func:`voice`), environment (``TEXTURES``, :func:`texture`). Speech-like syllables
(a source-filter voice) are in :mod:`course_lib.data.synth_speech`; music (scores of these notes and
drums) is composed in :mod:`course_lib.data`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.fft as sfft

F32 = np.float32
TAU = F32(2 * np.pi)
Attrs = dict[str, np.ndarray]


class Rng:
    """E independent numpy generators drawn in lock-step: each call returns one value per clip."""

    def __init__(self, gens: Sequence[np.random.Generator]):
        self.gens = list(gens)

    def __len__(self) -> int:
        return len(self.gens)

    def uniform(self, low, high) -> np.ndarray:                   # (E,) float64
        lo, hi = np.broadcast_to(low, (len(self),)), np.broadcast_to(high, (len(self),))
        return np.array([g.uniform(a, b) for g, a, b in zip(self.gens, lo, hi)])

    def log_uniform(self, low, high) -> np.ndarray:               # (E,) spread evenly in octaves
        return np.exp(self.uniform(np.log(low), np.log(high)))

    def integers(self, low: int, high: int) -> np.ndarray:        # (E,) int64 in [low, high)
        return np.array([g.integers(low, high) for g in self.gens], dtype=np.int64)

    def white(self, n: int) -> np.ndarray:
        """(E, n) float32 white noise with unit variance (uniform: cheaper to draw than Gaussian)."""
        u = np.stack([g.random(n, dtype=F32) for g in self.gens])
        return (u - F32(0.5)) * F32(12 ** 0.5)


# ----------------------------------------------------------------------------- primitives
def col(x) -> np.ndarray:
    """(E,) -> (E, 1) float32, to broadcast per-clip parameters against time."""
    return np.asarray(x, dtype=F32)[:, None]


def time_grid(T: int, sr: int) -> np.ndarray:
    return (np.arange(T, dtype=F32) / F32(sr))[None]               # (1, T) seconds


def since(onset: np.ndarray, T: int, sr: int) -> np.ndarray:
    """(E, T) seconds since each clip's onset, negative before it."""
    return time_grid(T, sr) - col(onset)


def sine(cycles: np.ndarray) -> np.ndarray:
    """sin(2 pi cycles) in float32; ``cycles`` may be float64 (wrapped first to keep precision)."""
    if cycles.dtype != F32:
        cycles = (cycles - np.floor(cycles)).astype(F32)
    return np.sin(TAU * cycles)


def decay(dt: np.ndarray, tau, attack=0.001) -> np.ndarray:
    """Exponential decay with a smooth attack; zero before the onset (dt < 0)."""
    d = np.maximum(dt, F32(0))
    return np.exp(-d / tau) * (F32(1) - np.exp(-d / attack)) * (dt >= 0)


def freqs(T: int, sr: int) -> np.ndarray:
    return np.maximum(sfft.rfftfreq(T, 1 / sr).astype(F32), F32(1.0))[None]   # (1, F) Hz, DC at 1 Hz


def lowpass(f, fc, order=2):
    return F32(1) / np.sqrt(F32(1) + (f / fc) ** (2 * order))


def highpass(f, fc, order=2):
    return F32(1) / np.sqrt(F32(1) + (fc / f) ** (2 * order))


def bandpass(f, fc, q):
    return F32(1) / np.sqrt(F32(1) + (q * (f / fc - fc / f)) ** 2)


def resonance(f, fc, bw):
    """Magnitude of a 2nd-order resonator (one formant) with unit gain at DC."""
    x = f / fc
    return F32(1) / np.sqrt((F32(1) - x * x) ** 2 + (f * bw / (fc * fc)) ** 2)


def filtered(x: np.ndarray, mag: np.ndarray) -> np.ndarray:
    """Filter each row of ``x`` (E, T) by a zero-phase magnitude response ``mag`` (E or 1, F)."""
    return sfft.irfft(sfft.rfft(x, axis=-1) * mag, n=x.shape[-1], axis=-1).astype(F32)


def unit_rms(x: np.ndarray) -> np.ndarray:
    return x / (np.sqrt(np.mean(x * x, axis=-1, keepdims=True)) + F32(1e-8))


def shaped_noise(r: Rng, T: int, mag: np.ndarray) -> np.ndarray:
    """(E, T) stationary noise with magnitude spectrum ``mag`` and unit RMS."""
    return unit_rms(filtered(r.white(T), mag))


def scatter(T: int, starts: np.ndarray, grains: np.ndarray) -> np.ndarray:
    """Overlap-add grains (E, G, L) at sample offsets ``starts`` (E, G) in [0, T) into (E, T); overhang is cut."""
    E, G, L = grains.shape
    starts = np.clip(starts, 0, T)                                  # a start at T lands in the cut-off pad
    idx = (np.arange(E)[:, None] * (T + L) + starts)[:, :, None] + np.arange(L)        # (E, G, L)
    out = np.bincount(idx.ravel(), grains.ravel(), minlength=E * (T + L))
    return out.reshape(E, T + L)[:, :T].astype(F32)


def poisson_events(r: Rng, rate: np.ndarray, T: int, sr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random events: times (E, G) in samples, heavy-tailed amplitudes (E, G) and a uniform number
    per event (E, G) for the caller; padding has amplitude 0. Each clip draws only its own events."""
    counts = [int(g.poisson(lam * T / sr)) for g, lam in zip(r.gens, rate)]
    G = max(max(counts), 1)
    pos, amp, u = np.zeros((len(r), G), np.int64), np.zeros((len(r), G), F32), np.zeros((len(r), G), F32)
    for e, (g, n) in enumerate(zip(r.gens, counts)):
        pos[e, :n] = g.integers(0, T, n)
        amp[e, :n] = g.random(n, dtype=F32) ** 3                  # many quiet events, a few loud
        u[e, :n] = g.random(n, dtype=F32)
    return pos, amp, u


def normalize(y: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Peak-normalise each row to ``level`` (E,)."""
    return (y * (col(level) / (np.abs(y).max(axis=-1, keepdims=True) + F32(1e-8)))).astype(F32)


def nyq_cap(f, sr: int, frac: float = 0.42):
    """Keep a design frequency below ``frac`` of the sample rate, so sr=8000 still works."""
    return np.minimum(f, frac * sr)


# ----------------------------------------------------------------------------- drums
def drum(kind: str, r: Rng, sr: int, T: int, onset: np.ndarray | None = None) -> tuple[np.ndarray, Attrs]:
    """One hit of drum ``kind`` per clip; ``onset`` (E,) seconds, default random in [0, 30 ms]."""
    onset = r.uniform(0.0, 0.03) if onset is None else onset
    dt, f = since(onset, T, sr), freqs(T, sr)
    level = r.uniform(0.35, 0.95)
    bright = col(0.6 + 0.5 * level)                               # harder hits are brighter
    a: Attrs = {}
    if kind in ("kick", "tom"):
        lo, hi, drop = ((40.0, 65.0, 3.5), (80.0, 260.0, 1.5))[kind == "tom"]
        f1 = r.log_uniform(lo, hi)
        f0, tp = f1 * r.uniform(drop, drop * 1.6), r.uniform(0.015, 0.045)
        tau = r.uniform(0.15, 0.35) if kind == "kick" else r.uniform(0.2, 0.45)
        d = np.maximum(dt, F32(0))
        ph = col(f1) * d + col((f0 - f1) * tp) * (F32(1) - np.exp(-d / col(tp)))  # integral of the pitch drop
        body = sine(ph) * decay(dt, col(tau), 0.0005)
        click = shaped_noise(r, T, lowpass(f, F32(4000))) * decay(dt, F32(0.004), 0.0002)
        y = np.tanh(F32(1.5) * body) + F32(0.15) * bright * click
        a = {"pitch_hz": f1, "decay_s": tau}
    elif kind == "snare":
        ft, tau = r.uniform(170.0, 250.0), r.uniform(0.1, 0.25)
        tone = (sine(col(ft) * dt) + F32(0.6) * sine(col(1.6 * ft) * dt)) * decay(dt, F32(0.05))
        mag = highpass(f, col(r.uniform(1200.0, 2200.0))) * lowpass(f, F32(nyq_cap(9000.0, sr)) * bright, 1)
        y = F32(0.5) * tone + shaped_noise(r, T, mag) * decay(dt, col(tau), 0.0005)
        a = {"pitch_hz": ft, "decay_s": tau}
    elif kind in ("closed_hihat", "open_hihat", "crash"):
        tau = {"closed_hihat": (0.02, 0.05), "open_hihat": (0.25, 0.5), "crash": (0.8, 1.6)}[kind]
        tau = r.uniform(*tau)
        scale = col(r.uniform(1.0, 1.6) * (2.0 if kind != "crash" else 1.3))
        # The TR-808 trick: six detuned square waves make a metallic, inharmonic cluster.
        metal = sum(np.sign(sine(F32(fr) * scale * dt)) for fr in (205.3, 304.4, 369.6, 522.7, 540.0, 800.0))
        cut = nyq_cap(7000.0 if kind != "crash" else 3500.0, sr, 0.35)
        x = F32(0.25) * metal + F32(1.5) * r.white(T)
        y = unit_rms(filtered(x, highpass(f, col(cut * r.uniform(0.9, 1.2)), 3))) \
            * decay(dt, col(tau), 0.0005 if kind != "crash" else 0.004)
        a = {"decay_s": tau}
    elif kind == "clap":
        fc, tau = r.uniform(900.0, 1600.0), r.uniform(0.08, 0.15)
        gaps = np.cumsum(r.uniform(0.006, 0.014)[:, None] * np.ones(3), axis=1)   # (E, 3) burst offsets
        env = decay(dt, F32(0.004), 0.0003) + sum(decay(dt - col(gaps[:, i]), F32(0.004), 0.0003) for i in range(2))
        env = env + decay(dt - col(gaps[:, 2]), col(tau), 0.0005)
        y = shaped_noise(r, T, bandpass(f, col(fc), F32(1.2))) * env
        a = {"decay_s": tau}
    elif kind == "rimshot":
        tau = r.uniform(0.006, 0.015)
        sc = col(r.uniform(0.85, 1.2))
        tone = sine(F32(455) * sc * dt) + F32(0.7) * sine(F32(nyq_cap(1667, sr)) * sc * dt)
        click = shaped_noise(r, T, highpass(f, F32(nyq_cap(2500.0, sr)))) * decay(dt, F32(0.002), 0.0001)
        y = tone * decay(dt, col(tau), 0.0002) + F32(0.6) * click
        a = {"decay_s": tau}
    else:
        raise ValueError(f"Unknown drum {kind!r}; use one of {list(DRUMS)}.")
    return normalize(y, level), {"level": level, **a}


DRUMS = ("kick", "snare", "closed_hihat", "open_hihat", "clap", "tom", "crash", "rimshot")


# ----------------------------------------------------------------------------- pitched notes
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def midi_to_hz(m) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(m, dtype=np.float64) - 69) / 12)


def note_name(m: int) -> str:
    return f"{NOTE_NAMES[int(m) % 12]}{int(m) // 12 - 1}"


# instrument -> (lowest, highest MIDI note)
INSTRUMENTS = {"piano": (40, 88), "guitar": (40, 76), "organ": (48, 84), "flute": (60, 93),
               "bass": (28, 52), "bell": (60, 96), "violin": (55, 91)}


RELEASE = 0.08


def partials(theta: np.ndarray, amps: Sequence[np.ndarray], env: np.ndarray | None = None,
             step: np.ndarray | None = None) -> np.ndarray:
    """Additive synthesis: sum_k amps[k-1] * env_k * sin(k theta), with env_k = env * step**(k-1).

    ``theta`` (N, L) is the fundamental's phase in radians; in-place buffers keep it fast.
    """
    out, s = np.zeros_like(theta), np.empty_like(theta)
    e = None if env is None else np.array(np.broadcast_to(env, theta.shape))
    for k, a in enumerate(amps, 1):
        if np.any(a):                                              # rows with a == 0 add exact zeros
            np.multiply(theta, F32(k), out=s)
            np.sin(s, out=s)
            if e is not None:
                s *= e
            s *= a
            out += s
        if e is not None and step is not None:
            e *= step
    return out


def voice(instrument: str, f0: np.ndarray, vel: np.ndarray, gate: np.ndarray, dt: np.ndarray, sr: int,
          attack: np.ndarray | None = None) -> np.ndarray:
    """Render notes of ``instrument`` without randomness: all arguments (N, 1) float32 except ``dt``.

    Args:
        f0: fundamental in Hz. vel: velocity in (0, 1]. gate: seconds until release.
        dt: (N, L) or (1, L) seconds since each note's onset (negative: not started).
        attack: optional attack time in seconds (default: the instrument's own).
    Returns:
        (N, L) float32, not normalised (peak roughly ``vel``).
    """
    d = np.maximum(dt, F32(0))
    ph = (col(f0[:, 0]).astype(np.float64) * d) if instrument not in ("flute", "violin") else None
    # The release reaches exactly zero RELEASE s after the gate, so a note has a finite length.
    release = np.clip(F32(1) - (dt - gate) / F32(RELEASE), 0, 1) ** 2
    bright = F32(0.45) + F32(0.5) * vel                                # louder = brighter, like real instruments
    out = np.zeros(np.broadcast_shapes(dt.shape, f0.shape), F32)
    if instrument in ("piano", "guitar", "bass"):
        # Modal synthesis: partial k decays at rate 1/tau1 + (k-1)*beta, the vectorizable cousin of
        # Karplus-Strong (whose loop filter also damps high partials faster), so that each partial's
        # envelope is the previous one times a shared factor: one multiply per partial.
        tau1 = {"piano": F32(1.2) * (F32(440) / f0) ** F32(0.35), "guitar": F32(1.6) * (F32(220) / f0) ** F32(0.3),
                "bass": F32(0.9) * np.ones_like(f0)}[instrument]
        beta = {"piano": F32(1.5), "guitar": F32(0.03) * f0, "bass": F32(0.015) * f0}[instrument]
        pos = {"piano": F32(0.12), "guitar": F32(0.18), "bass": F32(0.2)}[instrument]
        env = decay(dt, tau1, 0.002 if attack is None else attack)
        step = np.exp(-d * beta)
        if instrument == "piano":                                     # two-stage (prompt + aftersound) decay
            env = env * (F32(0.35) + F32(0.65) * np.exp(-d / (F32(0.25) * tau1)))
        theta = TAU * (ph - np.floor(ph)).astype(F32)
        power = 1.0 if instrument == "piano" else 1.3
        amps = [F32(abs(np.sin(np.pi * k * pos)) / k ** power) * bright ** (k - 1) * (k * f0 < 0.45 * sr)
                for k in range(1, 17)]                                # no partial above Nyquist
        out = partials(theta, amps, env, step)
    elif instrument in ("organ", "flute", "violin"):
        vib = {"organ": (0.0, 6.0), "flute": (0.004, 5.0), "violin": (0.006, 5.8)}[instrument]
        if vib[0]:                                                    # vibrato, phase integrated analytically
            delay = np.clip(d / F32(0.25), 0, 1)                      # vibrato fades in, as players do
            wobble = F32(vib[0]) * delay * (1 - np.cos(TAU * vib[1] * d)) / (TAU * vib[1])
            ph = col(f0[:, 0]).astype(np.float64) * (d + wobble)
        theta = TAU * (ph - np.floor(ph)).astype(F32)
        att = {"organ": 0.008, "flute": 0.07, "violin": 0.12}[instrument] if attack is None else attack
        env = (F32(1) - np.exp(-d / F32(att) if np.isscalar(att) else -d / att)) * (dt >= 0)
        if instrument == "organ":
            env = env * (F32(1) + F32(0.15) * np.sin(TAU * F32(6.5) * d))  # Leslie-like tremolo
            amps = {1: 1.0, 2: 0.8, 3: 0.5, 4: 0.45, 6: 0.3, 8: 0.25}
        elif instrument == "flute":
            amps = {1: 1.0, 2: 0.35, 3: 0.12, 4: 0.05}
        else:                                                         # bowed string: sawtooth through a body
            amps = {k: F32(1.0 / k) * (F32(1) + F32(1.5) * ((k * f0 > 2000) & (k * f0 < 3500))) for k in range(1, 17)}
        ks = range(1, max(amps) + 1)
        out = partials(theta, [amps.get(k, F32(0)) * bright ** (k > 2) * (k * f0 < 0.45 * sr) for k in ks], env)
    elif instrument == "bell":
        # Struck metal (glockenspiel / chime): the inharmonic modes of a free bar (1, 2.76, 5.40, 8.93)
        # over a strong, long-ringing fundamental with its octaves; higher modes die faster.
        tau = F32(2.0) * (F32(440) / f0) ** F32(0.5)
        for ratio, amp, speed in ((1.0, 1.0, 1.0), (1.003, 0.3, 1.0), (2.0, 0.35, 1.5), (2.756, 0.5, 2.5),
                                  (4.0, 0.15, 3.0), (5.404, 0.3, 4.0), (8.933, 0.15, 6.0)):
            pk = ph * ratio
            on = (ratio * f0 < 0.45 * sr) * F32(amp) * bright ** (ratio > 2)
            out += on * np.sin(TAU * (pk - np.floor(pk)).astype(F32)) * np.exp(-d * (F32(speed) / tau))
        out *= decay(dt, F32(1e3), 0.0005)
    else:
        raise ValueError(f"Unknown instrument {instrument!r}; use one of {list(INSTRUMENTS)}.")
    return out * vel * release


def note(instrument: str, r: Rng, sr: int, T: int) -> tuple[np.ndarray, Attrs]:
    """One note per clip: random pitch in the instrument's range (below 0.4 sr), velocity and length."""
    lo, hi = INSTRUMENTS[instrument]
    hi = min(hi, int(69 + 12 * np.log2(0.2 * sr / 440)))              # keep a few partials below Nyquist
    midi = r.integers(lo, max(hi, lo + 1) + 1)
    vel, onset = r.uniform(0.3, 1.0), r.uniform(0.0, 0.05)
    dur = T / sr
    gate = r.uniform(0.5, 0.9) * dur
    f0 = midi_to_hz(midi)
    y = voice(instrument, col(f0), col(vel), col(gate), since(onset, T, sr), sr)
    if instrument == "flute":                                          # breath noise around the harmonics
        f = freqs(T, sr)
        breath = shaped_noise(r, T, bandpass(f, col(2 * f0), F32(2.0)) + F32(0.1) * bandpass(f, F32(3000), F32(0.7)))
        y = y + F32(0.04) * col(vel) * breath * np.clip(since(onset, T, sr) / F32(0.05), 0, 1) \
            * (since(onset + gate, T, sr) < 0)
    elif instrument in ("piano", "guitar", "bass"):                    # hammer / pick noise
        f = freqs(T, sr)
        y = y + F32(0.03) * col(vel) * shaped_noise(r, T, lowpass(f, F32(2500))) \
            * decay(since(onset, T, sr), F32(0.008), 0.0005)
    level = 0.3 + 0.6 * vel
    return normalize(y, level), {"midi": midi, "pitch_hz": f0, "velocity": vel, "duration_s": gate, "level": level}


# ----------------------------------------------------------------------------- environment textures
def texture(kind: str, r: Rng, sr: int, T: int) -> tuple[np.ndarray, Attrs]:
    """Environmental sounds; ``intensity`` in [0, 1] (light rain .. downpour, breeze .. gale, ...)."""
    f, t = freqs(T, sr), time_grid(T, sr)
    inten = r.uniform(0.0, 1.0)
    ci = col(inten)
    dur = T / sr
    if kind == "rain":
        # Thousands of drops: sparse impulses (most tiny) coloured like splashes, over a hiss bed.
        pos, amp, _ = poisson_events(r, 400 + 3600 * inten, T, sr)
        drops = scatter(T, pos, amp[:, :, None])
        drops = unit_rms(filtered(drops, bandpass(f, F32(nyq_cap(3500.0, sr)), F32(0.6))))
        bed = shaped_noise(r, T, highpass(f, F32(400)) * lowpass(f, F32(nyq_cap(8000.0, sr)), 1))
        y = drops + (F32(0.3) + F32(0.4) * ci) * bed
    elif kind == "wind":
        # Band-passed noise whose loudness and brightness follow slow random gusts.
        gust = sum(np.sin(TAU * col(r.uniform(0.15, 1.2)) * t + col(r.uniform(0, 6.3))) for _ in range(3))
        gust = np.clip(F32(0.5) + F32(0.25) * gust * (F32(0.5) + ci), F32(0.05), None)
        fc = col(r.uniform(250.0, 600.0)) * (F32(1) + ci)
        low = shaped_noise(r, T, bandpass(f, fc, F32(1.0)) * lowpass(f, F32(3) * fc, 2))
        # the whistle of strong gusts
        high = shaped_noise(r, T, bandpass(f, F32(1.8) * fc, F32(4.0)) * lowpass(f, F32(3) * fc, 2))
        y = gust * low + gust ** 2 * F32(0.6) * high
    elif kind == "ocean":
        # One breaking wave: a swell of brown-ish noise, then the foamy hiss of the crash.
        crest = col(r.uniform(0.3, 0.6) * dur)
        swell = np.exp(-((t - crest) / col(r.uniform(0.15, 0.3) * dur)) ** 2) + F32(0.15)
        brown = lowpass(f, col(r.uniform(500.0, 1200.0)), 1) * highpass(f, F32(50)) / np.sqrt(f / 100)
        rumble = shaped_noise(r, T, brown)
        foam = shaped_noise(r, T, highpass(f, F32(nyq_cap(2000.0, sr))))
        foam = foam * decay(t - crest, col(r.uniform(0.2, 0.5)), 0.05)
        y = swell * rumble + (F32(0.3) + F32(0.4) * ci) * foam
    elif kind == "fire":
        # Low roar plus crackles: clusters of very short broadband clicks with heavy-tailed loudness.
        pos, amp, _ = poisson_events(r, 20 + 80 * inten, T, sr)
        sub = np.concatenate([pos, pos + np.rint(r.uniform(0.001, 0.004) * sr)[:, None].astype(np.int64)], 1)
        clicks = scatter(T, sub, np.concatenate([amp, amp * F32(0.5)], 1)[:, :, None])
        clicks = unit_rms(filtered(clicks, highpass(f, F32(800)) * lowpass(f, F32(nyq_cap(6000.0, sr)), 1)))
        roar = shaped_noise(r, T, lowpass(f, col(r.uniform(150.0, 400.0)), 2))
        y = clicks * F32(2.0) + (F32(0.3) + F32(0.3) * ci) * roar
    elif kind == "stream":
        # Babbling water: many small bubbles, each a sine whose pitch rises as it decays (Minnaert).
        pos, amp, u = poisson_events(r, 60 + 140 * inten, T, sr)
        L, top = int(0.03 * sr), np.log(nyq_cap(1800.0, sr) / 400)
        fb = (F32(400) * np.exp(u * F32(top)))[:, :, None]                            # (E, G, 1) Hz
        tb = (np.arange(L, dtype=F32) / sr)[None, None]                               # (1, 1, L)
        tau = F32(0.004) + F32(3.0) / fb
        grains = amp[:, :, None] * np.sin(TAU * fb * (tb + F32(1.5) * tb * tb / (2 * tau))) * np.exp(-tb / tau)
        bub = unit_rms(scatter(T, pos, grains))
        y = bub + F32(0.4) * shaped_noise(r, T, bandpass(f, F32(800), F32(0.7)))
    elif kind == "birdsong":
        # A bird repeats one chirp: a fast frequency sweep with a warble, 3-8 times.
        n = r.integers(3, 9)
        G, L = 8, int(0.12 * sr)
        gap = r.uniform(0.08, 0.2) * dur / (n * 0.12 + 0.05)
        starts = (np.rint(np.arange(G) * col(gap) * sr + col(r.uniform(0, 0.1) * sr))).astype(np.int64)
        fa = col(nyq_cap(r.uniform(2000.0, 4500.0), sr, 0.3))[:, :, None]
        fb = fa * col(r.uniform(0.5, 1.6))[:, :, None]
        clen = col(r.uniform(0.04, 0.11))[:, :, None]
        tb = (np.arange(L, dtype=F32) / sr)[None, None]
        x = np.clip(tb / clen, 0, 1)
        jitter = F32(1) + F32(0.03) * np.stack([g.standard_normal(G) for g in r.gens]).astype(F32)[:, :, None]
        inst = (fa + (fb - fa) * x) * jitter                                           # sweep in Hz
        ph = np.cumsum(inst, axis=-1) / F32(sr) + F32(0.002) * np.sin(TAU * F32(45) * tb) * fa / F32(45)
        win = np.sin(np.pi * x) ** 2 * (tb < clen) * (np.arange(G)[None, :, None] < n[:, None, None])
        y = scatter(T, starts, win * sine(ph))
    elif kind == "engine":
        # Idling engine: a pulse per cylinder firing (with uneven strength), low-passed by the exhaust.
        rpm = r.uniform(600.0, 1200.0) * (1 + 0.8 * inten)
        ff = rpm / 60 * 2                                                            # firings per second
        ph = col(ff).astype(np.float64) * (t + F32(0.004) * np.sin(TAU * F32(1.3) * t))
        fire = np.diff(np.floor(ph), axis=-1, prepend=-1.0).astype(F32) > 0
        pulses = fire * (F32(1) + F32(0.4) * sine(ph / 4))
        body = unit_rms(filtered(pulses, lowpass(f, col(r.uniform(150.0, 400.0)), 3) * highpass(f, F32(20))))
        y = body + F32(0.2) * shaped_noise(r, T, lowpass(f, F32(250)))
    else:
        raise ValueError(f"Unknown texture {kind!r}; use one of {list(TEXTURES)}.")
    level = 0.4 + 0.5 * inten
    fade = np.minimum(np.minimum(t, F32(dur) - t) / F32(0.01), F32(1))               # no click at the edges
    extra = {"rpm": rpm} if kind == "engine" else {}
    return normalize(y * fade, level), {"intensity": inten, "level": level, **extra}


TEXTURES = ("rain", "wind", "ocean", "fire", "stream", "birdsong", "engine")
