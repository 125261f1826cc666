"""A course-sized HiFi-GAN vocoder, AudioLDM's mel front end and the Griffin-Lim baseline.

A shared primitive: AudioLDM (:mod:`course_lib.audioldm`) turns its generated mel spectrograms
into sound with it, and any other mel model of the course can.

* :class:`LogMel`: AudioLDM's features, 16 kHz, ``n_fft`` 1024, hop 160 (100 frames per second),
  64 Slaney mel bands up to 8 kHz, ``log(clamp(mel, 1e-5))`` (``audioldm/audio/stft.py``,
  ``TacotronSTFT.mel_spectrogram``), then the fixed normalisation ``(x - (-4.63)) / 2.74`` with
  the mean and std of AudioLDM's config (``audioldm/utils.py``, ``default_audioldm_config``).
* :class:`Vocoder`: the HiFi-GAN generator (Kong et al. 2020, Fig. 1; ``audioldm/hifigan/models.py``,
  ``Generator``): transposed convs that upsample by the hop (5 * 4 * 4 * 2 = 160) with a
  multi-receptive-field fusion (MRF) of residual blocks after each, ``tanh`` at the end.
  The ``small`` preset is HiFi-GAN's V2 size (initial width 128, about 0.9 M parameters). The ``istft``
  preset swaps in Vocos (Siuzdak 2023; :class:`course_lib.nn.ISTFTDecoder`): ConvNeXt blocks at the
  mel frame rate predict each STFT frame's magnitude and phase, ``istft`` makes the samples. With a
  phase-aware complex-STFT loss it beats Griffin-Lim within a CPU budget, where the HiFi-GAN needs
  its discriminators and far more steps.
* :class:`VocoderDiscriminator`: HiFi-GAN's multi-period discriminator (MPD, section 2.2) beside
  the course's multi-scale STFT discriminator (:class:`course_lib.nn.MultiScaleSTFTDiscriminator`,
  standing in for HiFi-GAN's multi-scale waveform discriminator), trained with LSGAN losses.
* :func:`fit_vocoder`: mel L1 (x45) + feature matching (x2) + LSGAN adversarial (eqs. 1-3, 5-6).
* :func:`griffin_lim`: the baseline without training (:func:`course_lib.spectral.mel_to_audio`).

Example:
    >>> voc = Vocoder(VocoderConfig.preset("tiny")).eval()
    >>> mel = voc.mel(0.1 * torch.randn(2, 1, 16000))            # (B, 1, F, L) = (2, 1, 64, 100)
    >>> voc(mel).shape                                           # (B, 1, L * 160)
    torch.Size([2, 1, 16000])
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from course_lib import checkpoint, spectral
from course_lib.audio import check_audio
from course_lib.nn import ISTFTDecoder, MultiScaleSTFTDiscriminator, PaddedConvTranspose1d, same_padding
from course_lib.train import TrainConfig, Trainer, TrainResult, optimizer_step

__all__ = ["MEL_MEAN", "MEL_STD", "LogMel", "griffin_lim", "VocoderConfig", "PRESETS", "Vocoder",
           "PeriodDiscriminator", "VocoderDiscriminator", "VocoderLosses", "discriminator_loss",
           "generator_losses", "random_crops", "fit_vocoder", "load_pretrained"]

MEL_MEAN, MEL_STD = -4.63, 2.74   # AudioLDM's fixed log-mel normalisation (default_audioldm_config)
LOG_FLOOR = 1e-5                  # dynamic_range_compression's clamp


# ----------------------------------------------------------------------------- mel front end
class LogMel(nn.Module):
    """AudioLDM's log-mel front end: ``(B, 1, T)`` at 16 kHz -> normalised ``(B, 1, F, L)``, ``L = T // hop``.

    The STFT is centred (reflection padding), which gives ``1 + T // hop`` frames; the last one
    is centred past the end of the clip and is dropped, as AudioLDM's ``_pad_spec`` cuts
    10.24 s to 1024 frames. So ``L * hop == T`` whenever ``T`` is a multiple of the hop, and a
    vocoder maps the mel of a clip back to a clip of the same length.
    """

    silence: float = (math.log(LOG_FLOOR) - MEL_MEAN) / MEL_STD   # a silent bin, normalised: what padding holds

    def __init__(self, sample_rate: int = 16_000, n_fft: int = 1024, hop_length: int = 160, n_mels: int = 64) -> None:
        super().__init__()
        self.sample_rate, self.hop_length, self.n_fft, self.n_mels = sample_rate, hop_length, n_fft, n_mels
        self.mel = spectral.MelSpectrogram(sample_rate, n_fft, hop_length, n_mels)   # f_max = sr / 2 = 8 kHz

    def log_mel(self, wav: Tensor) -> Tensor:
        """Unnormalised ``log(clamp(mel, 1e-5))`` ``(B, 1, F, L)``, no input checks (losses call it on outputs)."""
        m = self.mel(wav)[..., : wav.shape[-1] // self.hop_length]                 # (B, 1, F, L)
        return torch.log(m.clamp_min(LOG_FLOOR))

    def forward(self, wav: Tensor, sample_rate: int | None = None) -> Tensor:
        """Normalised log-mel ``(B, 1, F, L)`` of mono ``wav`` ``(B, 1, T)``.

        Raises:
            AudioError: wrong shape or dtype, NaN, shorter than one hop, or ``sample_rate`` (when
                given) other than 16 kHz; the message names the fix (e.g. ``course_lib.audio.resample``).
        """
        wav = check_audio(wav, sample_rate=sample_rate, expected_sample_rate=self.sample_rate, ndim=3, channels=1,
                          min_samples=max(self.hop_length, self.n_fft // 2 + 1), allow_silent=True,
                          name="mel front-end input")
        return self.normalize(self.log_mel(wav))

    @staticmethod
    def normalize(log_mel: Tensor) -> Tensor:
        return (log_mel - MEL_MEAN) / MEL_STD

    @staticmethod
    def denormalize(mel: Tensor) -> Tensor:
        return mel * MEL_STD + MEL_MEAN


def griffin_lim(mel: Tensor, sample_rate: int = 16_000, n_fft: int = 1024, hop_length: int = 160, n_iter: int = 32,
                generator: torch.Generator | None = None) -> Tensor:
    """The untrained baseline: normalised log-mel ``(B, 1, F, L)`` -> ``(B, 1, L * hop)`` by Griffin-Lim.

    Undo the normalisation and the log, then :func:`course_lib.spectral.mel_to_audio`
    (pseudo-inverse of the mel filterbank, fast Griffin-Lim with a seeded random phase). The frame
    :class:`LogMel` dropped is put back as a copy of the last one, so the STFT sizes agree.
    """
    magnitude = LogMel.denormalize(torch.cat([mel, mel[..., -1:]], dim=-1)).exp()      # (B, 1, F, L + 1)
    return spectral.mel_to_audio(magnitude, sample_rate, n_fft, hop_length, n_iter=n_iter, generator=generator,
                                 length=mel.shape[-1] * hop_length)


# ----------------------------------------------------------------------------- generator
@dataclass(frozen=True)
class VocoderConfig:
    """HiFi-GAN generator and discriminator sizes; ``small`` is HiFi-GAN V2 with AudioLDM's hop of 160."""

    sample_rate: int = 16_000
    n_fft: int = 1024
    n_mels: int = 64                                   # F
    upsample_rates: tuple[int, ...] = (5, 4, 4, 2)     # product = hop_length
    channels: int = 128                                # after conv_pre; halves at every upsampling
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    mpd_periods: tuple[int, ...] = (2, 3, 5, 7, 11)    # HiFi-GAN's primes
    mpd_channels: tuple[int, ...] = (16, 32, 64, 128)  # HiFi-GAN: 32, 128, 512, 1024 (41 M parameters)
    stft_n_ffts: tuple[int, ...] = (1024, 256)       # every scale costs the same (bins x frames ~ 2T)
    stft_channels: int = 8                             # 16 costs 2.5x the time on a CPU
    mel_weight: float = 45.0                           # lambda_mel, eq. 6
    feature_weight: float = 2.0                        # lambda_fm, eq. 6
    # "hifigan" (above) or "istft": Vocos (Siuzdak 2023), ConvNeXt blocks at the frame rate predict STFT frames
    generator: str = "hifigan"
    istft_dim: int = 256                               # istft only: ConvNeXt width
    istft_layers: int = 8                              # istft only: ConvNeXt blocks
    complex_stft_weight: float = 0.0                   # phase-aware loss (spectral.complex_stft_loss); istft needs it

    def __post_init__(self) -> None:
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilations):
            raise ValueError("resblock_kernel_sizes and resblock_dilations need one entry per MRF block.")
        if self.generator not in ("hifigan", "istft"):
            raise ValueError(f"generator must be 'hifigan' or 'istft', got {self.generator!r}.")
        if self.channels % 2 ** len(self.upsample_rates):
            raise ValueError(f"channels={self.channels} must be divisible by 2**{len(self.upsample_rates)}.")

    @property
    def hop_length(self) -> int:
        return math.prod(self.upsample_rates)

    @staticmethod
    def preset(name: str) -> VocoderConfig:
        """``tiny`` (tests, smoke), ``small`` (cpu, HiFi-GAN V2 width), ``base`` (gpu); ``istft`` and ``tiny-istft``:
        the Vocos generator, which learns from the mel and complex-STFT losses alone far faster on a CPU."""
        return checkpoint.preset(PRESETS, name, "vocoder")


PRESETS: dict[str, VocoderConfig] = {
    "tiny": VocoderConfig(channels=32, resblock_kernel_sizes=(3, 7), resblock_dilations=((1, 3), (1, 3)),
                          mpd_periods=(2, 3), mpd_channels=(8, 16), stft_n_ffts=(512,), stft_channels=8),
    "small": VocoderConfig(),
    "base": VocoderConfig(channels=256, mpd_channels=(32, 64, 128, 256), stft_n_ffts=(1024, 512, 256),
                          stft_channels=32),
    # Phase-aware: random phases cost about 0.1 of complex_stft_loss, like 3-4 dB of mel error (about 36 of 45 x L1).
    "istft": VocoderConfig(generator="istft", complex_stft_weight=100.0),
    "tiny-istft": VocoderConfig(generator="istft", istft_dim=32, istft_layers=2, complex_stft_weight=100.0,
                                mpd_periods=(2, 3), mpd_channels=(8, 16), stft_n_ffts=(512,)),
}


def _init(module: nn.Module) -> nn.Module:
    """HiFi-GAN's ``init_weights`` (N(0, 0.01)) under weight normalisation (Salimans & Kingma 2016)."""
    nn.init.normal_(module.weight, 0.0, 0.01)
    return weight_norm(module)


class MRFBlock(nn.Module):
    """HiFi-GAN's ``ResBlock1``: for each dilation d, ``x += conv(lrelu(conv_d(lrelu(x))))``. ``(B, C, T) -> same``."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(_init(nn.Conv1d(channels, channels, kernel_size, dilation=d,
                                                    padding=same_padding(kernel_size, d))) for d in dilations)
        self.convs2 = nn.ModuleList(_init(nn.Conv1d(channels, channels, kernel_size,
                                                    padding=same_padding(kernel_size))) for _ in dilations)

    def forward(self, x: Tensor) -> Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, 0.1)), 0.1))
        return x


class Vocoder(nn.Module):
    """HiFi-GAN generator: normalised log-mel ``(B, 1, F, L)`` (or ``(B, F, L)``) -> waveform ``(B, 1, L * hop)``.

    Kong et al. 2020, Fig. 1: ``conv_pre``, then per upsampling rate ``u`` a transposed conv
    (kernel ``2u``, :class:`course_lib.nn.PaddedConvTranspose1d`, so lengths are exact) and an MRF,
    the mean of residual blocks with different kernels and dilations, so every output sample
    sees patterns of several lengths; ``conv_post`` and ``tanh``.
    """

    def __init__(self, config: VocoderConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or VocoderConfig()
        self.mel = LogMel(cfg.sample_rate, cfg.n_fft, cfg.hop_length, cfg.n_mels)
        if cfg.generator == "istft":      # Vocos: one STFT frame per mel frame (n_fft = 4 hops), no upsampling convs
            self.istft = ISTFTDecoder(cfg.n_mels, cfg.hop_length, cfg.istft_dim, cfg.istft_layers)
            return
        self.conv_pre = _init(nn.Conv1d(cfg.n_mels, cfg.channels, 7, padding=3))
        self.ups, self.mrfs = nn.ModuleList(), nn.ModuleList()
        c = cfg.channels
        for u in cfg.upsample_rates:
            up = PaddedConvTranspose1d(c, c // 2, u)
            up.conv = _init(up.conv)
            self.ups.append(up)
            c //= 2
            self.mrfs.append(nn.ModuleList(MRFBlock(c, k, d) for k, d in
                                           zip(cfg.resblock_kernel_sizes, cfg.resblock_dilations)))
        self.conv_post = _init(nn.Conv1d(c, 1, 7, padding=3))

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    def forward(self, mel: Tensor) -> Tensor:
        if mel.ndim == 4 and mel.shape[1] == 1:
            mel = mel[:, 0]                                                     # (B, F, L)
        if mel.ndim != 3 or mel.shape[1] != self.config.n_mels:
            raise ValueError(f"The vocoder expects a normalised log-mel (B, 1, {self.config.n_mels}, L), got shape "
                             f"{tuple(mel.shape)}; make one with Vocoder.mel(wav) (AudioLDM's front end).")
        if self.config.generator == "istft":
            return self.istft(mel)                                              # (B, 1, L * hop)
        x = self.conv_pre(mel)                                                  # (B, C, L)
        for up, mrf in zip(self.ups, self.mrfs):
            x = up(F.leaky_relu(x, 0.1))                                        # (B, C / 2, L * u)
            x = sum(block(x) for block in mrf) / len(mrf)                       # MRF: mean of the blocks
        return torch.tanh(self.conv_post(F.leaky_relu(x)))                      # (B, 1, L * hop)


def load_pretrained(name_or_path: str | Path) -> Vocoder:
    """A folder written by ``checkpoint.save_pretrained(vocoder, vocoder.config, ...)``, or a shipped name."""
    return checkpoint.load_pretrained(name_or_path, Vocoder, VocoderConfig)


# ----------------------------------------------------------------------------- discriminators and losses
class PeriodDiscriminator(nn.Module):
    """One sub-discriminator of HiFi-GAN's MPD: ``(B, 1, T)`` folded to ``(B, 1, T / p, p)``, 2-D convs of width 1.

    Folding by a period ``p`` lets kernels of shape ``(5, 1)`` compare samples ``p`` apart, the
    periodic structure of voiced sound. Returns logits and the hidden activations.
    """

    def __init__(self, period: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        self.period = period
        widths = (1, *channels)
        self.convs = nn.ModuleList(weight_norm(nn.Conv2d(a, b, (5, 1), (3, 1), padding=(2, 0)))
                                   for a, b in zip(widths[:-1], widths[1:]))
        self.convs.append(weight_norm(nn.Conv2d(channels[-1], channels[-1], (5, 1), padding=(2, 0))))
        self.conv_post = weight_norm(nn.Conv2d(channels[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:
        pad = -wav.shape[-1] % self.period
        x = F.pad(wav, (0, pad), mode="reflect") if pad else wav
        x = x.view(x.shape[0], 1, -1, self.period)                              # (B, 1, T / p, p)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            features.append(x)
        return self.conv_post(x), features


class VocoderDiscriminator(nn.Module):
    """HiFi-GAN's MPD and the course's MS-STFT discriminator; ``forward`` lists ``(logits, features)`` of each."""

    def __init__(self, config: VocoderConfig | None = None) -> None:
        super().__init__()
        cfg = config or VocoderConfig()
        self.mpd = nn.ModuleList(PeriodDiscriminator(p, cfg.mpd_channels) for p in cfg.mpd_periods)
        self.stft = MultiScaleSTFTDiscriminator(cfg.stft_n_ffts, cfg.stft_channels)

    def forward(self, wav: Tensor) -> list[tuple[Tensor, list[Tensor]]]:
        return [d(wav) for d in self.mpd] + self.stft(wav)


def discriminator_loss(disc: VocoderDiscriminator, fake: Tensor, real: Tensor) -> Tensor:
    """LSGAN, eq. 1 of Kong et al.: sum over sub-discriminators of ``E[(D(x) - 1)^2] + E[D(G(s))^2]``."""
    return sum(((1 - lr) ** 2).mean() + (lf ** 2).mean() for (lr, _), (lf, _) in zip(disc(real), disc(fake.detach())))


def generator_losses(disc: VocoderDiscriminator, fake: Tensor, real: Tensor) -> tuple[Tensor, Tensor]:
    """(adversarial, feature matching): eq. 2 ``sum E[(D(G(s)) - 1)^2]`` and eq. 3, the L1 of hidden activations."""
    with torch.no_grad():
        real_out = disc(real)
    adv, feat = fake.new_zeros(()), fake.new_zeros(())
    for (l_fake, f_fake), (_, f_real) in zip(disc(fake), real_out):
        adv = adv + ((1 - l_fake) ** 2).mean()
        feat = feat + sum((a - b).abs().mean() for a, b in zip(f_fake, f_real))
    return adv, feat


class VocoderLosses(NamedTuple):
    total: Tensor          # mel_weight * mel + adversarial + feature_weight * feature (eq. 6)
    mel: Tensor            # L1 between log-mels (natural log), eq. 5
    adversarial: Tensor    # 0 without a discriminator
    feature: Tensor        # 0 without a discriminator
    discriminator: Tensor  # the discriminator's own loss (0 without one)


def random_crops(clips: list[Tensor] | Tensor, batch_size: int, length: int,
                 generator: torch.Generator | None = None) -> Tensor:
    """``(B, 1, length)`` random crops of clips ``(1, T_i)`` (or a ``(N, 1, T)`` tensor), zero-padded if shorter."""
    idx = torch.randint(0, len(clips), (batch_size,), generator=generator).tolist()
    out = torch.zeros(batch_size, 1, length)
    for b, i in enumerate(idx):
        clip = clips[i].reshape(1, -1)
        start = int(torch.randint(0, max(1, clip.shape[-1] - length + 1), (1,), generator=generator))
        piece = clip[:, start:start + length]
        out[b, :, : piece.shape[-1]] = piece
    return out


def fit_vocoder(vocoder: Vocoder, clips: list[Tensor] | Tensor, *, steps: int, time_budget_s: float | None = None,
                generator: torch.Generator | None = None, checkpoint_dir: str | Path | None = None,
                batch_size: int = 8, crop_s: float = 0.5, lr: float = 2e-4, adversarial: bool = True,
                adversarial_start: int = 0, settings: dict | None = None, progress: bool = True,
                log_every: int = 10) -> TrainResult:
    """Train ``vocoder`` on random crops of ``clips`` (16 kHz, ``(1, T_i)`` each); resumable via ``checkpoint_dir``.

    HiFi-GAN's recipe (section 4): AdamW with betas (0.8, 0.99) for both networks, one
    discriminator step then one generator step per batch. Its per-epoch learning-rate decay
    (0.999) is left out: a course run lasts a few epochs, where it would change nothing.

    Args:
        adversarial: False trains on the mel L1 alone (fast, smooth but buzzy: the phase is
            only learned through the mel of the output); True adds the discriminators.
        adversarial_start: the step at which the discriminators join (as Parallel WaveGAN's
            ``discriminator_train_start_steps``): the mel-only steps before it run about 5x faster
            on a CPU and give the GAN a generator that already makes sound of the right shape.
        crop_s: crop length in seconds, rounded down to a multiple of the hop.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}.")
    if len(clips) == 0:
        raise ValueError("No training clips: pass a list of (1, T) waveforms at 16 kHz.")
    cfg = vocoder.config
    length = int(crop_s * cfg.sample_rate) // cfg.hop_length * cfg.hop_length
    if length < max(cfg.n_fft, max(cfg.stft_n_ffts)):
        raise ValueError(f"crop_s={crop_s} gives {length} samples; the losses need at least "
                         f"{max(cfg.n_fft, max(cfg.stft_n_ffts))} (crop_s >= 0.1).")
    torch.set_flush_denormal(True)   # decaying synthetic sounds hold subnormal floats that slow CPU convs 10-100x
    device = next(vocoder.parameters()).device
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    opt_g = torch.optim.AdamW(vocoder.parameters(), lr=lr, betas=(0.8, 0.99))
    modules, optimizers = {"vocoder": vocoder}, {"generator": opt_g}
    disc = None
    if adversarial:
        disc = VocoderDiscriminator(cfg).to(device)
        modules["discriminator"] = disc
        optimizers["discriminator"] = torch.optim.AdamW(disc.parameters(), lr=lr, betas=(0.8, 0.99))
    trainer = Trainer(modules, optimizers, TrainConfig(max_steps=steps, time_budget_s=time_budget_s,
                                                       checkpoint_dir=checkpoint_dir, log_every=log_every,
                                                       progress=progress, settings=settings),
                      generators={"batches": generator})

    def step_fn(step: int) -> VocoderLosses:
        wav = random_crops(clips, batch_size, length, generator).to(device)    # (B, 1, T)
        target = vocoder.mel.log_mel(wav)                                       # (B, 1, F, L)
        fake = vocoder(LogMel.normalize(target))                                # (B, 1, T)
        zero = wav.new_zeros(())
        d_loss = zero
        gan = disc is not None and step >= adversarial_start
        if gan:
            d_loss = discriminator_loss(disc, fake, wav)
            optimizers["discriminator"].zero_grad(set_to_none=True)
            d_loss.backward()
            optimizers["discriminator"].step()
        l_mel = (vocoder.mel.log_mel(fake) - target).abs().mean()              # eq. 5
        l_adv, l_feat = generator_losses(disc, fake, wav) if gan else (zero, zero)
        total = cfg.mel_weight * l_mel + l_adv + cfg.feature_weight * l_feat   # eq. 6
        if cfg.complex_stft_weight > 0:                                         # phase, which the mel cannot see
            total = total + cfg.complex_stft_weight * spectral.complex_stft_loss(fake, wav)
        return optimizer_step(VocoderLosses(total, l_mel, l_adv, l_feat, d_loss.detach()), opt_g)

    trainer.fit(step_fn)
    return trainer.result(vocoder.eval())
