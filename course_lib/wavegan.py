"""WaveGAN: a GAN that generates raw waveforms (Donahue, McAuley & Puckette, ICLR 2019).

WaveGAN is DCGAN flattened to one dimension: every 5x5 2D convolution becomes a length-25 1D
convolution and every stride 2 becomes a stride 4, so five layers grow a 16-sample seed into
16 * 4**5 = 16,384 samples (about 1 s at 16 kHz). Faithful to the paper and its official code
(github.com/chrisdonahue/wavegan) where it matters:

- generator: ``z ~ U[-1, 1]^100`` -> dense -> (transposed conv k25 s4 -> ReLU) x L, the last
  with tanh; no batch norm; optionally the learned post-processing filter (paper section 3.3);
- discriminator (the *critic*): (conv k25 s4 -> LeakyReLU 0.2 -> phase shuffle n=2) x L, no
  phase shuffle after the last conv, then dense to one unbounded score;
- loss: WGAN-GP (Gulrajani et al. 2017), gradient penalty weight 10, 5 critic steps per
  generator step, Adam(lr 1e-4, betas (0.5, 0.9)).

Width ``d`` and ``num_layers`` (slice length ``16 * 4**num_layers``: 4,096 or 16,384) come
from the config. Evaluation (classifier, inception-score analogue, Frechet distance) lives in
:mod:`course_lib.gan_eval`; shapes follow the package legend (B batch, C channels, T samples,
D latent width).
"""
from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import checkpoint

__all__ = ["WaveGANConfig", "PRESETS", "WaveGAN", "Generator", "Discriminator", "PhaseShuffle", "phase_shuffle",
           "gradient_penalty", "WaveGANLosses", "TrainingClips", "load_clips", "make_optimizers", "train_step",
           "fit", "load_pretrained", "train_cli", "eval_cli", "generate_cli", "bench", "DATASETS"]

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
    batch_size: int = 64
    n_critic: int = 5                  # critic steps per generator step
    gp_weight: float = 10.0            # lambda of WGAN-GP
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)

    def __post_init__(self) -> None:
        if self.num_layers not in (4, 5):
            raise ValueError(f"num_layers must be 4 (4,096 samples) or 5 (16,384 samples), got {self.num_layers}.")
        if self.d < 1 or self.latent_dim < 1 or self.kernel_size < STRIDE or self.kernel_size % 2 == 0:
            raise ValueError(f"Need d >= 1, latent_dim >= 1 and an odd kernel_size >= {STRIDE}; got d={self.d}, "
                             f"latent_dim={self.latent_dim}, kernel_size={self.kernel_size}.")
        if self.phase_shuffle < 0 or self.n_critic < 1 or self.post_filter_length < 0:
            raise ValueError("phase_shuffle and post_filter_length must be >= 0 and n_critic >= 1.")

    @property
    def slice_length(self) -> int:
        return SEED_LENGTH * STRIDE ** self.num_layers

    @property
    def seconds(self) -> float:
        return self.slice_length / self.sample_rate

    @classmethod
    def for_profile(cls, prof=None) -> WaveGANConfig:
        """The preset for a :func:`course_lib.profile` (``model_scale`` tiny / small / base)."""
        from course_lib import profile
        return PRESETS[(prof or profile()).model_scale]


PRESETS: dict[str, WaveGANConfig] = {
    "tiny": WaveGANConfig(d=4, batch_size=16),       # CI: seconds per hundred steps, sounds like noise
    "small": WaveGANConfig(d=16, batch_size=32),     # laptop CPU, the shipped drums: batch halved (paper 64), twice the updates
    "base": WaveGANConfig(d=32, batch_size=64),      # Colab GPU
    "paper": WaveGANConfig(d=64, num_layers=5, batch_size=64),  # Donahue et al.: 16,384 samples
}


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


class Generator(nn.Module):
    """``z (B, D) -> x (B, 1, T)``: dense to ``(B, 16d', 16)``, then L transposed convs of stride 4."""

    def __init__(self, cfg: WaveGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = _channels(cfg)
        self.dense = nn.Linear(cfg.latent_dim, ch[0] * SEED_LENGTH)
        pad = (cfg.kernel_size - STRIDE + 1) // 2  # with output_padding=1 each layer makes exactly 4x samples
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(c_in, c_out, cfg.kernel_size, STRIDE, padding=pad, output_padding=1)
            for c_in, c_out in zip(ch, ch[1:] + [1]))
        self.post_filter = (nn.Conv1d(1, 1, cfg.post_filter_length, bias=False)
                            if cfg.post_filter_length else None)

    def forward(self, z: Tensor) -> Tensor:
        x = F.relu(self.dense(z).view(z.shape[0], -1, SEED_LENGTH))  # (B, 16d', 16)
        for i, up in enumerate(self.ups):
            x = up(x)                                                # (B, C, 4 T_prev)
            x = torch.tanh(x) if i == len(self.ups) - 1 else F.relu(x)
        if self.post_filter is not None:                             # official code: after tanh, 'same' padding
            k = self.cfg.post_filter_length
            x = self.post_filter(F.pad(x, ((k - 1) // 2, k // 2)))
        return x                                                     # (B, 1, T)


class Discriminator(nn.Module):
    """The critic ``x (B, 1, T) -> score (B,)``: L strided convs, LeakyReLU 0.2, phase shuffle, dense."""

    def __init__(self, cfg: WaveGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = _channels(cfg)[::-1]                                    # [d, 2d, ..., d * 2**(L-1)]
        pad = (cfg.kernel_size - 1) // 2 - 1                         # T -> T / 4 exactly (T divisible by 4)
        self.convs = nn.ModuleList(nn.Conv1d(c_in, c_out, cfg.kernel_size, STRIDE, padding=pad)
                                   for c_in, c_out in zip([1] + ch[:-1], ch))
        self.shuffle = PhaseShuffle(cfg.phase_shuffle)
        self.dense = nn.Linear(ch[-1] * SEED_LENGTH, 1)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.ndim != 3 or x.shape[1] != 1 or x.shape[-1] != self.cfg.slice_length:
            raise ValueError(f"The critic expects (B, 1, {self.cfg.slice_length}) waveforms, got {tuple(x.shape)}; "
                             f"crop or pad clips to the config's slice_length.")
        for i, conv in enumerate(self.convs):
            x = F.leaky_relu(conv(x), 0.2)                           # (B, C, T / 4**(i+1))
            if i < len(self.convs) - 1:
                x = self.shuffle(x, generator)
        return self.dense(x.flatten(1)).squeeze(-1)                  # (B,)


class WaveGAN(nn.Module):
    """Generator and critic together (both are in the checkpoint, so training can continue)."""

    def __init__(self, cfg: WaveGANConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or WaveGANConfig()
        self.generator = Generator(self.cfg)
        self.discriminator = Discriminator(self.cfg)

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``z (n, D)`` uniform in [-1, 1] (paper section 4), on the model's device."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int (the number of clips), got {n!r}; e.g. generate(8).")
        p = self.generator.dense.weight
        u = torch.rand(n, self.cfg.latent_dim, generator=generator, device=getattr(generator, "device", "cpu"))
        return (2 * u - 1).to(device=p.device, dtype=p.dtype)

    def forward(self, z: Tensor) -> Tensor:
        """``z (B, D) -> (B, 1, T)``."""
        if z.ndim != 2 or z.shape[1] != self.cfg.latent_dim:
            raise ValueError(f"z must be (B, {self.cfg.latent_dim}), got {tuple(z.shape)}; "
                             f"draw it with sample_latent(n).")
        return self.generator(z)

    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator | None = None, batch_size: int = 256) -> Tensor:
        """``n`` new clips ``(n, 1, T)`` in [-1, 1], ``T = cfg.slice_length``."""
        z = self.sample_latent(n, generator)                         # (n, D)
        return torch.cat([self.generator(zb) for zb in z.split(batch_size)])


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
        critic: maps ``(B, 1, T)`` to ``(B,)`` scores.
        real, fake: ``(B, 1, T)``.
        generator: randomness for ``eps``.
    """
    eps = torch.rand(real.shape[0], 1, 1, generator=generator, device=getattr(generator, "device", "cpu"))
    eps = eps.to(real)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)  # (B, 1, T)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


class WaveGANLosses(NamedTuple):
    critic: Tensor            # last critic step: E[D(fake)] - E[D(real)] + lambda * GP
    generator: Tensor         # -E[D(G(z))]
    wasserstein: Tensor       # the critic's estimate E[D(real)] - E[D(fake)], mean over the critic steps
    gradient_penalty: Tensor


def make_optimizers(model: WaveGAN) -> dict[str, torch.optim.Optimizer]:
    c = model.cfg
    return {"generator": torch.optim.Adam(model.generator.parameters(), lr=c.lr, betas=c.betas),
            "discriminator": torch.optim.Adam(model.discriminator.parameters(), lr=c.lr, betas=c.betas)}


def train_step(model: WaveGAN, optimizers: dict[str, torch.optim.Optimizer], sample_real: Callable[[], Tensor],
               generator: torch.Generator | None = None) -> WaveGANLosses:
    """One WGAN-GP generator step preceded by ``cfg.n_critic`` critic steps (Gulrajani et al., algorithm 1)."""
    G, D, c = model.generator, model.discriminator, model.cfg
    critic = lambda x: D(x, generator)  # noqa: E731 - phase shuffle draws from the same generator
    w_sum = 0.0
    for _ in range(c.n_critic):
        real = sample_real()                                         # (B, 1, T)
        with torch.no_grad():
            fake = G(model.sample_latent(real.shape[0], generator))  # (B, 1, T)
        d_real, d_fake = critic(real).mean(), critic(fake).mean()
        gp = gradient_penalty(critic, real, fake, generator)
        loss_d = d_fake - d_real + c.gp_weight * gp
        optimizers["discriminator"].zero_grad(set_to_none=True)
        loss_d.backward()
        optimizers["discriminator"].step()
        w_sum += float((d_real - d_fake).detach())
    for p in D.parameters():                                         # the generator step does not train D
        p.requires_grad_(False)
    try:
        loss_g = -critic(G(model.sample_latent(c.batch_size, generator))).mean()
        optimizers["generator"].zero_grad(set_to_none=True)
        loss_g.backward()
        optimizers["generator"].step()
    finally:
        for p in D.parameters():
            p.requires_grad_(True)
    return WaveGANLosses(loss_d.detach(), loss_g.detach(), torch.tensor(w_sum / c.n_critic), gp.detach())


def fit(model: WaveGAN, clips: Tensor, steps: int, time_budget_s: float | None = None,
        checkpoint_dir: str | Path | None = None, optimizers: dict | None = None,
        callback: Callable | None = None, callback_every: int = 0, generator: torch.Generator | None = None,
        progress: bool = True, log_every: int = 10):
    """Train with WGAN-GP through :class:`course_lib.train.Trainer`; returns the trainer.

    Args:
        model: the WaveGAN (on the device to train on).
        clips: ``(N, 1, T)`` real training clips, ``T = cfg.slice_length``; batches are drawn
            uniformly with replacement.
        steps: total generator steps (resumed steps count).
        time_budget_s: stop early after this much wall time.
        checkpoint_dir: resumable checkpoints (``last.pt``) every 2 minutes and at the end;
            training resumes from it automatically.
        optimizers: pass the previous trainer's ``optimizers`` to continue in a notebook.
        callback: ``callback(step, trainer)`` every ``callback_every`` steps (e.g. listen).
        generator: randomness (batches, z, phase shuffle, GP); None uses torch's global RNG, which
            the trainer checkpoints, so a resumed run continues the same random stream.
    """
    from course_lib.train import TrainConfig, Trainer
    c = model.cfg
    if clips.ndim != 3 or clips.shape[1] != 1 or clips.shape[-1] != c.slice_length:
        raise ValueError(f"clips must be (N, 1, {c.slice_length}), got {tuple(clips.shape)}; "
                         f"use load_clips(..., slice_length=cfg.slice_length).")
    if not torch.isfinite(clips).all() or clips.abs().amax() == 0:
        raise ValueError("clips contain NaN/inf or are all silent; check the data source.")
    device = next(model.parameters()).device
    clips = clips.to(device)

    def sample_real() -> Tensor:
        idx = torch.randint(0, clips.shape[0], (c.batch_size,), generator=generator,
                            device=getattr(generator, "device", "cpu"))
        return clips[idx.to(device)]

    optimizers = optimizers or make_optimizers(model)
    # An exploding critic (|score| > 1e4) is divergence for WGAN-GP, whose scores stay O(1..100).
    trainer = Trainer({"generator": model.generator, "discriminator": model.discriminator}, optimizers,
                      TrainConfig(max_steps=steps, time_budget_s=time_budget_s, checkpoint_dir=checkpoint_dir,
                                  log_every=log_every, max_loss=1e4, progress=progress))
    trainer.fit(lambda step: train_step(model, optimizers, sample_real, generator), callback, callback_every)
    return trainer


# ----------------------------------------------------------------------------- data
DATASETS = ("synthworld-drums", "fsdd", "sonic-pi")
SONIC_PI_DIRS = ("/usr/share/sonic-pi/samples", "/usr/lib/sonic-pi/etc/samples")


class TrainingClips(NamedTuple):
    audio: Tensor        # (N, 1, T) float32, cropped or zero-padded to the slice length
    labels: Tensor       # (N,) int64 index into classes
    classes: list[str]


def _fit_length(wav: Tensor, length: int, fade: int = 256) -> Tensor:
    """Crop ``(1, T')`` to ``(1, length)`` from the start (hits start at 0..30 ms) or zero-pad it.

    A crop gets a short fade-out so the slice does not end in a click the GAN would learn.
    """
    if wav.shape[-1] >= length:
        wav = wav[..., :length].clone()
        if wav[..., -fade:].abs().amax() > 1e-4:
            wav[..., -fade:] *= torch.linspace(1, 0, fade)
        return wav
    return F.pad(wav, (0, length - wav.shape[-1]))


def _sonic_pi_drums(sample_rate: int) -> list[tuple[Tensor, str]]:
    from course_lib.audio import load
    files = next((sorted(Path(d).glob("drum_*.flac")) for d in SONIC_PI_DIRS if list(Path(d).glob("drum_*.flac"))),
                 [])
    if not files:
        raise FileNotFoundError(f"No sonic-pi drum samples in {SONIC_PI_DIRS}. Install them with "
                                f"`sudo apt install sonic-pi-samples`, or use --data synthworld-drums.")
    out = []
    for f in files:
        wav, _ = load(f, sample_rate)
        out.append((wav.mean(0, keepdim=True), f.stem.split("_")[1]))  # drum_snare_hard -> snare
    return out


def load_clips(data: str = "synthworld-drums", split: str = "train", size: int | None = None,
               slice_length: int = 4096, sample_rate: int = 16_000, seed: int = 0) -> TrainingClips:
    """Clips of one of :data:`DATASETS`, fitted to ``slice_length`` samples.

    ``synthworld-drums``: procedural drum hits (course_lib.data.SynthWorld, 8 classes).
    ``fsdd``: Free Spoken Digit Dataset (the paper's SC09 experiment in small), peak-normalised.
    ``sonic-pi``: Debian's sonic-pi drum samples (every file, any split; few clips).
    """
    from course_lib import data as course_data
    seconds = slice_length / sample_rate
    if data == "synthworld-drums":
        ds = course_data.SynthWorld(split, families=["drums"], sample_rate=sample_rate,
                                    size=size or (2048 if split == "train" else 512), seed=seed, duration=seconds)
        batches = [ds.examples(range(i, min(i + 256, len(ds)))) for i in range(0, len(ds), 256)]
        return TrainingClips(torch.cat([b.audio for b in batches]), torch.cat([b.label for b in batches]),
                             list(ds.classes))
    elif data == "fsdd":
        ds = course_data.fsdd(split, sample_rate=sample_rate, duration=seconds)   # centred in silence or cropped
        n = len(ds) if size is None else min(size, len(ds))
        items = [(ds[i].audio, ds[i].label) for i in range(n)]
        items = [(w / w.abs().amax().clamp_min(1e-4) * 0.9, y) for w, y in items]
        classes = list(ds.classes)
    elif data == "sonic-pi":
        items = _sonic_pi_drums(sample_rate)[:size]
        classes = sorted({y for _, y in items})
    else:
        raise ValueError(f"Unknown data {data!r}; use one of {DATASETS}.")
    audio = torch.stack([_fit_length(w.float().reshape(1, -1), slice_length) for w, _ in items])  # (N, 1, T)
    labels = torch.tensor([classes.index(y) if isinstance(y, str) else int(y) for _, y in items])
    return TrainingClips(audio, labels, classes)


# ----------------------------------------------------------------------------- command line
def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="course-lib train wavegan", description="Train WaveGAN (WGAN-GP).")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="default: the active profile's")
    p.add_argument("--profile", default=None, help="smoke | cpu | gpu (sets the default preset)")
    p.add_argument("--data", choices=DATASETS, default="synthworld-drums")
    p.add_argument("--out", default=None, help="checkpoint folder (default assets/checkpoints/wavegan-<data>)")
    p.add_argument("--steps", type=int, default=None, help="generator steps (default: the profile's max_steps)")
    p.add_argument("--time-budget", type=float, default=None, help="stop after this many seconds of training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--eval-size", type=int, default=512, help="generated and real clips for the metrics")
    p.add_argument("--run-dir", default=None, help="resumable state (default runs/wavegan-<data>)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--device", default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--n-critic", type=int, default=None)
    p.add_argument("--export-only", action="store_true",
                   help="skip training: export the run's last state (e.g. of a run still going) with its card")
    return p


def train_cli(argv: list[str]) -> int:
    """``course-lib train wavegan --preset small --steps 4000 --time-budget 5400 --threads 1``."""
    import shlex
    import sys

    from course_lib import gan_eval, get_device, profile
    args = _train_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    prof = profile(args.profile)
    cfg = PRESETS[args.preset or prof.model_scale]
    cfg = replace(cfg, **{k: v for k, v in (("lr", args.lr), ("batch_size", args.batch_size),
                                            ("n_critic", args.n_critic)) if v is not None})
    name = {"synthworld-drums": "wavegan-synthworld-drums", "fsdd": "wavegan-fsdd-digits",
            "sonic-pi": "wavegan-sonic-pi-drums"}[args.data]
    out = Path(args.out) if args.out else checkpoint.checkpoint_root() / name
    run_dir = Path(args.run_dir or f"runs/{name}")
    steps = args.steps or prof.max_steps
    device = torch.device(args.device) if args.device else get_device()
    torch.manual_seed(args.seed)   # a script, not the library: one global seed, checkpointed by the trainer

    t0 = time.perf_counter()
    train = load_clips(args.data, "train", args.train_size, cfg.slice_length, cfg.sample_rate, args.seed)
    print(f"{len(train.audio)} training clips of {cfg.slice_length} samples, classes {train.classes}", flush=True)
    clf_dir = run_dir / "classifier"
    if (clf_dir / "card.json").is_file():
        clf = gan_eval.load_classifier(clf_dir)
    else:
        clf, acc = gan_eval.train_classifier(train.audio, train.labels, train.classes, cfg.sample_rate,
                                             generator=torch.Generator().manual_seed(args.seed))
        checkpoint.save_pretrained(clf, clf.cfg, clf_dir, card={"train_accuracy": acc, "data": args.data})
    model = WaveGAN(cfg).to(device)
    command = "course-lib train wavegan " + shlex.join(argv)
    if not args.export_only:
        checkpoint.atomic_write(run_dir / "command.txt", command + "\n")
    if args.export_only:
        state = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
        model.generator.load_state_dict(state["modules"]["generator"])
        model.discriminator.load_state_dict(state["modules"]["discriminator"])
        done, wall, history = int(state["step"]), float(state["elapsed_s"]), state["history"]
        stopped = "exported while running" if done < steps else "max_steps"
    else:
        trainer = fit(model, train.audio, steps, args.time_budget, checkpoint_dir=run_dir)
        done, wall, history, stopped = trainer.step, trainer.elapsed_s, trainer.history.records, trainer.stopped_by
    model = model.cpu().eval()
    metrics = gan_eval.evaluate_wavegan(model, clf, args.data, args.eval_size, seed=args.seed,
                                        train_clips=train.audio)
    tail = history[-min(len(history), 20):]
    card = {
        "command": command,
        "training_command": (run_dir / "command.txt").read_text().strip() if args.export_only else command,
        "commit": checkpoint.git_commit(),
        "data": {"synthworld-drums": "SynthWorld drums (course_lib.data, procedural, 8 classes), train split",
                 "fsdd": "Free Spoken Digit Dataset (CC BY-SA 4.0, doi:10.5281/zenodo.1342401), train split",
                 "sonic-pi": "Debian sonic-pi-samples drum_*.flac (mostly CC0)"}[args.data],
        "data_name": args.data,
        "train_clips": len(train.audio), "classes": train.classes,
        "slice": f"{cfg.slice_length} samples at {cfg.sample_rate} Hz ({cfg.seconds * 1000:.0f} ms)",
        "seed": args.seed, "steps": done, "critic_steps": done * cfg.n_critic, "stopped_by": stopped,
        "wall_time_s": round(wall, 1), "threads": torch.get_num_threads(), "device": str(device),
        "time_total_s": round(time.perf_counter() - t0, 1), "python": sys.version.split()[0],
        "final_wasserstein_mean_last_20_logs": round(sum(r.get("wasserstein", 0) for r in tail) / max(len(tail), 1), 4),
        "history": [{k: round(v, 4) for k, v in r.items()} for r in history[::max(1, len(history) // 100)]],
        "eval_command": f"course-lib eval wavegan --checkpoint "
                        f"{out.name if out.resolve().parent == checkpoint.checkpoint_root().resolve() else out} --data {args.data} --eval-size {args.eval_size} "
                        f"--seed {args.seed}",
        "metrics": metrics,
    }
    checkpoint.save_pretrained(model, cfg, out, card=card)
    checkpoint.save_pretrained(clf, clf.cfg, out / "classifier", card={"trained_by": command,
                                                                       "data": card["data"], "seed": args.seed})
    print(f"saved {out}: {done} steps in {wall:.0f} s; metrics {metrics}", flush=True)
    return 0


def eval_cli(argv: list[str]) -> dict:
    """``course-lib eval wavegan [--checkpoint NAME_OR_PATH]``: the card's metrics, recomputed."""
    from course_lib import gan_eval
    p = argparse.ArgumentParser(prog="course-lib eval wavegan")
    p.add_argument("--checkpoint", default="wavegan-synthworld-drums")
    p.add_argument("--data", choices=DATASETS, default=None, help="default: from the card")
    p.add_argument("--eval-size", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    folder = checkpoint.resolve(args.checkpoint)
    model = load_pretrained(folder)
    clf = gan_eval.load_classifier(folder / "classifier")
    card = checkpoint.read_card(folder)
    data = args.data or card.get("data_name", "synthworld-drums")
    train = load_clips(data, "train", card.get("train_clips"), model.cfg.slice_length, model.cfg.sample_rate,
                       args.seed)
    metrics = gan_eval.evaluate_wavegan(model, clf, data, args.eval_size, seed=args.seed, train_clips=train.audio)
    card_metrics = card.get("metrics", {})
    return {"checkpoint": str(folder), "metrics": metrics,
            "matches_card": {k: (abs(v - card_metrics[k]) <= 1e-3 * max(1.0, abs(v)))
                             for k, v in metrics.items() if isinstance(v, float) and k in card_metrics}}


def generate_cli(argv: list[str]) -> int:
    """``course-lib generate wavegan --n 8 --out drums/``: WAV files from a checkpoint."""
    from course_lib.audio import save
    p = argparse.ArgumentParser(prog="course-lib generate wavegan")
    p.add_argument("--checkpoint", default="wavegan-synthworld-drums")
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="wavegan-samples")
    args = p.parse_args(argv)
    model = load_pretrained(args.checkpoint)
    wav = model.generate(args.n, torch.Generator().manual_seed(args.seed))
    for i, w in enumerate(wav):
        save(Path(args.out) / f"wavegan_{args.seed}_{i:03d}.wav", w, model.sample_rate)
    print(f"wrote {args.n} clips of {model.cfg.seconds:.3f} s to {args.out}/")
    return 0


def bench() -> dict:
    """CPU speed of the generator: milliseconds to generate one second of audio (target <= 50 ms).

    Measured with the current thread count and with one thread: for these small convolutions one
    thread is fastest, and two threads on a machine whose other core is busy stall on OpenMP barriers.
    """
    out: dict = {}
    threads = torch.get_num_threads()
    for name in ("small", "paper"):
        cfg = PRESETS[name]
        try:
            model = load_pretrained() if name == "small" else WaveGAN(cfg).eval()
        except checkpoint.CheckpointError:
            model = WaveGAN(cfg).eval()
        n = math.ceil(cfg.sample_rate / cfg.slice_length)            # clips that make one second
        g = torch.Generator().manual_seed(0)
        for t in sorted({threads, 1}, reverse=True):
            torch.set_num_threads(t)
            try:
                model.generate(n, g)
                best = float("inf")
                for _ in range(10):
                    t0 = time.perf_counter()
                    model.generate(n, g)
                    best = min(best, time.perf_counter() - t0)
            finally:
                torch.set_num_threads(threads)
            out[f"{name}_d{cfg.d}_T{cfg.slice_length}_ms_per_1s_audio_{t}thread"] = round(
                1000 * best * cfg.sample_rate / (n * cfg.slice_length), 2)
    out["threads"] = threads
    return out
