"""Training, evaluation and command line of the codec (:mod:`course_lib.codec`).

* :func:`fit` trains on random 0.5 s crops with the reconstruction losses of
  :func:`course_lib.codec.codec_loss`; ``adversarial=True`` adds SoundStream's adversarial
  and feature-matching losses from a multi-scale STFT discriminator (EnCodec's MS-STFTD,
  Défossez et al. 2022; the gpu profile's recipe: on one CPU thread a `small` step of 12 x 0.5 s
  took 4.1 s instead of 1.2 s).
* :func:`evaluate` and :func:`evaluation_report` compute the numbers on a checkpoint's card:
  multi-scale mel distance, SI-SDR, codebook usage, and Opus at similar bitrates.
* ``course-lib train|eval|bench codec`` call :func:`train_cli`, :func:`eval_cli` and :func:`bench`.

Everything here is re-exported by :mod:`course_lib.codec`.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import checkpoint
from course_lib.audio import resample
from course_lib.codec import PRESETS, Codec, CodecConfig, CodecLosses, codec_loss, load_pretrained

__all__ = ["STFTDiscriminator", "MultiScaleSTFTDiscriminator", "fit", "TrainResult", "evaluate", "CodecMetrics",
           "evaluation_report", "load_clips", "speed_perturb", "random_batch", "train_cli", "eval_cli", "bench"]


# ----------------------------------------------------------------------------- discriminator (optional)
class STFTDiscriminator(nn.Module):
    """One scale of the MS-STFT discriminator: a 2D conv net over the complex STFT.

    Input: (B, 1, T) audio -> STFT (B, F, L) -> real and imaginary parts as 2 channels (B, 2, F, L).
    Kernels span 9 frequency bins by 3 frames, stride 2 along frequency, dilation 1, 2, 4 along time.
    Returns the logits (B, 1, F', L) and every hidden activation (for feature matching).
    """

    def __init__(self, n_fft: int, channels: int = 32, num_layers: int = 3) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        layers = [nn.Conv2d(2, channels, (9, 3), padding=(4, 1))]
        for i in range(num_layers):
            d = 2 ** i
            layers.append(nn.Conv2d(channels, channels, (9, 3), stride=(2, 1), dilation=(1, d), padding=(4, d)))
        layers.append(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1)))
        self.layers = nn.ModuleList(layers)
        self.out = nn.Conv2d(channels, 1, (3, 3), padding=(1, 1))

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:
        spec = torch.stft(wav.reshape(-1, wav.shape[-1]), self.n_fft, self.n_fft // 4, window=self.window,
                          return_complex=True)                      # (B, F, L)
        x = torch.stack([spec.real, spec.imag], dim=1)              # (B, 2, F, L)
        features = []
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2)
            features.append(x)
        return self.out(x), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """STFT discriminators at several window sizes, with SoundStream's hinge and feature losses.

    Example:
        >>> disc = MultiScaleSTFTDiscriminator()
        >>> d_loss = disc.discriminator_loss(fake.detach(), real)   # train the critic
        >>> adv, feat = disc.generator_losses(fake, real)           # train the codec
    """

    def __init__(self, n_ffts: tuple[int, ...] = (2048, 1024, 512), channels: int = 32) -> None:
        super().__init__()
        self.scales = nn.ModuleList(STFTDiscriminator(n, channels) for n in n_ffts)

    def forward(self, wav: Tensor) -> list[tuple[Tensor, list[Tensor]]]:
        return [d(wav) for d in self.scales]

    def discriminator_loss(self, fake: Tensor, real: Tensor) -> Tensor:
        """Hinge loss: mean over scales of ``relu(1 - D(real)) + relu(1 + D(fake))``."""
        total = real.new_zeros(())
        for (l_real, _), (l_fake, _) in zip(self(real), self(fake)):
            total = total + F.relu(1 - l_real).mean() + F.relu(1 + l_fake).mean()
        return total / len(self.scales)

    def generator_losses(self, fake: Tensor, real: Tensor) -> tuple[Tensor, Tensor]:
        """(adversarial, feature matching): ``relu(1 - D(fake))`` and the L1 distance of hidden
        activations relative to their size on real audio (EnCodec), both averaged over scales."""
        adv, feat, n_feat = fake.new_zeros(()), fake.new_zeros(()), 0
        with torch.no_grad():
            real_out = self(real)
        for (l_fake, f_fake), (_, f_real) in zip(self(fake), real_out):
            adv = adv + F.relu(1 - l_fake).mean()
            for a, b in zip(f_fake, f_real):
                feat = feat + (a - b).abs().mean() / b.abs().mean().clamp_min(1e-8)
                n_feat += 1
        return adv / len(self.scales), feat / max(n_feat, 1)


# ----------------------------------------------------------------------------- data
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


class TrainResult(NamedTuple):
    model: Codec
    history: object        # course_lib.train.History
    steps: int
    wall_time_s: float


def fit(model: Codec, clips: list[Tensor], max_steps: int, batch_size: int = 16, crop_s: float = 0.5,
        lr: float = 1e-3, time_budget_s: float | None = None, checkpoint_dir: str | None = None,
        seed: int = 0, progress: bool = True, log_every: int = 10, adversarial: bool = False,
        device: str | torch.device | None = None, level: str = "peak") -> TrainResult:
    """Train ``model`` on random crops of ``clips`` (resumable via ``checkpoint_dir``/last.pt).

    Args:
        adversarial: add a :class:`MultiScaleSTFTDiscriminator` (Adam 3e-4, betas (0.5, 0.9)),
            one discriminator step per codec step, as in SoundStream; the gpu profile's recipe.
        device: where to train (default: where ``model`` is).
        level: loudness of the training crops, see :func:`random_batch`.
    """
    from course_lib.train import TrainConfig, Trainer
    # Decaying synthetic sounds contain subnormal floats (|x| < 1e-38); CPU convolutions on them run
    # 10-100x slower. Flushing them to zero is a process-wide CPU flag, set here for the training run.
    torch.set_flush_denormal(True)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.8, 0.99), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, max_steps) / max_steps)))
    modules, optimizers = {"codec": model}, {"opt": opt}
    disc = None
    if adversarial:
        disc = MultiScaleSTFTDiscriminator().to(device)
        modules["discriminator"] = disc
        optimizers["disc_opt"] = torch.optim.Adam(disc.parameters(), lr=3e-4, betas=(0.5, 0.9))
    trainer = Trainer(modules, optimizers, TrainConfig(
        max_steps=max_steps, time_budget_s=time_budget_s, checkpoint_dir=checkpoint_dir,
        checkpoint_every_s=120.0, log_every=log_every, progress=progress), schedulers={"lr": sched})
    gen.manual_seed(seed + trainer.step)   # a resumed run draws fresh batches
    length = int(crop_s * model.sample_rate) // model.hop_length * model.hop_length
    fakes: list[Tensor] = []

    def adversary(fake: Tensor, real: Tensor) -> tuple[Tensor, Tensor]:
        fakes[:] = [fake.detach()]                                 # reused by the discriminator step
        return disc.generator_losses(fake, real)

    def step_fn(step: int) -> CodecLosses:
        wav = random_batch(clips, batch_size, length, gen, level).to(device)
        losses = codec_loss(model, wav, gen, adversary if disc is not None else None)
        opt.zero_grad(set_to_none=True)
        losses.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        if disc is not None:
            d_loss = disc.discriminator_loss(fakes[0], wav)
            optimizers["disc_opt"].zero_grad(set_to_none=True)   # also drops the codec step's grads
            d_loss.backward()
            optimizers["disc_opt"].step()
        return CodecLosses(*(x.detach() for x in losses))

    def log(step: int, tr: Trainer) -> None:                       # a plain log line when there is no bar
        rec = tr.history.records[-1]
        print(f"step {step} t={rec['time_s']:.0f}s total={rec['total']:.3f} mel={rec['mel']:.2f} dB "
              f"stft={rec['stft']:.3f}", flush=True)

    history = trainer.fit(step_fn, callback=None if progress else log, callback_every=50)
    return TrainResult(model.eval(), history, trainer.step, trainer.elapsed_s)


# ----------------------------------------------------------------------------- evaluation and command line
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


def _parser(prog: str) -> argparse.ArgumentParser:
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
    from course_lib import get_device, profile
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
    p.add_argument("--level", choices=("peak", "natural"), default="peak",
                   help="training loudness: clip peaks at 0.3..1 (peak) or the recording's level +-6 dB (natural)")
    p.add_argument("--dead-code-threshold", type=float, default=None,
                   help="restart codes used less than this fraction of their fair share (default: the preset's)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--adversarial", action=argparse.BooleanOptionalAction, default=None,
                   help="add the MS-STFT discriminator (default: on in the gpu profile only)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: course_lib.get_device())")
    p.add_argument("--init-from", default=None,
                   help="start from this checkpoint's weights (same configuration), e.g. codec-speech")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    prof = profile(args.profile)
    adversarial = prof.name == "gpu" if args.adversarial is None else args.adversarial
    cfg = CodecConfig.preset(args.preset or prof.model_scale)
    if args.dead_code_threshold is not None:
        cfg = dataclasses.replace(cfg, dead_code_threshold=args.dead_code_threshold)
    name = {"synthworld": "codec-synthworld", "fsdd": "codec-speech"}[args.data]
    out = args.out or str(checkpoint.checkpoint_root() / name)
    work = args.work_dir or f"runs/{name}"
    torch.manual_seed(args.seed)                                   # model initialisation
    model = Codec(cfg)
    init = None
    if args.init_from:                                             # warm start: see the codec-synthworld card
        start = load_pretrained(args.init_from)
        if start.config != cfg:
            raise ValueError(f"--init-from {args.init_from} has another configuration ({start.config}); "
                             f"pick a checkpoint of preset {args.preset or prof.model_scale!r} or drop --init-from.")
        model.load_state_dict(start.state_dict())
        init_card = checkpoint.read_card(args.init_from)
        init = {"checkpoint": args.init_from, "sha256": init_card.get("sha256"), "data": init_card.get("data"),
                "license_of_data": init_card.get("license_of_data")}
    clips = load_clips(args.data, "train", cfg.sample_rate, args.train_size, args.seed)
    clips = speed_perturb(clips, cfg.sample_rate, tuple(args.speed_perturb))
    result = fit(model, clips, args.steps, args.batch_size, args.crop_s, args.lr, args.time_budget_s, work,
                 args.seed, progress=not args.no_progress, adversarial=adversarial,
                 device=args.device or get_device(), level=args.level)
    result.model.cpu()
    test = load_clips(args.data, "test", cfg.sample_rate, args.eval_size, args.seed)
    t0 = time.perf_counter()
    checkpoint.round_trip_(result.model, torch.float16)            # the card describes the fp16 file we ship
    metrics = evaluation_report(result.model, test)
    data_note = {"synthworld": "SynthWorld (all families, procedural, course_lib.data), train split; test split",
                 "fsdd": "Free Spoken Digit Dataset (Z. Jackson et al., CC BY-SA 4.0, doi:10.5281/zenodo.1342401), "
                         "training indices 5-49 of the available speakers; test indices 0-4"}[args.data]
    card = {"command": "course-lib train codec " + " ".join(argv), "commit": git_commit(), "data": data_note,
            "license_of_data": ("CC BY-SA 4.0" if args.data == "fsdd" else "generated by course_lib")
            + (f"; initialised from {args.init_from} ({init['license_of_data']})" if init else ""),
            "init_from": init,
            "seed": args.seed, "adversarial": adversarial, "stored_dtype": "float16", "steps": result.steps,
            "wall_time_s": round(result.wall_time_s, 1),
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
    torch.set_flush_denormal(True)   # as in training (fit): subnormal activations slow CPU convolutions 10-100x
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
