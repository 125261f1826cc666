"""Jukebox's hierarchical VQ-VAE (Dhariwal et al. 2020, section 3), split off :mod:`course_lib.jukebox` to keep
each file readable: three independent autoencoders over the same audio, one per hop length (8, 32, 128 samples;
2,000, 500 and 125 tokens per second at 16 kHz), each with its own EMA codebook and each able to reconstruct audio
on its own, and the loop that trains them on random crops of songs.

Faithful where it matters (openai/jukebox ``vqvae/encdec.py`` Encoder/Decoder with stride-2 conv blocks and
Resnet1D stacks of dilation growth 3, ``vqvae/bottleneck.py`` EMA codebooks with random restarts,
``vqvae/vqvae.py`` ``multispectral_loss``); widths and codebook sizes are course-sized. Everything here is also
reachable as ``course_lib.jukebox.<name>``. Shapes: B batch, T samples, L frames of a level, D codebook width,
K codebook size, C channels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import checkpoint
from course_lib.audio import check_audio
from course_lib.nn import PaddedConv1d, PaddedConvTranspose1d, ResidualUnit
from course_lib.quantize import VectorQuantizer
from course_lib.spectral import log_magnitude_loss, spectral_loss   # Jukebox's loss and its log partner
from course_lib.train import TrainConfig, Trainer, TrainResult, optimizer_step

__all__ = ["VQVAEConfig", "PRESETS", "HierarchicalVQVAE", "VQVAELosses", "waveform_loss", "random_crops", "fit_vqvae",
           "log_line"]


# ============================================================================= the hierarchical VQ-VAE
@dataclass(frozen=True)
class VQVAEConfig:
    """Three autoencoders; the defaults (``small``) train on a laptop CPU in about half an hour."""

    sample_rate: int = 16_000
    hop_lengths: tuple[int, ...] = (8, 32, 128)   # bottom, middle, top; powers of 2 (paper: 8, 32, 128)
    width: int = 32                               # C of every conv stack (paper: 64)
    depth: int = 2                                # residual units per stride-2 block, dilations 1, 3 (paper: 4)
    codebook_size: int = 512                      # K per level (paper: 2,048)
    codebook_dim: int = 64                        # D (paper: 64)
    commit_weight: float = 1.0                    # beta (paper: 0.02; in short CPU runs z_e then drifts away
                                                  # from the EMA codebooks: commit loss 126 after 50 steps)
    spectral_weight: float = 1.0
    log_spectral_weight: float = 1.0              # log-magnitude term beside the paper's spectral loss (0: paper)
    dead_code_threshold: float = 0.1              # restart codes used < 10% of a fair share
    top_width: int = 0                            # the top level's own capacity (0: as the others). At hop 128 the
    top_depth: int = 0                            # paper's (64, 4, 2,048) kept the key of 0.65 of validation songs,
    top_codebook_size: int = 0                    # the course's 0.46 (one-level VQ-VAEs, 4,000 steps each)

    def __post_init__(self) -> None:
        if any(h < 2 or h & (h - 1) for h in self.hop_lengths) or list(self.hop_lengths) != sorted(self.hop_lengths):
            raise ValueError(f"hop_lengths must be increasing powers of two, got {self.hop_lengths}.")
        if min(self.top_width, self.top_depth, self.top_codebook_size) < 0:
            raise ValueError("top_width, top_depth and top_codebook_size must be >= 0 (0: as the other levels).")

    def capacity(self, level: int) -> tuple[int, int, int]:
        """(width, depth, codebook size) of ``level`` (0 bottom .. top): the top level's may differ (``top_*``)."""
        if level != len(self.hop_lengths) - 1:
            return self.width, self.depth, self.codebook_size
        return self.top_width or self.width, self.top_depth or self.depth, self.top_codebook_size or self.codebook_size

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """K of every level, bottom first."""
        return tuple(self.capacity(level)[2] for level in range(len(self.hop_lengths)))

    @staticmethod
    def preset(name: str) -> VQVAEConfig:
        return checkpoint.preset(PRESETS, name, "Jukebox VQ-VAE")


PRESETS = {"tiny": VQVAEConfig(width=8, depth=1, codebook_size=64, codebook_dim=16),
           "small": VQVAEConfig(), "base": VQVAEConfig(width=64, depth=4, codebook_size=2048)}


def _encoder(cfg: VQVAEConfig, level: int) -> nn.Sequential:
    """Audio (B, 1, T) -> latents (B, D, T / hop): log2(hop) stride-2 blocks (Jukebox's EncoderConvBlock)."""
    (c, depth, _), hop = cfg.capacity(level), cfg.hop_lengths[level]
    layers = [PaddedConv1d(1, c, 3)]
    for _ in range(int(math.log2(hop))):
        layers += [PaddedConv1d(c, c, 4, stride=2)]
        layers += [ResidualUnit(c, 3 ** d, kernel_size=3, activation=nn.ReLU) for d in range(depth)]
    return nn.Sequential(*layers, PaddedConv1d(c, cfg.codebook_dim, 3))


def _decoder(cfg: VQVAEConfig, level: int) -> nn.Sequential:
    """Latents (B, D, L) -> audio (B, 1, L * hop): the mirror, dilations reversed (Jukebox's DecoderConvBock)."""
    (c, depth, _), hop = cfg.capacity(level), cfg.hop_lengths[level]
    layers = [PaddedConv1d(cfg.codebook_dim, c, 3)]
    for _ in range(int(math.log2(hop))):
        layers += [ResidualUnit(c, 3 ** d, kernel_size=3, activation=nn.ReLU) for d in reversed(range(depth))]
        layers += [PaddedConvTranspose1d(c, c, 2)]
    return nn.Sequential(*layers, PaddedConv1d(c, 1, 3))


def waveform_loss(est: Tensor, ref: Tensor) -> Tensor:
    """L2 on samples relative to the reference's energy (the paper divides by the data's bandwidth)."""
    return ((est - ref).square().flatten(1).mean(1) / ref.square().flatten(1).mean(1).clamp_min(1e-8)).mean()


class VQVAELosses(NamedTuple):
    total: Tensor
    waveform: Tensor    # relative L2 on samples (waveform_loss), summed over levels
    spectral: Tensor    # spectral_loss, summed over levels
    log_spectral: Tensor  # log_magnitude_loss, summed over levels
    commit: Tensor      # ||z_e - sg(z_q)||^2, summed over levels


class HierarchicalVQVAE(nn.Module):
    """Three separate autoencoders over the same audio, one per hop length (bottom, middle, top)."""

    def __init__(self, config: VQVAEConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or VQVAEConfig()
        levels = range(len(cfg.hop_lengths))
        self.encoders = nn.ModuleList(_encoder(cfg, lv) for lv in levels)
        self.decoders = nn.ModuleList(_decoder(cfg, lv) for lv in levels)
        self.quantizers = nn.ModuleList(
            VectorQuantizer(cfg.codebook_dim, k, dead_code_threshold=cfg.dead_code_threshold) for k in cfg.codebook_sizes)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_lengths(self) -> tuple[int, ...]:
        return self.config.hop_lengths

    def tokens_per_second(self, level: int) -> float:
        return self.sample_rate / self.hop_lengths[level]

    def _prepare(self, wav: Tensor) -> Tensor:
        wav = check_audio(wav, ndim=3, channels=1, allow_silent=True, name="Jukebox input")
        top = self.hop_lengths[-1]
        if wav.shape[-1] < top:
            raise ValueError(f"Jukebox input is too short: {wav.shape[-1]} samples; one top-level token needs {top} "
                             f"({1000 * top / self.sample_rate:.0f} ms at {self.sample_rate} Hz).")
        return F.pad(wav, (0, -wav.shape[-1] % top))                # T a multiple of every hop

    def forward(self, wav: Tensor, generator: torch.Generator | None = None,
                levels: Sequence[int] | None = None) -> VQVAELosses:
        """Training losses of all three levels (or of ``levels``) on a batch (B, 1, T)."""
        x, cfg = self._prepare(wav), self.config
        wave, spec, log_spec, commit = x.new_zeros(()), x.new_zeros(()), x.new_zeros(()), x.new_zeros(())
        for lv in range(len(self.hop_lengths)) if levels is None else levels:
            enc, vq, dec = self.encoders[lv], self.quantizers[lv], self.decoders[lv]
            q = vq(enc(x), generator=generator)                     # z_q (B, D, L) with straight-through
            x_hat = dec(q.quantized)                                # (B, 1, T)
            wave = wave + waveform_loss(x_hat, x)
            spec = spec + spectral_loss(x_hat, x)
            log_spec = log_spec + (log_magnitude_loss(x_hat, x) if cfg.log_spectral_weight else 0.0)
            commit = commit + q.commit_loss
        total = wave + cfg.spectral_weight * spec + cfg.log_spectral_weight * log_spec + cfg.commit_weight * commit
        return VQVAELosses(total, wave, spec, log_spec, commit)

    @torch.no_grad()
    def encode(self, wav: Tensor, levels: Sequence[int] = (0, 1, 2)) -> list[Tensor]:
        """Audio (B, 1, T) -> codes per level, bottom first: [(B, T/8), (B, T/32), (B, T/128)] int64.
        ``levels`` picks some of them (each level has its own encoder: ``levels=(2,)`` costs a third)."""
        if any(lv not in range(len(self.encoders)) for lv in levels):
            raise ValueError(f"levels must be among 0 (bottom) .. {len(self.encoders) - 1} (top), got {tuple(levels)}.")
        x = self._prepare(wav)
        return [self.quantizers[lv].encode(self.encoders[lv](x)) for lv in levels]

    @torch.no_grad()
    def decode(self, codes: Tensor, level: int) -> Tensor:
        """Codes (B, L) of ``level`` (0 bottom .. 2 top) -> audio (B, 1, L * hop_lengths[level])."""
        if not 0 <= level < len(self.hop_lengths):
            raise ValueError(f"level must be 0 (bottom) .. {len(self.hop_lengths) - 1} (top), got {level}.")
        if codes.dim() != 2 or codes.dtype != torch.long:
            raise ValueError(f"codes must be (B, L) int64 of one level, got {tuple(codes.shape)} {codes.dtype}.")
        k = self.config.codebook_sizes[level]
        if codes.numel() and (codes.min() < 0 or codes.max() >= k):
            raise ValueError(f"codes of level {level} must lie in 0..{k - 1}; were they made by another model or level?")
        return self.decoders[level](self.quantizers[level].decode(codes))


# ============================================================================= training
def log_line(step: int, trainer: Trainer) -> None:
    """A plain log line every few steps when there is no progress bar (long background runs)."""
    rec = trainer.history.records[-1]
    print(f"step {step} t={rec['time_s']:.0f}s " + " ".join(f"{k}={v:.4g}" for k, v in rec.items()
                                                           if k not in ("step", "time_s")), flush=True)


def random_crops(clips: Tensor, batch_size: int, length: int, generator: torch.Generator | None) -> Tensor:
    """(B, 1, length) random crops of (N, 1, T) clips, starting on a top-level hop."""
    n, t = clips.shape[0], clips.shape[-1]
    idx = torch.randint(0, n, (batch_size,), generator=generator)
    start = torch.randint(0, max(1, t - length + 1), (batch_size,), generator=generator)
    return torch.stack([clips[i, :, s:s + length] for i, s in zip(idx.tolist(), start.tolist())])


def fit_vqvae(model: HierarchicalVQVAE, clips: Tensor, *, steps: int, time_budget_s: float | None = None,
              generator: torch.Generator | None = None, checkpoint_dir: str | Path | None = None,
              batch_size: int = 8, crop_s: float = 0.5, lr: float = 3e-4, settings: dict | None = None,
              progress: bool = True, log_every: int = 10, decoders_only: bool = False,
              top_only: bool = False) -> TrainResult:
    """Train the three autoencoders at once on random crops of songs (N, 1, T) (Adam, as the paper).

    ``decoders_only``: freeze the encoders and codebooks, so every song keeps its codes (and priors
    trained on them stay valid), and train only the decoders (e.g. a new loss for cleaner sound).
    ``top_only``: train only the top level (the levels are independent autoencoders; e.g. a wider top level
    beside trained bottom and middle levels, whose codes and upsampler stay valid).
    """
    if clips.dim() != 3 or clips.shape[1] != 1:
        raise ValueError(f"clips must be (N, 1, T), got {tuple(clips.shape)}.")
    if decoders_only and top_only:
        raise ValueError("decoders_only and top_only exclude each other: pick one (or neither to train all).")
    torch.set_flush_denormal(True)                # decaying notes hold subnormal floats: 10-100x slower convs
    hop = model.hop_lengths[-1]
    length = max(hop, int(crop_s * model.sample_rate) // hop * hop)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    top = len(model.hop_lengths) - 1
    frozen = (nn.ModuleList([model.encoders, model.quantizers]) if decoders_only else
              nn.ModuleList([m[lv] for m in (model.encoders, model.quantizers, model.decoders) for lv in range(top)])
              if top_only else nn.ModuleList())
    frozen.requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    trainer = Trainer({"vqvae": model}, {"adam": opt}, TrainConfig(
        max_steps=steps, time_budget_s=time_budget_s, checkpoint_dir=checkpoint_dir, log_every=log_every,
        progress=progress, settings=settings), generators={"batches": generator})

    def step_fn(step: int) -> VQVAELosses:
        frozen.eval()                                               # no EMA updates, no code restarts
        crops = random_crops(clips, batch_size, length, generator).to(device)
        return optimizer_step(model(crops, generator, levels=(top,) if top_only else None), opt, 5.0)

    try:
        trainer.fit(step_fn, callback=None if progress else log_line, callback_every=50)
    finally:                                                        # also when a step raises
        frozen.requires_grad_(True)
    return trainer.result(model.eval())
