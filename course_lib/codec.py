"""A SoundStream-style neural audio codec: conv encoder, residual VQ, conv decoder.

Zeghidour et al. 2021, "SoundStream: An End-to-End Neural Audio Codec": a SEANet-like
convolutional encoder turns 16 kHz audio into 50 latent frames per second (strides
2 * 4 * 5 * 8 = 320 samples per frame, AudioLM's acoustic token rate), a residual vector
quantizer (:mod:`course_lib.quantize`) turns each frame into ``Q`` integers of
``log2(K)`` bits, and a mirrored decoder turns codes back into audio. Quantizer dropout
lets one model serve ``1..Q`` quantizers, i.e. ``0.4 .. 6`` kbps at the default size.

Losses (adversarial terms only on request; see :func:`codec_loss`): waveform L1,
multi-resolution STFT (Yamamoto et al. 2020) and a multi-scale log-mel L1 that mirrors
:func:`course_lib.metrics.multiscale_mel_distance`, plus the VQ commitment loss
(van den Oord et al. 2017, eq. 3).

Example:
    >>> codec = Codec(CodecConfig.preset("tiny")).eval()
    >>> codes = codec.encode(torch.randn(1, 1, 16000) * 0.1)     # (B, Q, L) = (1, 4, 50)
    >>> codec.decode(codes).shape
    torch.Size([1, 1, 16000])

Training, evaluation, the optional multi-scale STFT discriminator and the command line
(``course-lib train|eval|bench codec``) live in :mod:`course_lib.codec_train`, re-exported here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import Profile, checkpoint
from course_lib.audio import check_audio, resample
from course_lib.quantize import ResidualVectorQuantizer, bits_per_second
from course_lib.spectral import MultiResolutionSTFTLoss, mel_spectrogram

__all__ = ["CodecConfig", "Codec", "CodecOutput", "CodecLosses", "codec_loss", "mel_loss", "load_pretrained",
           "PRESETS", "train_cli", "eval_cli", "bench", "MultiScaleSTFTDiscriminator", "CodecMetrics", "TrainResult",
           "fit", "evaluate", "evaluation_report", "load_clips", "random_batch", "speed_perturb"]


_ACTIVATIONS = {"elu": nn.ELU, "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU}


@dataclass(frozen=True)
class CodecConfig:
    """Tiny SoundStream-style codec; defaults (the ``small`` preset) train on a laptop CPU."""

    sample_rate: int = 16_000
    channels: int = 16                     # C, width of the first conv; doubles at every stride
    strides: tuple[int, ...] = (2, 4, 5, 8)
    dilations: tuple[int, ...] = (1, 3, 9)  # residual units per block (SEANet / SoundStream)
    kernel_size: int = 7
    latent_dim: int = 64                   # D
    num_quantizers: int = 15               # Q; 15 * 8 bits * 50 Hz = 6 kbps
    codebook_size: int = 256               # K; small enough that short test sets use every code
    causal: bool = False                   # streaming-ready: every conv looks only at the past
    activation: str = "silu"               # SEANet uses ELU; torch's CPU ELU is ~50x slower than SiLU
    # Quantizer training
    ema_decay: float = 0.99
    dead_code_threshold: float = 0.1       # restart codes used < 10% of their fair share n / K
    quantizer_dropout: float = 0.5
    commitment_weight: float = 1.0
    # Reconstruction loss weights
    waveform_weight: float = 0.1           # EnCodec's lambda_t; larger pulls unpredictable noise towards silence
    stft_weight: float = 1.0
    mel_weight: float = 1.0                # the mel loss in dB is the metric the course reports
    adversarial_weight: float = 3.0        # only with a discriminator (fit(adversarial=True)); EnCodec's 3
    feature_weight: float = 3.0            # feature matching, likewise

    def __post_init__(self) -> None:
        if self.codebook_size < 2 or self.num_quantizers < 1 or min(self.strides) < 1:
            raise ValueError(f"CodecConfig needs codebook_size >= 2, num_quantizers >= 1 and positive strides, "
                             f"got {self.codebook_size}, {self.num_quantizers}, {self.strides}.")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {self.activation!r}.")

    @property
    def hop_length(self) -> int:
        """Samples per latent frame (product of the strides)."""
        return math.prod(self.strides)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def bitrate(self, num_quantizers: int | None = None) -> float:
        return bits_per_second(self.frame_rate, num_quantizers or self.num_quantizers, self.codebook_size)

    @staticmethod
    def preset(name: str) -> CodecConfig:
        """Named sizes: ``tiny`` (smoke tests), ``small`` (cpu, shipped checkpoints), ``base`` (gpu)."""
        if name not in PRESETS:
            raise ValueError(f"Unknown codec preset {name!r}; choose one of {sorted(PRESETS)}.")
        return PRESETS[name]

    @staticmethod
    def for_profile(prof: Profile) -> CodecConfig:
        """The preset matching a course profile's ``model_scale``."""
        return CodecConfig.preset(prof.model_scale)


PRESETS: dict[str, CodecConfig] = {
    "tiny": CodecConfig(channels=8, latent_dim=32, num_quantizers=4, codebook_size=64),
    "small": CodecConfig(),
    "base": CodecConfig(channels=32, latent_dim=128, num_quantizers=12, codebook_size=1024),
}


# ----------------------------------------------------------------------------- building blocks
def _act(cfg: CodecConfig) -> nn.Module:
    return _ACTIVATIONS[cfg.activation]()


class Conv(nn.Module):
    """Conv1d that keeps ``T -> T / stride`` for T a multiple of stride; causal pads only the past."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 causal: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel_size, stride=stride, dilation=dilation)
        total = (kernel_size - 1) * dilation - (stride - 1)
        self.pad = (total, 0) if causal else (total // 2, total - total // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, self.pad))


class ConvTranspose(nn.Module):
    """Transposed conv with kernel 2*stride: ``L -> L * stride``; causal trims only the future."""

    def __init__(self, c_in: int, c_out: int, stride: int, causal: bool = False) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(c_in, c_out, 2 * stride, stride=stride)
        self.trim = (0, stride) if causal else (stride // 2, stride - stride // 2)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return y[..., self.trim[0]: y.shape[-1] - self.trim[1]]


class ResidualUnit(nn.Module):
    """act -> dilated conv (kernel 7) -> act -> 1x1 conv, plus the input (SoundStream Fig. 3)."""

    def __init__(self, channels: int, dilation: int, cfg: CodecConfig) -> None:
        super().__init__()
        self.block = nn.Sequential(_act(cfg), Conv(channels, channels, cfg.kernel_size, dilation=dilation,
                                                   causal=cfg.causal),
                                   _act(cfg), Conv(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


def _encoder(cfg: CodecConfig) -> nn.Sequential:
    c = cfg.channels
    layers: list[nn.Module] = [Conv(1, c, cfg.kernel_size, causal=cfg.causal)]
    for s in cfg.strides:                    # (B, c, T) -> (B, 2c, T / s)
        layers += [ResidualUnit(c, d, cfg) for d in cfg.dilations]
        layers += [_act(cfg), Conv(c, 2 * c, 2 * s, stride=s, causal=cfg.causal)]
        c *= 2
    layers += [_act(cfg), Conv(c, cfg.latent_dim, 3, causal=cfg.causal)]
    return nn.Sequential(*layers)


def _decoder(cfg: CodecConfig) -> nn.Sequential:
    c = cfg.channels * 2 ** len(cfg.strides)
    layers: list[nn.Module] = [Conv(cfg.latent_dim, c, cfg.kernel_size, causal=cfg.causal)]
    for s in reversed(cfg.strides):          # (B, c, L) -> (B, c/2, L * s)
        layers += [_act(cfg), ConvTranspose(c, c // 2, s, causal=cfg.causal)]
        c //= 2
        layers += [ResidualUnit(c, d, cfg) for d in cfg.dilations]
    layers += [_act(cfg), Conv(c, 1, cfg.kernel_size, causal=cfg.causal)]
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------- model
class CodecOutput(NamedTuple):
    audio: Tensor          # (B, 1, T) reconstruction, same length as the input
    codes: Tensor          # (B, Q, L) int64
    commit_loss: Tensor    # ()
    codebook_loss: Tensor  # () zero with EMA codebooks


class Codec(nn.Module):
    """SoundStream-style codec. ``encode`` (B, 1, T) -> codes (B, Q, L); ``decode`` codes -> (B, 1, L * hop).

    Args:
        config: sizes and loss weights (:class:`CodecConfig`).
    """

    def __init__(self, config: CodecConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or CodecConfig()
        self.encoder = _encoder(cfg)
        self.quantizer = ResidualVectorQuantizer(
            cfg.latent_dim, cfg.codebook_size, cfg.num_quantizers, quantizer_dropout=cfg.quantizer_dropout,
            decay=cfg.ema_decay, dead_code_threshold=cfg.dead_code_threshold)
        self.decoder = _decoder(cfg)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_rate(self) -> float:
        """Latent frames (token steps) per second: 50 at 16 kHz with strides (2, 4, 5, 8)."""
        return self.config.frame_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def num_quantizers(self) -> int:
        return self.config.num_quantizers

    def bitrate(self, num_quantizers: int | None = None) -> float:
        """Bits per second when decoding from the first ``num_quantizers`` (default all)."""
        return self.quantizer.bitrate(self.frame_rate, num_quantizers)

    def _prepare(self, wav: Tensor, sample_rate: int | None) -> Tensor:
        """Validate (B, 1, T), resample to the codec's rate if needed, pad T to a multiple of hop."""
        wav = check_audio(wav, ndim=3, channels=1, allow_silent=True, name="codec input")
        if sample_rate is not None and sample_rate != self.sample_rate:
            wav = resample(wav, sample_rate, self.sample_rate)
        if wav.shape[-1] < self.hop_length:
            raise ValueError(f"codec input is too short: {wav.shape[-1]} samples, one frame needs "
                             f"{self.hop_length} ({1000 * self.hop_length / self.sample_rate:.0f} ms at "
                             f"{self.sample_rate} Hz). Pad it with torch.nn.functional.pad(wav, (0, n)).")
        pad = -wav.shape[-1] % self.hop_length
        return F.pad(wav, (0, pad))

    def forward(self, wav: Tensor, num_quantizers: int | None = None,
                generator: torch.Generator | None = None) -> CodecOutput:
        """Encode, quantize (with quantizer dropout in training) and decode (B, 1, T) audio."""
        t = wav.shape[-1]
        x = self._prepare(wav, None)
        z_e = self.encoder(x)                                       # (B, D, L)
        q = self.quantizer(z_e, num_quantizers=num_quantizers, generator=generator)
        audio = self.decoder(q.quantized)[..., :t]                  # (B, 1, T)
        return CodecOutput(audio, q.codes, q.commit_loss, q.codebook_loss)

    @torch.no_grad()
    def encode(self, wav: Tensor, num_quantizers: int | None = None, sample_rate: int | None = None) -> Tensor:
        """Audio (B, 1, T) -> codes (B, Q, L), L = ceil(T / hop_length).

        Args:
            wav: (B, 1, T) float audio in [-1, 1] at ``sample_rate``.
            num_quantizers: keep the first Q quantizers (default all): the bitrate knob.
            sample_rate: rate of ``wav``; other rates than :attr:`sample_rate` are resampled.
                ``None`` means ``wav`` already is at the codec's rate.

        Raises:
            AudioError: wrong shape or dtype, NaN or inf samples.
            ValueError: shorter than one frame, or ``num_quantizers`` out of range.
        """
        x = self._prepare(wav, sample_rate)
        return self.quantizer.encode(self.encoder(x), num_quantizers)

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """Codes (B, q, L) from any ``1 <= q <= Q`` quantizers -> audio (B, 1, L * hop_length)."""
        return self.decoder(self.quantizer.decode(codes))

    @torch.no_grad()
    def reconstruct(self, wav: Tensor, num_quantizers: int | None = None) -> Tensor:
        """``decode(encode(wav))`` cut to the input length: (B, 1, T) -> (B, 1, T)."""
        return self.decode(self.encode(wav, num_quantizers))[..., : wav.shape[-1]]


def load_pretrained(name_or_path: str) -> Codec:
    """A shipped codec (``"codec-speech"``, ``"codec-synthworld"``) or a folder written by ``save_pretrained``."""
    return checkpoint.load_pretrained(name_or_path, Codec, CodecConfig)


# ----------------------------------------------------------------------------- losses
class CodecLosses(NamedTuple):
    total: Tensor
    waveform: Tensor    # L1 on samples
    stft: Tensor        # multi-resolution STFT loss
    mel: Tensor         # multi-scale log-mel L1 in dB
    commit: Tensor      # VQ commitment loss
    adversarial: Tensor  # generator's hinge loss against the discriminator (0 without one)
    feature: Tensor     # feature matching L1 (0 without a discriminator)


_MEL_SCALES = (256, 512, 1024, 2048)


def mel_loss(est: Tensor, ref: Tensor, sample_rate: int = 16_000, scales: tuple[int, ...] = _MEL_SCALES) -> Tensor:
    """Multi-scale log-mel L1 in dB: :func:`course_lib.metrics.multiscale_mel_distance` plus a 16 ms scale.

    64 Slaney mel bands, hop ``n_fft // 4``. The metric floors power at 1e-5 (-50 dB) with a
    clamp, which has zero gradient below the floor: a codec that outputs near-silence for
    noisy sounds (rain, cymbals) would never be pushed back up. The loss therefore uses the
    smooth floor ``log10(power + 1e-5)``; above about -40 dB both agree.
    """
    total = est.new_zeros(())
    for n_fft in scales:
        kw = dict(sample_rate=sample_rate, n_fft=n_fft, hop_length=n_fft // 4, n_mels=64, power=2.0)
        m_e = (mel_spectrogram(est, **kw) + 1e-5).log10()
        m_r = (mel_spectrogram(ref, **kw) + 1e-5).log10()
        total = total + 10 * (m_e - m_r).abs().mean()
    return total / len(scales)


_STFT_LOSS = MultiResolutionSTFTLoss()


def codec_loss(model: Codec, wav: Tensor, generator: torch.Generator | None = None,
               adversary: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None) -> CodecLosses:
    """Reconstruction + commitment (+ adversarial) loss of ``model`` on a batch (B, 1, T).

    Args:
        adversary: ``(fake, real) -> (adversarial, feature_matching)`` generator losses, e.g.
            :meth:`course_lib.codec_train.MultiScaleSTFTDiscriminator.generator_losses`.
            SoundStream trains with one; without it a small codec still learns intelligible,
            slightly muffled audio and trains several times faster on a CPU. The mel term is
            the main driver of perceived quality either way.
    """
    cfg = model.config
    out = model(wav, generator=generator)
    l_wave = (out.audio - wav).abs().mean()
    l_stft = _STFT_LOSS(out.audio, wav)
    l_mel = mel_loss(out.audio, wav, cfg.sample_rate)
    l_adv, l_feat = adversary(out.audio, wav) if adversary is not None else (wav.new_zeros(()), wav.new_zeros(()))
    total = (cfg.waveform_weight * l_wave + cfg.stft_weight * l_stft + cfg.mel_weight * l_mel
             + cfg.commitment_weight * out.commit_loss + out.codebook_loss
             + cfg.adversarial_weight * l_adv + cfg.feature_weight * l_feat)
    return CodecLosses(total, l_wave, l_stft, l_mel, out.commit_loss, l_adv, l_feat)


# Data, training (with the optional adversarial loss), evaluation and the CLI live in
# codec_train.py, so that each file reads in one sitting.
_FROM_CODEC_TRAIN = frozenset({"CodecMetrics", "MultiScaleSTFTDiscriminator", "TrainResult", "bench",
    "eval_cli", "evaluate", "evaluation_report", "fit", "load_clips", "random_batch", "speed_perturb",
    "train_cli"})


def __getattr__(name: str):
    """Re-export codec_train's API lazily, so either module can be imported first."""
    if name in _FROM_CODEC_TRAIN:
        from course_lib import codec_train
        return getattr(codec_train, name)
    raise AttributeError(f"module 'course_lib.codec' has no attribute {name!r}")
