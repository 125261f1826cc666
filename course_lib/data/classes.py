"""SynthWorld's class names: the families and their classes, in one global order.

Kept apart from the renderers so that captions and FSDD can name classes without importing
SynthWorld itself (no import cycles).
"""
from __future__ import annotations

from course_lib.data import synth as S
from course_lib.data import synth_speech as V

__all__ = ["STYLES", "FAMILIES", "CLASSES", "FAMILY_OF", "global_label"]

STYLES = ("waltz", "rock_beat", "arpeggio", "ambient_pad", "dance_beat", "melody")
FAMILIES: dict[str, tuple[str, ...]] = {
    "drums": S.DRUMS, "notes": tuple(S.INSTRUMENTS), "environment": S.TEXTURES,
    "speech": V.SYLLABLES, "music": STYLES}
CLASSES: tuple[str, ...] = tuple(c for names in FAMILIES.values() for c in names)
FAMILY_OF = {c: fam for fam, names in FAMILIES.items() for c in names}


def global_label(name: str) -> int:
    """Id of class ``name`` among all SynthWorld classes (stable whatever the ``families`` filter)."""
    return CLASSES.index(name)
