"""English captions for SynthWorld and FSDD: templates, class-name synonyms and zero-shot prompts.

Two disjoint template sets per family: ``"train"`` (used to caption training data) and
``"heldout"`` (never used in training; zero-shot tests build prompts from them). Templates are
``str.format`` strings over these fields:

    name        a synonym of the class name, bare ("kick drum", "rain", "'ba'")
    a_name      the same with its article where it needs one ("a kick drum", "rain")
    a_adj_name  with an intensity adjective ("a punchy kick drum", "heavy rain")
    adj, dyn    intensity as adjective / adverb ("soft" / "softly")
    family-specific fields: note, pitch, register (notes); speaker, syl, pitch_word (speech);
    key, tempo, tempo_word, instruments (music); digit, speaker (FSDD digits)

A template that uses only ``name``/``a_name`` is a *prompt template*: :func:`prompt` and
:func:`prompts` fill it for a class without any clip, which is what a zero-shot classifier needs.
"""
from __future__ import annotations

import string
from typing import Any

import numpy as np

from course_lib.data.classes import FAMILY_OF

TEMPLATE_SETS = ("train", "heldout")

SYNONYMS: dict[str, tuple[str, ...]] = {
    # drums
    "kick": ("kick drum", "bass drum", "kick"), "snare": ("snare drum", "snare"),
    "closed_hihat": ("closed hi-hat", "closed hihat", "tight hi-hat"),
    "open_hihat": ("open hi-hat", "open hihat", "sizzling hi-hat"), "clap": ("hand clap", "clap", "handclap"),
    "tom": ("tom drum", "tom-tom", "tom"), "crash": ("crash cymbal", "cymbal crash", "cymbal"),
    "rimshot": ("rimshot", "rim click", "side stick"),
    # pitched notes
    "piano": ("piano", "grand piano", "acoustic piano"),
    "guitar": ("guitar", "plucked guitar string", "acoustic guitar"),
    "organ": ("organ", "electric organ", "church organ"), "flute": ("flute", "wooden flute", "transverse flute"),
    "bass": ("bass guitar", "electric bass", "bass"), "bell": ("bell", "chime", "church bell"),
    "violin": ("violin", "fiddle", "bowed violin"),
    # environment (mass nouns take no article)
    "rain": ("rain", "rainfall", "falling rain"), "wind": ("wind", "blowing wind", "gusts of wind"),
    "ocean": ("ocean waves", "surf", "waves breaking on a beach"),
    "fire": ("crackling fire", "campfire", "fire"), "stream": ("babbling brook", "stream", "running water"),
    "birdsong": ("birdsong", "bird chirping", "songbird"), "engine": ("idling engine", "car engine", "motor hum"),
    # speech-like syllables
    "ba": ("ba", "bah"), "di": ("di", "dee"), "ko": ("ko", "koh"), "mu": ("mu", "moo"), "sa": ("sa", "sah"),
    "ne": ("ne", "neh"),
    # music
    "waltz": ("waltz", "waltz tune", "three-four waltz"), "rock_beat": ("rock beat", "rock drum groove", "rock groove"),
    "arpeggio": ("arpeggio", "arpeggiated chord", "broken chord pattern"),
    "ambient_pad": ("ambient pad", "ambient drone", "synth pad"),
    "dance_beat": ("dance beat", "four-on-the-floor beat", "club beat"),
    "melody": ("flute melody", "simple melody", "solo tune"),
    # FSDD digits
    **{w: (w,) for w in ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")},
}
MASS_NOUNS = {"rain", "rainfall", "falling rain", "wind", "blowing wind", "gusts of wind", "ocean waves", "surf",
              "waves breaking on a beach", "fire", "running water", "birdsong", "bird chirping", "motor hum"}

TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "drums": {
        "train": ("{a_name}", "the sound of {a_name}", "drum sound: {name}", "{a_adj_name} hit",
                  "a single {adj} {name}", "one {name} hit, played {dyn}", "{a_name} struck {dyn}",
                  "{a_adj_name} sample", "a drummer hits {a_name} {dyn}"),
        "heldout": ("an audio clip of {a_name}", "someone plays {a_name} once", "percussion: {a_adj_name}"),
    },
    "notes": {
        "train": ("the sound of {a_name}", "{a_name} note", "a note played on {a_name}", "{a_name} playing {note}",
                  "{a_adj_name} note at {pitch}", "{a_name} playing a {register} note",
                  "the note {note} on {a_name}, played {dyn}", "a single {register} {name} tone",
                  "{note} played {dyn} on {a_name}"),
        "heldout": ("an audio clip of {a_name}", "{a_name} can be heard", "a musical tone from {a_name} at {pitch}"),
    },
    "environment": {
        "train": ("the sound of {name}", "{a_name}", "a field recording of {a_name}", "{a_adj_name}",
                  "ambient sound of {a_adj_name}", "listening to {a_adj_name} outdoors",
                  "{a_adj_name} in the background",
                  "nature sounds: {name}", "a recording of {a_adj_name}"),
        "heldout": ("an audio clip of {a_name}", "{a_name} can be heard", "somewhere, {a_adj_name}"),
    },
    "speech": {
        "train": ("someone saying '{name}'", "the syllable '{name}'", "a voice saying '{name}'",
                  "{speaker} saying '{syl}'", "{speaker} pronouncing the syllable '{syl}'",
                  "'{syl}' spoken by {speaker}",
                  "a {pitch_word} voice says '{syl}'", "{speaker} says '{syl}' {dyn}", "the spoken syllable '{syl}'"),
        "heldout": ("an audio clip of a person uttering '{name}'", "'{name}' can be heard", "a speaker utters '{syl}'"),
    },
    "music": {
        "train": ("{a_name}", "{a_name} in {key}", "{a_name} at {tempo} bpm", "{a_name} in {key} at {tempo} bpm",
                  "a {tempo_word} {name} played on {instruments}", "music: {a_name}, {tempo} beats per minute",
                  "{a_name} in {key} played on {instruments}", "a {tempo_word} piece, {a_name} in {key}",
                  "the sound of {a_name}"),
        "heldout": ("an audio clip of {a_name}", "{a_name} can be heard",
                    "a short excerpt: {name} with a tempo of {tempo}"),
    },
    "digits": {
        "train": ("someone saying {name}", "the spoken digit {name}", "the number {name} said aloud",
                  "{speaker} saying the digit {digit}", "{speaker} says '{digit}'",
                  "the word '{digit}' spoken by {speaker}",
                  "a recording of {speaker} pronouncing {digit}", "{digit}, spoken by {speaker}",
                  "a voice says the number {digit}"),
        "heldout": ("an audio clip of a person uttering {name}", "'{name}' can be heard",
                    "a speaker reads out {digit}"),
    },
}
# intensity words by level / intensity (low, middle, high); environment classes have their own
ADJECTIVES = {"drums": (("soft", "gentle", "light"), ("medium", "steady", "firm"), ("hard", "punchy", "loud")),
              "notes": (("soft", "gentle", "quiet"), ("medium", "moderate", "clear"), ("loud", "bright", "strong")),
              "rain": (("light",), ("steady",), ("heavy", "pouring")),
              "wind": (("gentle",), ("steady",), ("strong", "howling")),
              "ocean": (("calm",), ("rolling",), ("crashing", "rough")),
              "fire": (("small",), ("crackling",), ("roaring", "big")),
              "stream": (("gentle",), ("babbling",), ("rushing",)),
              "birdsong": (("quiet",), ("cheerful",), ("loud", "busy")),
              "engine": (("quiet",), ("idling",), ("revving", "loud"))}
ADVERBS = (("softly", "gently", "quietly"), ("moderately", "steadily", "evenly"), ("loudly", "hard", "forcefully"))
SPEECH_ADVERBS = (("softly", "quietly", "gently"), ("clearly", "calmly", "plainly"),
                  ("loudly", "firmly", "emphatically"))


def _fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


def article(phrase: str) -> str:
    """``phrase`` with "a"/"an" in front, unless it is a mass noun or already quoted."""
    if phrase in MASS_NOUNS or phrase.startswith("'"):
        return phrase
    return ("an " if phrase[0].lower() in "aeiou" else "a ") + phrase


def family_of(label_name: str) -> str:
    return FAMILY_OF.get(label_name, "digits")


def templates(family: str, template_set: str = "train", prompt_only: bool = False) -> tuple[str, ...]:
    """The templates of ``family`` in ``template_set``; ``prompt_only``: only those needing just the class name."""
    if template_set not in TEMPLATE_SETS:
        raise ValueError(f"template_set must be one of {TEMPLATE_SETS}, got {template_set!r}.")
    out = TEMPLATES[family][template_set]
    return tuple(t for t in out if _fields(t) <= {"name", "a_name"}) if prompt_only else out


def prompts(label_name: str, template_set: str = "heldout") -> list[str]:
    """Every prompt for a class (each prompt template x each synonym), for prompt ensembling."""
    if label_name not in SYNONYMS:
        raise ValueError(f"Unknown class {label_name!r}; known: {sorted(SYNONYMS)}.")
    fam = family_of(label_name)
    return [t.format(name=s, a_name=article(s))
            for t in templates(fam, template_set, prompt_only=True) for s in SYNONYMS[label_name]]


def prompt(label_name: str, template_set: str = "heldout", generator: np.random.Generator | None = None) -> str:
    """One zero-shot prompt for a class: random with ``generator``, else the first (canonical) one."""
    options = prompts(label_name, template_set)
    return options[0] if generator is None else options[int(generator.integers(len(options)))]


def _tier(x: float) -> int:
    return 0 if x < 0.5 else (1 if x < 0.75 else 2)


def fields(attrs: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """The template fields of one clip (random synonym and intensity words drawn from ``rng``)."""
    fam, cls = attrs["family"], attrs["class"]
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    name = pick(SYNONYMS[cls])
    level = float(attrs.get("level", 0.6))
    inten = float(attrs.get("intensity", (level - 0.4) / 0.5))
    tier = _tier(level) if fam in ("drums", "notes", "speech", "digits") else min(2, int(inten * 3))
    adj = pick(ADJECTIVES.get(cls, ADJECTIVES.get(fam, ADJECTIVES["notes"]))[tier])
    adverbs = SPEECH_ADVERBS if fam in ("speech", "digits") else ADVERBS
    f: dict[str, Any] = {"name": name, "a_name": article(name), "adj": adj, "dyn": pick(adverbs[tier]),
                         "a_adj_name": article(f"{adj} {name}") if name not in MASS_NOUNS else f"{adj} {name}"}
    if fam == "notes":
        m = attrs["midi"]
        f.update(note=attrs["note"], pitch=f"{attrs['pitch_hz']:.0f} Hz",
                 register="low" if m < 52 else ("middle" if m < 72 else "high"))
    elif fam == "speech":
        f.update(speaker=attrs["speaker_desc"], syl=name,
                 pitch_word="low-pitched" if attrs["f0_hz"] < 140
                 else ("mid-pitched" if attrs["f0_hz"] < 220 else "high-pitched"))
    elif fam == "music":
        bpm = attrs["tempo_bpm"]
        f.update(key=attrs["key"], tempo=bpm, instruments=attrs["instruments"],
                 tempo_word="slow" if bpm < 90 else ("lively" if bpm < 130 else "fast"))
    elif fam == "digits":
        f.update(digit=name, speaker=attrs["speaker_desc"])
    return f


def caption(attrs: dict[str, Any], rng: np.random.Generator, template_set: str = "train") -> str:
    """A caption for one clip from its attributes (needs ``family`` and ``class``)."""
    f = fields(attrs, rng)
    options = templates(attrs["family"], template_set)
    return options[int(rng.integers(len(options)))].format_map(f)
