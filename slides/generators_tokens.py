"""Slide generators for the token-model decks (04 Jukebox).

Imported at the end of ``generators.py``, whose registries and helpers it uses. Numbers that take
minutes to recompute come from the checkpoint cards (``num:card_metric``, ``num:card_field``).
"""
from __future__ import annotations

from functools import lru_cache

import torch
from matplotlib.figure import Figure

from course_lib import jukebox
from course_lib.data.songs import STYLES, Songs
from generators import SR, _fig, figure, number, sound


@lru_cache(maxsize=1)
def _jukebox() -> jukebox.Jukebox:
    torch.set_flush_denormal(True)   # decaying notes hold subnormals, which slow CPU convolutions
    return jukebox.load_pretrained("jukebox-songs")


@lru_cache(maxsize=8)
def _song(index: int) -> torch.Tensor:
    """(1, 1, T) a test song (label = index mod 6)."""
    return Songs("test", size=max(12, index + 1), seed=0).batch([index])


@sound("song")
def snd_song(index: str = "0") -> tuple[torch.Tensor, int]:
    return _song(int(index))[0, 0], SR


@sound("jukebox_level")
def snd_jukebox_level(index: str = "0", level: str = "0") -> tuple[torch.Tensor, int]:
    """A test song through one level of the shipped VQ-VAE (0 bottom, 2 top)."""
    model, song = _jukebox(), _song(int(index))
    codes = model.encode(song)[int(level)]
    return model.decode(codes, int(level))[0, 0, : song.shape[-1]], SR


@sound("jukebox_generated")
def snd_jukebox_generated(style: str = "waltz", seconds: str = "3", seed: str = "0") -> tuple[torch.Tensor, int]:
    """A new song of ``style`` sampled through all three levels (key A minor, the middle of the style's tempi)."""
    bpm = float(sum(STYLES[style].tempo) // 2)
    wav = _jukebox().generate(1, style, "A minor", bpm, float(seconds), torch.Generator().manual_seed(int(seed)))
    return wav[0, 0], SR


@figure("jukebox_codes")
def fig_jukebox_codes(index: str = "0", seconds: str = "2") -> Figure:
    """The first seconds of a song as its codes at the three levels (one row of colours per level)."""
    model, song = _jukebox(), _song(int(index))
    codes = model.encode(song[..., : int(float(seconds) * SR) // 128 * 128])
    fig, axes = _fig(10, 3.6, rows=3)
    for ax, level, name in zip(axes, (2, 1, 0), ("top", "middle", "bottom")):
        c = codes[level]
        ax.imshow(c.float(), aspect="auto", cmap="tab20", interpolation="nearest",
                  extent=(0, c.shape[-1] / model.vqvae.tokens_per_second(level), 0, 1))
        ax.set_yticks([])
        ax.set_ylabel(f"{name}\n{model.vqvae.tokens_per_second(level):.0f}/s", rotation=0, ha="right", va="center")
    axes[-1].set_xlabel("seconds")
    return fig


@number("jukebox_tokens")
def num_jukebox_tokens(level: str = "2") -> str:
    """Tokens per second of one level of the shipped VQ-VAE."""
    return f"{_jukebox().vqvae.tokens_per_second(int(level)):,.0f}"
