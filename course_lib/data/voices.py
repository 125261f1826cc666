"""Many speakers without downloads: speech synthesized offline by espeak-ng (``pip install espeakng-loader``).

    >>> wav = synthesize("Hello world.", "en-us+f3")            # (T,) float32 at 16 kHz
    >>> train = Voices("train", size=256, duration=2.0)         # Example(audio (1, T), label, caption, attributes)
    >>> test = Voices("test", size=64, speakers="heldout")      # unseen voices saying unseen sentences

A *speaker* is an espeak-ng voice variant (``m3``, ``Annie``, ... or "default") in one of ``LANGUAGES``
with a fixed base pitch, pitch range and rate drawn from its name; each utterance adds rate and pitch
jitter to one of 625 template sentences. Speaker split (fixed): variant ``v`` is *held out*, in every
language, when ``zlib.crc32(v.lower()) % 5 == 0``: with espeakng-loader 0.2.4, 21 of 105 (belinda, boris,
Diogo, f1, f3, f5, gustave, iven, Jacky, kaukovalta, m1, m5, marcelo, miguel, mike2, pablo, pedro,
RicishayMax2, steph2, travis, victor), so no held-out timbre is heard in training. Sentences split the
same way (``crc32 % 5 == 0``: "val"/"test"). Utterance ``i`` draws from ``default_rng([seed, split_id, i])``.

libespeak-ng segfaults on some input (``espeak_SetVoiceByName("!v/Annie")``) and is not thread-safe, so
it runs in a worker process; a crash raises :class:`SynthesisCrash` and a fresh worker takes over. Raw
output is cached on disk (``$COURSE_CACHE/voices``, default ``~/.cache/course_lib/voices``).
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import itertools
import json
import os
import subprocess
import sys
import threading
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from course_lib.audio import resample
from course_lib.data.base import Example

__all__ = ["Voices", "Speaker", "SynthesisCrash", "synthesize", "available_voices", "list_speakers", "sentences",
           "bench_voices", "LANGUAGES", "LICENSE_NOTE"]

LICENSE_NOTE = ("Speech synthesized offline with espeak-ng (GPL-3.0-or-later, github.com/espeak-ng/espeak-ng) as "
                "shipped by the espeakng-loader package. The GPL covers the synthesizer, not what it says: the "
                "audio is our own generated data, speaking sentences from course_lib's built-in templates.")
ESPEAK_SAMPLE_RATE = 22_050
LANGUAGES = {"en-us": "American English", "en": "British English", "en-gb-scotland": "Scottish English",
             "en-029": "Caribbean English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian"}
SPLITS = {"train": 0, "val": 1, "test": 2}
DEFAULT_SIZES = {"train": 2048, "val": 256, "test": 512}
CACHE_VERSION = 1
_CRASH_ON: tuple[str, ...] = ()   # test hook: voices on which the worker kills itself with SIGSEGV

# subject | verb | object | time or place, five choices each: 5**4 = 625 sentences per language
_WORDS = {
    "en": ("the old man|my sister|a small dog|the teacher|our neighbour",
           "found|painted|carried|wanted|opened",
           "a red box|the green door|seven apples|the heavy bag|a blue kite",
           "this morning|near the river|after dinner|in the garden|on Monday"),
    "de": ("der alte Mann|meine Schwester|ein kleiner Hund|die Lehrerin|unser Nachbar",
           "fand|malte|trug|suchte|öffnete",
           "eine rote Kiste|die grüne Tür|sieben Äpfel|den schweren Koffer|einen blauen Drachen",
           "heute Morgen|am Fluss|nach dem Essen|im Garten|am Montag"),
    "fr": ("le vieil homme|ma sœur|un petit chien|la maîtresse|notre voisin",
           "a trouvé|a peint|a porté|cherchait|a ouvert",
           "une boîte rouge|la porte verte|sept pommes|le sac lourd|un cerf-volant bleu",
           "ce matin|près de la rivière|après le dîner|dans le jardin|lundi"),
    "es": ("el anciano|mi hermana|un perro pequeño|la maestra|nuestro vecino",
           "encontró|pintó|llevó|buscaba|abrió",
           "una caja roja|la puerta verde|siete manzanas|la bolsa pesada|una cometa azul",
           "esta mañana|cerca del río|después de cenar|en el jardín|el lunes"),
    "it": ("il vecchio|mia sorella|un piccolo cane|la maestra|il nostro vicino",
           "ha trovato|ha dipinto|ha portato|cercava|ha aperto",
           "una scatola rossa|la porta verde|sette mele|la borsa pesante|un aquilone blu",
           "stamattina|vicino al fiume|dopo cena|nel giardino|lunedì"),
}

# The worker: a Python that needs only ctypes (no torch: starts in ~0.1 s). One JSON request per line on stdin;
# the answer is "ok <nbytes>\n" + int16 samples, or "err <reason>\n". libespeak-ng carries state from call to
# call (measured: the same request twice gives other samples, even lengths; a sequence of voice loads makes
# later synthesis segfault; espeak_Initialize resets neither) and seeds its noise from the clock. So every
# request runs, noise seeded, in a child forked from the freshly initialized worker: the same request gives
# the same bits whatever came before, in every process, and a crash ends only that child.
# Without fork (Windows) it runs in place: then only the disk cache makes repeated calls bit-identical.
_WORKER_SOURCE = r"""
import ctypes, json, os, signal, sys
lib = ctypes.CDLL(sys.argv[1])
if lib.espeak_Initialize(2, 0, sys.argv[2].encode(), 0) <= 0:  # 2 = AUDIO_OUTPUT_SYNCHRONOUS; returns the rate
    sys.exit(3)
chunks, out = [], sys.stdout.buffer
@ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
def collect(wav, n, events):  # t_espeak_callback: each block of int16 samples; returning 0 = go on
    if wav and n > 0:
        chunks.append(ctypes.string_at(wav, 2 * n))
    return 0
lib.espeak_SetSynthCallback(collect)
seed = getattr(lib, "espeak_ng_SetRandSeed", lambda s: None)
def synth(job):
    if job["voice"] in job["crash_on"]:
        os.kill(os.getpid(), signal.SIGSEGV)
    if lib.espeak_SetVoiceByName(job["voice"].encode()) != 0:
        return b"err unknown voice\n"
    seed(1)
    for param, value in ((1, job["rate"]), (3, job["pitch"]), (4, job["range"])):  # espeakRATE, PITCH, RANGE
        lib.espeak_SetParameter(param, value, 0)
    text = job["text"].encode() + b"\0"
    status = lib.espeak_Synth(text, len(text), 0, 1, 0, 1, None, None)  # POS_CHARACTER, espeakCHARS_UTF8
    data = b"".join(chunks)
    return b"ok %d\n" % len(data) + data if status == 0 else b"err synth status %d\n" % status
for line in sys.stdin:
    job = json.loads(line)
    if not hasattr(os, "fork"):
        chunks.clear()
        answer = synth(job)
    else:
        r, w = os.pipe()
        if (pid := os.fork()) == 0:
            os.close(r)
            with open(w, "wb") as f:
                f.write(synth(job))
            os._exit(0)
        os.close(w)
        with open(r, "rb") as f:
            answer = f.read()
        status = os.waitpid(pid, 0)[1]
        answer = answer if status == 0 else b"err crash (wait status %d)\n" % status  # 11: SIGSEGV
    out.write(answer)
    out.flush()
"""


class SynthesisCrash(RuntimeError):
    """libespeak-ng crashed in a worker process (the caller is unharmed)."""


class Speaker(NamedTuple):
    name: str          # "en-us+m3"; the language's default voice is "en-us+default"
    voice: str         # espeak-ng voice name: "en-us+m3" or "en-us"
    variant: str
    language: str      # a key of LANGUAGES
    pitch: int         # base espeakPITCH, 0-100 (50 = the variant's own pitch)
    pitch_range: int   # base espeakRANGE, 0-100
    rate_wpm: int      # base speaking rate, words per minute
    heldout: bool


class _Request(NamedTuple):
    text: str
    voice: str
    rate_wpm: int
    pitch: int
    pitch_range: int


def _loader() -> Any:
    try:
        import espeakng_loader
    except ImportError as e:
        raise ImportError("Offline speech synthesis needs espeak-ng from the espeakng-loader package: `pip install "
                          "espeakng-loader` (or `pip install -e \".[tts]\"` in the course repository).") from e
    return espeakng_loader


class _Worker:
    """One libespeak-ng in its own process."""

    def __init__(self) -> None:
        loader, self.owner = _loader(), os.getpid()
        self.proc = subprocess.Popen([sys.executable, "-I", "-c", _WORKER_SOURCE, loader.get_library_path(),
                                      loader.get_data_path()], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None and self.owner == os.getpid()   # a forked DataLoader worker needs its own

    def __call__(self, r: _Request) -> np.ndarray:
        """int16 samples (T,) at 22.05 kHz."""
        job = {"text": r.text, "voice": r.voice, "rate": r.rate_wpm, "pitch": r.pitch, "range": r.pitch_range,
               "crash_on": _CRASH_ON}
        try:
            self.proc.stdin.write(json.dumps(job).encode() + b"\n")
            self.proc.stdin.flush()
            head = self.proc.stdout.readline().decode()
        except OSError:                 # broken pipe: the worker is gone
            head = ""
        status, _, rest = head.strip().partition(" ")
        if not head or rest.startswith("crash"):
            raise SynthesisCrash(f"espeak-ng crashed ({rest or f'worker exit code {self.proc.wait()}'}) on voice "
                                 f"{r.voice!r}, text {r.text!r}. Pick another voice (see available_voices()).")
        if rest == "unknown voice":
            raise ValueError(f"espeak-ng has no voice {r.voice!r}; use 'language' or 'language+variant', "
                             f"e.g. 'en-us+m3' (see available_voices()).")
        if status != "ok":
            raise RuntimeError(f"espeak-ng failed on voice {r.voice!r}, text {r.text!r}: {rest}.")
        return np.frombuffer(self.proc.stdout.read(int(rest)), dtype="<i2")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()


_shared: _Worker | None = None          # synthesize() and render(workers=1) reuse one worker per process
_shared_lock = threading.Lock()
_available: dict[tuple[str, ...], list[str]] = {}
atexit.register(lambda: _shared is not None and _shared.alive and _shared.close())


def _run(requests: Sequence[_Request], worker: _Worker | None) -> tuple[list[Any], _Worker | None]:
    """Synthesize in order on ``worker``, starting a fresh one whenever it is gone."""
    out: list[Any] = [None] * len(requests)
    for k in range(len(requests)):
        if worker is None or not worker.alive:
            worker = _Worker()
        try:
            out[k] = worker(requests[k])
        except (SynthesisCrash, ValueError, RuntimeError) as e:
            out[k] = e
    return out, worker


def _cache_root() -> Path:
    return Path(os.environ.get("COURSE_CACHE", Path.home() / ".cache" / "course_lib")).expanduser() / "voices"


def _raw(requests: Sequence[_Request], workers: int = 1, cache: bool = True) -> list[Any]:
    """Per request int16 (T,) at 22.05 kHz, or the exception it raised: from the disk cache, else synthesized."""
    global _shared
    keys = [hashlib.sha1(json.dumps([CACHE_VERSION, metadata.version("espeakng-loader"), *r]).encode()).hexdigest()
            for r in requests]      # every parameter and the espeak-ng release
    files = [_cache_root() / key[:2] / f"{key}.npy" for key in keys]
    out: list[Any] = [_load(f) if cache else None for f in files]
    todo = [k for k, x in enumerate(out) if x is None]
    if workers <= 1:
        with _shared_lock:
            done, _shared = _run([requests[k] for k in todo], _shared)
    else:                               # private workers on interleaved shares, driven from threads
        shares = [todo[w::workers] for w in range(workers)]
        with ThreadPoolExecutor(workers) as pool:
            runs = list(pool.map(lambda share: _run([requests[k] for k in share], None), shares))
        for _, worker in runs:
            worker is not None and worker.close()
        done, todo = [x for d, _ in runs for x in d], [k for share in shares for k in share]
    for k, x in zip(todo, done):
        if isinstance(x, np.ndarray) and (x.size < ESPEAK_SAMPLE_RATE // 10 or not np.any(x)):
            x = ValueError(f"voice {requests[k].voice!r} said nothing for {requests[k].text!r} (a language without "
                           f"its dictionary, or a bare variant?); see available_voices().")
        out[k] = x
        if cache and isinstance(x, np.ndarray):
            _save(files[k], x)
    return out


def _load(path: Path) -> np.ndarray | None:
    try:
        return np.load(path) if path.exists() else None
    except (OSError, ValueError):       # a damaged cache file is synthesized again
        return None


def _save(path: Path, x: np.ndarray | list[str]) -> None:
    """Atomic write of .npy or .json (a temporary file, then ``os.replace``); a failure leaves nothing, warns."""
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp")   # unique per writer
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            if path.suffix == ".npy":
                np.save(f, x)
            else:
                f.write(json.dumps(x).encode())
        os.replace(tmp, path)
    except BaseException as e:         # nothing half-written stays behind, whatever stopped us
        tmp.unlink(missing_ok=True)
        if not isinstance(e, OSError):
            raise
        warnings.warn(f"Could not write the voices cache file {path}: {e}. Set COURSE_CACHE to a writable folder.")


def _finish(raw: np.ndarray, sample_rate: int, band_limit_hz: float | None = None) -> np.ndarray:
    """int16 (T,) at 22.05 kHz -> float32 (T',) at ``sample_rate``, 50 ms of silence each side, peak <= 0.99."""
    x = raw.astype(np.float32) / 32768.0
    loud = np.flatnonzero(np.abs(x) > 0.01 * np.abs(x).max())      # -40 dB re peak
    m = int(0.05 * ESPEAK_SAMPLE_RATE)
    x = np.pad(x, m)[loud[0]:loud[-1] + 2 * m + 1]
    y = resample(torch.from_numpy(x), ESPEAK_SAMPLE_RATE, sample_rate)
    if band_limit_hz:                   # sinc low-pass: down to 2 * band_limit_hz and back up
        low = int(2 * band_limit_hz)
        y = resample(resample(y, sample_rate, low), low, sample_rate)[:y.shape[-1]]
    y = y * min(1.0, 0.99 / max(float(y.abs().max()), 1e-12))      # sinc overshoot stays below full scale
    y[y.abs() < 1e-30] = 0.0            # no subnormals: they slow every CPU convolution downstream
    return y.numpy()


def synthesize(text: str, voice: str, rate_wpm: int = 175, pitch: int = 50, pitch_range: int = 50,
               sample_rate: int = 16000, cache: bool = True) -> np.ndarray:
    """Speak ``text`` with an espeak-ng voice, in a crash-safe worker process.

    Args:
        text: what to say (non-empty).
        voice: ``"language"`` or ``"language+variant"``, e.g. ``"en-us+f3"`` (see :func:`available_voices`).
        rate_wpm: words per minute (80-450); pitch, pitch_range: espeak's 0-100 scales (50 = the voice's own).
        sample_rate: output rate in Hz (espeak-ng renders at 22.05 kHz); cache: use the on-disk cache.

    Returns:
        ``(T,)`` float32, peak <= 0.99, 50 ms of silence at each end. Raises ImportError (no espeakng-loader),
        ValueError (empty text, unknown voice, bad parameter) or SynthesisCrash (espeak-ng crashed).
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text must be a non-empty string, got {text!r}.")
    for name, v, lo, hi in (("rate_wpm", rate_wpm, 80, 450), ("pitch", pitch, 0, 100),
                            ("pitch_range", pitch_range, 0, 100)):
        if int(v) != v or not lo <= v <= hi:
            raise ValueError(f"{name} must be a whole number in [{lo}, {hi}], got {v!r}.")
    _loader()
    (raw,) = _raw([_Request(text, voice, int(rate_wpm), int(pitch), int(pitch_range))], cache=cache)
    if isinstance(raw, Exception):
        raise raw
    return _finish(raw, int(sample_rate))


def _variants() -> list[str]:
    """The variants shipped with espeak-ng (files in ``voices/!v``) and "default", sorted case-insensitively."""
    return sorted([p.name for p in (Path(_loader().get_data_path()) / "voices" / "!v").iterdir()] + ["default"],
                  key=str.lower)


def _probe(voices: Sequence[str]) -> list[str]:
    """The voices (in order) that speak audibly and, if a variant, sound other than their plain language."""
    results, worker = _run([_Request("one two three", v, 175, 50, 50) for v in voices], None)
    worker is not None and worker.close()
    got = {v: r.tobytes() for v, r in zip(voices, results) if isinstance(r, np.ndarray) and r.size > 4000 and r.any()}
    return [v for v in got if "+" not in v or got[v] != got.get(v.split("+")[0])]


def available_voices(languages: Sequence[str] | None = None) -> list[str]:
    """Voice names (``"en-us"``, ``"en-us+m3"``, ...) that really work: probed once (~5 s), then cached on disk.

    Args:
        languages: espeak-ng language names to try with every variant (default: ``LANGUAGES``).
    """
    _loader()                           # fail early, with the fix, when espeakng-loader is missing
    key = tuple(LANGUAGES if languages is None else languages)
    version, digest = metadata.version("espeakng-loader"), zlib.crc32(repr(key).encode())
    file = _cache_root() / f"available-{version}-{digest}.json"
    if key not in _available and file.exists() and not _CRASH_ON:
        _available[key] = json.loads(file.read_text())
    if key not in _available:
        _available[key] = _probe([lang if v == "default" else f"{lang}+{v}" for lang in key for v in _variants()])
        if not _CRASH_ON:               # never remember what a simulated crash made of the list
            _save(file, _available[key])
    return list(_available[key])


def list_speakers(which: str = "all", languages: Sequence[str] | None = None) -> list[Speaker]:
    """The speaker roster: "train", "heldout" or "all", optionally of some ``LANGUAGES`` only."""
    if which not in ("train", "heldout", "all"):
        raise ValueError(f"speakers must be 'train', 'heldout', 'all' or a list of speaker names, got {which!r}.")
    langs = list(LANGUAGES) if languages is None else list(languages)
    if not langs or any(lang not in LANGUAGES for lang in langs):
        raise ValueError(f"Unknown languages {langs}; choose from {list(LANGUAGES)}.")
    ok, roster = set(available_voices()), []
    for lang, variant in itertools.product(langs, _variants()):
        voice = lang if variant == "default" else f"{lang}+{variant}"
        heldout = zlib.crc32(variant.lower().encode()) % 5 == 0          # the fixed speaker split
        if voice in ok and which in ("all", "heldout" if heldout else "train"):
            g = np.random.default_rng(zlib.crc32(f"{lang}+{variant}".encode()))   # fixed per speaker
            roster.append(Speaker(f"{lang}+{variant}", voice, variant, lang, 50 + int(g.integers(-12, 13)),
                                  50 + int(g.integers(-20, 21)), 175 + int(g.integers(-25, 26)), heldout))
    return roster


@functools.cache
def sentences(language: str, split: str = "train") -> tuple[str, ...]:
    """The built-in sentences of a language: "train" (~500) or "val"/"test" (the other ~125, shared)."""
    if language[:2] not in _WORDS:
        raise ValueError(f"No sentences for {language!r}; languages: {list(LANGUAGES)}.")
    every = [" ".join(p) for p in itertools.product(*(s.split("|") for s in _WORDS[language[:2]]))]
    every = [s[0].upper() + s[1:] + "." for s in every]
    return tuple(s for s in every if (zlib.crc32(s.encode()) % 5 == 0) == (split != "train"))


class Voices(Dataset):
    """Sentences said by many espeak-ng speakers: ``Example(audio (1, T), label, caption, attributes)``.

    Args:
        split: "train" | "val" | "test": disjoint utterance streams; val/test say the held-out sentences.
        size: number of utterances (default 2048 / 256 / 512).
        sample_rate: Hz.
        seed: the same (seed, split, index) gives the same utterance, bit for bit.
        speakers: "train" (default), "heldout" (never used in training), "all", or speaker names.
        languages: keep the speakers of these ``LANGUAGES`` only.
        band_limit_hz: low-pass at this frequency (4000 mimics FSDD's 8 kHz recordings).
        duration: seconds; pad (centred zeros) or crop (centred) each clip so batches stack; None keeps lengths.
        cache: use the on-disk cache.

    Label ``k`` names speaker ``classes[k]``; utterance ``i`` is said by speaker ``order[i % len(classes)]``.
    """

    def __init__(self, split: str = "train", size: int | None = None, sample_rate: int = 16000, seed: int = 0,
                 speakers: str | Sequence[str] | None = None, languages: Sequence[str] | None = None,
                 band_limit_hz: float | None = None, duration: float | None = None, cache: bool = True):
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}; use one of {list(SPLITS)}.")
        if band_limit_hz is not None and not 0 < 2 * band_limit_hz < sample_rate:
            raise ValueError(f"band_limit_hz must be in (0, {sample_rate / 2}), got {band_limit_hz!r}.")
        which = "train" if speakers is None else speakers
        roster = list_speakers(which if isinstance(which, str) else "all", languages)
        if not isinstance(which, str):
            by_name = {s.name: s for s in roster}
            if not which or any(n not in by_name for n in which):
                raise ValueError(f"Unknown speakers {[n for n in which if n not in by_name] or which}; "
                                 f"see course_lib.data.voices.list_speakers().")
            roster = [by_name[n] for n in which]
        if not roster:
            raise ValueError(f"No {which} speakers for languages {languages}: espeak-ng synthesized none of their "
                             f"voices (see available_voices()).")
        self.split, self.seed, self.sample_rate, self.cache = split, int(seed), int(sample_rate), cache
        self.band_limit_hz, self.duration = band_limit_hz, duration
        self.size = DEFAULT_SIZES[split] if size is None else int(size)
        self.speakers = sorted(roster, key=lambda s: s.name)
        self.classes = [s.name for s in self.speakers]
        self.order = np.random.default_rng(self.seed).permutation(len(self.speakers))

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return (f"Voices(split={self.split!r}, size={self.size}, speakers={len(self.speakers)}, "
                f"sample_rate={self.sample_rate}, seed={self.seed})")

    def _plan(self, i: int, attempt: int = 0) -> tuple[int, _Request]:
        if not 0 <= i < self.size:
            raise IndexError(f"index {i} out of range for Voices of size {self.size}.")
        label = int(self.order[i % len(self.speakers)])
        s, g = self.speakers[label], np.random.default_rng([self.seed, SPLITS[self.split], i])
        pool = sentences(s.language, self.split)
        text = pool[(int(g.integers(len(pool))) + attempt) % len(pool)]      # after a crash: the next sentence
        rate, pitch = s.rate_wpm + int(g.integers(-12, 13)), min(max(s.pitch + int(g.integers(-4, 5)), 0), 100)
        return label, _Request(text, s.voice, rate, pitch, s.pitch_range)

    def render(self, indices: Sequence[int], workers: int = 1) -> list[Example]:
        """Examples for many indices at once, synthesized by ``workers`` worker processes."""
        idx = [int(i) + (self.size if int(i) < 0 else 0) for i in indices]
        plans = [self._plan(i) for i in idx]
        raws = _raw([r for _, r in plans], workers, self.cache)
        for attempt in (1, 2):          # a crashing utterance is replaced, deterministically, twice at most
            bad = [k for k, x in enumerate(raws) if isinstance(x, SynthesisCrash)]
            for k, x in zip(bad, _raw([self._plan(idx[k], attempt)[1] for k in bad], 1, self.cache)):
                plans[k], raws[k] = self._plan(idx[k], attempt), x
        out = []
        for i, (label, r), raw in zip(idx, plans, raws):
            if isinstance(raw, Exception):
                raise raw
            wav = torch.from_numpy(_finish(raw, self.sample_rate, self.band_limit_hz))[None]   # (1, T)
            seconds, T = wav.shape[-1] / self.sample_rate, wav.shape[-1]
            if self.duration is not None:
                n = round(self.duration * self.sample_rate)
                wav = (torch.nn.functional.pad(wav, ((n - T) // 2, n - T - (n - T) // 2)) if T < n
                       else wav[:, (T - n) // 2:(T - n) // 2 + n])
            s = self.speakers[label]
            attrs = {"family": "speech", "source": "espeak-ng", "speaker": s.name, "voice": s.voice,
                     "variant": s.variant, "language": s.language, "heldout": s.heldout, "text": r.text,
                     "rate": r.rate_wpm, "pitch": r.pitch, "pitch_range": r.pitch_range, "duration": seconds,
                     "index": i, "split": self.split}
            out.append(Example(wav, label, f'a synthetic voice speaking {LANGUAGES[s.language]}: "{r.text}"', attrs))
        return out

    def __getitems__(self, indices: Sequence[int]) -> list[Example]:
        return self.render(indices)     # DataLoader (torch >= 2.1) asks for a whole batch at once

    def __getitem__(self, i: int) -> Example:
        return self.render([i])[0]


def bench_voices(n: int = 64, workers: int = 1) -> float:
    """Utterances per second (wall clock, cache off, 16 kHz, one torch thread) after a warm-up."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ds = Voices("train", size=n + 4, cache=False)
        ds.render(range(n, n + 4), workers)
        start = time.perf_counter()
        ds.render(range(n), workers)
        return n / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
