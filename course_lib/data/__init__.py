"""Datasets of the course: SynthWorld (built in, procedural) and the Free Spoken Digit Dataset.

    >>> from course_lib.data import SynthWorld, collate
    >>> ds = SynthWorld("train", families=["drums", "notes"])
    >>> ex = ds[0]                  # Example(audio (1, T), label, caption, attributes)

The package, bottom to top (each module imports only those above it):

    synth, synth_speech   numpy renderers of drums, notes, textures, music voices and syllables
    classes               the families and class names, in one global order
    base                  Example, Batch, collate
    captions              caption templates and synonyms (train and held-out sets)
    fsdd                  the Free Spoken Digit Dataset: find, load, download on request
    synthworld            SynthWorld itself
    songs                 multi-second songs with style, key, tempo and an A B A form (Jukebox)
    voices                offline espeak-ng speakers: sentences, train and held-out voices
"""
from __future__ import annotations

from course_lib.data import captions, synth, synth_speech
from course_lib.data.base import Batch, Example, collate
from course_lib.data.classes import CLASSES, FAMILIES, FAMILY_OF, STYLES, global_label
from course_lib.data.fsdd import FSDD, download_fsdd, find_fsdd, fsdd, sources_found
from course_lib.data.songs import Songs, estimate_key, estimate_tempo
from course_lib.data.synthworld import SynthWorld, bench_synthworld
from course_lib.data.voices import Voices, available_voices, synthesize

__all__ = ["SynthWorld", "Example", "Batch", "collate", "CLASSES", "FAMILIES", "FAMILY_OF", "STYLES", "global_label",
           "bench_synthworld", "FSDD", "fsdd", "find_fsdd", "download_fsdd", "sources_found",
           "captions", "synth", "synth_speech", "Voices", "synthesize", "available_voices",
           "Songs", "estimate_tempo", "estimate_key"]
