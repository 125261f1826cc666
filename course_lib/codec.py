"""A SoundStream-style neural audio codec: conv encoder, residual VQ, conv decoder.

Zeghidour et al. 2021, "SoundStream: An End-to-End Neural Audio Codec": a SEANet-like
convolutional encoder turns 16 kHz audio into 50 latent frames per second (strides
2 * 4 * 5 * 8 = 320 samples per frame, AudioLM's acoustic token rate), a residual vector
quantizer (:mod:`course_lib.quantize`) turns each frame into ``Q`` integers of
``log2(K)`` bits, and a mirrored decoder turns codes back into audio. Quantizer dropout
lets one model serve ``1..Q`` quantizers, i.e. ``0.4 .. 6`` kbps at the default size.

Losses (no adversarial term by default; see the note on :func:`codec_loss`): waveform L1,
multi-resolution STFT (Yamamoto et al. 2020) and a multi-scale log-mel L1 that mirrors
:func:`course_lib.metrics.multiscale_mel_distance`, plus the VQ commitment loss
(van den Oord et al. 2017, eq. 3).

Example:
    >>> codec = Codec(CodecConfig.preset("tiny")).eval()
    >>> codes = codec.encode(torch.randn(1, 1, 16000) * 0.1)     # (B, Q, L) = (1, 4, 50)
    >>> codec.decode(codes).shape
    torch.Size([1, 1, 16000])

``course-lib train codec``, ``course-lib eval codec`` and ``course-lib bench codec`` call
:func:`train_cli`, :func:`eval_cli` and :func:`bench` at the end of this file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import Profile, checkpoint
from course_lib.audio import check_audio, resample
from course_lib.quantize import ResidualVectorQuantizer, bits_per_second
from course_lib.spectral import MultiResolutionSTFTLoss, mel_spectrogram

__all__ = ["CodecConfig", "Codec", "CodecOutput", "CodecLosses", "codec_loss", "mel_loss", "load_pretrained",
           "PRESETS", "train_cli", "eval_cli", "bench",
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


def codec_loss(model: Codec, wav: Tensor, generator: torch.Generator | None = None) -> CodecLosses:
    """Reconstruction + commitment loss of ``model`` on a batch (B, 1, T).

    SoundStream adds adversarial and feature-matching losses; without them a small codec
    still learns intelligible, slightly muffled audio, and trains several times faster on a
    CPU. The mel term is the main driver of perceived quality.
    """
    cfg = model.config
    out = model(wav, generator=generator)
    l_wave = (out.audio - wav).abs().mean()
    l_stft = _STFT_LOSS(out.audio, wav)
    l_mel = mel_loss(out.audio, wav, cfg.sample_rate)
    total = (cfg.waveform_weight * l_wave + cfg.stft_weight * l_stft + cfg.mel_weight * l_mel
             + cfg.commitment_weight * out.commit_loss + out.codebook_loss)
    return CodecLosses(total, l_wave, l_stft, l_mel, out.commit_loss)


# ----------------------------------------------------------------------------- data, training, evaluation
def load_clips(data: str, split: str, sample_rate: int = 16_000, size: int | None = None,
               seed: int = 0) -> list[Tensor]:
    """Clips (1, T) of ``"synthworld"`` (all families) or ``"fsdd"`` (test = indices 0-4 of each speaker)."""
    from course_lib import data as course_data
    if data == "synthworld":
        ds = course_data.SynthWorld(split, sample_rate=sample_rate, size=size or (2000 if split == "train" else 200),
                                    seed=seed)
        audio = torch.cat([ds.batch(range(i, min(len(ds), i + 64))) for i in range(0, len(ds), 64)])
        return list(audio.float())                                  # B clips of (1, T)
    if data != "fsdd":
        raise ValueError(f"Unknown codec data {data!r}; use 'synthworld' or 'fsdd'.")
    ds = course_data.fsdd(split, sample_rate=sample_rate)
    n = len(ds) if size is None else min(size, len(ds))
    return [ds[i].audio.float() for i in range(n)]


def speed_perturb(clips: list[Tensor], sample_rate: int, factors: tuple[float, ...] = (0.9, 1.1)) -> list[Tensor]:
    """Clips plus copies played ``factor`` times faster (pitch moves too): more speakers for free."""
    out = list(clips)
    for f in factors:
        new_sr = int(round(sample_rate / f / 100) * 100)           # resampling to sr/f and playing at sr
        out += [resample(c, sample_rate, new_sr) for c in clips]
    return out


def random_batch(clips: list[Tensor], batch_size: int, length: int,
                 generator: torch.Generator | None = None) -> Tensor:
    """(B, 1, length) random crops (zero-padded when a clip is shorter), clip peak set to a random 0.3 .. 1."""
    idx = torch.randint(0, len(clips), (batch_size,), generator=generator).tolist()
    out = torch.zeros(batch_size, 1, length)
    for b, i in enumerate(idx):
        c = clips[i][..., :]
        start = int(torch.randint(0, max(1, c.shape[-1] - length + 1), (1,), generator=generator))
        piece = c[..., start:start + length]
        out[b, :, : piece.shape[-1]] = piece / c.abs().max().clamp(min=1e-4)   # the clip's peak, not the crop's
    gain = 0.3 + 0.7 * torch.rand(batch_size, 1, 1, generator=generator)
    return out * gain


class TrainResult(NamedTuple):
    model: Codec
    history: object        # course_lib.train.History
    steps: int
    wall_time_s: float


def fit(model: Codec, clips: list[Tensor], max_steps: int, batch_size: int = 16, crop_s: float = 0.5,
        lr: float = 1e-3, time_budget_s: float | None = None, checkpoint_dir: str | None = None,
        seed: int = 0, progress: bool = True, log_every: int = 10) -> TrainResult:
    """Train ``model`` on random crops of ``clips`` (resumable via ``checkpoint_dir``/last.pt)."""
    from course_lib.train import TrainConfig, Trainer
    # Decaying synthetic sounds contain subnormal floats (|x| < 1e-38); CPU convolutions on them run
    # 10-100x slower. Flushing them to zero is a process-wide CPU flag, set here for the training run.
    torch.set_flush_denormal(True)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.8, 0.99), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, max_steps) / max_steps)))
    trainer = Trainer({"codec": model}, {"opt": opt}, TrainConfig(
        max_steps=max_steps, time_budget_s=time_budget_s, checkpoint_dir=checkpoint_dir,
        checkpoint_every_s=120.0, log_every=log_every, progress=progress), schedulers={"lr": sched})
    gen.manual_seed(seed + trainer.step)   # a resumed run draws fresh batches
    length = int(crop_s * model.sample_rate) // model.hop_length * model.hop_length

    def step_fn(step: int) -> CodecLosses:
        wav = random_batch(clips, batch_size, length, gen)
        losses = codec_loss(model, wav, gen)
        opt.zero_grad(set_to_none=True)
        losses.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        return CodecLosses(*(x.detach() for x in losses))

    def log(step: int, tr: Trainer) -> None:                       # a plain log line when there is no bar
        rec = tr.history.records[-1]
        print(f"step {step} t={rec['time_s']:.0f}s total={rec['total']:.3f} mel={rec['mel']:.2f} dB "
              f"stft={rec['stft']:.3f}", flush=True)

    history = trainer.fit(step_fn, callback=None if progress else log, callback_every=50)
    return TrainResult(model.eval(), history, trainer.step, trainer.elapsed_s)


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
    from course_lib.metrics import multiscale_mel_distance, si_sdr
    from course_lib.quantize import codebook_stats
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


def evaluation_report(model: Codec, clips: list[Tensor], opus_kbps: tuple[float, ...] = (6.0, 8.0)) -> dict:
    """The table of a card: codec at 1, Q/4, Q/2 and Q quantizers, and Opus at ``opus_kbps``."""
    from course_lib import baselines
    from course_lib.metrics import multiscale_mel_distance
    q_all = model.num_quantizers
    report: dict = {"codec": {}, "opus": {}}
    for q in sorted({1, max(1, q_all // 4), max(1, q_all // 2), q_all}):
        report["codec"][f"q{q}"] = evaluate(model, clips, q)._asdict()
    for kbps in opus_kbps:
        dists, rates = [], []
        for clip in clips:
            res = baselines.opus(clip, model.sample_rate, bitrate=kbps * 1000)
            dists.append(float(multiscale_mel_distance(res.audio[None], clip[None], model.sample_rate)[0]))
            rates.append(res.bitrate)
        report["opus"][f"{kbps:g}kbps"] = {"bitrate": sum(rates) / len(rates), "mel_distance": sum(dists) / len(dists)}
    return report


def _parser(prog: str):
    import argparse
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--data", choices=("synthworld", "fsdd"), default="synthworld")
    p.add_argument("--eval-size", type=int, default=None, help="test clips (default: 200 SynthWorld / all FSDD test)")
    p.add_argument("--seed", type=int, default=0)
    return p


def train_cli(argv: list[str]) -> int:
    """``course-lib train codec --data fsdd --out assets/checkpoints/codec-speech --steps 2000``."""
    import json
    import sys
    import time
    from course_lib import profile
    from course_lib.checkpoint import git_commit, save_pretrained
    p = _parser("course-lib train codec")
    p.add_argument("--profile", default=None, help="smoke | cpu | gpu (sets the preset when --preset is absent)")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS))
    p.add_argument("--out", default=None, help="checkpoint folder (default assets/checkpoints/codec-<data>)")
    p.add_argument("--work-dir", default=None, help="resumable last.pt lives here (default runs/codec-<data>)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--time-budget-s", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--crop-s", type=float, default=0.5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-size", type=int, default=None, help="training clips (default all / 2000 SynthWorld)")
    p.add_argument("--speed-perturb", type=float, nargs="*", default=[0.9, 1.1])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    prof = profile(args.profile)
    cfg = CodecConfig.preset(args.preset or prof.model_scale)
    name = {"synthworld": "codec-synthworld", "fsdd": "codec-speech"}[args.data]
    out = args.out or str(checkpoint.checkpoint_root() / name)
    work = args.work_dir or f"runs/{name}"
    torch.manual_seed(args.seed)                                   # model initialisation
    model = Codec(cfg)
    clips = load_clips(args.data, "train", cfg.sample_rate, args.train_size, args.seed)
    clips = speed_perturb(clips, cfg.sample_rate, tuple(args.speed_perturb))
    result = fit(model, clips, args.steps, args.batch_size, args.crop_s, args.lr, args.time_budget_s, work,
                 args.seed, progress=not args.no_progress)
    test = load_clips(args.data, "test", cfg.sample_rate, args.eval_size, args.seed)
    t0 = time.perf_counter()
    checkpoint.round_trip_(result.model, torch.float16)            # the card describes the fp16 file we ship
    metrics = evaluation_report(result.model, test)
    data_note = {"synthworld": "SynthWorld (all families, procedural, course_lib.data), train split; test split",
                 "fsdd": "Free Spoken Digit Dataset (Jackobovski et al., CC BY-SA 4.0, doi:10.5281/zenodo.1342401), "
                         "training indices 5-49 of the available speakers; test indices 0-4"}[args.data]
    card = {"command": "course-lib train codec " + " ".join(argv), "commit": git_commit(), "data": data_note,
            "license_of_data": "CC BY-SA 4.0" if args.data == "fsdd" else "generated by course_lib",
            "seed": args.seed, "stored_dtype": "float16", "steps": result.steps, "wall_time_s": round(result.wall_time_s, 1),
            "eval": {"data": args.data, "split": "test", "clips": len(test), "eval_size": args.eval_size,
                     "eval_seconds": round(time.perf_counter() - t0, 1)},
            "final_losses": {k: v for k, v in result.history.records[-1].items()}, "metrics": metrics}
    save_pretrained(result.model, cfg, out, card, dtype=torch.float16)
    print(json.dumps(metrics, indent=2), file=sys.stderr)
    print(f"saved {out}", file=sys.stderr)
    return 0


def eval_cli(argv: list[str]) -> dict:
    """``course-lib eval codec --checkpoint codec-speech`` (data and test size default to the card's)."""
    p = _parser("course-lib eval codec")
    p.add_argument("--checkpoint", required=True, help="shipped name (codec-speech) or folder")
    p.set_defaults(data=None)
    args = p.parse_args(argv)
    card = checkpoint.read_card(args.checkpoint)
    ev = card.get("eval", {})
    data = args.data or ev.get("data", "synthworld")
    size = args.eval_size if args.eval_size is not None else ev.get("eval_size")
    model = load_pretrained(args.checkpoint)
    test = load_clips(data, "test", model.sample_rate, size, card.get("seed", args.seed))
    return {"checkpoint": str(args.checkpoint), "data": data, "clips": len(test),
            "metrics": evaluation_report(model, test), "card_metrics": card.get("metrics")}


def bench(seconds: float = 10.0) -> dict:
    """Encode+decode real-time factor (CPU, current threads) of the ``small`` preset, and RVQ speed."""
    import time
    model = Codec(CodecConfig.preset("small")).eval()
    wav = 0.1 * torch.randn(1, 1, int(seconds * model.sample_rate), generator=torch.Generator().manual_seed(0))
    model.decode(model.encode(wav))                                 # warm-up
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        model.decode(model.encode(wav))
        best = min(best, time.perf_counter() - t0)
    return {"preset": "small", "threads": torch.get_num_threads(), "audio_s": seconds,
            "encode_decode_rtf": round(best / seconds, 4), "bitrate_bps": model.bitrate(),
            "parameters": sum(p.numel() for p in model.parameters())}
