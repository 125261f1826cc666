"""Data and command line of WaveGAN (:mod:`course_lib.wavegan`), re-exported there.

* :func:`load_clips`: the training sets (SynthWorld drums by default, FSDD spoken digits
  for the paper's SC09-like experiment, Debian's sonic-pi drum samples when installed),
  cut or padded to the model's slice length.
* ``course-lib train|eval|generate|bench wavegan`` call :func:`train_cli`, :func:`eval_cli`,
  :func:`generate_cli` and :func:`bench`.
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from course_lib import checkpoint
from course_lib.wavegan import PRESETS, WaveGAN, fit, load_pretrained

__all__ = ["DATASETS", "TrainingClips", "load_clips", "train_cli", "eval_cli", "generate_cli", "bench"]


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
        for key, module in (("generator", model.generator), ("discriminator", model.discriminator),
                            ("generator_ema", model.generator_ema)):
            if module is not None:
                module.load_state_dict(state["modules"][key])
        done, wall, history = int(state["step"]), float(state["elapsed_s"]), state["history"]
        stopped = "exported from last.pt before max_steps" if done < steps else "max_steps"
    else:
        trainer = fit(model, train.audio, steps, args.time_budget, checkpoint_dir=run_dir)
        done, wall, history, stopped = trainer.step, trainer.elapsed_s, trainer.history.records, trainer.stopped_by
    model = model.cpu().eval()
    metrics = gan_eval.evaluate_wavegan(model, clf, args.data, args.eval_size, seed=args.seed,
                                        train_clips=train.audio)
    raw = None                                   # the same checkpoint sampled without the weight average
    if model.generator_ema is not None:
        plain = WaveGAN(replace(cfg, ema_decay=0.0))
        plain.generator.load_state_dict(model.generator.state_dict())
        raw = gan_eval.evaluate_wavegan(plain.eval(), clf, args.data, args.eval_size, seed=args.seed,
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
        "metrics_without_weight_average": raw,
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
