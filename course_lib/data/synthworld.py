"""Datasets of the course: SynthWorld (built in, procedural) and the Free Spoken Digit Dataset.

SynthWorld is a deterministic world of labelled, captioned sounds in five families::

    >>> from course_lib.data import SynthWorld, collate
    >>> ds = SynthWorld("train", families=["drums", "notes"])
    >>> ex = ds[0]                  # Example(audio (1, T), label, caption, attributes)
    >>> ds.classes[ex.label], ex.caption
    ('kick', 'a punchy kick drum hit')
    >>> loader = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True, collate_fn=collate)

Labels index ``ds.classes`` of *this* dataset (the classes of the chosen families, in the global
order of ``CLASSES``); ``attributes["class"]`` holds the name and ``global_label(name)`` the id
across all families. Label ``i % len(classes)`` goes to index ``i``, so every split is balanced.

Determinism: clip ``i`` is rendered from its own random stream
``np.random.SeedSequence([seed, split_id, i, global class id])``, never from the batch it is drawn
in, so ``ds[i]``, ``ds.batch([.., i, ..])`` and a re-created dataset give the same bits (on the same
machine and library versions). Splits use different ``split_id`` streams, so they are disjoint.
Audio does not depend on ``caption_set``; captions come from a second stream.

"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import scipy.fft as sfft
import torch

from course_lib.data import captions
from course_lib.data import synth as S
from course_lib.data import synth_speech as V
from course_lib.data.base import BatchRendered
from course_lib.data.classes import FAMILIES, FAMILY_OF, global_label

__all__ = ["SynthWorld", "bench_synthworld", "music"]

SPLITS = {"train": 0, "val": 1, "test": 2}
DEFAULT_SIZES = {"train": 4096, "val": 512, "test": 1024}
SPEAKER_SETS = {"train": V.TRAIN_SPEAKERS, "heldout": V.HELDOUT_SPEAKERS, "all": tuple(range(len(V.SPEAKERS)))}


# ----------------------------------------------------------------------------- music
MAJOR, MINOR = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10)
# style -> (tempo range bpm, beats per bar, chord progression as scale degrees)
STYLE_SPEC = {"waltz": ((140, 200), 3, (0, 4, 4, 0)), "rock_beat": ((90, 140), 4, (0, 3, 4, 0)),
              "arpeggio": ((80, 130), 4, (0, 5, 3, 4)), "ambient_pad": ((60, 80), 4, (0, 5)),
              "dance_beat": ((118, 132), 4, (0, 5)), "melody": ((80, 120), 4, (0, 3, 4, 0))}
STYLE_DRUMS = {"rock_beat": ("kick", "snare", "closed_hihat"), "dance_beat": ("kick", "open_hihat", "clap")}
STYLE_INSTRUMENTS = {"waltz": "piano", "rock_beat": "drums and bass", "arpeggio": "guitar",
                     "ambient_pad": "organ and bells", "dance_beat": "drums and bass", "melody": "flute"}


def _compose(style: str, g: np.random.Generator, dur: float) -> tuple[list, list, dict]:
    """One clip's score: note events (onset s, instrument, midi, velocity, gate s), drum hits (onset, kind, vel)."""
    (lo, hi), meter, prog = STYLE_SPEC[style]
    bpm = int(g.integers(lo, hi + 1))
    beat, root, minor = 60.0 / bpm, int(g.integers(0, 12)), bool(g.random() < 0.5)
    scale = MINOR if minor else MAJOR

    def pitch(degree: int, octave: int) -> int:                    # scale degree -> MIDI note
        return 12 * (octave + 1) + root + scale[degree % 7] + 12 * (degree // 7)

    def chord(b: int) -> int:                                      # chord root degree at beat b
        return prog[(b // (meter * (2 if style in ("ambient_pad", "dance_beat") else 1))) % len(prog)]

    notes, hits, deg = [], [], 2 * int(g.integers(0, 3))
    n_beats = int(np.ceil(dur / beat)) + 1
    jitter = lambda: float(g.uniform(-0.1, 0.1))                    # noqa: E731  (human velocity)
    for b in range(n_beats):
        t, c, accent = b * beat, chord(b), 1.0 if b % meter == 0 else 0.8
        if style == "waltz":
            if b % 3 == 0:
                notes += [(t, "piano", pitch(c, 2), 0.8 + jitter(), 0.9 * beat),
                          (t, "piano", pitch(c + 2 * int(g.integers(0, 3)), 5), 0.75 + jitter(), 2.5 * beat)]
            else:
                notes += [(t, "piano", pitch(c + k, 4), 0.45 + jitter(), 0.5 * beat) for k in (0, 2, 4)]
        elif style in ("rock_beat", "dance_beat"):
            rock = style == "rock_beat"
            if rock:
                hits += [(t, "kick" if b % 2 == 0 else "snare", accent + jitter())]
                hits += [(t + h * beat, "closed_hihat", 0.6 - 0.2 * h + jitter()) for h in (0, 0.5)]
                notes += [(t + h * beat, "bass", pitch(c, 1), 0.8 + jitter(), 0.45 * beat) for h in (0, 0.5)]
            else:
                hits += [(t, "kick", 1.0), (t + 0.5 * beat, "open_hihat", 0.6 + jitter())]
                hits += [(t, "clap", 0.8 + jitter())] if b % 2 == 1 else []
                notes += [(t + 0.5 * beat, "bass", pitch(c, 1), 0.9 + jitter(), 0.4 * beat)]
        elif style == "arpeggio":
            tones = [pitch(c + k, 3) for k in (0, 2, 4, 7)]
            for s, k in enumerate((0, 1, 2, 3) if b % 2 == 0 else (3, 2, 1, 0)):
                notes.append((t + s * beat / 4, "guitar", tones[k], 0.7 + jitter(), 0.6 * beat))
        elif style == "ambient_pad" and b % (2 * meter) == 0:
            notes += [(t, "organ", pitch(c + k, 3), 0.5, 2 * meter * beat) for k in (0, 2, 4, 6)]
            notes += [(t + float(g.uniform(0, 2)) * beat, "bell", pitch(c + 2 * int(g.integers(0, 4)), 5), 0.3, beat)]
        elif style == "melody":
            for s in range(int(g.integers(1, 3))):                       # quarter or two eighths
                deg = int(np.clip(deg + g.choice((-2, -1, 1, 2)), -2, 9))
                notes.append((t + s * beat / 2, "flute", pitch(deg, 5), 0.75 + jitter(), 0.45 * beat))
    notes = [n for n in notes if n[0] < dur - 0.02]
    hits = [h for h in hits if h[0] < dur - 0.02]
    key = f"{S.NOTE_NAMES[root]} {'minor' if minor else 'major'}"
    return notes, hits, {"tempo_bpm": bpm, "key": key, "meter": f"{meter}/4", "n_notes": len(notes) + len(hits)}


def music(style: str, r: S.Rng, sr: int, T: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render music clips of ``style``: notes rendered per instrument across the batch, drum one-shots
    (one per kind and clip) placed with an FFT convolution."""
    E, dur = len(r), T / sr
    scores = [_compose(style, g, dur) for g in r.gens]
    y = np.zeros((E, T), S.F32)
    for inst in sorted({n[1] for sc in scores for n in sc[0]}):
        ev = [(e, *n) for e, sc in enumerate(scores) for n in sc[0] if n[1] == inst]
        clip, onset, _, midi, vel, gate = (np.array(x) for x in zip(*ev))
        # A note ends exactly RELEASE s after its gate, so rendering it longer only adds exact
        # zeros: notes are rendered in buckets of similar length and a clip never depends on its batch.
        need = np.minimum(T, np.ceil((gate + S.RELEASE) * 8) / 8 * sr).astype(np.int64)
        for L in np.unique(need):
            b = need == L
            att = S.col(np.full(b.sum(), 0.4)) if inst == "organ" else None
            grains = S.voice(inst, S.col(S.midi_to_hz(midi[b])), S.col(vel[b]), S.col(gate[b]),
                             S.time_grid(L, sr), sr, att)                           # (N, L)
            starts = np.minimum(np.rint(onset[b] * sr).astype(np.int64), T)
            idx = (clip[b] * (T + L) + starts)[:, None] + np.arange(L)       # (N, L) flat positions
            y += np.bincount(idx.ravel(), grains.ravel(), minlength=E * (T + L)).reshape(E, T + L)[:, :T].astype(S.F32)
    kinds = STYLE_DRUMS.get(style, ())                              # fixed per style: draws never depend on the batch
    if kinds:
        Ld = int(0.4 * sr)
        fade = np.clip((Ld - np.arange(Ld)) / (0.05 * sr), 0, 1).astype(S.F32)
        drums = np.zeros((E, T), S.F32)
        for kind in kinds:
            shot, _ = S.drum(kind, r, sr, Ld, onset=np.zeros(E))    # (E, Ld), one per clip
            hits = np.zeros((E, T + Ld), S.F32)
            for e, sc in enumerate(scores):
                for onset, k, vel in sc[1]:
                    if k == kind:
                        hits[e, int(round(onset * sr))] += vel
            spec = sfft.rfft(hits, axis=-1) * sfft.rfft(shot * fade, n=T + Ld, axis=-1)
            drums += sfft.irfft(spec, n=T + Ld, axis=-1)[:, :T].astype(S.F32)
        y = y / (np.abs(y).max(axis=-1, keepdims=True) + 1e-6) * 0.6 + drums
    level = r.uniform(0.5, 0.9)
    attrs = {k: np.array([sc[2][k] for sc in scores]) for k in scores[0][2]}
    return S.normalize(y, level), {**attrs, "level": level}


# ----------------------------------------------------------------------------- SynthWorld
def _render_class(name: str, r: S.Rng, sr: int, T: int, speakers: Sequence[int]) -> tuple[np.ndarray, dict]:
    family = FAMILY_OF[name]
    if family == "drums":
        return S.drum(name, r, sr, T)
    if family == "notes":
        return S.note(name, r, sr, T)
    if family == "environment":
        return S.texture(name, r, sr, T)
    if family == "speech":
        return V.syllable(name, r, sr, T, speakers)
    return music(name, r, sr, T)


def _describe(name: str, raw: dict[str, Any]) -> dict[str, Any]:
    """Plain-Python attributes of one clip, with the words captions need (note names, speaker, ...)."""
    a = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in raw.items()}
    a = {k: round(v, 4) if isinstance(v, float) else v for k, v in a.items()}
    family = FAMILY_OF[name]
    if family == "notes":
        a.update(instrument=name, note=S.note_name(a["midi"]))
    elif family == "speech":
        spk = V.SPEAKERS[a.pop("speaker_index")]
        a.update(syllable=name, consonant=name[0], vowel=name[1], speaker=spk.id, sex=spk.sex,
                 speaker_desc=spk.description)
    elif family == "music":
        a.update(style=name, instruments=STYLE_INSTRUMENTS[name])
    elif family == "drums":
        a.update(drum=name)
    return a


class SynthWorld(BatchRendered):
    """Procedural labelled sounds with captions: drums, notes, environment, speech-like syllables, music.

    Args:
        split: "train" | "val" | "test" (disjoint random streams).
        families: subset of ``FAMILIES`` (default all five, 34 classes).
        sample_rate: Hz (any rate >= 8000; designs adapt to the Nyquist frequency).
        size: number of clips (default 4096 / 512 / 1024 for train / val / test).
        seed: world seed; the same (seed, split, index) gives the same clip and caption, bit for bit.
        duration: clip length in seconds (>= 0.25).
        caption_set: "train" templates, or "heldout" templates reserved for zero-shot tests.
        speakers: speakers of the speech family: "train" (6 voices), "heldout" (2 others), "all",
            or indices into ``synth.SPEAKERS``.
    """

    def __init__(self, split: str = "train", families: Sequence[str] | None = None, sample_rate: int = 16000,
                 size: int | None = None, seed: int = 0, duration: float = 1.0, caption_set: str = "train",
                 speakers: str | Sequence[int] = "train"):
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}; use one of {list(SPLITS)}.")
        families = list(FAMILIES) if families is None else ([families] if isinstance(families, str) else list(families))
        bad = [f for f in families if f not in FAMILIES]
        if bad or not families:
            raise ValueError(f"Unknown families {bad or families}; choose from {list(FAMILIES)}.")
        if int(sample_rate) != sample_rate or sample_rate < 8000:
            raise ValueError(f"sample_rate must be an integer >= 8000 Hz, got {sample_rate!r}.")
        if not duration >= 0.25:
            raise ValueError(f"duration must be at least 0.25 s, got {duration!r}.")
        if caption_set not in captions.TEMPLATE_SETS:
            raise ValueError(f"caption_set must be one of {captions.TEMPLATE_SETS}, got {caption_set!r}.")
        self.speakers = tuple(SPEAKER_SETS[speakers] if isinstance(speakers, str) else speakers)
        if not self.speakers or not all(0 <= s < len(V.SPEAKERS) for s in self.speakers):
            raise ValueError(f"speakers must be one of {list(SPEAKER_SETS)} or indices in [0, {len(V.SPEAKERS)}).")
        self.split, self.seed, self.caption_set = split, int(seed), caption_set
        self.sample_rate, self.duration = int(sample_rate), float(duration)
        self.num_samples = int(round(duration * sample_rate))       # T
        self.families = [f for f in FAMILIES if f in families]      # global order, whatever the order given
        self.classes = [c for f in self.families for c in FAMILIES[f]]
        self.size = self._checked_size(DEFAULT_SIZES[split] if size is None else size)

    def __repr__(self) -> str:
        return (f"SynthWorld(split={self.split!r}, size={self.size}, classes={len(self.classes)}, "
                f"families={self.families}, sample_rate={self.sample_rate}, duration={self.duration}, "
                f"seed={self.seed})")

    def class_family(self, label: int) -> str:
        """Family of the class with id ``label`` (an index into ``.classes``)."""
        return FAMILY_OF[self.classes[label]]

    def _index(self, i: int) -> int:
        j = int(i) + (self.size if int(i) < 0 else 0)
        if not 0 <= j < self.size:
            raise IndexError(f"index {i} out of range for a SynthWorld of size {self.size}.")
        return j

    def _streams(self, i: int) -> tuple[np.random.Generator, np.random.Generator]:
        name = self.classes[i % len(self.classes)]
        audio_seq, caption_seq = np.random.SeedSequence([self.seed, SPLITS[self.split], i, global_label(name)]).spawn(2)
        return np.random.default_rng(audio_seq), np.random.default_rng(caption_seq)

    def _render(self, indices: Sequence[int],
                with_captions: bool) -> tuple[np.ndarray, list[int], list[dict], list[str]]:
        idx = [self._index(i) for i in indices]
        sr, T = self.sample_rate, self.num_samples
        audio = np.zeros((len(idx), T), S.F32)
        labels = [i % len(self.classes) for i in idx]
        attrs: list[dict] = [{} for _ in idx]
        caps = [""] * len(idx)
        streams = [self._streams(i) for i in idx]
        for label in sorted(set(labels)):                           # vectorized per class
            rows = [b for b, lab in enumerate(labels) if lab == label]
            name = self.classes[label]
            y, raw = _render_class(name, S.Rng([streams[b][0] for b in rows]), sr, T, self.speakers)
            audio[rows] = y
            for k, b in enumerate(rows):
                a = _describe(name, {key: v[k] for key, v in raw.items()})
                attrs[b] = {"family": FAMILY_OF[name], "class": name, "index": idx[b], "split": self.split, **a}
                if with_captions:
                    caps[b] = captions.caption(attrs[b], streams[b][1], self.caption_set)
        n = min(T, int(0.01 * sr))                                  # 10 ms fade-out: no click at the cut
        audio[:, T - n:] *= np.linspace(1, 0, n, dtype=S.F32)
        # Decays end in subnormal floats (|x| < 1.2e-38), which make CPU convolutions 10-100x slower
        # in every model trained on them. They are far below 16-bit resolution: set them to zero.
        audio[np.abs(audio) < 1.1754944e-38] = 0.0   # np.finfo(np.float32).tiny
        return audio, labels, attrs, caps


def bench_synthworld(n: int = 200, sample_rate: int = 16000, duration: float = 1.0, batch_size: int = 64) -> float:
    """Clips per second SynthWorld renders on one CPU thread (all families, ``batch`` fast path).

    Timed in CPU seconds of this process (``time.process_time``): the rendering is single-threaded,
    so this is the one-core speed, and other programs busy on the machine do not distort it.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ds = SynthWorld("train", sample_rate=sample_rate, duration=duration, size=max(n, 1) + batch_size)
        ds.batch(range(len(ds.classes)))                            # warm-up: FFT plans, imports
        start = time.process_time()
        for i in range(0, n, batch_size):
            ds.batch(range(i, min(n, i + batch_size)))
        return n / (time.process_time() - start)
    finally:
        torch.set_num_threads(threads)
