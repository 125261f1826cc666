"""Jukebox (Dhariwal, Jun, Payne, Kim, Radford, Sutskever 2020), course-sized.

Raw audio is too long for a transformer: one second at 16 kHz is 16,000 steps. Jukebox first
compresses it with a **hierarchical VQ-VAE**: three independent autoencoders, each downsampling the
waveform by its own hop length (8, 32, 128 samples; 2,000, 500 and 125 tokens per second here) and
each able to reconstruct audio on its own, coarse at the top, detailed at the bottom. Then
**autoregressive transformers** (:mod:`course_lib.transformer`) model the codes:

- the **top-level prior** generates top codes conditioned on style (genre), key and tempo (prefix
  tokens, as the paper's artist/genre tokens) and on timing (the song's total length as a prefix
  token, the fraction of the song elapsed as an added per-position embedding); priors built with
  ``beat_clock`` also hear a metronome at the requested tempo, and those built with ``key_clock``
  the key at every position, course additions (see :meth:`JukeboxPriors.timing`);
- two **upsamplers** generate the middle and bottom codes, each conditioned on the codes of the
  level above through the paper's conditioner: an embedding, dilated residual convolutions and a
  transposed convolution that upsamples to the lower level's rate, added to every position, and on
  the style (and the key, with ``key_upsamplers``) as prefix tokens.

Faithful where it matters (openai/jukebox ``vqvae/`` for the VQ-VAE, which lives in
:mod:`course_lib.jukebox_vqvae` and is re-exported here, ``prior/conditioners.py`` Conditioner): widths,
codebook sizes and contexts are course-sized. Shapes: B batch, T samples, L frames of a level, N
tokens, D codebook width, K codebook size, C channels.

The façade :class:`Jukebox` puts the two checkpoints together: ``encode``, ``decode``, ``generate``,
``continue_``. Data, evaluation and the command line live in :mod:`course_lib.recipes.jukebox`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import checkpoint
from course_lib.jukebox_vqvae import (PRESETS, HierarchicalVQVAE, VQVAEConfig, VQVAELosses, fit_vqvae, log_line,
                                      random_crops, waveform_loss)
from course_lib.nn import PaddedConvTranspose1d, ResidualUnit
from course_lib.spectral import log_magnitude_loss, spectral_loss   # re-exported: the VQ-VAE's losses
from course_lib.train import TrainConfig, Trainer, TrainResult, optimizer_step, warmup_cosine
from course_lib.transformer import TokenLM, TransformerConfig

__all__ = ["VQVAEConfig", "HierarchicalVQVAE", "VQVAELosses", "spectral_loss", "waveform_loss", "PriorConfig", "Conditioner",
           "JukeboxPriors", "Jukebox", "KEYS", "key_id", "tempo_bucket", "load_pretrained", "PRESETS", "PRIOR_PRESETS",
           "random_crops", "fit_vqvae", "log_magnitude_loss", "SongCodes", "PriorLosses", "prior_losses", "fit_priors"]

KEYS = tuple(f"{n} {m}" for m in ("major", "minor") for n in
             ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"))


# ============================================================================= priors
@dataclass(frozen=True)
class PriorConfig:
    """The top-level prior and two upsamplers (course-sized: widths 96-128, contexts of 0.5-3 s)."""

    styles: tuple[str, ...] = ("waltz", "rock", "bossa", "dance", "march", "ambient")   # course_lib.data.songs
    codebook_size: int = 512                 # K of the VQ-VAE levels
    top_codebook_size: int = 0               # K of the top level when it differs (VQVAEConfig.top_codebook_size)
    level_ratio: int = 4                     # tokens of a level per token of the level above (32 / 8, 128 / 32)
    top_context: int = 384                   # top tokens per window (3 s at 125 tokens/s; paper: 8,192)
    top_layers: int = 4
    top_width: int = 128
    up_context: int = 256                    # tokens per upsampler window
    up_layers: int = 2
    up_width: int = 96
    n_heads: int = 4
    tempo_buckets: int = 16                  # 60 .. 200 bpm, log-spaced
    length_buckets: int = 8                  # total song length in seconds, 1 .. 8+
    fraction_buckets: int = 16               # fraction of the song elapsed at a token (added embedding)
    conditioner_depth: int = 3               # dilated residual units of the upsamplers' conditioner
    beat_clock: bool = False                 # the top prior also hears a metronome at the song's tempo (timing)
    key_upsamplers: bool = False             # the upsamplers' prefix holds the key beside the style
    key_clock: bool = False                  # the top prior also hears the key at every position (timing)
    song_seconds: float = 0.0                # length of the training songs (0: unknown), the default song to write
    guidance: float = 1.0                    # top prior sampled with classifier-free guidance (1: off)
    unknown_style: bool = False              # the top prior also learns songs asked for nothing (style hidden too)

    @property
    def codebook_sizes(self) -> tuple[int, int, int]:   # K of the bottom, middle and top codes
        return self.codebook_size, self.codebook_size, self.top_codebook_size or self.codebook_size

    @property
    def top_cond_dim(self) -> int:           # fraction elapsed (one-hot) | metronome (sin, cos of beat and half beat)
        return self.fraction_buckets + (4 if self.beat_clock else 0) + (24 if self.key_clock else 0)   # | key

    @property
    def up_prefix_vocab_size(self) -> int:   # style | key (24 + unknown)
        return len(self.styles) + (25 if self.key_upsamplers else 0)

    @property
    def prefix_vocab_size(self) -> int:      # style | key (24 + unknown) | tempo (+ unknown) | length | no style
        return len(self.styles) + 25 + self.tempo_buckets + 1 + self.length_buckets + int(self.unknown_style)

    @staticmethod
    def preset(name: str) -> PriorConfig:
        return checkpoint.preset(PRIOR_PRESETS, name, "Jukebox prior")


PRIOR_PRESETS = {"tiny": PriorConfig(codebook_size=64, top_context=64, top_layers=1, top_width=32, up_context=64,
                                     up_layers=1, up_width=32, n_heads=2, conditioner_depth=1),
                 "small": PriorConfig(), "base": PriorConfig(top_context=1024, top_layers=8, top_width=384, up_context=512,
                                                            up_layers=6, up_width=256)}


def key_id(key: str | None) -> int:
    """Index of ``key`` in :data:`KEYS`; 24 (unknown) for None."""
    if key is not None and key not in KEYS:
        raise ValueError(f"Unknown key {key!r}; use one of {KEYS[:3]}... (24 keys) or None.")
    return len(KEYS) if key is None else KEYS.index(key)


def tempo_bucket(bpm: float | None, buckets: int) -> int:
    """Log-spaced bucket of a tempo in 60..200 bpm; ``buckets`` means unknown."""
    if bpm is None:
        return buckets
    return int(min(buckets - 1, max(0, math.log(bpm / 60) / math.log(200 / 60) * buckets)))


class Conditioner(nn.Module):
    """The upsamplers' view of the level above (Jukebox ``prior/conditioners.py``): upper codes (B, N/r)
    -> embedding -> dilated residual convs -> transposed conv x r -> (B, N, width), added to every position."""

    def __init__(self, codebook_size: int, width: int, ratio: int, depth: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(codebook_size, width)
        self.blocks = nn.Sequential(*(ResidualUnit(width, 3 ** d, kernel_size=3, activation=nn.ReLU)
                                      for d in range(depth)))
        self.upsample = PaddedConvTranspose1d(width, width, ratio)
        self.norm = nn.LayerNorm(width)

    def forward(self, upper: Tensor) -> Tensor:
        x = self.embed(upper).transpose(1, 2)                      # (B, C, N/r)
        x = self.upsample(self.blocks(x)).transpose(1, 2)          # (B, N, C)
        return self.norm(x)


class JukeboxPriors(nn.Module):
    """``top``: a TokenLM over top codes with style/key/tempo/length prefix and timing embeddings;
    ``upsamplers[i]``: a TokenLM over level i codes (0 bottom, 1 middle) with a style prefix and the
    conditioner's view of level i + 1 added to every position."""

    def __init__(self, config: PriorConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or PriorConfig()
        self.top = TokenLM(TransformerConfig(
            vocab_size=cfg.codebook_sizes[2], block_size=cfg.top_context + 4, n_layer=cfg.top_layers, n_head=cfg.n_heads,
            n_embd=cfg.top_width, prefix_vocab_size=cfg.prefix_vocab_size, cond_dim=cfg.top_cond_dim))
        self.upsamplers = nn.ModuleList(TokenLM(TransformerConfig(
            vocab_size=cfg.codebook_size, block_size=cfg.up_context + 1, n_layer=cfg.up_layers, n_head=cfg.n_heads,
            n_embd=cfg.up_width, prefix_vocab_size=cfg.up_prefix_vocab_size, cond_dim=cfg.up_width)) for _ in range(2))
        self.conditioners = nn.ModuleList(Conditioner(cfg.codebook_sizes[level + 1], cfg.up_width, cfg.level_ratio,
                                                      cfg.conditioner_depth) for level in range(2))   # the level above

    def style_id(self, style: str) -> int:
        if style not in self.config.styles:
            raise ValueError(f"Unknown style {style!r}; this model knows {list(self.config.styles)}.")
        return self.config.styles.index(style)

    def prefix(self, style: str | int | None, key: str | None, tempo_bpm: float | None, seconds: float) -> Tensor:
        """(1, 4) prefix ids: style (or unknown, the last id, with ``config.unknown_style``), key (or unknown),
        tempo bucket (or unknown), total length bucket."""
        cfg, s = self.config, len(self.config.styles)
        if style is None and not cfg.unknown_style:
            raise ValueError("This prior never learned songs without a style: name one of "
                             f"{list(cfg.styles)} (or train with --unknown-style).")
        sid = cfg.prefix_vocab_size - 1 if style is None else style if isinstance(style, int) else self.style_id(style)
        kid = key_id(key)
        length = min(cfg.length_buckets - 1, max(0, int(seconds) - 1))
        return torch.tensor([[sid, s + kid, s + 25 + tempo_bucket(tempo_bpm, cfg.tempo_buckets),
                              s + 25 + cfg.tempo_buckets + 1 + length]])

    def upsampler_prefix(self, style: str | int, key: str | None) -> Tensor:
        """(1, 1) the style id, or (1, 2) style and key (or unknown) when ``config.key_upsamplers``."""
        ids = self.prefix(style, key, None, 1.0)[:, :2]
        return ids if self.config.key_upsamplers else ids[:, :1]

    def timing(self, start: int, n: int, total: int, tempo_bpm: float | None = None,
               tokens_per_second: float = 125.0, key: str | None = None) -> Tensor:
        """(1, n, top_cond_dim): one-hot of the fraction of the song elapsed at tokens start..start+n-1 (the
        paper's timing signal) and, with ``config.beat_clock``, a metronome: sine and cosine of the beat's and
        the half beat's phase at each token (songs start on a downbeat), zeros when the tempo is unknown.
        Jukebox has no tempo input; a course-sized prior ignored a tempo prefix token (held-out loss equal with
        the true and a shuffled tempo), so the clock states the tempo at every position. With
        ``config.key_clock`` the key (one-hot of :data:`KEYS`, zeros when unknown) joins every position too."""
        pos = torch.arange(start, start + n, dtype=torch.float32)
        bucket = (pos / max(total, 1) * self.config.fraction_buckets).long().clamp(0, self.config.fraction_buckets - 1)
        out = F.one_hot(bucket, self.config.fraction_buckets).float()
        if self.config.beat_clock:                                  # zeros when the tempo is unknown
            phase = 2 * math.pi * pos / tokens_per_second * (tempo_bpm or 0) / 60     # beats elapsed x 2 pi
            clock = torch.stack([phase.sin(), phase.cos(), (2 * phase).sin(), (2 * phase).cos()], -1)
            out = torch.cat([out, clock * float(tempo_bpm is not None)], -1)
        if self.config.key_clock:                                   # one-hot of the key; unknown (id 24): zeros
            tonic = F.one_hot(torch.full((n,), key_id(key)), len(KEYS) + 1)[:, :len(KEYS)].float()
            out = torch.cat([out, tonic], -1)
        return out[None]

    def upsampler_loss(self, level: int, codes: Tensor, upper: Tensor, prefix: Tensor) -> Tensor:
        """Loss of level ``level`` codes (B, N) given the aligned upper codes (B, N / ratio) and the
        :meth:`upsampler_prefix` ids (B, 1 or 2)."""
        cond = self.conditioners[level](upper)                     # (B, N, C)
        return self.upsamplers[level](codes[:, :-1], targets=codes, prefix=prefix, cond=cond).loss


# ============================================================================= training the priors
class SongCodes(NamedTuple):
    """Songs encoded once for prior training (the paper pre-computes the codes too)."""

    codes: list[Tensor]     # per level, bottom first: (N, L_level) int64
    style: Tensor           # (N,) int64 index into PriorConfig.styles
    key: list[str | None]
    tempo_bpm: list[float | None]
    seconds: float


class PriorLosses(NamedTuple):
    total: Tensor
    top: Tensor             # next-token cross-entropy (nats) of the top-level prior
    middle: Tensor          # of the middle upsampler
    bottom: Tensor          # of the bottom upsampler


def _window(n_total: int, n: int, batch: int, generator: torch.Generator | None, align: int = 1) -> Tensor:
    return torch.randint(0, max(1, (n_total - n) // align + 1), (batch,), generator=generator) * align


def prior_losses(priors: JukeboxPriors, data: SongCodes, batch_size: int, generator: torch.Generator | None,
                 condition_dropout: float = 0.2) -> PriorLosses:
    """One batch of random windows for each of the three models; key and tempo are hidden (``unknown``)
    ``condition_dropout`` of the time, so that a style alone can start a song. With ``config.unknown_style`` the
    top prior also sees ``condition_dropout`` of its windows with nothing asked (style, key and tempo hidden
    together): the unconditional prior of classifier-free guidance (Ho & Salimans 2022)."""
    cfg = priors.config
    device = next(priors.parameters()).device
    idx = torch.randint(0, data.style.shape[0], (batch_size,), generator=generator).tolist()
    top_all = data.codes[2]
    n_top = min(cfg.top_context, top_all.shape[1])
    starts = _window(top_all.shape[1], n_top, batch_size, generator)
    hide = (torch.rand(batch_size, 2, generator=generator) < condition_dropout).tolist()
    none = ((torch.rand(batch_size, generator=generator) < condition_dropout).tolist()   # nothing asked: style,
            if cfg.unknown_style and condition_dropout > 0 else [False] * batch_size)    # key and tempo hidden
    # (no draw without dropout: held-out windows stay those of a prior without the unknown style)
    top_hide = [(h[0] or a, h[1] or a, a) for h, a in zip(hide, none)]   # key, tempo, style
    prefix = torch.cat([priors.prefix(None if h[2] else int(data.style[i]), None if h[0] else data.key[i],
                                      None if h[1] else data.tempo_bpm[i], data.seconds)
                        for i, h in zip(idx, top_hide)])
    top = torch.stack([top_all[i, s:s + n_top] for i, s in zip(idx, starts.tolist())]).to(device)
    # Timing of each window: the fraction of its song elapsed at every token (and the metronome, unless hidden).
    rate = top_all.shape[1] / data.seconds                          # top tokens per second
    cond = torch.cat([priors.timing(s, n_top, top_all.shape[1], None if h[1] else data.tempo_bpm[i], rate,
                                    None if h[0] else data.key[i])
                      for i, s, h in zip(idx, starts.tolist(), top_hide)]).to(device)
    l_top = priors.top(top[:, :-1], targets=top, prefix=prefix.to(device), cond=cond).loss
    up_prefix = torch.cat([priors.upsampler_prefix(int(data.style[i]), None if h[0] else data.key[i])
                           for i, h in zip(idx, hide)]).to(device)
    ups = []
    for level in (1, 0):                                            # middle from top, bottom from middle
        lower, upper = data.codes[level], data.codes[level + 1]
        n = min(cfg.up_context, lower.shape[1]) // cfg.level_ratio * cfg.level_ratio
        s = _window(lower.shape[1], n, batch_size, generator, align=cfg.level_ratio).tolist()
        x = torch.stack([lower[i, a:a + n] for i, a in zip(idx, s)]).to(device)
        u = torch.stack([upper[i, a // cfg.level_ratio:(a + n) // cfg.level_ratio] for i, a in zip(idx, s)]).to(device)
        ups.append(priors.upsampler_loss(level, x, u, up_prefix))
    return PriorLosses(l_top + ups[0] + ups[1], l_top, ups[0], ups[1])


def fit_priors(priors: JukeboxPriors, data: SongCodes, *, steps: int, time_budget_s: float | None = None,
               generator: torch.Generator | None = None, checkpoint_dir: str | Path | None = None,
               batch_size: int = 8, lr: float = 1e-3, settings: dict | None = None, progress: bool = True,
               log_every: int = 10, upsamplers_only: bool = False, top_only: bool = False) -> TrainResult:
    """Train the top prior and both upsamplers together on pre-encoded songs (AdamW, warm-up + cosine).

    ``upsamplers_only``: keep the top prior as it is (its loss is still logged) and train the upsamplers,
    as the paper trains each level's model on its own. A top prior of a few hundred songs overfits long
    before the upsamplers stop learning. ``top_only``: the other way round.
    """
    if upsamplers_only and top_only:
        raise ValueError("upsamplers_only and top_only exclude each other: pick one (or neither to train all).")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    priors.top.requires_grad_(not upsamplers_only)
    frozen = nn.ModuleList([priors.upsamplers, priors.conditioners]) if top_only else nn.ModuleList()
    frozen.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in priors.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.95),
                            weight_decay=0.01)
    sched = warmup_cosine(opt, steps, warmup=max(1, steps // 20), floor=0.1)
    trainer = Trainer({"priors": priors}, {"adamw": opt}, TrainConfig(
        max_steps=steps, time_budget_s=time_budget_s, checkpoint_dir=checkpoint_dir, log_every=log_every,
        progress=progress, settings=settings), {"lr": sched}, generators={"batches": generator})

    def step_fn(step: int) -> PriorLosses:
        losses = prior_losses(priors, data, batch_size, generator)
        if upsamplers_only or top_only:
            losses = losses._replace(total=losses.top if top_only else losses.middle + losses.bottom)
        return optimizer_step(losses, opt, 1.0)

    trainer.fit(step_fn, callback=None if progress else log_line, callback_every=50)
    priors.top.requires_grad_(True)
    frozen.requires_grad_(True)
    return trainer.result(priors.eval())


def load_pretrained(name: str = "jukebox-songs") -> Jukebox:
    """The shipped Jukebox: checkpoints ``NAME-vqvae`` and ``NAME-priors`` (or two folders ``NAME/vqvae``...)."""
    vqvae = checkpoint.load_pretrained(f"{name}-vqvae", HierarchicalVQVAE, VQVAEConfig)
    priors = checkpoint.load_pretrained(f"{name}-priors", JukeboxPriors, PriorConfig)
    return Jukebox(vqvae, priors)


class Jukebox(nn.Module):
    """Sampling through the hierarchy: top prior -> middle upsampler -> bottom upsampler -> bottom decoder."""

    def __init__(self, vqvae: HierarchicalVQVAE, priors: JukeboxPriors) -> None:
        super().__init__()
        if vqvae.config.codebook_sizes != priors.config.codebook_sizes:
            raise ValueError(f"The VQ-VAE has {vqvae.config.codebook_sizes} codes per level, the priors "
                             f"{priors.config.codebook_sizes}: train them together (course-lib train jukebox).")
        self.vqvae, self.priors = vqvae.eval(), priors.eval()

    @property
    def sample_rate(self) -> int:
        return self.vqvae.sample_rate

    @property
    def styles(self) -> tuple[str, ...]:
        return self.priors.config.styles

    def encode(self, wav: Tensor) -> list[Tensor]:
        return self.vqvae.encode(wav)

    def decode(self, codes: Tensor, level: int = 0) -> Tensor:
        return self.vqvae.decode(codes, level)

    @torch.no_grad()
    def sample_top(self, n: int, style: str, key: str | None, tempo_bpm: float | None, seconds: float,
                   prompt: Tensor | None = None, generator: torch.Generator | None = None,
                   temperature: float = 1.0, song_seconds: float | None = None,
                   guidance: float | None = None) -> Tensor:
        """Top codes (n, seconds * 125), continuing ``prompt`` (n, P) when given; windowed past the context.
        ``song_seconds`` (at least ``seconds``) is the length of the song the prior is told it writes (length token
        and timing); by default the training songs' length (``PriorConfig.song_seconds``) or ``seconds`` if longer:
        a prior trained on 6 s songs writes one and the first seconds are kept. ``guidance`` (default the config's):
        classifier-free guidance towards the key and tempo asked, against the prior with both hidden as training
        hid them (:func:`prior_losses`), and towards the style too when the prior learned songs asked for nothing
        (``config.unknown_style``); 1 is plain sampling."""
        if song_seconds is None:
            song_seconds = max(seconds, self.priors.config.song_seconds)
        if song_seconds < seconds:
            raise ValueError(f"song_seconds ({song_seconds}) must be at least seconds ({seconds}): the first "
                             f"seconds of a song of song_seconds are kept.")
        rate = self.vqvae.tokens_per_second(2)
        keep, total = int(round(seconds * rate)), int(round(song_seconds * rate))
        prompt = torch.zeros(n, 0, dtype=torch.long) if prompt is None else prompt
        if prompt.shape[1] >= keep:
            return prompt[:, :keep]
        cfg = self.priors.config
        prefix = self.priors.prefix(style, key, tempo_bpm, song_seconds).expand(n, -1)
        cond = self.priors.timing(0, keep, total, tempo_bpm, rate, key).expand(n, -1, -1)
        guidance = cfg.guidance if guidance is None else guidance
        if key is None and tempo_bpm is None and not cfg.unknown_style:   # nothing to guide: the rows would agree
            guidance = 1.0
        hidden = {} if guidance == 1 else {        # the same song with key and tempo (and style) 'unknown'
            "uncond_prefix": self.priors.prefix(None if cfg.unknown_style else style, None, None,
                                                song_seconds).expand(n, -1),
            "uncond_cond": self.priors.timing(0, keep, total, None, rate, None).expand(n, -1, -1)}
        return self.priors.top.sample(prompt, keep - prompt.shape[1], temperature=temperature, generator=generator,
                                      prefix=prefix, cond=cond, window_stride=cfg.top_context // 2,
                                      guidance=guidance, **hidden)

    @torch.no_grad()
    def upsample(self, level: int, upper: Tensor, style: str, prompt: Tensor | None = None,
                 generator: torch.Generator | None = None, temperature: float = 1.0, key: str | None = None) -> Tensor:
        """Codes of ``level`` (0 or 1) from the codes of ``level + 1`` (B, N): (B, N * ratio), windowed.
        ``key`` reaches upsamplers trained with ``key_upsamplers``; the others hear the style only."""
        cfg = self.priors.config
        n_out = upper.shape[1] * cfg.level_ratio
        cond = self.priors.conditioners[level](upper)               # (B, n_out, C)
        style_ids = self.priors.upsampler_prefix(style, key).expand(upper.shape[0], -1)
        prompt = torch.zeros(upper.shape[0], 0, dtype=torch.long) if prompt is None else prompt
        return self.priors.upsamplers[level].sample(prompt, n_out - prompt.shape[1], temperature=temperature,
                                                    generator=generator, prefix=style_ids, cond=cond,
                                                    window_stride=cfg.up_context // 2)

    @torch.no_grad()
    def generate(self, n: int, style: str, key: str | None = None, tempo_bpm: float | None = None,
                 seconds: float = 4.0, generator: torch.Generator | None = None, temperature: float = 1.0,
                 prompt_codes: list[Tensor] | None = None, song_seconds: float | None = None,
                 guidance: float | None = None) -> Tensor:
        """``n`` new songs (n, 1, seconds * sample_rate) of ``style`` (see :attr:`styles`), ancestral sampling;
        ``song_seconds``: keep the first ``seconds`` of songs of that length, ``guidance``: the top prior's
        classifier-free guidance (see :meth:`sample_top`)."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}.")
        self.priors.style_id(style)
        prompts = prompt_codes or [None, None, None]
        top = self.sample_top(n, style, key, tempo_bpm, seconds, prompts[2], generator, temperature, song_seconds,
                              guidance)
        middle = self.upsample(1, top, style, prompts[1], generator, temperature, key)
        bottom = self.upsample(0, middle, style, prompts[0], generator, temperature, key)
        return self.decode(bottom, 0)

    @torch.no_grad()
    def continue_(self, prompt_wav: Tensor, seconds: float, style: str, generator: torch.Generator | None = None,
                  key: str | None = None, tempo_bpm: float | None = None, sample_rate: int | None = None,
                  song_seconds: float | None = None) -> Tensor:
        """Primed sampling: encode ``prompt_wav`` (1, 1, T), keep its codes, and continue to ``seconds`` in all
        (of a song of ``song_seconds``, see :meth:`sample_top`)."""
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise ValueError(f"prompt_wav is at {sample_rate} Hz; this model works at {self.sample_rate} Hz: "
                             f"resample it with course_lib.audio.resample(wav, {sample_rate}, {self.sample_rate}).")
        prompt_s = prompt_wav.shape[-1] / self.sample_rate
        if prompt_s >= seconds:
            raise ValueError(f"The prompt lasts {prompt_s:.2f} s; ask for more seconds than that (got {seconds}).")
        top_hop = self.vqvae.hop_lengths[-1]
        usable = prompt_wav.shape[-1] // top_hop * top_hop              # whole top-level tokens only
        codes = self.encode(prompt_wav[..., :usable])
        return self.generate(1, style, key, tempo_bpm, seconds, generator, prompt_codes=codes, song_seconds=song_seconds)


