"""Songs: procedural multi-second songs with a style, a key, a tempo and a repeating A B A form.

Jukebox (Dhariwal et al. 2020) learns music with transformer priors over the top-level codes of a
hierarchical VQ-VAE, conditioned on style, key and tempo; SynthWorld's one-second clips have no
long-range structure to learn. Each song here has a style (``STYLES``: meter, tempo range, drums,
instruments, chord habits), a key (12 roots x major/minor; minor keys raise the leading tone in V),
an integer tempo, and a form ``ABA`` or ``AABA`` that fills the most whole bars: every A is the same
notes, B has its own chords and tune (as long as A or a bar shorter), and a coda on the tonic chord
ends the song. A section holds 1-8 bars: at the default 6 s, 1 bar of 4/4 or 1-2 bars of 3/4 and 2/4.

    >>> ds = Songs("train", size=64)
    >>> ex = ds[0]                  # Example(audio (1, T), label, caption, attributes)
    >>> ex.attributes["form"], ex.attributes["key"], ex.caption

Label ``i % len(classes)`` goes to index ``i``. Song ``i`` comes from its own stream
``SeedSequence([seed, split_id, i, style id, SALT])``: ``ds[i]``, ``ds.batch([.., i, ..])`` and a
re-created dataset give the same bits, and splits are disjoint. :func:`estimate_tempo` and
:func:`estimate_key` measure any song (the Jukebox notebook scores its generated songs with them).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np
from torch import Tensor

from course_lib.data import synth as S
from course_lib.data.base import BatchRendered

__all__ = ["Songs", "Style", "STYLES", "Key", "estimate_tempo", "estimate_key", "chroma", "bench_songs"]

SPLITS = {"train": 0, "val": 1, "test": 2}
DEFAULT_SIZES = {"train": 1024, "val": 128, "test": 256}
SALT = 0x50_4E_47                                   # keeps these streams apart from SynthWorld's
MAJOR, MINOR = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10)
HATS = tuple((b / 2, "closed_hihat", 0.5 if b % 2 else 0.7) for b in range(8))   # eighth-note hi-hats in 4/4
DRUM_SECONDS = {"crash": 1.2, "open_hihat": 0.5}    # one-shot lengths (default 0.35 s)


@dataclass(frozen=True)
class Style:
    """What makes a style recognisable. Beats count from 0 at each bar's downbeat; chords and tunes
    are scale degrees of the key (0 = tonic) and their tones scale steps above the root (2 = third)."""
    words: str                                      # in captions: "a {words} in A minor"
    meter: int                                      # beats per bar (3: "3/4")
    tempo: tuple[int, int]                          # BPM range, inclusive
    lead: str                                       # synth.py instruments of the tune, chords, bass
    chords: str
    bass: str
    chord_octave: int                               # octave of the chords (the tune is in 5, the bass in 2)
    voicing: tuple[int, ...]                        # chord tones above the root: (0, 2, 4) a triad
    chord_beats: tuple[float, ...]                  # chord onsets in a bar
    chord_len: float                                # chord gate in beats
    bass_line: tuple[tuple[float, int, float], ...]  # (onset, steps above the chord root, gate beats)
    drums: tuple[tuple[float, str, float], ...]     # (onset, drum kind, velocity) in every bar
    crash: bool                                     # a crash cymbal opens every section
    rhythms: tuple[tuple[float, ...], ...]          # the tune's onset patterns, one drawn per bar
    prog_a: tuple[tuple[int, ...], ...]             # progressions of A (start on the tonic)
    prog_b: tuple[tuple[int, ...], ...]             # progressions of B (never start on the tonic)

    @property
    def kit(self) -> tuple[str, ...]:
        return tuple(sorted({d[1] for d in self.drums} | ({"crash"} if self.crash else set())))

    @property
    def instruments(self) -> str:
        names = list(dict.fromkeys((self.lead, self.chords, self.bass))) + (["drums"] if self.kit else [])
        return ", ".join(names[:-1]) + " and " + names[-1]

    @property
    def min_seconds(self) -> float:                # one A B A form of 1-bar sections at the slowest tempo
        return 3 * self.meter * 60 / self.tempo[0]


STYLES: dict[str, Style] = {
    "waltz": Style("waltz", 3, (150, 190), "violin", "piano", "piano", 4, (2, 4, 7), (1, 2), 0.8,
                   ((0, 0, 0.9),), (), False, ((0, 1, 2), (0, 2), (0,), (0, 1.5, 2)),
                   ((0, 4, 4, 0), (0, 3, 4, 0), (0, 0, 4, 0)), ((3, 4, 0, 4), (1, 4, 0, 4), (5, 1, 4, 4))),
    "rock": Style("rock song", 4, (120, 150), "organ", "guitar", "bass", 3, (0, 4, 7, 9),       # open-string chords
                  tuple(b / 2 for b in range(8)), 0.4, tuple((b / 2, 0, 0.4) for b in range(8)),
                  ((0, "kick", 1.0), (2, "kick", 0.9), (2.5, "kick", 0.7), (1, "snare", 0.9), (3, "snare", 0.9)) + HATS,
                  True, ((0, 1, 2, 3), (0, 1.5, 2, 3), (0, 0.5, 1, 2), (0, 2, 2.5, 3)),
                  ((0, 3, 4, 3), (0, 4, 5, 3), (0, 0, 3, 4)), ((5, 3, 0, 4), (3, 4, 3, 4), (3, 5, 4, 4))),
    "bossa": Style("bossa nova", 4, (120, 140), "flute", "guitar", "bass", 3, (0, 2, 4, 6), (0, 1.5, 3), 0.9,
                   ((0, 0, 1.4), (1.5, 4, 0.4), (2, 0, 1.4), (3.5, 4, 0.4)),
                   ((0, "rimshot", 0.8), (1.5, "rimshot", 0.7), (3, "rimshot", 0.7), (0, "kick", 0.5),
                    (2, "kick", 0.5)) + tuple((t, k, 0.5 * v) for t, k, v in HATS), False,
                   ((0, 1.5, 3), (0.5, 1, 2.5), (0, 1, 1.5, 3), (0, 2)),
                   ((0, 1, 4, 0), (0, 5, 1, 4)), ((3, 1, 4, 0), (1, 4, 0, 5))),
    "dance": Style("dance track", 4, (120, 132), "piano", "organ", "bass", 4, (0, 2, 4), (0.5, 1.5, 2.5, 3.5), 0.4,
                   ((0.5, 0, 0.4), (1.5, 0, 0.4), (2.5, 0, 0.4), (3.5, 7, 0.4)),
                   tuple((b, "kick", 1.0) for b in range(4)) + ((1, "clap", 0.8), (3, "clap", 0.8))
                   + tuple((b + 0.5, "open_hihat", 0.6) for b in range(4)), True,
                   ((0, 0.5, 1.5, 2, 3), (0, 1, 2, 3), (0.5, 1.5, 2.5, 3)),
                   ((0, 5, 3, 4), (0, 3, 5, 4)), ((5, 3, 0, 4), (3, 4, 5, 4))),
    "march": Style("march", 2, (104, 124), "bell", "organ", "bass", 4, (0, 2, 4), (0.5, 1.5), 0.4,
                   ((0, 0, 0.8), (1, 4, 0.8)),
                   ((0, "kick", 1.0), (1, "kick", 0.8), (0.5, "snare", 0.6), (1.5, "snare", 0.6), (1.75, "snare", 0.5)),
                   True, ((0, 1), (0, 0.5, 1), (0, 0.75, 1, 1.5), (0,)),
                   ((0, 3, 4, 0), (0, 0, 4, 0)), ((3, 0, 4, 0), (1, 4, 0, 4), (5, 1, 4, 0))),
    "ambient": Style("ambient piece", 3, (90, 110), "bell", "violin", "bass", 4, (0, 2, 4, 7), (0,), 2.8,
                     ((0, 0, 2.8),), (), False, ((0, 1, 2), (0, 2)),
                     ((0, 5, 0, 5), (0, 3, 0, 3)), ((5, 3, 5, 3), (3, 5, 3, 4))),
}
TEMPLATES = ("a {style} in {key} at {bpm} bpm with {instruments}",
             "{a_style} in {key}, {bpm} beats per minute, played on {instruments}",
             "a {tempo_word} {style} in {key} featuring {instruments}",
             "{instruments} playing {a_style} in {key} at {bpm} bpm")


# ----------------------------------------------------------------------------- composition
def _midi(root: int, minor: bool, degree: int, octave: int, leading: bool = False) -> int:
    """Scale degree (any integer) -> MIDI note; the tonic of ``octave`` lies in F#..F (roots fold down)."""
    scale = MINOR if minor else MAJOR
    semis = scale[degree % 7] + 12 * (degree // 7) + (minor and leading and degree % 7 == 6)
    return 12 * (octave + 1) + root - 12 * (root >= 6) + semis


def _chord_name(root: int, minor: bool, c: int) -> str:
    lead = c % 7 == 4
    tones = [_midi(root, minor, c + k, 4, lead) for k in (0, 2, 4)]
    quality = {(4, 7): "", (3, 7): "m", (3, 6): "dim", (4, 8): "aug"}[(tones[1] - tones[0], tones[2] - tones[0])]
    return S.NOTE_NAMES[tones[0] % 12] + quality


def _tune(st: Style, g: np.random.Generator, prog: Sequence[int]) -> list[tuple[float, int, float, float]]:
    """One section's tune: (onset beat, scale degree, length in beats, velocity). Notes on the beat
    are chord tones near a random step from the last note; notes between beats move by one step."""
    out, deg = [], int(g.choice((0, 2, 4)))
    for bar, c in enumerate(prog):
        rhythm = st.rhythms[int(g.integers(len(st.rhythms)))]
        for t, end in zip(rhythm, rhythm[1:] + (st.meter,)):
            if t == int(t):
                target = deg + int(g.integers(-2, 3))
                deg = min((c + k + 7 * o for k in (0, 2, 4) for o in (-1, 0, 1)), key=lambda x: (abs(x - target), x))
            else:
                deg += int(g.choice((-1, 1)))
            deg = int(np.clip(deg, -3, 9))
            out.append((bar * st.meter + t, deg, end - t, round(float(g.uniform(0.6, 0.85)), 2)))
    return out


def _compose(st: Style, g: np.random.Generator, seconds: float, sr: int) -> tuple[list, list, dict]:
    """One song's score: notes (onset s, instrument, midi, velocity, gate s, part), drum hits
    (onset s, kind, velocity), and its attributes. Onsets are whole samples, so every A is the
    same notes shifted by a whole number of samples."""
    bpm = int(g.integers(st.tempo[0], st.tempo[1] + 1))
    root, minor = int(g.integers(12)), bool(g.random() < 0.5)
    beat, q = 60.0 / bpm, lambda s: round(s * sr) / sr                   # q: snap seconds to samples
    bar_s = st.meter * beat
    # The form that fills most whole bars: ABA or AABA, A of 1-8 bars, B as long or a bar shorter.
    fits = {(f, a, b): f.count("A") * a + b for f in ("ABA", "AABA") for a in range(1, 9) for b in (a - 1, a)
            if b >= 1 and f.count("A") * a + b <= int(seconds / bar_s + 1e-9)}
    ties = [fit for fit, n in fits.items() if n == max(fits.values())]
    form, *lengths = ties[int(g.integers(len(ties)))]
    n_bars = dict(zip("AB", lengths))
    progs = {s: p[int(g.integers(len(p)))] for s, p in (("A", st.prog_a), ("B", st.prog_b))}
    progs = {s: tuple(p[i % len(p)] for i in range(n_bars[s])) for s, p in progs.items()}   # 8 bars: twice
    tunes = {s: _tune(st, g, progs[s]) for s in "AB"}
    notes: list[tuple] = []
    hits: list[tuple] = []
    sections: list[tuple[str, float, float]] = []
    chords: list[str] = []

    def accompany(t0: float, c: int, bar: int, coda: float = 0.0) -> None:
        lead, t1 = c % 7 == 4, t0 + q(bar * bar_s)
        chord = [_midi(root, minor, c + k, st.chord_octave, lead) for k in st.voicing]
        for o in (0.0,) if coda else st.chord_beats:
            notes.extend((t1 + q(o * beat), st.chords, m, 0.75 if o == 0 else 0.6, coda or st.chord_len * beat,
                          "chords") for m in chord)
        for o, k, length in ((0.0, 0, 0.0),) if coda else st.bass_line:
            notes.append((t1 + q(o * beat), st.bass, _midi(root, minor, c + k, 2, lead), 0.8 if o == 0 else 0.7,
                          coda or length * beat, "bass"))
        hits.extend((t1 + q(o * beat), kind, v) for o, kind, v in (st.drums[:1] if coda else st.drums))
        chords.append(_chord_name(root, minor, c))

    done = 0                                                             # bars so far
    for s in form:
        t0 = q(done * bar_s)
        done += n_bars[s]
        sections.append((s, round(t0, 6), round(q(done * bar_s), 6)))
        for bar, c in enumerate(progs[s]):
            accompany(t0, c, bar)
        hits.extend([(t0, "crash", 0.7)] if st.crash else [])
        for o, d, length, vel in tunes[s]:
            c = progs[s][int(o // st.meter)]
            notes.append((t0 + q(o * beat), st.lead, _midi(root, minor, d, 5, c % 7 == 4), vel, 0.9 * length * beat,
                          "lead"))
    t_end = q(done * bar_s)
    if seconds - t_end > 0.05:                                           # coda: the tonic chord rings out
        accompany(t_end, 0, 0, coda=seconds - t_end)
        notes.append((t_end, st.lead, _midi(root, minor, 0, 5), 0.7, seconds - t_end, "lead"))
        hits.extend([(t_end, "crash", 0.7)] if st.crash else [])
        sections.append(("coda", round(t_end, 6), round(seconds, 6)))
    mix = {p: float(g.uniform(0.8, 1.25)) * w                          # mildly random levels of the parts
           for p, w in (("lead", 0.5), ("chords", 0.22), ("bass", 0.6), ("drums", 0.5))}
    key = f"{S.NOTE_NAMES[root]} {'minor' if minor else 'major'}"
    attrs = {"key": key, "key_root": root, "mode": "minor" if minor else "major", "tempo_bpm": bpm,
             "meter": f"{st.meter}/4", "form": form, "section_bars": n_bars, "sections": sections,
             "chords": chords, "instruments": st.instruments, "mix": mix, "level": round(float(g.uniform(0.5, 0.9)), 4)}
    return notes, hits, attrs


# ----------------------------------------------------------------------------- rendering
def _overlap_add(y: np.ndarray, rows: np.ndarray, starts: np.ndarray, grains: np.ndarray, which: np.ndarray,
                 gains: np.ndarray) -> None:
    """y[rows[k], starts[k]:] += gains[k] * grains[which[k]] for each event k; overhang is cut.

    y (E, T) float64, grains (U, L). One vectorised add per note (not per sample): cheaper than
    SynthWorld's (N, L) ``bincount`` here, where songs have hundreds of long notes. A clip sums its
    own notes in score order, so its bits never depend on the other clips of the batch.
    """
    T = y.shape[1]
    for e, s, k, g in zip(rows.tolist(), starts.tolist(), which.tolist(), gains.tolist()):
        n = min(grains.shape[1], T - s)
        if n > 0:
            y[e, s:s + n] += g * grains[k, :n]


def _render(styles: Sequence[Style], gens: Sequence[np.random.Generator], seconds: float, sr: int,
            T: int) -> tuple[np.ndarray, list[dict]]:
    """Compose and render E songs: (E, T) float32 and their attributes."""
    E = len(gens)
    if E == 0:
        return np.zeros((0, T), S.F32), []
    scores = [_compose(st, g, seconds, sr) for st, g in zip(styles, gens)]
    ev = [(e, n[0], n[1], n[2], n[3], n[4], sc[2]["mix"][n[5]]) for e, sc in enumerate(scores) for n in sc[0]]
    song, onset, inst, midi, vel, gate, gain = (np.array(x) for x in zip(*ev))
    start = np.rint(onset * sr).astype(np.int64)
    y = np.zeros((E, T))                                             # float64 while summing
    for name in sorted(set(inst)):
        sel = np.flatnonzero(inst == name)
        # Repeated notes (every A, every bar's bass) are rendered once and overlap-added many times.
        keys, inv = np.unique(np.stack([midi[sel], vel[sel], gate[sel]], 1).astype(float), axis=0, return_inverse=True)
        inv = inv.reshape(-1)                                          # (N,) event -> unique note
        need = np.minimum(T, np.ceil((keys[:, 2] + S.RELEASE) * 8) / 8 * sr).astype(np.int64)  # a note's length
        for L in np.unique(need):                 # buckets of equal length: a note never depends on its batch
            u = np.flatnonzero(need == L)
            grains = S.voice(name, S.col(S.midi_to_hz(keys[u, 0])), S.col(keys[u, 1]), S.col(keys[u, 2]),
                             S.time_grid(int(L), sr), sr)             # (U, L)
            row = np.full(len(keys), -1)
            row[u] = np.arange(len(u))
            b = sel[row[inv] >= 0]                                     # the events of this bucket, in score order
            _overlap_add(y, song[b], start[b], grains, row[inv][row[inv] >= 0], gain[b])
    for kind in sorted({k for st in styles for k in st.kit}):     # one shot per kind and song, in kit order
        rows = [e for e, st in enumerate(styles) if kind in st.kit]
        Ld = int(DRUM_SECONDS.get(kind, 0.35) * sr)
        shots, _ = S.drum(kind, S.Rng([gens[e] for e in rows]), sr, Ld, onset=np.zeros(len(rows)))  # (E_k, Ld)
        shots *= np.clip((Ld - np.arange(Ld)) / (0.05 * sr), 0, 1).astype(S.F32)   # fade: no click at the cut
        h = [(j, t, v * scores[e][2]["mix"]["drums"])
             for j, e in enumerate(rows) for t, k, v in scores[e][1] if k == kind]
        if h:
            j, t, v = (np.array(x) for x in zip(*h))
            _overlap_add(y, np.array(rows)[j], np.rint(t * sr).astype(np.int64), shots, j, v)
    y = S.normalize(y.astype(S.F32), np.array([sc[2]["level"] for sc in scores]))
    n = min(T, int(0.01 * sr))                                       # 10 ms fade-out: no click at the cut
    y[:, T - n:] *= np.linspace(1, 0, n, dtype=S.F32)
    y[np.abs(y) < 1e-30] = 0.0          # subnormals slow CPU convolutions 10-100x; far below 16-bit resolution
    return y, [sc[2] for sc in scores]


class Songs(BatchRendered):
    """Procedural songs with style, key, tempo and an A B A form; labels are styles.

    Args:
        split: "train" | "val" | "test" (disjoint random streams).
        size: number of songs (default 1024 / 128 / 256).
        seconds: song length, at most 30 s (default 6); at least one A B A form of 1-bar sections at
            each style's slowest tempo: 6 s for the 4/4 styles and ambient, 3.6 s for waltz and march.
        sample_rate: Hz (>= 8000).
        styles: subset of ``STYLES`` (default all six); labels index ``.classes``.
        seed: the same (seed, split, index) gives the same song and caption, bit for bit.
    """

    def __init__(self, split: str = "train", size: int | None = None, seconds: float = 6.0, sample_rate: int = 16000,
                 styles: Sequence[str] | None = None, seed: int = 0):
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}; use one of {list(SPLITS)}.")
        chosen = list(STYLES) if styles is None else ([styles] if isinstance(styles, str) else list(styles))
        if not chosen or any(s not in STYLES for s in chosen):
            raise ValueError(f"Unknown styles {[s for s in chosen if s not in STYLES] or chosen}; "
                             f"choose from {list(STYLES)}.")
        if int(sample_rate) != sample_rate or sample_rate < 8000:
            raise ValueError(f"sample_rate must be an integer >= 8000 Hz, got {sample_rate!r}.")
        self.classes = [s for s in STYLES if s in chosen]              # global order, whatever the order given
        slow = max(self.classes, key=lambda s: STYLES[s].min_seconds)
        need = STYLES[slow].min_seconds
        if not seconds >= need - 1e-9:                                  # (NaN fails too)
            raise ValueError(f"seconds={seconds!r} cannot hold one A B A form of style {slow!r} (3 bars of "
                             f"{STYLES[slow].meter}/4 at {STYLES[slow].tempo[0]} bpm); use seconds >= {need:.2f}, "
                             f"or styles with shorter bars (waltz and march need 3.6 s).")
        if seconds > 30:
            raise ValueError(f"seconds={seconds!r} is too long; songs last at most 30 s (sections of up to 8 bars).")
        self.split, self.seed, self.seconds, self.sample_rate = split, int(seed), float(seconds), int(sample_rate)
        self.num_samples = round(seconds * sample_rate)                # T
        self.size = self._checked_size(DEFAULT_SIZES[split] if size is None else size)

    def __repr__(self) -> str:
        return (f"Songs(split={self.split!r}, size={self.size}, seconds={self.seconds}, "
                f"sample_rate={self.sample_rate}, styles={self.classes}, seed={self.seed})")

    def _render(self, indices: Sequence[int],
                with_captions: bool) -> tuple[np.ndarray, list[int], list[dict], list[str]]:
        idx = [int(i) + (self.size if int(i) < 0 else 0) for i in indices]
        if any(not 0 <= i < self.size for i in idx):
            raise IndexError(f"indices {list(indices)} out of range for Songs of size {self.size}.")
        labels = [i % len(self.classes) for i in idx]
        names = [self.classes[lab] for lab in labels]
        seqs = [np.random.SeedSequence([self.seed, SPLITS[self.split], i, list(STYLES).index(n), SALT]).spawn(2)
                for i, n in zip(idx, names)]
        audio, raw = _render([STYLES[n] for n in names], [np.random.default_rng(a) for a, _ in seqs],
                             self.seconds, self.sample_rate, self.num_samples)
        attrs = [{"style": n, "index": i, "split": self.split, **{k: v for k, v in a.items() if k != "mix"}}
                 for n, i, a in zip(names, idx, raw)]
        caps = [_caption(a, np.random.default_rng(c)) if with_captions else "" for a, (_, c) in zip(attrs, seqs)]
        return audio, labels, attrs, caps


def _caption(a: dict[str, Any], g: np.random.Generator) -> str:
    words = STYLES[a["style"]].words
    bpm = a["tempo_bpm"]
    return TEMPLATES[int(g.integers(len(TEMPLATES)))].format(
        style=words, a_style=("an " if words[0] in "aeiou" else "a ") + words, key=a["key"], bpm=bpm,
        instruments=a["instruments"], tempo_word="slow" if bpm < 100 else ("lively" if bpm < 140 else "fast"))


def bench_songs(n: int = 32, batch_size: int = 16, seconds: float = 6.0) -> float:
    """Songs per second rendered on one CPU thread (``batch`` fast path, CPU time of this process)."""
    ds = Songs("train", size=max(n, len(STYLES)), seconds=seconds)
    ds.batch(range(len(STYLES)))                                       # warm-up: one song per style
    start = time.process_time()
    for i in range(0, n, batch_size):
        ds.batch(range(i, min(n, i + batch_size)))
    return n / (time.process_time() - start)


# ----------------------------------------------------------------------------- measuring songs
class Key(NamedTuple):
    root: int          # pitch class, 0 = C
    mode: str          # "major" | "minor"

    @property
    def name(self) -> str:                         # "A minor", as in Songs' attributes["key"]
        return f"{S.NOTE_NAMES[self.root]} {self.mode}"


# Probe-tone ratings of how well each pitch class fits a key (Krumhansl & Kessler 1982), tonic first.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def _mono(wav: Any, sample_rate: int, min_seconds: float) -> np.ndarray:
    x = wav.detach().cpu().numpy() if isinstance(wav, Tensor) else np.asarray(wav)
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1:
        raise ValueError(f"expected a mono waveform (T,) or (1, T), got shape {tuple(x.shape)}.")
    if x.shape[0] < min_seconds * sample_rate:
        raise ValueError(f"need at least {min_seconds} s of audio, got {x.shape[0] / sample_rate:.2f} s.")
    if not np.all(np.isfinite(x)) or not np.any(x):
        raise ValueError("the waveform is silent or holds NaN/inf values; there is nothing to measure.")
    return x.astype(np.float64)


def _magnitudes(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT| (L, n_fft // 2 + 1) with a Hann window, frames centred on multiples of ``hop``."""
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(x, n_fft // 2), n_fft)[::hop]
    return np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=-1))


def estimate_tempo(wav: Any, sample_rate: int, min_bpm: float = 60.0, max_bpm: float = 200.0) -> float:
    """Tempo in BPM of a waveform (T,) or (1, T), from the autocorrelation of its onset strength.

    The onset strength is the spectral flux of the log-magnitude spectrogram (8 ms frames). Its
    autocorrelation ``ac`` peaks at the beat and at every metrical level (eighth notes, half bars,
    bars). Octave errors are settled in two steps: a lag scores the mean of ``ac`` at its first four
    multiples (all peaks for the beat and slower levels, not for eighth notes or dotted beats), and
    the beat is the fastest lag within [min_bpm, max_bpm] scoring within 70% of the best. Multiples past
    60% of the clip are left out: the autocorrelation there averages too few products (with them, only 19%
    of 3-s cuts of 48 val songs came within 5% of their tempo; without, 96%; at 5-6 s both 100%).
    """
    x = _mono(wav, sample_rate, 2.0)
    hop = max(1, round(sample_rate / 125))
    fps = sample_rate / hop
    mag = _magnitudes(x, 4 * hop, hop)                                 # (L, F)
    flux = np.maximum(np.diff(np.log1p(100 * mag / mag.max()), axis=0), 0).sum(1)  # (L - 1,)
    env = flux - np.convolve(flux, np.ones(int(fps)) / int(fps), mode="same")       # minus its 1 s mean
    n = len(env)
    ac = np.fft.irfft(np.abs(np.fft.rfft(env, 2 * n)) ** 2)[:n] / (n - np.arange(n))
    lo, hi = int(np.ceil(60 * fps / max_bpm)), min(int(60 * fps / min_bpm), n // 2)
    lags = np.arange(lo, hi + 1)
    comb, count = np.zeros(len(lags)), np.zeros(len(lags))
    for m in range(1, 5):                          # comb(lag): mean height of ac at the lag's first 4 multiples
        w = m // 2                                 # (a beat's multiples are all peaks, an eighth note's are not)
        near = np.lib.stride_tricks.sliding_window_view(np.pad(ac, w, constant_values=-np.inf), 2 * w + 1).max(1)
        ok = m * lags + w < int(0.6 * n)          # the autocorrelation's tail (few products) is too noisy
        comb[ok] += near[m * lags[ok]]
        count[ok] += 1
    comb /= count
    # The beat is the fastest strong pulse: the first local peak of the comb within 70% of the highest
    # (a bar, half a bar and two bars all score as high as the beat; eighth notes, 3/4 beats score lower).
    peaks = (comb >= comb.max() - 0.3 * abs(comb.max())) & (comb >= np.r_[-np.inf, comb[:-1]]) \
        & (comb >= np.r_[comb[1:], -np.inf])
    lag = int(lags[np.argmax(peaks)])
    m = max(1, min(4, (n // 3) // lag))                              # refine on the m-th multiple: m x finer
    p = m * lag - m + int(np.argmax(ac[m * lag - m:m * lag + m + 1]))
    a, b, c = ac[p - 1], ac[p], ac[p + 1]
    frac = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c < 0 else 0.0   # parabolic interpolation
    return float(60 * fps * m / (p + frac))


def chroma(wav: Any, sample_rate: int, fmin: float = 55.0, fmax: float = 1000.0) -> np.ndarray:
    """Pitch-class weight (12,), C first: the spectral peaks of every frame, summed over time, folded
    onto the nearest semitone and square-rooted. Only peaks count (not the leakage around them), and
    the band stops at 1 kHz, where harmonics (a fifth above at 3 f0) start to outweigh fundamentals."""
    x = _mono(wav, sample_rate, 0.5)
    n_fft = int(2 ** np.ceil(np.log2(0.25 * sample_rate)))           # ~4 Hz bins: semitones apart at 55 Hz
    mag = _magnitudes(x, n_fft, n_fft // 4)                          # (L, F)
    is_peak = (mag[:, 1:-1] > mag[:, :-2]) & (mag[:, 1:-1] >= mag[:, 2:])
    mag = np.pad(mag[:, 1:-1] * is_peak, ((0, 0), (1, 1))).sum(0)    # (F,)
    f = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    band = (f >= fmin) & (f <= fmax)
    pc = np.rint(12 * np.log2(f[band] / 440.0) + 69).astype(int) % 12
    return np.bincount(pc, np.sqrt(mag[band]), minlength=12)


def estimate_key(wav: Any, sample_rate: int) -> Key:
    """Key (root 0-11, "major"/"minor") of a waveform (T,) or (1, T): its chroma correlated with the 24
    rotations of the Krumhansl-Kessler key profiles (Krumhansl & Kessler 1982; Krumhansl 1990)."""
    c = chroma(wav, sample_rate)
    scores = [(np.corrcoef(c, np.roll(prof, r))[0, 1], r, mode)
              for mode, prof in (("major", KK_MAJOR), ("minor", KK_MINOR)) for r in range(12)]
    _, root, mode = max(scores)
    return Key(root, mode)
