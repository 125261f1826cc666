"""A SoundStream-style neural audio codec: conv encoder, residual VQ, conv or Vocos-style decoder.

Zeghidour et al. 2021, "SoundStream: An End-to-End Neural Audio Codec": a SEANet-like
convolutional encoder turns 16 kHz audio into 50 latent frames per second (strides
2 * 4 * 5 * 8 = 320 samples per frame, AudioLM's acoustic token rate), a residual vector
quantizer (:mod:`course_lib.quantize`) turns each frame into ``Q`` integers of
``log2(K)`` bits, and a mirrored decoder turns codes back into audio. Quantizer dropout
lets one model serve ``1..Q`` quantizers, i.e. ``0.4 .. 6`` kbps at the default size.

Two decoders (``CodecConfig.decoder``): ``"conv"`` mirrors the encoder with transposed convs
(SoundStream; the shipped checkpoints); ``"istft"`` is Vocos (Siuzdak 2023, :class:`ISTFTDecoder`):
ConvNeXt blocks at the frame rate predict STFT frames that ``istft`` turns into samples, for a
fraction of the compute (the ``speech`` preset, with phase-aware losses).

Losses (adversarial terms only on request; see :func:`codec_loss`): waveform L1,
multi-resolution STFT (Yamamoto et al. 2020), a multi-scale log-mel L1 that mirrors
:func:`course_lib.metrics.multiscale_mel_distance`, optionally a compressed complex STFT
loss that constrains phase (Braun & Tashev 2021, :func:`complex_stft_loss`), plus the VQ
commitment loss (van den Oord et al. 2017, eq. 3).

Example:
    >>> codec = Codec(CodecConfig.preset("tiny")).eval()
    >>> codes = codec.encode(torch.randn(1, 1, 16000) * 0.1)     # (B, Q, L) = (1, 4, 50)
    >>> codec.decode(codes).shape
    torch.Size([1, 1, 16000])

Data preparation, evaluation reports (with Opus beside the codec) and the command line
(``course-lib train|eval codec``) live in :mod:`course_lib.recipes.codec`.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import Tensor, nn

from course_lib import checkpoint
from course_lib.audio import change_speed, check_audio, resample
from course_lib.metrics import multiscale_mel_distance, si_sdr
from course_lib.nn import (ConvNeXtBlock, ISTFTDecoder, MultiScaleSTFTDiscriminator, PaddedConv1d, PaddedConvTranspose1d,
                           ResidualUnit)
from course_lib.quantize import ResidualVectorQuantizer, bits_per_second, codebook_stats
from course_lib.spectral import MultiResolutionSTFTLoss, complex_stft_loss, mel_spectrogram
from course_lib.train import (TrainConfig, Trainer, TrainResult, autocast, distribute, init_distributed, optimizer_step,
                              rank_generator, unwrap, warmup_cosine)

__all__ = ["CodecConfig", "Codec", "CodecOutput", "CodecLosses", "codec_loss", "mel_loss", "complex_stft_loss",
           "load_pretrained", "PRESETS", "ConvNeXtBlock", "ISTFTDecoder", "random_batch", "augment_voices", "fit",
           "evaluate", "CodecMetrics"]


_ACTIVATIONS = {"elu": nn.ELU, "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU}
DECODERS = ("conv", "istft")


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
    # Decoder: "conv" mirrors the encoder (SoundStream); "istft" is Vocos (see ISTFTDecoder)
    decoder: str = "conv"
    decoder_dim: int = 128                 # istft only: ConvNeXt width
    decoder_layers: int = 8                # istft only: ConvNeXt blocks
    istft_upsample: int = 1                # istft only: STFT frames per latent frame; STFT hop = hop_length / this
    # Quantizer training
    ema_decay: float = 0.99
    dead_code_threshold: float = 0.1       # restart codes used < 10% of their fair share n / K
    quantizer_dropout: float = 0.5
    commitment_weight: float = 1.0
    # Reconstruction loss weights
    waveform_weight: float = 0.1           # EnCodec's lambda_t; larger pulls unpredictable noise towards silence
    stft_weight: float = 1.0
    mel_weight: float = 1.0                # the mel loss in dB is the metric the course reports
    complex_stft_weight: float = 0.0       # phase-aware compressed complex STFT loss (complex_stft_loss)
    adversarial_weight: float = 3.0        # only with a discriminator (fit(adversarial=True)); EnCodec's 3
    feature_weight: float = 3.0            # feature matching, likewise

    def __post_init__(self) -> None:
        if self.codebook_size < 2 or self.num_quantizers < 1 or min(self.strides) < 1:
            raise ValueError(f"CodecConfig needs codebook_size >= 2, num_quantizers >= 1 and positive strides, "
                             f"got {self.codebook_size}, {self.num_quantizers}, {self.strides}.")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {self.activation!r}.")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}.")
        if self.decoder == "istft" and self.causal:
            raise ValueError("decoder='istft' cannot be causal: each STFT frame overlaps the next ones (n_fft = 4 "
                             "hops). Use decoder='conv' for a streaming codec.")
        sizes = (self.decoder_dim, self.decoder_layers, self.istft_upsample)
        if min(sizes) < 1 or self.hop_length % self.istft_upsample:
            raise ValueError(f"decoder_dim, decoder_layers must be positive and istft_upsample must divide hop_length "
                             f"{self.hop_length}, got {self.decoder_dim}, {self.decoder_layers}, {self.istft_upsample}.")

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
        """Named sizes: ``tiny`` (smoke profile), ``small`` (cpu, shipped checkpoints), ``base`` (gpu),
        ``speech`` (Vocos decoder, phase-aware losses, 12 x 1024 codes = 6 kbps), ``tiny-istft`` (its smoke size)."""
        return checkpoint.preset(PRESETS, name, "codec")


# Phase-aware: random phases cost ~0.1 of complex_stft_loss on FSDD (3-4 dB of mel), hence the weight 10.
_VOCOS = {"decoder": "istft", "istft_upsample": 2, "complex_stft_weight": 10.0, "waveform_weight": 1.0}
PRESETS: dict[str, CodecConfig] = {
    "tiny": CodecConfig(channels=8, latent_dim=32, num_quantizers=4, codebook_size=64),
    "small": CodecConfig(),
    "base": CodecConfig(channels=32, latent_dim=128, num_quantizers=12, codebook_size=1024),
    # AudioLM's acoustic tokens (12 x 1024 codes, 50 Hz: 6 kbps), 0.9 M-parameter Vocos: 7.4 MB fp16, RTF 0.045
    "speech": CodecConfig(num_quantizers=12, codebook_size=1024, **_VOCOS),
    "tiny-istft": CodecConfig(channels=8, latent_dim=32, num_quantizers=4, codebook_size=64, decoder_dim=32,
                              decoder_layers=2, **_VOCOS),
}


# ----------------------------------------------------------------------------- encoder and decoder
def _act(cfg: CodecConfig) -> nn.Module:
    return _ACTIVATIONS[cfg.activation]()


def _unit(channels: int, dilation: int, cfg: CodecConfig) -> ResidualUnit:
    return ResidualUnit(channels, dilation, cfg.kernel_size, cfg.causal, activation=_ACTIVATIONS[cfg.activation])


def _encoder(cfg: CodecConfig) -> nn.Sequential:
    c = cfg.channels
    layers: list[nn.Module] = [PaddedConv1d(1, c, cfg.kernel_size, causal=cfg.causal)]
    for s in cfg.strides:                    # (B, c, T) -> (B, 2c, T / s)
        layers += [_unit(c, d, cfg) for d in cfg.dilations]
        layers += [_act(cfg), PaddedConv1d(c, 2 * c, 2 * s, stride=s, causal=cfg.causal)]
        c *= 2
    layers += [_act(cfg), PaddedConv1d(c, cfg.latent_dim, 3, causal=cfg.causal)]
    return nn.Sequential(*layers)


def _decoder(cfg: CodecConfig) -> nn.Module:
    if cfg.decoder == "istft":
        return ISTFTDecoder(cfg.latent_dim, cfg.hop_length, cfg.decoder_dim, cfg.decoder_layers, cfg.istft_upsample)
    c = cfg.channels * 2 ** len(cfg.strides)
    layers: list[nn.Module] = [PaddedConv1d(cfg.latent_dim, c, cfg.kernel_size, causal=cfg.causal)]
    for s in reversed(cfg.strides):          # (B, c, L) -> (B, c/2, L * s)
        layers += [_act(cfg), PaddedConvTranspose1d(c, c // 2, s, causal=cfg.causal)]
        c //= 2
        layers += [_unit(c, d, cfg) for d in cfg.dilations]
    layers += [_act(cfg), PaddedConv1d(c, 1, cfg.kernel_size, causal=cfg.causal)]
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

    @torch.no_grad()
    def reconstruct_unquantized(self, wav: Tensor) -> Tensor:
        """Encoder -> decoder without the RVQ: (B, 1, T) -> (B, 1, T).

        The autoencoder's ceiling, which no number of quantizers can beat by much (the decoder
        never saw unquantized latents in training, so it can even score a little below ``reconstruct``).
        """
        return self.decoder(self.encoder(self._prepare(wav, None)))[..., : wav.shape[-1]]


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
    complex_stft: Tensor  # compressed complex STFT loss (0 unless complex_stft_weight > 0)


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
            :meth:`course_lib.nn.MultiScaleSTFTDiscriminator.generator_losses`.
            SoundStream trains with one; without it a small codec still learns intelligible,
            slightly muffled audio and trains several times faster on a CPU. The mel term is
            the main driver of perceived quality either way.
    """
    cfg = unwrap(model).config
    out = model(wav, generator=generator)                           # through DDP's forward when distributed
    l_wave = (out.audio - wav).abs().mean()
    l_stft = _STFT_LOSS(out.audio, wav)
    l_mel = mel_loss(out.audio, wav, cfg.sample_rate)
    l_adv, l_feat = adversary(out.audio, wav) if adversary is not None else (wav.new_zeros(()), wav.new_zeros(()))
    l_cplx = complex_stft_loss(out.audio, wav) if cfg.complex_stft_weight > 0 else wav.new_zeros(())
    total = (cfg.waveform_weight * l_wave + cfg.stft_weight * l_stft + cfg.mel_weight * l_mel
             + cfg.complex_stft_weight * l_cplx + cfg.commitment_weight * out.commit_loss + out.codebook_loss
             + cfg.adversarial_weight * l_adv + cfg.feature_weight * l_feat)
    return CodecLosses(total, l_wave, l_stft, l_mel, out.commit_loss, l_adv, l_feat, l_cplx)


# ----------------------------------------------------------------------------- training
def random_batch(clips: list[Tensor], batch_size: int, length: int,
                 generator: torch.Generator | None = None, level: str = "peak") -> Tensor:
    """(B, 1, length) random crops (zero-padded when a clip is shorter) at a random level.

    Args:
        level: ``"peak"`` sets each clip's peak to a random 0.3 .. 1 (every batch is loud);
            ``"natural"`` keeps the recording's own level and changes it by a random -6 .. +6 dB
            (peaks capped at 1), so the codes are spent on the levels the test takes have.
    """
    if level not in ("peak", "natural"):
        raise ValueError(f"level must be 'peak' or 'natural', got {level!r}.")
    idx = torch.randint(0, len(clips), (batch_size,), generator=generator).tolist()
    out = torch.zeros(batch_size, 1, length)
    peaks = torch.ones(batch_size, 1, 1)
    for b, i in enumerate(idx):
        c = clips[i]
        start = int(torch.randint(0, max(1, c.shape[-1] - length + 1), (1,), generator=generator))
        piece = c[..., start:start + length]
        peaks[b] = c.abs().max().clamp(min=1e-4)                    # the clip's peak, not the crop's
        out[b, :, : piece.shape[-1]] = piece / peaks[b]
    if level == "peak":
        gain = 0.3 + 0.7 * torch.rand(batch_size, 1, 1, generator=generator)
    else:
        db = 12.0 * torch.rand(batch_size, 1, 1, generator=generator) - 6.0
        gain = (peaks * 10.0 ** (db / 20.0)).clamp(max=1.0)
    return out * gain


AUGMENT_SPEED = (0.8, 1.25)


def augment_voices(wav: Tensor, sample_rate: int, length: int, generator: torch.Generator | None = None,
                   speed: tuple[float, float] = AUGMENT_SPEED, eq_db: float = 8.0) -> Tensor:
    """New voices and microphones from the same recordings, for a decoder that must render voices it never heard.

    Each crop of ``wav`` (B, 1, T) is played a random ``speed`` times as fast (uniform; pitch and formants move
    together, as a tape sped up), then passes a peaking EQ of random gain (+-``eq_db`` dB), centre (200 Hz ..
    4 kHz, log-uniform) and Q (0.5 .. 2), and is cut to ``length`` samples (zero-padded if shorter). ``T`` should
    be at least ``length * speed[1]`` so that the fastest crop still fills ``length``.
    """
    out = wav.new_zeros(wav.shape[0], 1, length)
    u = torch.rand(wav.shape[0], 4, generator=generator).tolist()
    for b, (r_speed, r_fc, r_gain, r_q) in enumerate(u):
        x = change_speed(wav[b], sample_rate, speed[0] + (speed[1] - speed[0]) * r_speed)[0][..., :length]
        x = AF.equalizer_biquad(x, sample_rate, 200.0 * 20.0 ** r_fc, eq_db * (2 * r_gain - 1), 0.5 + 1.5 * r_q)
        out[b, :, : x.shape[-1]] = x.clamp(-1.0, 1.0)
    return out


def fit(model: Codec, clips: list[Tensor], *, steps: int, time_budget_s: float | None = None,
        generator: torch.Generator | None = None, checkpoint_dir: str | Path | None = None,
        batch_size: int = 16, crop_s: float = 0.5, lr: float = 1e-3, adversarial: bool = False,
        level: str = "peak", mixed_precision: bool = False, settings: dict | None = None,
        progress: bool = True, log_every: int = 10, decoder_only: bool = False,
        augment: bool = False) -> TrainResult:
    """Train ``model`` (on its device) on random crops of ``clips``; resumable via ``checkpoint_dir``/last.pt.

    AdamW (betas 0.8, 0.99) with a cosine decay to 10% of ``lr``, gradients clipped at 10. Under
    ``torchrun`` every process trains on its own batches and DDP averages the gradients; the EMA
    codebooks sum their statistics over processes (:mod:`course_lib.quantize`).

    Args:
        clips: training clips ``(1, T_i)`` of any lengths at ``model.sample_rate``.
        steps: total optimisation steps (resumed steps count).
        generator: every random draw (crops, gains, quantizer dropout); checkpointed with the run.
        adversarial: add a :class:`~course_lib.nn.MultiScaleSTFTDiscriminator` (Adam 3e-4, betas
            (0.5, 0.9)), one discriminator step per codec step, as in SoundStream.
        level: loudness of the training crops, see :func:`random_batch`.
        mixed_precision: bfloat16 autocast for the forward passes (``Profile.mixed_precision``).
        settings: what a resumed run must share with this one (refused otherwise).
        decoder_only: freeze the encoder and the codebooks, so every clip keeps its codes (token models
            trained on them, such as AudioLM's, stay valid) and train only the decoder. Quantizer dropout
            still applies, so the decoder keeps serving every bitrate.
        augment: train on crops passed through :func:`augment_voices` (random speed and EQ).

    Returns:
        A :class:`~course_lib.train.TrainResult`; ``stopped_by`` says whether it finished.
    """
    if steps < 1 or batch_size < 1 or crop_s <= 0:
        raise ValueError(f"steps, batch_size and crop_s must be positive, got {steps}, {batch_size}, {crop_s}.")
    if not clips:
        raise ValueError("No training clips: check the data source (e.g. course-lib info lists what was found).")
    # Decaying synthetic sounds contain subnormal floats (|x| < 1e-38); CPU convolutions on them run
    # 10-100x slower. Flushing them to zero is a process-wide CPU flag, set here for the training run.
    torch.set_flush_denormal(True)
    init_distributed()
    device = next(model.parameters()).device
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    length = int(crop_s * model.sample_rate) // model.hop_length * model.hop_length
    if length < model.hop_length:
        raise ValueError(f"crop_s={crop_s} is shorter than one codec frame ({model.hop_length} samples).")
    frozen = nn.ModuleList([model.encoder, *model.quantizer.layers]) if decoder_only else nn.ModuleList()
    frozen.requires_grad_(False)
    net = distribute(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, betas=(0.8, 0.99),
                            weight_decay=0.0)
    sched = warmup_cosine(opt, steps, floor=0.1)
    modules, optimizers = {"codec": model}, {"opt": opt}
    disc = None
    if adversarial:
        disc = MultiScaleSTFTDiscriminator().to(device)
        modules["discriminator"] = disc
        optimizers["disc_opt"] = torch.optim.Adam(disc.parameters(), lr=3e-4, betas=(0.5, 0.9))
    trainer = Trainer(modules, optimizers, TrainConfig(
        max_steps=steps, time_budget_s=time_budget_s, checkpoint_dir=checkpoint_dir, log_every=log_every,
        progress=progress, settings=settings), schedulers={"lr": sched}, generators={"batches": generator})
    gen = rank_generator(generator)
    fakes: list[Tensor] = []

    def adversary(fake: Tensor, real: Tensor) -> tuple[Tensor, Tensor]:
        fakes[:] = [fake.detach()]                                 # reused by the discriminator step
        return disc.generator_losses(fake, real)

    def batch() -> Tensor:
        if not augment:
            return random_batch(clips, batch_size, length, gen, level)
        wide = random_batch(clips, batch_size, math.ceil(length * AUGMENT_SPEED[1]), gen, level)
        return augment_voices(wide, model.sample_rate, length, gen)

    def step_fn(step: int) -> CodecLosses:
        frozen.eval()                                               # no EMA updates, no code restarts
        wav = batch().to(device)
        with autocast(device, mixed_precision):
            losses = codec_loss(net, wav, gen, adversary if disc is not None else None)
        losses = optimizer_step(losses, opt, 10.0)                  # backward outside autocast
        if disc is not None:
            with autocast(device, mixed_precision):
                d_loss = disc.discriminator_loss(fakes[0], wav)
            optimizers["disc_opt"].zero_grad(set_to_none=True)   # also drops the codec step's grads
            d_loss.backward()
            optimizers["disc_opt"].step()
        return CodecLosses(*(x.float() for x in losses))

    def log(step: int, tr: Trainer) -> None:                       # a plain log line when there is no bar
        rec = tr.history.records[-1]
        print(f"step {step} t={rec['time_s']:.0f}s total={rec['total']:.3f} mel={rec['mel']:.2f} dB "
              f"stft={rec['stft']:.3f}", flush=True)

    try:
        trainer.fit(step_fn, callback=None if progress else log, callback_every=50)
    finally:                                                        # also when a step raises
        frozen.requires_grad_(True)
    return trainer.result(model.eval())


# ----------------------------------------------------------------------------- evaluation
class CodecMetrics(NamedTuple):
    num_quantizers: int
    bitrate: float           # bits per second
    mel_distance: float      # dB, multi-scale mel distance (lower is better)
    si_sdr: float            # dB (higher is better)
    usage: list[float]       # per quantizer, fraction of codes used on the clips
    perplexity: list[float]  # per quantizer
    dead: list[int]          # per quantizer, codes never used


@torch.no_grad()
def evaluate(model: Codec, clips: list[Tensor], num_quantizers: int | None = None) -> CodecMetrics:
    """Metrics of ``decode(encode(clip))`` averaged over clips (1, T); codebook stats over all frames."""
    model.eval()
    q = num_quantizers or model.num_quantizers
    mels, sdrs, codes = [], [], []
    for clip in clips:
        x = clip[None]                                              # (1, 1, T)
        c = model.encode(x, q)
        y = model.decode(c)[..., : x.shape[-1]]
        mels.append(float(multiscale_mel_distance(y, x, model.sample_rate)[0]))
        sdrs.append(float(si_sdr(y, x).mean()))
        codes.append(c)
    stats = codebook_stats(torch.cat(codes, -1), model.config.codebook_size)
    return CodecMetrics(q, model.bitrate(q), sum(mels) / len(mels), sum(sdrs) / len(sdrs),
                        [round(float(u), 4) for u in stats.usage], [round(float(p), 1) for p in stats.perplexity],
                        [int(d) for d in stats.dead])
