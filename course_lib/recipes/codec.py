"""``course-lib train|eval codec`` and the codec's data, evaluation report and benchmark.

    course-lib train codec --data fsdd --preset small --steps 2000 --threads 1
    course-lib eval codec --checkpoint codec-speech          # the card's metrics, recomputed
"""
from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence

import torch
from torch import Tensor

from course_lib import baselines, checkpoint, data
from course_lib.audio import resample
from course_lib.codec import PRESETS, Codec, CodecConfig, evaluate, fit, load_pretrained
from course_lib.metrics import multiscale_mel_distance
from course_lib.recipes.common import (DATA_SOURCES, best_time, card, eval_parser, export, plan_run, positive_float,
                                       positive_int, train_parser)
from course_lib.train import is_main_process

__all__ = ["DATA", "load_clips", "speed_perturb", "evaluation_report", "train_cli", "eval_cli", "bench"]

DATA = ("synthworld", "fsdd")


def load_clips(source: str, split: str, sample_rate: int = 16_000, size: int | None = None,
               seed: int = 0) -> list[Tensor]:
    """Clips (1, T) of ``"synthworld"`` (all families) or ``"fsdd"`` (test = takes 0-4 of each speaker)."""
    if source == "synthworld":
        ds = data.SynthWorld(split, sample_rate=sample_rate, size=size or (2000 if split == "train" else 200),
                             seed=seed)
        audio = torch.cat([ds.batch(range(i, min(len(ds), i + 64))) for i in range(0, len(ds), 64)])
        return list(audio.float())                                  # B clips of (1, T)
    if source != "fsdd":
        raise ValueError(f"Unknown codec data {source!r}; use one of {DATA}.")
    ds = data.fsdd(split, sample_rate=sample_rate)
    n = len(ds) if size is None else min(size, len(ds))
    return [ds[i].audio.float() for i in range(n)]


def speed_perturb(clips: list[Tensor], sample_rate: int, factors: Sequence[float] = (0.9, 1.1)) -> list[Tensor]:
    """Clips plus copies played ``factor`` times faster (pitch moves too): more speakers for free."""
    out = list(clips)
    for f in factors:
        new_sr = int(round(sample_rate / f / 100) * 100)           # resampling to sr/f and playing at sr
        out += [resample(c, sample_rate, new_sr) for c in clips]
    return out


def evaluation_report(model: Codec, clips: list[Tensor], opus_kbps: tuple[float, ...] = (6.0, 8.0)) -> dict:
    """The table of a card: codec at 1, Q/4, Q/2 and Q quantizers, and Opus at ``opus_kbps``."""
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


def _train_parser():
    p = train_parser("codec", PRESETS, DATA)
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--crop-s", type=positive_float, default=0.5, help="seconds per training crop")
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--speed-perturb", type=positive_float, nargs="+", default=[0.9, 1.1],
                   help="also train on copies played this many times faster (default: %(default)s)")
    p.add_argument("--no-speed-perturb", dest="speed_perturb", action="store_const", const=[],
                   help="train on the recordings as they are")
    p.add_argument("--level", choices=("peak", "natural"), default="peak",
                   help="training loudness: peaks at 0.3..1 (peak) or the recording's level +-6 dB (natural)")
    p.add_argument("--dead-code-threshold", type=positive_float, default=None,
                   help="restart codes used less than this fraction of their fair share (default: the preset's)")
    p.add_argument("--adversarial", action="store_true", help="add the MS-STFT discriminator (7x slower on CPU)")
    p.add_argument("--init-from", default=None,
                   help="start from this checkpoint's weights (same configuration), e.g. codec-speech")
    return p


def train_cli(argv: Sequence[str]) -> int:
    """``course-lib train codec ...``: train, evaluate on the test split, export with a card."""
    args = _train_parser().parse_args(argv)
    run = plan_run(args, "codec", argv, lr=args.lr, batch_size=args.batch_size, crop_s=args.crop_s,
                   speed_perturb=tuple(args.speed_perturb), level=args.level, adversarial=args.adversarial,
                   dead_code_threshold=args.dead_code_threshold)
    cfg = CodecConfig.preset(run.preset)
    if args.dead_code_threshold is not None:
        cfg = dataclasses.replace(cfg, dead_code_threshold=args.dead_code_threshold)
    torch.manual_seed(args.seed)                                   # model initialisation
    model = Codec(cfg)
    sources = [args.data]
    if args.init_from:                                             # warm start: see the codec-synthworld card
        start = load_pretrained(args.init_from)
        if start.config != cfg:
            raise SystemExit(f"--init-from {args.init_from} has another configuration than preset {run.preset!r}; "
                             f"pick a checkpoint of that preset or drop --init-from.")
        model.load_state_dict(start.state_dict())
        sources += [d for d in _card_sources(args.init_from) if d not in sources]
    clips = speed_perturb(load_clips(args.data, "train", cfg.sample_rate, args.train_size, args.seed),
                          cfg.sample_rate, args.speed_perturb)
    result = fit(model.to(run.device), clips, steps=run.steps, time_budget_s=args.time_budget,
                 generator=torch.Generator().manual_seed(args.seed), checkpoint_dir=run.run_dir,
                 batch_size=args.batch_size, crop_s=args.crop_s, lr=args.lr, adversarial=args.adversarial,
                 level=args.level, mixed_precision=run.mixed_precision, settings=run.settings,
                 progress=not args.no_progress)
    if not is_main_process():
        return 0
    if not result.finished:
        return export(run, result, cfg, {})
    model = result.model.cpu()
    checkpoint.round_trip_(model, torch.float16)                   # the card describes the fp16 file we ship
    test = load_clips(args.data, "test", cfg.sample_rate, args.eval_size, args.seed)
    metrics = evaluation_report(model, test)
    info = card(run, result, sources, metrics, init_from=args.init_from, stored_dtype="float16",
                eval={"data": args.data, "split": "test", "clips": len(test), "eval_size": args.eval_size})
    print(json.dumps(metrics, indent=2), file=sys.stderr)
    return export(run, result, cfg, info, dtype=torch.float16)


def _card_sources(name: str) -> list[str]:
    """The data-source keys named on a checkpoint's card."""
    text = json.dumps(checkpoint.read_card(name).get("data"))
    return [k for k, src in DATA_SOURCES.items() if src.name.split(" (")[0] in text] or ["synthworld"]


def eval_cli(argv: Sequence[str]) -> dict:
    """``course-lib eval codec --checkpoint codec-speech`` (data, size and seed default to the card's)."""
    args = eval_parser("codec", "codec-speech", DATA).parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)   # as in training (fit): subnormal activations slow CPU convolutions 10-100x
    info = checkpoint.read_card(args.checkpoint)
    ev = info.get("eval", {})
    source = args.data or ev.get("data", "synthworld")
    size = args.eval_size if args.eval_size is not None else ev.get("eval_size")
    seed = args.seed if args.seed is not None else info.get("seed", 0)
    model = load_pretrained(args.checkpoint)
    test = load_clips(source, "test", model.sample_rate, size, seed)
    return {"checkpoint": str(args.checkpoint), "data": source, "clips": len(test),
            "metrics": evaluation_report(model, test), "card_metrics": info.get("metrics")}


def bench(seconds: float = 10.0) -> dict:
    """Encode+decode real-time factor (CPU, current threads) of the ``small`` preset."""
    model = Codec(CodecConfig.preset("small")).eval()
    wav = 0.1 * torch.randn(1, 1, int(seconds * model.sample_rate), generator=torch.Generator().manual_seed(0))
    best = best_time(lambda: model.decode(model.encode(wav)), repeat=3)
    return {"preset": "small", "threads": torch.get_num_threads(), "audio_s": seconds,
            "encode_decode_rtf": round(best / seconds, 4), "bitrate_bps": model.bitrate(),
            "parameters": sum(p.numel() for p in model.parameters())}


if __name__ == "__main__":                                         # python -m course_lib.recipes.codec ...
    sys.exit(train_cli(sys.argv[1:]))
