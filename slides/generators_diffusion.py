"""Slide generators for the diffusion deck (07 AudioLDM).

Imported at the end of ``generators.py``, whose registries and helpers it uses. Numbers that take
minutes to recompute come from the cards of the shipped parts (``num:audioldm_card``).
"""
from __future__ import annotations

from functools import lru_cache

import torch
from matplotlib.figure import Figure

from course_lib import audioldm, checkpoint, diffusion, plots
from course_lib.data import CLASSES, SynthWorld, captions
from generators import SR, _fig, figure, number, sound
from generators_models import _fmt


SPEECH_CLASS = "ba"


@lru_cache(maxsize=1)
def _model() -> audioldm.AudioLDM:
    torch.set_flush_denormal(True)   # decaying synthetic sounds hold subnormals, which slow CPU convolutions
    return audioldm.load_pretrained("audioldm-synthworld")


@number("audioldm_card")
def num_audioldm_card(part: str = "unet", key: str = "steps", fmt: str = "int") -> str:
    """A field of one part's card (``vae``, ``vocoder``, ``unet``); ``metrics.`` paths reach into metrics; ``fmt`` as
    card_metric, or ``min`` (seconds shown as minutes)."""
    value = checkpoint.read_card(f"audioldm-synthworld-{part}")
    for k in key.split("."):
        if not (isinstance(value, dict) and k in value):
            raise KeyError(f"the {part} card of audioldm-synthworld has no {key!r} (stops at {k!r})")
        value = value[k]
    return f"{float(value) / 60:.0f} min" if fmt == "min" else _fmt(value, fmt)


@sound("audioldm_prompt")
def snd_audioldm_prompt(label: str = "kick", steps: str = "50", guidance: str = "", seed: str = "0"):
    """A clip generated from the first held-out prompt of a SynthWorld class (the card's guidance by default)."""
    model = _model()
    scale = float(guidance) if guidance else float(num_audioldm_card("unet", "metrics.guidance_scale", "2"))
    prompt = captions.prompts(label, "heldout")[1]
    wav = model.generate([prompt], 1.0, int(steps), scale, generator=torch.Generator().manual_seed(int(seed)))
    return wav[0, 0], SR


@lru_cache(maxsize=1)
def _speech_latent() -> torch.Tensor:
    model, label = _model(), CLASSES.index(SPEECH_CLASS)
    ds = SynthWorld("test", size=len(CLASSES), seed=0)
    wav = ds.batch([label])
    return model.vae.encode(model.mel(wav)).mean * model.vae.scale_factor


def _noisy(t: int) -> torch.Tensor:
    model, z0 = _model(), _speech_latent()
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(1))
    return model.decode(diffusion.q_sample(z0, t, noise, model.schedule))


@sound("audioldm_noisy")
def snd_audioldm_noisy(t: str = "0"):
    """A test speech clip's latent after ``t`` forward steps, decoded by the VAE and the vocoder."""
    return _noisy(int(t))[0, 0], SR


@figure("audioldm_forward")
def fig_audioldm_forward(ts: str = "0,300,600,999") -> Figure:
    """Mel spectrograms of one latent drowning in noise (VAE decoder + vocoder)."""
    steps = [int(t) for t in ts.split(",")]
    fig, axes = _fig(3.2 * len(steps), 2.6, 1, len(steps))
    for ax, t in zip(axes, steps):
        plots.plot_spectrogram(_noisy(t)[0], SR, ax=ax, title=f"t = {t}", colorbar=False)
    return fig


@number("audioldm_chance")
def num_audioldm_chance() -> str:
    """Chance level of the class ruler: one over SynthWorld's number of classes."""
    return _fmt(1 / len(CLASSES), "pct")


@number("audioldm_sizes")
def num_audioldm_sizes(seconds: str = "1") -> str:
    """Numbers per ``seconds`` of audio: mel spectrogram and VAE latent, from the shipped model's config."""
    cfg = _model().config
    frames = round(float(seconds) * cfg.sample_rate / cfg.hop_length)
    d = cfg.downsample
    return (f"mel spectrogram {cfg.n_mels} × {frames}, the VAE's latent {cfg.latent_dim} × {cfg.n_mels // d} × "
            f"{frames // d} ({cfg.n_mels * frames / (cfg.latent_dim * cfg.n_mels // d * frames // d):.0f}x fewer numbers)")
