"""Slide generators for the token-model decks (04 Jukebox, 05 AudioLM).

Imported at the end of ``generators.py``, whose registries and helpers it uses. Numbers that take
minutes to recompute come from the checkpoint cards (``num:card_metric``, ``num:card_field``).
"""
from __future__ import annotations

from functools import lru_cache

import torch
from matplotlib.figure import Figure

from course_lib import jukebox
from course_lib.spectral import log_mel_spectrogram
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
    """The first ``seconds`` of a new song of ``style`` sampled through all three levels (key A minor, the middle of
    the style's tempi). The top prior writes a whole song of the training songs' length, the only length its length
    token and timing signal know (the default; notebook 04 says it explicitly); the upsamplers continue its first
    seconds."""
    model, bpm, g = _jukebox(), float(sum(STYLES[style].tempo) // 2), torch.Generator().manual_seed(int(seed))
    return model.generate(1, style, "A minor", bpm, float(seconds), g)[0, 0], SR


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


# ----------------------------------------------------------------------------- 05 AudioLM
@lru_cache(maxsize=1)
def _audiolm():
    from course_lib import audiolm
    return audiolm.load_pretrained("audiolm-speech")


@lru_cache(maxsize=1)
def _sentences() -> tuple[list[torch.Tensor], list[str]]:
    """Sentences (1, T) of held-out voices (no model heard them) and their speakers."""
    from course_lib.recipes.codec import voices_clips
    clips, ids = voices_clips("test", "heldout", 4, SR)
    return clips, [i.rsplit(":", 1)[1] for i in ids]


def _sentence(index: int, seconds: float) -> torch.Tensor:
    """(1, 1, seconds * SR) the start of held-out sentence ``index``, zero-padded."""
    n = int(seconds * SR)
    clip = _sentences()[0][index]
    return torch.nn.functional.pad(clip, (0, max(0, n - clip.shape[-1])))[None, :, :n]


@sound("audiolm_sentence")
def snd_audiolm_sentence(index: str = "0", seconds: str = "3") -> tuple[torch.Tensor, int]:
    return _sentence(int(index), float(seconds))[0, 0], SR


@sound("audiolm_continuation")
def snd_audiolm_continuation(index: str = "0", prompt: str = "1.5", seconds: str = "3", acoustic: str = "1",
                             seed: str = "0") -> tuple[torch.Tensor, int]:
    """The first ``prompt`` seconds of a held-out sentence continued to ``seconds`` (``acoustic=0``: without the
    acoustic prompt)."""
    wav = _sentence(int(index), float(seconds))[..., : int(float(prompt) * SR)]
    out = _audiolm().continue_(wav, float(seconds), torch.Generator().manual_seed(int(seed)),
                               acoustic_prompt=acoustic == "1")
    return out[0, 0], SR


@sound("audiolm_levels")
def snd_audiolm_levels(index: str = "0", levels: str = "1", seconds: str = "3") -> tuple[torch.Tensor, int]:
    """A held-out sentence through the codec, decoded from its first ``levels`` RVQ levels."""
    codec = _audiolm().codec
    wav = _sentence(int(index), float(seconds))
    return codec.decode(codec.encode(wav)[:, : int(levels)])[0, 0, : wav.shape[-1]], SR


@figure("audiolm_tokens")
def fig_audiolm_tokens(index: str = "0", seconds: str = "2") -> Figure:
    """One held-out sentence: its spectrogram, its semantic tokens (25 Hz, repeats in grey) and its coarse and fine
    codes (50 Hz, one row per RVQ level, coarse above the white line)."""
    model = _audiolm()
    wav = _sentence(int(index), float(seconds))
    tok = model.tokens(wav)
    fig, axes = _fig(10, 4.4, rows=3)
    mel = log_mel_spectrogram(wav[0], SR, 1024, 160, 64, f_max=4000.0)[0]
    axes[0].imshow(mel, aspect="auto", origin="lower", cmap="magma", extent=(0, float(seconds), 0, 4))
    axes[0].set_ylabel("kHz")
    axes[0].set_xticks([])
    axes = axes[1:]
    s = tok.semantic[0]
    repeat = torch.cat([torch.tensor([False]), s[1:] == s[:-1]])
    t = (torch.arange(len(s)) + 0.5) / model.config.semantic_rate
    for x, v, r in zip(t.tolist(), s.tolist(), repeat.tolist()):
        axes[0].text(x, 0.5, str(v), ha="center", va="center", fontsize=7, rotation=90,
                     color="0.6" if r else "black")
    axes[0].set_xlim(0, float(seconds))
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    axes[0].set_ylabel("semantic\n25 Hz", rotation=0, ha="right", va="center")
    codes = torch.cat([tok.coarse, tok.fine], 1)[0]
    axes[1].imshow(codes.float(), aspect="auto", cmap="tab20", interpolation="nearest",
                   extent=(0, codes.shape[-1] / model.config.frame_rate, codes.shape[0], 0))
    axes[1].axhline(model.config.num_coarse, color="white", lw=2)
    axes[1].set_ylabel("acoustic\nlevel", rotation=0, ha="right", va="center")
    axes[1].set_xlabel("seconds")
    return fig


@sound("audiolm_resynthesis")
def snd_audiolm_resynthesis(digit: str = "0", voice: str = "1", original: str = "0") -> tuple[torch.Tensor, int]:
    """A held-out voice's digit (``original=1``), or its semantic tokens said after sentence ``voice``'s prompt."""
    from course_lib.recipes.audiolm_rulers import spoken_digits
    clip = spoken_digits(1).clips[int(digit)][None]
    clip = clip[..., : clip.shape[-1] // 640 * 640]
    if original == "1":
        return clip[0, 0], SR
    model = _audiolm()
    wav = model.resynthesize(model.tokens(clip).semantic, _sentence(int(voice), 2.0), torch.Generator().manual_seed(0))
    return wav[0, 0], SR


@number("audiolm_rtf")
def num_audiolm_rtf(stage: str = "total") -> str:
    """Real-time factor of one stage (``semantic``, ``coarse``, ``fine``, ``decode``, ``total``) for 2 s of audio."""
    return f"{_audiolm_bench()[f'{stage}_rtf']:.2f}"


@number("audiolm_language_floor")
def num_audiolm_language_floor(which: str = "heldout", n: str = "10") -> str:
    """The speaker test's score if only the prompt's language were kept (``rulers.language_floor``), in %."""
    from course_lib.recipes import audiolm_rulers as rulers
    return f"{100 * rulers.language_floor(rulers.roster(which, int(n))):.1f} %"


@number("audiolm_prompt_use")
def num_audiolm_prompt_use(key: str = "voice", which: str = "heldout", n: str = "10") -> str:
    """Teacher-forced bits per coarse token (``rulers.prompt_use``, 2 prompts per speaker): ``own`` (after the
    window's own prompt), ``voice`` (what another speaker's prompt costs more) or ``none`` (no prompt)."""
    r = _audiolm_prompt_use(which, int(n))
    return f"{r['other'] - r['own'] if key == 'voice' else r[key]:.2f}"


@lru_cache(maxsize=2)
def _audiolm_prompt_use(which: str, n: int) -> dict:
    from course_lib.recipes import audiolm_rulers as rulers
    return rulers.prompt_use(_audiolm(), which, n, prompts_per_speaker=2)


@lru_cache(maxsize=1)
def _audiolm_bench() -> dict:
    from course_lib.recipes.audiolm import bench
    return bench(seconds=2.0)
