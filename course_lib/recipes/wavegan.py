"""``course-lib train|eval|generate wavegan`` and WaveGAN's data, evaluation and benchmark.

* :func:`load_clips`: the training sets (SynthWorld drums by default, FSDD spoken digits for
  the paper's SC09-like experiment, Debian's sonic-pi drum samples when installed), cut or
  padded to the model's slice length.
* :func:`evaluate_wavegan`: the card's metrics (:mod:`course_lib.gan_eval`'s classifier).

    course-lib train wavegan --preset small --steps 4000 --time-budget 5400 --threads 1
    course-lib eval wavegan --checkpoint wavegan-synthworld-drums
"""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from course_lib import checkpoint, gan_eval
from course_lib import data as course_data
from course_lib.audio import load, save
from course_lib.recipes.common import (best_time, card, eval_parser, eval_plan, export, nonnegative_float,
                                       nonnegative_int, plan_run, positive_float, positive_int, train_parser,
                                       warm_start)
from course_lib.train import is_main_process
from course_lib.wavegan import BATCH_SIZES, PRESETS, WaveGAN, WaveGANConfig, fit, load_pretrained

__all__ = ["DATASETS", "TrainingClips", "load_clips", "RULERS", "train_rulers", "load_rulers", "evaluate_wavegan", "train_cli", "eval_cli", "generate_cli",
           "bench"]


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


# ----------------------------------------------------------------------------- evaluation
RULERS = {"classifier": None, "classifier-noise-trained": (10.0, 40.0)}   # folder -> train_classifier's noise_snr_db


def train_rulers(train: TrainingClips, sample_rate: int, seed: int = 0) -> dict[str, gan_eval.AudioClassifier]:
    """The two classifiers that judge a drum GAN, trained on real training clips only.

    ``classifier`` learned the clean drums (the ruler of record: a hiss it never heard makes it
    unsure, as it makes a listener); ``classifier-noise-trained`` also heard noise 10-40 dB below
    the clip, so it forgives a noise floor: a second opinion on the drums under the hiss.
    """
    rulers = {}
    for name, snr in RULERS.items():
        torch.manual_seed(seed)                                      # the classifier's initial weights
        rulers[name] = gan_eval.train_classifier(train.audio, train.labels, train.classes, sample_rate,
                                                 generator=torch.Generator().manual_seed(seed), noise_snr_db=snr)[0]
    return rulers


def _decay_by_class(clf: gan_eval.AudioClassifier, generated: Tensor, test: TrainingClips) -> dict:
    """10th percentile of :func:`gan_eval.decay_db` per class: real by label, generated by the ruler's guess."""
    guess = clf.predict(generated).logits.argmax(-1)
    d_gen, d_real = gan_eval.decay_db(generated), gan_eval.decay_db(test.audio)
    p10 = lambda d: round(float(d.quantile(0.1)), 1) if len(d) else None  # noqa: E731
    return {c: {"real": p10(d_real[test.labels == i]), "generated": p10(d_gen[guess == i])}
            for i, c in enumerate(test.classes)}


# Draws of n clips pooled for the generated decay percentile. Trained generators put about a tenth of their clips in a
# cluster far below the rest, so the 10th percentile of 512 clips lands in or out of it by chance: the SpecGAN-critic
# checkpoint shipped before the post-filter moved from -43 to -64 dB over eight latent seeds; 8 x 512 clips: -49 dB.
DECAY_DRAWS = 8


def decay_metrics(model: WaveGAN, clf: gan_eval.AudioClassifier, test: TrainingClips, generated: Tensor,
                  seed: int = 0) -> dict:
    """``decay_p10_db`` and ``decay_p10_db_by_class`` of :func:`evaluate_wavegan`: ``generated`` (drawn with seed
    ``seed + 1``) and :data:`DECAY_DRAWS` - 1 further draws of as many clips (seeds ``seed + 2``, ...) pooled."""
    n = len(generated)
    pool = torch.cat([generated] + [model.generate(n, torch.Generator().manual_seed(seed + 1 + k)).cpu()
                                    for k in range(1, DECAY_DRAWS)])
    return {"decay_p10_db": {"real": round(float(gan_eval.decay_db(test.audio).quantile(0.1)), 1),
                             "generated": round(float(gan_eval.decay_db(pool).quantile(0.1)), 1),
                             "generated_clips": len(pool)},
            "decay_p10_db_by_class": _decay_by_class(clf, pool, test)}


def evaluate_wavegan(model: WaveGAN, rulers: dict[str, gan_eval.AudioClassifier], data: str = "synthworld-drums",
                     n: int = 512, seed: int = 0, train_clips: Tensor | None = None) -> dict:
    """The card's metrics: generated vs the real test split, plus a noise-burst reference row.

    The first ruler's metrics are the card's; every further ruler's sit under ``second_opinion``.
    ``decay_p10_db`` is the 10th percentile of :func:`gan_eval.decay_db` over the clips (real
    drums that fall silent reach the 16-bit floor; a noise floor stops far above it), for generated clips over
    :data:`DECAY_DRAWS` draws of ``n`` (the first is the one the classifiers score); ``copies`` the share of
    generated (and real test) clips that :func:`gan_eval.copy_share` finds among the training clips.
    Deterministic for a given checkpoint, rulers, ``n`` and ``seed``.
    """
    c = model.config
    test = load_clips(data, "test", n, c.slice_length, c.sample_rate, seed)
    if train_clips is None:
        train_clips = load_clips(data, "train", None, c.slice_length, c.sample_rate, seed).audio
    generated = model.generate(n, torch.Generator().manual_seed(seed + 1)).cpu()
    noise = gan_eval.noise_bursts(n, c.slice_length, c.sample_rate, torch.Generator().manual_seed(seed + 2))
    scored = {}
    for name, clf in rulers.items():
        m = gan_eval.gan_metrics(clf, generated, test.audio, test.labels, train_clips)._asdict()
        ref = gan_eval.gan_metrics(clf, noise, test.audio, test.labels, train_clips)
        m.update({"noise_inception_score": ref.inception_score, "noise_frechet": ref.frechet})
        scored[name] = m
    first = next(iter(rulers))
    out = scored.pop(first)
    out.update(decay_metrics(model, rulers[first], test, generated, seed))
    out.update({"copies": {"threshold": gan_eval.COPY_THRESHOLD,          # share correlating with a training clip
                           "generated": round(gan_eval.copy_share(generated, train_clips), 4),
                           "test": round(gan_eval.copy_share(test.audio, train_clips), 4)},
                "eval_clips": n, "test_clips": len(test.audio), "ruler": first})
    if scored:
        out["second_opinion"] = scored
    return out


def load_rulers(folder: Path) -> dict[str, gan_eval.AudioClassifier]:
    """A checkpoint's rulers, the ruler of record first.

    Checkpoints made before the clean-trained ruler carry one noise-trained ``classifier`` (its
    card does not name ``noise_snr_db``): it is returned under the name of what it is.
    """
    out = {}
    for name in RULERS:
        if (folder / name / "card.json").is_file():
            legacy = name == "classifier" and "noise_snr_db" not in checkpoint.read_card(folder / name)
            out["classifier-noise-trained" if legacy else name] = gan_eval.load_classifier(folder / name)
    return out


# ----------------------------------------------------------------------------- command line
def _train_parser():
    p = train_parser("wavegan", PRESETS, DATASETS)
    p.add_argument("--lr", type=positive_float, default=1e-4)
    p.add_argument("--batch-size", type=positive_int, default=None, help="default: the preset's (small 32, paper 64)")
    p.add_argument("--n-critic", type=positive_int, default=5)
    p.add_argument("--mu-law", type=nonnegative_int, default=0,
                   help="train on mu-law companded waveforms with this mu (255; default 0: linear, as in the paper)")
    p.add_argument("--spectral-critic", type=nonnegative_int, default=0,
                   help="width of a second critic on log-spectrograms (SpecGAN's; 8 for small); default 0: off")
    p.add_argument("--long-critic", type=nonnegative_int, default=0,
                   help="width of a further spectrogram critic on 1,024-point windows (15.6 Hz bins: the pitch of "
                        "kicks and toms; 8 for small); default 0: off")
    p.add_argument("--body-critic", type=nonnegative_int, default=0,
                   help="width of a further spectrogram critic on the lowest 16 bins of 1,024-point windows (centred "
                        "0-234 Hz: the ringing body of kicks and toms; 8 for small); default 0: off")
    p.add_argument("--highpass", type=nonnegative_float, default=0.0,
                   help="cutoff in Hz of a fixed 4th-order Butterworth high-pass after the generator's tanh, before "
                        "the post-filter (not in the paper: removes the output's DC offset and drift; e.g. 25); "
                        "default 0: off")
    p.add_argument("--spectral-weight", type=positive_float, default=1.0,
                   help="weight of each spectrogram critic's score in the generator's objective (default 1: the sum)")
    p.add_argument("--post-filter", type=nonnegative_int, default=0,
                   help="taps of the paper's learned post-processing filter after the generator (paper: 512; default "
                        "0: none); with --init-from a checkpoint without one, it starts as the identity")
    p.add_argument("--drop-post-filter", action="store_true",
                   help="with --init-from a checkpoint that has a post-filter and no --post-filter here: train on "
                        "without it (its taps are dropped)")
    p.add_argument("--init-from", default=None,
                   help="start from this checkpoint's generator, average and critic (same preset), e.g. to fine-tune")
    p.add_argument("--ema-decay", type=positive_float, default=WaveGANConfig.ema_decay,
                   help="decay d of the generator's weight average that samples come from (not in the paper; default "
                        "%(default)s, about the last 1/(1-d) steps); the card also judges the generator without it")
    return p


def train_cli(argv: Sequence[str]) -> int:
    """``course-lib train wavegan ...``: train, evaluate with a clean-trained classifier, export with a card."""
    args = _train_parser().parse_args(argv)
    if args.spectral_weight != 1.0 and not (args.spectral_critic or args.long_critic or args.body_critic):
        raise SystemExit(f"--spectral-weight {args.spectral_weight} weighs the spectrogram critics, which this run "
                         f"does not have; add --spectral-critic 8 (or --long-critic 8, --body-critic 8) or drop "
                         f"--spectral-weight.")
    if args.drop_post_filter and not args.init_from:
        raise SystemExit("--drop-post-filter drops the post-filter of an --init-from checkpoint; add --init-from NAME "
                         "or remove --drop-post-filter.")
    if args.ema_decay >= 1:
        raise SystemExit(f"--ema-decay {args.ema_decay} never lets the average move; pick a value below 1 such as 0.99 "
                         f"(about the last 100 steps) or the default {WaveGANConfig.ema_decay}.")
    if args.eval_size is None:
        args.eval_size = 512
    run = plan_run(args, "wavegan", argv, lr=args.lr, batch_size=args.batch_size, n_critic=args.n_critic,
                   mu_law=args.mu_law, spectral_critic=args.spectral_critic, init_from=args.init_from,
                   **({"post_filter": args.post_filter} if args.post_filter else {}),
                   **({"long_critic": args.long_critic} if args.long_critic else {}),
                   **({"body_critic": args.body_critic} if args.body_critic else {}),
                   **({"highpass_hz": args.highpass} if args.highpass else {}),
                   **({"drop_post_filter": True} if args.drop_post_filter else {}),
                   **({"spectral_weight": args.spectral_weight} if args.spectral_weight != 1.0 else {}),
                   **({"ema_decay": args.ema_decay} if args.ema_decay != WaveGANConfig.ema_decay else {}))
    cfg = replace(WaveGANConfig.preset(run.preset), mu_law=args.mu_law, spectral_critic=args.spectral_critic,
                  post_filter_length=args.post_filter, ema_decay=args.ema_decay, long_critic=args.long_critic,
                  body_critic=args.body_critic, highpass_hz=args.highpass)
    batch_size = args.batch_size or BATCH_SIZES[run.preset]
    torch.manual_seed(args.seed)                                   # model initialisation
    train = load_clips(args.data, "train", args.train_size, cfg.slice_length, cfg.sample_rate, args.seed)
    print(f"{len(train.audio)} training clips of {cfg.slice_length} samples, classes {train.classes}", flush=True)
    model = WaveGAN(cfg)
    if args.init_from:
        start = load_pretrained(args.init_from)
        filtered = start.generator.post_filter is not None and not cfg.post_filter_length
        if args.drop_post_filter and not filtered:
            raise SystemExit(f"--drop-post-filter drops the post-filter of --init-from {args.init_from}, which "
                             f"{'has none' if start.generator.post_filter is None else 'this run keeps'}; remove "
                             f"--drop-post-filter{'' if start.generator.post_filter is None else ' or --post-filter'}.")
        if filtered and not args.drop_post_filter:
            raise SystemExit(f"--init-from {args.init_from} has a {start.config.post_filter_length}-tap post-filter; "
                             f"add --post-filter {start.config.post_filter_length} to keep it, or --drop-post-filter "
                             f"to train on without it.")
        warm_start(model, start, args.init_from,
                   new=("spectral_critic.", "long_critic.", "body_critic.", "generator.post_filter.",
                        "generator_ema.post_filter."),
                   fresh=("generator.post_filter.", "generator_ema.post_filter.") if filtered else ())
        if cfg.post_filter_length and start.generator.post_filter is None:   # added now: it starts as the identity
            for g in filter(None, (model.generator, model.generator_ema)):
                g.identity_post_filter_()
    result = fit(model.to(run.device), train.audio, steps=run.steps, time_budget_s=args.time_budget,
                 generator=torch.Generator().manual_seed(args.seed), checkpoint_dir=run.run_dir,
                 batch_size=batch_size, n_critic=args.n_critic, lr=args.lr, spectral_weight=args.spectral_weight,
                 settings=run.settings,
                 progress=not args.no_progress)
    if not is_main_process() or not result.finished:
        return export(run, result, cfg, {})
    rulers = load_rulers(run.run_dir)
    if set(rulers) != set(RULERS):
        rulers = train_rulers(train, cfg.sample_rate, args.seed)
        for name, clf in rulers.items():
            checkpoint.save_pretrained(clf, clf.config, run.run_dir / name, card={"data": args.data, "seed": args.seed,
                                                                               "noise_snr_db": RULERS[name]})
    model = result.model.cpu().eval()
    metrics = evaluate_wavegan(model, rulers, args.data, args.eval_size, seed=args.seed, train_clips=train.audio)
    raw = None                                   # the same checkpoint sampled without the weight average
    if model.generator_ema is not None:
        plain = WaveGAN(replace(cfg, ema_decay=0.0))
        plain.generator.load_state_dict(model.generator.state_dict())
        raw = evaluate_wavegan(plain.eval(), rulers, args.data, args.eval_size, seed=args.seed, train_clips=train.audio)
    before = None                                # the checkpoint this run started from, judged by the same rulers
    if args.init_from:
        before = evaluate_wavegan(load_pretrained(args.init_from), rulers, args.data, args.eval_size, seed=args.seed,
                                  train_clips=train.audio)
    history = result.history.records
    info = card(run, result, [args.data.removesuffix("-drums")], metrics, data_name=args.data, classes=train.classes,
                train_clips=len(train.audio), critic_steps=result.steps * args.n_critic, batch_size=batch_size,
                slice=f"{cfg.slice_length} samples at {cfg.sample_rate} Hz ({cfg.seconds * 1000:.0f} ms)",
                eval={"data": args.data, "eval_size": args.eval_size},
                history=[{k: round(v, 4) for k, v in r.items()} for r in history[::max(1, len(history) // 100)]],
                metrics_without_weight_average=raw, init_from=args.init_from, metrics_of_init_from=before)
    code = export(run, result, cfg, info)
    for name, clf in rulers.items():
        checkpoint.save_pretrained(clf, clf.config, run.out / name, card={"trained_by": run.command, "data": info["data"],
                                                                       "seed": args.seed, "noise_snr_db": RULERS[name]})
    return code


def eval_cli(argv: Sequence[str]) -> dict:
    """``course-lib eval wavegan [--checkpoint NAME_OR_PATH]``: the card's metrics, recomputed."""
    args = eval_parser("wavegan", "wavegan-synthworld-drums", DATASETS).parse_args(argv)
    folder = checkpoint.resolve(args.checkpoint)
    info, ev, seed = eval_plan(args, folder)
    model = load_pretrained(folder)
    rulers = load_rulers(folder)
    source = args.data or info.get("data_name", "synthworld-drums")
    size = ev.get("eval_size", 512)
    train = load_clips(source, "train", info.get("train_clips"), model.config.slice_length, model.sample_rate, seed)
    metrics = evaluate_wavegan(model, rulers, source, size, seed=seed, train_clips=train.audio)
    ours, theirs = _flat(metrics), _flat(info.get("metrics", {}))
    return {"checkpoint": str(folder), "metrics": metrics,
            "matches_card": {k: (abs(v - theirs[k]) <= 1e-3 * max(1.0, abs(v)))
                             for k, v in ours.items() if isinstance(v, float) and k in theirs}}


def _flat(d: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1.0}} -> {"a.b": 1.0}``: nested metrics compared key by key."""
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def generate_cli(argv: Sequence[str]) -> int:
    """``course-lib generate wavegan --n 8 --out drums/``: WAV files from a checkpoint."""
    p = argparse.ArgumentParser(prog="course-lib generate wavegan")
    p.add_argument("--checkpoint", default="wavegan-synthworld-drums")
    p.add_argument("--n", type=positive_int, default=8)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--out", default="wavegan-samples")
    args = p.parse_args(argv)
    model = load_pretrained(args.checkpoint)
    wav = model.generate(args.n, torch.Generator().manual_seed(args.seed))
    for i, w in enumerate(wav):
        save(Path(args.out) / f"wavegan_{args.seed}_{i:03d}.wav", w, model.sample_rate)
    print(f"wrote {args.n} clips of {model.config.seconds:.3f} s to {args.out}/")
    return 0


def bench() -> dict:
    """CPU speed of the generator: milliseconds to generate one second of audio (target <= 50 ms).

    Measured with the current thread count and with one thread: for these small convolutions one
    thread is fastest, and two threads on a machine whose other core is busy stall on OpenMP barriers.
    """
    out: dict = {}
    threads = torch.get_num_threads()
    # the shipped model, the SpecGAN-critic checkpoint (with the learned post-filter), its long-critic successor
    # (the same generator, other weights), the paper's size untrained
    for name, ckpt in (("small", "wavegan-synthworld-drums"), ("small_specgan", "wavegan-synthworld-drums-specgan"),
                       ("small_long", "wavegan-synthworld-drums-long"), ("paper", None)):
        try:
            model = load_pretrained(ckpt) if ckpt else WaveGAN(PRESETS[name]).eval()
        except checkpoint.CheckpointError:
            if name != "small":                                      # no untrained stand-in under a checkpoint's name
                continue
            model = WaveGAN(PRESETS["small"]).eval()
        cfg = model.config
        if cfg.post_filter_length:
            name += f"_filter{cfg.post_filter_length}"
        n = math.ceil(cfg.sample_rate / cfg.slice_length)            # clips that make one second
        g = torch.Generator().manual_seed(0)
        for t in sorted({threads, 1}, reverse=True):
            torch.set_num_threads(t)
            try:
                best = best_time(lambda: model.generate(n, g), repeat=10)
            finally:
                torch.set_num_threads(threads)
            out[f"{name}_d{cfg.d}_T{cfg.slice_length}_ms_per_1s_audio_{t}thread"] = round(
                1000 * best * cfg.sample_rate / (n * cfg.slice_length), 2)
    out["threads"] = threads
    return out


if __name__ == "__main__":
    sys.exit(train_cli(sys.argv[1:]))
