"""WaveGAN: a GAN that generates raw waveforms (Donahue, McAuley & Puckette, ICLR 2019).

WaveGAN is DCGAN flattened to one dimension: every 5x5 2D convolution becomes a length-25 1D
convolution and every stride 2 becomes a stride 4, so five layers grow a 16-sample seed into
16 * 4**5 = 16,384 samples (about 1 s at 16 kHz). Faithful to the paper and its official code
(github.com/chrisdonahue/wavegan) where it matters:

- generator: ``z ~ U[-1, 1]^100`` -> dense -> (transposed conv k25 s4 -> ReLU) x L, the last
  with tanh; no batch norm; optionally the learned post-processing filter (paper appendix B), a
  ``post_filter_length``-tap FIR;
- discriminator (the *critic*): (conv k25 s4 -> LeakyReLU 0.2 -> phase shuffle n=2) x L, no
  phase shuffle after the last conv, then dense to one unbounded score;
- loss: WGAN-GP (Gulrajani et al. 2017), gradient penalty weight 10, 5 critic steps per
  generator step, Adam(lr 1e-4, betas (0.5, 0.9)).

Two additions that are not in the paper:

- :meth:`WaveGAN.generate` samples from an exponential moving average of the generator's
  weights (``cfg.ema_decay``; Karras et al. 2018, Yazici et al. 2019). Adam at a constant
  learning rate keeps the weights jittering; the average smooths that out.
- ``cfg.mu_law``: the GAN plays its game on mu-law companded waveforms (the loudness curve of
  G.711 telephony and WaveNet's output). On linear samples a hiss 40 dB below the hit is a
  difference of 0.01 that the critic, whose slope the gradient penalty holds near 1, barely
  sees, so the generator leaves a noise floor under decays that should fall silent. Companded,
  that hiss in a silent tail is a difference of 0.23. Real clips are companded once for training; :meth:`WaveGAN.forward`
  and :meth:`WaveGAN.generate` expand the generator's output back to linear samples.
- ``cfg.spectral_critic``: a second critic that judges log-magnitude spectrograms, the critic of the
  paper's companion model SpecGAN (same paper, section 4), beside the waveform critic. WGAN-GP's
  penalty holds a critic's slope near 1 *in its input space*: on waveforms, a hiss 60 dB below full
  scale over a silent 4,096-sample clip is an L2 distance of 0.06 and can shift the score by no more
  than that, so the waveform critic cannot care about it. The spectrogram critic's penalty is taken on
  log-spectrograms (as in SpecGAN), where the same hiss is a distance of about 40.

Width ``d`` and ``num_layers`` (slice length ``16 * 4**num_layers``: 4,096 or 16,384) come
from the config; the training recipe (batch, critic steps, Adam) from :func:`fit`'s arguments.
Evaluation (classifier, inception-score analogue, Frechet distance) lives in
:mod:`course_lib.gan_eval`, data and the command line in :mod:`course_lib.recipes.wavegan`; shapes follow the package legend (B batch, C channels, T samples,
D latent width).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from course_lib import checkpoint
from course_lib.audio import mu_law_compress, mu_law_expand
from course_lib.train import TrainConfig, Trainer, TrainResult

__all__ = ["WaveGANConfig", "PRESETS", "WaveGAN", "Generator", "Discriminator", "SpectrogramCritic", "PhaseShuffle",
           "phase_shuffle", "gradient_penalty", "WaveGANLosses", "make_optimizers", "train_step", "fit",
           "load_pretrained", "BATCH_SIZES"]

STRIDE = 4        # every layer up- or down-samples by 4 (paper, table 1)
SEED_LENGTH = 16  # the dense layer's output length: slice = 16 * 4**num_layers


@dataclass(frozen=True)
class WaveGANConfig:
    """WaveGAN's size and training recipe. Defaults: the course's drum model (4,096 samples at 16 kHz).

    The paper's model is ``PRESETS["paper"]``: d=64, 5 layers (16,384 samples), batch 64.
    """

    sample_rate: int = 16_000
    latent_dim: int = 100              # D, z ~ U[-1, 1]^D
    d: int = 16                        # model width (paper: 64); layer channels are d * 2**i
    num_layers: int = 4                # slice_length = 16 * 4**num_layers (4 -> 4,096, 5 -> 16,384)
    kernel_size: int = 25
    phase_shuffle: int = 2             # n: the critic's layers are shifted by -n..n samples
    post_filter_length: int = 0        # learned FIR after the generator (paper: 512); 0 = off
    ema_decay: float = 0.999           # weight average the samples come from (0 = off); not in the paper
    mu_law: int = 0                    # mu > 0: generator and critic work on mu-law companded waveforms; not in the paper
    spectral_critic: int = 0           # width of a second, log-spectrogram critic (SpecGAN's); 0 = off
    long_critic: int = 0               # width of a spectrogram critic on 1,024-point windows (low drums); 0 = off
    body_critic: int = 0               # width of a critic on the long critic's lowest 16 bins (to 234 Hz); 0 = off
    highpass_hz: float = 0.0           # fixed high-pass after the tanh (DC offset and drift); 0 = off; not in the paper

    def __post_init__(self) -> None:
        if self.num_layers not in (4, 5):
            raise ValueError(f"num_layers must be 4 (4,096 samples) or 5 (16,384 samples), got {self.num_layers}.")
        if self.d < 1 or self.latent_dim < 1 or self.kernel_size < STRIDE or self.kernel_size % 2 == 0:
            raise ValueError(f"Need d >= 1, latent_dim >= 1 and an odd kernel_size >= {STRIDE}; got d={self.d}, "
                             f"latent_dim={self.latent_dim}, kernel_size={self.kernel_size}.")
        if min(self.phase_shuffle, self.post_filter_length, self.spectral_critic, self.long_critic,
               self.body_critic) < 0:
            raise ValueError("phase_shuffle, post_filter_length, spectral_critic, long_critic and body_critic must be "
                             ">= 0.")
        if self.mu_law < 0:
            raise ValueError(f"mu_law must be 0 (off) or a positive mu such as 255, got {self.mu_law}.")
        if not 0 <= self.highpass_hz < self.sample_rate / 2:
            raise ValueError(f"highpass_hz must be 0 (off) or a cutoff in Hz below {self.sample_rate / 2:g} such as "
                             f"25, got {self.highpass_hz}.")
        if self.highpass_hz and self.mu_law:
            raise ValueError(f"highpass_hz filters linear waveforms; with mu_law={self.mu_law} set highpass_hz=0 or "
                             f"mu_law=0.")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1) (0 turns the average off), got {self.ema_decay}.")

    @property
    def slice_length(self) -> int:
        return SEED_LENGTH * STRIDE ** self.num_layers

    @property
    def seconds(self) -> float:
        return self.slice_length / self.sample_rate

    @staticmethod
    def preset(name: str) -> WaveGANConfig:
        """Named sizes: ``tiny`` (smoke profile), ``small`` (cpu, the shipped drums), ``base`` (gpu), ``paper``."""
        return checkpoint.preset(PRESETS, name, "WaveGAN")


PRESETS: dict[str, WaveGANConfig] = {
    "tiny": WaveGANConfig(d=4),                      # CI: seconds per hundred steps, sounds like noise
    "small": WaveGANConfig(d=16),                    # laptop CPU, the shipped drums
    "base": WaveGANConfig(d=32),                     # Colab GPU
    "paper": WaveGANConfig(d=64, num_layers=5),      # Donahue et al.: 16,384 samples
}
# Batch size per preset for training (the paper's is 64; the laptop's run halves it for twice the updates).
BATCH_SIZES = {"tiny": 16, "small": 32, "base": 64, "paper": 64}


# ----------------------------------------------------------------------------- model
def phase_shuffle(x: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """Shift the whole batch by one random ``k`` in ``[-n, n]`` samples, filling with reflection.

    Paper section 3.3: transposed convolutions leave periodic (checkerboard) artifacts at fixed
    phases, and a critic could reject fakes by phase alone. Shifting every feature map by a few
    samples makes that cue useless. As in the official code, one shift per batch and layer.

    Args:
        x: ``(B, C, T)`` activations, ``T > n``.
        n: the shift radius; 0 returns ``x`` unchanged.
        generator: randomness for ``k`` (a CPU generator).

    Returns:
        ``(B, C, T)``: ``y[..., t] = x[..., t - k]`` where that index exists, reflected at the edge.
    """
    if n == 0:
        return x
    k = int(torch.randint(-n, n + 1, (1,), generator=generator))
    if k == 0:
        return x
    padded = F.pad(x, (max(k, 0), max(-k, 0)), mode="reflect")  # (B, C, T + |k|)
    start = max(-k, 0)
    return padded[..., start:start + x.shape[-1]]


class PhaseShuffle(nn.Module):
    """:func:`phase_shuffle` as a layer; active in training mode only."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return phase_shuffle(x, self.n, generator) if self.training else x

    def extra_repr(self) -> str:
        return f"n={self.n}"


def _channels(cfg: WaveGANConfig) -> list[int]:
    """Channels at each resolution, coarse to fine: [d * 2**(L-1), ..., 2d, d] (paper: 16d ... d)."""
    return [cfg.d * 2 ** i for i in reversed(range(cfg.num_layers))]


def highpass(x: Tensor, hz: float, sample_rate: int) -> Tensor:
    """``(..., T) -> (..., T)``: a fixed 4th-order Butterworth high-pass (-3 dB at ``hz``), two biquads in cascade.

    Not in the paper. A trained generator's output can carry a DC offset and drift below 30 Hz, where real drums
    have almost no energy; a 512-tap post-filter cannot remove them without also cutting kick bodies at 40-65 Hz
    (its resolution is about 31 Hz). Coefficients: Bristow-Johnson's audio EQ cookbook (the same as
    ``torchaudio.functional.highpass_biquad``, which clamps its output to [-1, 1]), Q = 1 / (2 cos(k pi / 8)) for
    k = 1, 3; never clamped here.
    """
    w0 = 2 * math.pi * hz / sample_rate
    for q in (1 / (2 * math.cos(math.pi / 8)), 1 / (2 * math.cos(3 * math.pi / 8))):
        alpha, c = math.sin(w0) / (2 * q), math.cos(w0)
        b = torch.tensor([(1 + c) / 2, -(1 + c), (1 + c) / 2], dtype=x.dtype, device=x.device)
        a = torch.tensor([1 + alpha, -2 * c, 1 - alpha], dtype=x.dtype, device=x.device)
        x = torchaudio.functional.lfilter(x, a, b, clamp=False)
    return x


class Generator(nn.Module):
    """``z (B, D) -> x (B, 1, T)``: dense to ``(B, 16d', 16)``, then L transposed convs of stride 4."""

    def __init__(self, cfg: WaveGANConfig) -> None:
        super().__init__()
        self.config = cfg
        ch = _channels(cfg)
        self.dense = nn.Linear(cfg.latent_dim, ch[0] * SEED_LENGTH)
        pad = (cfg.kernel_size - STRIDE + 1) // 2  # with output_padding=1 each layer makes exactly 4x samples
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(c_in, c_out, cfg.kernel_size, STRIDE, padding=pad, output_padding=1)
            for c_in, c_out in zip(ch, ch[1:] + [1]))
        self.post_filter = (nn.Conv1d(1, 1, cfg.post_filter_length, bias=False)
                            if cfg.post_filter_length else None)

    @torch.no_grad()
    def identity_post_filter_(self) -> None:
        """Set the post-filter to the identity (a centre tap): added to a trained generator, it changes nothing
        until it learns. (From scratch it starts random, as in the paper's code.)"""
        self.post_filter.weight.zero_()[..., (self.config.post_filter_length - 1) // 2] = 1.0

    def forward(self, z: Tensor) -> Tensor:
        x = F.relu(self.dense(z).view(z.shape[0], -1, SEED_LENGTH))  # (B, 16d', 16)
        for i, up in enumerate(self.ups):
            x = up(x)                                                # (B, C, 4 T_prev)
            x = torch.tanh(x) if i == len(self.ups) - 1 else F.relu(x)
        if self.config.highpass_hz:
            x = highpass(x, self.config.highpass_hz, self.config.sample_rate)
        if self.post_filter is not None:                             # official code: after tanh, 'same' padding
            k = self.config.post_filter_length
            x = self.post_filter(F.pad(x, ((k - 1) // 2, k // 2)))
        return x                                                     # (B, 1, T)


class Discriminator(nn.Module):
    """The critic ``x (B, 1, T) -> score (B,)``: L strided convs, LeakyReLU 0.2, phase shuffle, dense."""

    def __init__(self, cfg: WaveGANConfig) -> None:
        super().__init__()
        self.config = cfg
        ch = _channels(cfg)[::-1]                                    # [d, 2d, ..., d * 2**(L-1)]
        pad = (cfg.kernel_size - 1) // 2 - 1                         # T -> T / 4 exactly (T divisible by 4)
        self.convs = nn.ModuleList(nn.Conv1d(c_in, c_out, cfg.kernel_size, STRIDE, padding=pad)
                                   for c_in, c_out in zip([1] + ch[:-1], ch))
        self.shuffle = PhaseShuffle(cfg.phase_shuffle)
        self.dense = nn.Linear(ch[-1] * SEED_LENGTH, 1)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.ndim != 3 or x.shape[1] != 1 or x.shape[-1] != self.config.slice_length:
            raise ValueError(f"The critic expects (B, 1, {self.config.slice_length}) waveforms, got {tuple(x.shape)}; "
                             f"crop or pad clips to the config's slice_length.")
        for i, conv in enumerate(self.convs):
            x = F.leaky_relu(conv(x), 0.2)                           # (B, C, T / 4**(i+1))
            if i < len(self.convs) - 1:
                x = self.shuffle(x, generator)
        return self.dense(x.flatten(1)).squeeze(-1)                  # (B,)


class SpectrogramCritic(nn.Module):
    """A second critic on log-magnitude spectrograms: ``x (B, 1, T) -> score (B,)`` (SpecGAN's, paper section 4).

    :meth:`features` turns waveforms into ``(B, 1, F, L)`` log-magnitudes scaled to about [-1, 1]
    (SpecGAN's STFT: 256-point windows every 128 samples, 16 and 8 ms at 16 kHz); :meth:`score` is four 5x5
    strided 2D convs with LeakyReLU 0.2 and a dense layer. Training penalises the gradient of
    :meth:`score` with respect to the features, so distances are measured in decibels.

    ``n_fft=1024`` (hop 256) makes the long-window critic (``cfg.long_critic``): its 15.6 Hz bins resolve the
    pitch of kicks (40-65 Hz) and toms, which the 62.5 Hz bins of SpecGAN's windows cannot; several critics at
    several resolutions are MelGAN's and HiFi-GAN's remedy for one critic's blind spots.

    ``bins=16`` with ``n_fft=1024`` makes the body critic (``cfg.body_critic``): bins centred at 0-234 Hz (the
    Hann window's main lobe takes the top one to about 265 Hz), the ringing body of kicks and toms, so its gradient
    penalty spends the whole of its slope on that band.
    """

    FLOOR = 1e-4                               # magnitudes below it (about -90 dB re a full-scale bin) count as silence

    def __init__(self, cfg: WaveGANConfig, width: int | None = None, n_fft: int = 256, hop: int = 128,
                 bins: int | None = None) -> None:
        super().__init__()
        self.config = cfg
        self.N_FFT, self.HOP, self.BINS = n_fft, hop, n_fft // 2 + 1 if bins is None else bins   # the lowest bins
        if not 1 <= self.BINS <= n_fft // 2 + 1:
            raise ValueError(f"bins must lie in [1, {n_fft // 2 + 1}] for n_fft={n_fft}, got {bins}.")
        ch = [(width or cfg.spectral_critic) * 2 ** i for i in range(4)]  # [d, 2d, 4d, 8d]
        self.convs = nn.ModuleList(nn.Conv2d(c_in, c_out, 5, 2, padding=2) for c_in, c_out in zip([1] + ch[:-1], ch))
        f, t = self.BINS, cfg.slice_length // self.HOP + 1
        for _ in ch:
            f, t = (f - 1) // 2 + 1, (t - 1) // 2 + 1
        self.dense = nn.Linear(ch[-1] * f * t, 1)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def features(self, x: Tensor) -> Tensor:
        """``(B, 1, T) -> (B, 1, F, L)``: ``(log10(|STFT| + floor) + 1) / 3``; -1 at the floor; a full-scale
        sine peaks near +0.9 with 256-point windows and +1.1 with 1,024 (a longer window sums more samples)."""
        spec = torch.stft(x[:, 0], self.N_FFT, self.HOP, window=self.window, return_complex=True)[:, :self.BINS]
        return ((spec.abs() + self.FLOOR).log10() + 1).div(3).unsqueeze(1)

    def score(self, f: Tensor) -> Tensor:
        for conv in self.convs:
            f = F.leaky_relu(conv(f), 0.2)                           # (B, C, F / 2**(i+1), L / 2**(i+1))
        return self.dense(f.flatten(1)).squeeze(-1)                  # (B,)

    def forward(self, x: Tensor) -> Tensor:
        return self.score(self.features(x))


class WaveGAN(nn.Module):
    """Generator, its weight average and the critic(s) (all in the checkpoint, so training can continue)."""

    def __init__(self, cfg: WaveGANConfig | None = None) -> None:
        super().__init__()
        self.config = cfg or WaveGANConfig()
        self.generator = Generator(self.config)
        self.discriminator = Discriminator(self.config)
        self.spectral_critic = SpectrogramCritic(self.config) if self.config.spectral_critic else None
        self.long_critic = (SpectrogramCritic(self.config, self.config.long_critic, n_fft=1024, hop=256)
                            if self.config.long_critic else None)
        self.body_critic = (SpectrogramCritic(self.config, self.config.body_critic, n_fft=1024, hop=256, bins=16)
                            if self.config.body_critic else None)
        self.generator_ema = (copy.deepcopy(self.generator).requires_grad_(False)
                              if self.config.ema_decay > 0 else None)

    @torch.no_grad()
    def update_ema(self, step: int) -> None:
        """``ema <- d * ema + (1 - d) * generator`` with ``d = min(ema_decay, (1 + step) / (10 + step))``.

        The warm-up makes the first steps follow the generator closely, so short runs (a live
        notebook cell) sample from recent weights rather than from the random initialisation.
        """
        if self.generator_ema is None:
            return
        d = min(self.config.ema_decay, (1 + step) / (10 + step))
        for avg, p in zip(self.generator_ema.parameters(), self.generator.parameters()):
            avg.lerp_(p, 1 - d)

    def spectrogram_critics(self) -> dict[str, SpectrogramCritic]:
        """The spectrogram critics this model has, by attribute name (``spectral_critic``, ``long_critic``,
        ``body_critic``)."""
        return {n: c for n in ("spectral_critic", "long_critic", "body_critic") if (c := getattr(self, n)) is not None}

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``z (n, D)`` uniform in [-1, 1] (paper section 4), on the model's device."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int (the number of clips), got {n!r}; e.g. generate(8).")
        p = self.generator.dense.weight
        u = torch.rand(n, self.config.latent_dim, generator=generator, device=getattr(generator, "device", "cpu"))
        return (2 * u - 1).to(device=p.device, dtype=p.dtype)

    def forward(self, z: Tensor) -> Tensor:
        """``z (B, D) -> (B, 1, T)``: the generator in train mode, its weight average in eval mode."""
        if z.ndim != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(f"z must be (B, {self.config.latent_dim}), got {tuple(z.shape)}; "
                             f"draw it with sample_latent(n).")
        use_average = not self.training and self.generator_ema is not None
        return self.expand((self.generator_ema if use_average else self.generator)(z))

    def compress(self, wav: Tensor) -> Tensor:
        """Linear samples to the domain the GAN trains in (mu-law companded when ``cfg.mu_law``)."""
        return mu_law_compress(wav, self.config.mu_law) if self.config.mu_law else wav

    def expand(self, y: Tensor) -> Tensor:
        """The generator's output back to linear samples (inverse of :meth:`compress`)."""
        return mu_law_expand(y, self.config.mu_law) if self.config.mu_law else y

    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator | None = None, batch_size: int = 256) -> Tensor:
        """``n`` new clips ``(n, 1, T)``, ``T = cfg.slice_length``, from the weight average.

        In [-1, 1] (the tanh) unless a high-pass or post-filter follows it: a filtered clip can pass full scale
        (about 4 % of the long-critic checkpoint's clips do; a 16-bit file written by :func:`course_lib.audio.save`
        clips them)."""
        z = self.sample_latent(n, generator)                         # (n, D)
        g = self.generator_ema if self.generator_ema is not None else self.generator
        return torch.cat([self.expand(g(zb)) for zb in z.split(batch_size)])


def load_pretrained(name_or_path: str | Path = "wavegan-synthworld-drums") -> WaveGAN:
    """A shipped or trained checkpoint (eval mode, CPU); raises CheckpointError naming the fix."""
    return checkpoint.load_pretrained(name_or_path, WaveGAN, WaveGANConfig)


# ----------------------------------------------------------------------------- loss
def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor,
                     generator: torch.Generator | None = None) -> Tensor:
    """WGAN-GP term ``E[(||grad_x D(x_hat)||_2 - 1)^2]`` (Gulrajani et al. 2017, eq. 3).

    ``x_hat = eps * real + (1 - eps) * fake`` with one ``eps ~ U[0, 1]`` per example; the norm
    is over all of an example's samples. ``create_graph=True`` lets the penalty train the critic.

    Args:
        critic: maps ``(B, 1, T)`` (or, for the spectrogram critic, ``(B, 1, F, L)``) to ``(B,)`` scores.
        real, fake: ``(B, 1, T)`` or ``(B, 1, F, L)``.
        generator: randomness for ``eps``.
    """
    eps = torch.rand(real.shape[0], 1, 1, generator=generator, device=getattr(generator, "device", "cpu"))
    eps = eps.to(real).view(-1, *[1] * (real.ndim - 1))                            # (B, 1, 1[, 1])
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)  # like real
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


class WaveGANLosses(NamedTuple):
    critic: Tensor            # last critic step: E[D(fake)] - E[D(real)] + lambda * GP
    generator: Tensor         # -E[D(G(z))]
    wasserstein: Tensor       # the critic's estimate E[D(real)] - E[D(fake)], mean over the critic steps
    gradient_penalty: Tensor


def make_optimizers(model: WaveGAN, lr: float = 1e-4,
                    betas: tuple[float, float] = (0.5, 0.9)) -> dict[str, torch.optim.Optimizer]:
    """Adam for generator and critic(s) (the paper's lr 1e-4, betas (0.5, 0.9))."""
    adam = lambda m: torch.optim.Adam(m.parameters(), lr=lr, betas=betas)  # noqa: E731
    return {"generator": adam(model.generator), "discriminator": adam(model.discriminator),
            **{name: adam(S) for name, S in model.spectrogram_critics().items()}}


def train_step(model: WaveGAN, optimizers: dict[str, torch.optim.Optimizer], sample_real: Callable[[], Tensor],
               generator: torch.Generator | None = None, n_critic: int = 5, gp_weight: float = 10.0,
               spectral_weight: float = 1.0) -> WaveGANLosses:
    """One WGAN-GP generator step preceded by ``n_critic`` critic steps (Gulrajani et al., algorithm 1).

    With spectrogram critics, every critic trains on the same batches, each with its own penalty (a
    spectrogram critic's on its log-spectrogram input), and the generator climbs the waveform critic's
    score plus ``spectral_weight`` times each spectrogram critic's; the returned losses are the critics' sums.
    """
    G, D, specs = model.generator, model.discriminator, list(model.spectrogram_critics().values())
    critic_opts = [opt for name, opt in optimizers.items() if name != "generator"]
    critic = lambda x: D(x, generator)  # noqa: E731 - phase shuffle draws from the same generator
    w_sum = 0.0
    for _ in range(n_critic):
        real = sample_real()                                         # (B, 1, T)
        with torch.no_grad():
            fake = G(model.sample_latent(real.shape[0], generator))  # (B, 1, T)
        d_real, d_fake = critic(real).mean(), critic(fake).mean()
        gp = gradient_penalty(critic, real, fake, generator)
        loss_d = d_fake - d_real + gp_weight * gp
        for S in specs:                                              # SpecGAN's critics, penalised in their own domain
            f_real, f_fake = S.features(model.expand(real)), S.features(model.expand(fake))  # (B, 1, F, L)
            s_real, s_fake = S.score(f_real).mean(), S.score(f_fake).mean()
            gp_s = gradient_penalty(S.score, f_real, f_fake, generator)
            loss_d = loss_d + s_fake - s_real + gp_weight * gp_s
            d_real, d_fake, gp = d_real + s_real, d_fake + s_fake, gp + gp_s
        for opt in critic_opts:
            opt.zero_grad(set_to_none=True)
        loss_d.backward()
        for opt in critic_opts:
            opt.step()
        w_sum += float((d_real - d_fake).detach())
    critics = [D, *specs]
    for p in (p for c in critics for p in c.parameters()):           # the generator step does not train the critics
        p.requires_grad_(False)
    try:
        fake = G(model.sample_latent(real.shape[0], generator))
        loss_g = -critic(fake).mean() - sum(spectral_weight * S(model.expand(fake)).mean() for S in specs)
        optimizers["generator"].zero_grad(set_to_none=True)
        loss_g.backward()
        optimizers["generator"].step()
    finally:
        for p in (p for c in critics for p in c.parameters()):
            p.requires_grad_(True)
    return WaveGANLosses(loss_d.detach(), loss_g.detach(), torch.tensor(w_sum / n_critic), gp.detach())


def fit(model: WaveGAN, clips: Tensor, *, steps: int, time_budget_s: float | None = None,
        generator: torch.Generator | None = None, checkpoint_dir: str | Path | None = None,
        batch_size: int = 64, n_critic: int = 5, gp_weight: float = 10.0, lr: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.9), spectral_weight: float = 1.0,
        optimizers: dict | None = None, settings: dict | None = None,
        callback: Callable | None = None, callback_every: int = 0, progress: bool = True,
        log_every: int = 10) -> TrainResult:
    """Train with WGAN-GP (the paper's recipe by default) through :class:`course_lib.train.Trainer`.

    Args:
        model: the WaveGAN (on the device to train on).
        clips: ``(N, 1, T)`` real training clips (linear samples), ``T = config.slice_length``; batches
            are drawn uniformly with replacement (companded first when ``config.mu_law``).
        steps: total generator steps (resumed steps count).
        time_budget_s: stop early after this much wall time (``stopped_by`` says so).
        generator: every random draw (batches, z, phase shuffle, GP); checkpointed with the run.
        checkpoint_dir: resumable checkpoints (``last.pt``); training resumes from it automatically.
        batch_size, n_critic, gp_weight, lr, betas: the WGAN-GP recipe (paper: 64, 5, 10, 1e-4, (0.5, 0.9)).
        spectral_weight: the spectrogram critic's share of the generator's objective (see :func:`train_step`).
        optimizers: pass a previous result's ``optimizers`` to continue in a notebook.
        callback: ``callback(step, trainer)`` every ``callback_every`` steps (e.g. listen).
    """
    c = model.config
    if clips.ndim != 3 or clips.shape[1] != 1 or clips.shape[-1] != c.slice_length:
        raise ValueError(f"clips must be (N, 1, {c.slice_length}), got {tuple(clips.shape)}; "
                         f"use recipes.wavegan.load_clips(..., slice_length=config.slice_length).")
    if not torch.isfinite(clips).all() or clips.abs().amax() == 0:
        raise ValueError("clips contain NaN/inf or are all silent; check the data source.")
    if steps < 1 or batch_size < 1 or n_critic < 1:
        raise ValueError(f"steps, batch_size and n_critic must be >= 1, got {steps}, {batch_size}, {n_critic}.")
    if spectral_weight != 1.0 and not model.spectrogram_critics():
        raise ValueError(f"spectral_weight={spectral_weight} needs a spectrogram critic; set "
                         f"WaveGANConfig.spectral_critic (--spectral-critic 8) or leave the weight at 1.")
    if spectral_weight < 0:
        raise ValueError(f"spectral_weight must be >= 0, got {spectral_weight}.")
    device = next(model.parameters()).device
    clips = model.compress(clips.to(device))                         # the critic judges the GAN's own domain
    generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def sample_real() -> Tensor:
        idx = torch.randint(0, clips.shape[0], (batch_size,), generator=generator, device=generator.device)
        return clips[idx.to(device)]

    optimizers = optimizers or make_optimizers(model, lr, betas)
    modules = {"generator": model.generator, "discriminator": model.discriminator, **model.spectrogram_critics()}
    if model.generator_ema is not None:
        modules["generator_ema"] = model.generator_ema
    # An exploding critic (|score| > 1e4) is divergence for WGAN-GP, whose scores stay O(1..100).
    trainer = Trainer(modules, optimizers,
                      TrainConfig(max_steps=steps, time_budget_s=time_budget_s, checkpoint_dir=checkpoint_dir,
                                  log_every=log_every, max_loss=1e4, progress=progress, settings=settings),
                      generators={"samples": generator})

    def step_fn(step: int) -> WaveGANLosses:
        losses = train_step(model, optimizers, sample_real, generator, n_critic, gp_weight, spectral_weight)
        model.update_ema(step)
        return losses

    trainer.fit(step_fn, callback, callback_every)
    return trainer.result(model.eval())
