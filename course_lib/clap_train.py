"""CLAP training, evaluation and command line (``course-lib train clap`` / ``eval clap`` / ``bench``).

Split from :mod:`course_lib.clap`, which re-exports everything here, so ``clap.fit``,
``clap.evaluate`` and ``clap.train_cli`` keep working.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from course_lib import checkpoint
from course_lib.clap import (PRESETS, TEXT_TOWERS, Clap, contrastive_loss, load_pretrained, preset,
                             retrieval_metrics, zero_shot_classify)


# ============================================================================= training and evaluation


class ClapData(NamedTuple):
    """Clips ready for training: log-mels computed once (they need no gradient)."""

    log_mel: Tensor         # (N, F, L)
    captions: list[str]
    labels: Tensor          # (N,) int64 class index into ``classes``
    classes: list[str]


@torch.no_grad()
def prepare(model: Clap, dataset, batch_size: int = 256) -> ClapData:
    """Log-mels, captions and labels of every clip of a :class:`~course_lib.data.SynthWorld`."""
    device = model.mel.filterbank.device
    mels, captions, labels = [], [], []
    for start in range(0, len(dataset), batch_size):
        b = dataset.examples(range(start, min(start + batch_size, len(dataset))))
        mels.append(model.log_mel(b.audio.to(device), dataset.sample_rate).cpu())       # (B, F, L)
        captions += b.caption
        labels.append(b.label)
    return ClapData(torch.cat(mels), captions, torch.cat(labels), list(dataset.classes))


def class_prompts(classes: Sequence[str], template_set: str = "heldout") -> list[list[str]]:
    """Zero-shot prompts per class: every held-out prompt template x every synonym (never seen in training)."""
    from course_lib import captions
    return [captions.prompts(c, template_set) for c in classes]


def fit(model: Clap, data: ClapData, steps: int, batch_size: int = 64, lr: float = 2e-3,
        time_budget_s: float | None = None, generator: torch.Generator | None = None,
        checkpoint_dir=None, progress: bool = True):
    """Train every text tower of ``model`` jointly with the shared audio tower (AdamW, warm-up + cosine).

    Each step draws a batch without replacement (a fresh permutation per epoch), embeds the
    clips once and sums one symmetric InfoNCE loss per text tower. Identical captions in a
    batch count as positives of each other. Returns the trainer's :class:`~course_lib.train.History`.
    """
    from course_lib.train import Trainer, TrainConfig
    if batch_size > len(data.captions):
        raise ValueError(f"batch_size {batch_size} exceeds the {len(data.captions)} training clips; "
                         f"use more clips or a smaller batch.")
    device = model.mel.filterbank.device
    base_seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    trainer = Trainer({"clap": model}, {"adamw": opt},
                      TrainConfig(max_steps=steps, time_budget_s=time_budget_s, checkpoint_dir=checkpoint_dir,
                                   progress=progress), {"cosine": sched})
    per_epoch = len(data.captions) // batch_size

    def step_fn(step: int) -> dict[str, Tensor]:
        epoch, k = divmod(step, per_epoch)
        perm = torch.randperm(len(data.captions), generator=torch.Generator().manual_seed(base_seed + epoch))
        idx = perm[k * batch_size:(k + 1) * batch_size]
        captions = [data.captions[i] for i in idx.tolist()]
        positives = torch.tensor([[a == b for b in captions] for a in captions])
        audio_emb = model.embed_log_mel(data.log_mel[idx].to(device))                   # (B, D)
        losses = {t: contrastive_loss(audio_emb, model.embed_text(captions, t), model.scale(t), positives).loss
                  for t in model.config.text_towers}
        total = sum(losses.values()) / len(losses)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return {"loss": total, **{f"loss_{t}": v for t, v in losses.items()}}

    return trainer.fit(step_fn)


@torch.no_grad()
def embed_all(model: Clap, data: ClapData, batch_size: int = 256, tower: str | None = None) -> tuple[Tensor, Tensor]:
    """Audio and caption embeddings ``(N, D)`` of every clip, in eval mode."""
    device = model.mel.filterbank.device
    audio = torch.cat([model.embed_log_mel(data.log_mel[i:i + batch_size].to(device))
                       for i in range(0, len(data.captions), batch_size)])
    text = torch.cat([model.embed_text(data.captions[i:i + batch_size], tower)
                      for i in range(0, len(data.captions), batch_size)])
    return audio, text


@torch.no_grad()
def evaluate(model: Clap, data: ClapData, prompts: Sequence[Sequence[str]] | None = None) -> dict[str, float]:
    """Zero-shot top-1 (prompt ensembles, one list per class of ``data.classes``) and retrieval, per text tower."""
    prompts = class_prompts(data.classes) if prompts is None else prompts
    was_training = model.training
    model.eval()
    out: dict[str, float] = {"clips": len(data.captions), "classes": len(data.classes)}
    for t in model.config.text_towers:
        audio, text = embed_all(model, data, tower=t)
        zs = zero_shot_classify(model, audio, prompts, t)
        out[f"{t}/zero_shot_top1"] = float((zs.prediction.cpu() == data.labels).float().mean())
        # Identical captions are equally right answers (SynthWorld repeats simple captions).
        ids = torch.tensor([hash(c) for c in data.captions])
        same = (ids[:, None] == ids[None, :]).to(audio.device)                       # (N, N)
        for name, m in (("text_to_audio", retrieval_metrics(text, audio, same)),
                        ("audio_to_text", retrieval_metrics(audio, text, same))):
            out.update({f"{t}/{name}_{k}": round(v, 4) for k, v in m._asdict().items()})
        out[f"{t}/zero_shot_top1"] = round(out[f"{t}/zero_shot_top1"], 4)
    model.train(was_training)
    return out


# ============================================================================= command line


def _parser(prog: str):
    import argparse
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="model size (default: the profile's)")
    p.add_argument("--profile", default=None, help="smoke | cpu | gpu (default: $COURSE_PROFILE or automatic)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default="synthworld", choices=["synthworld"], help="training data")
    p.add_argument("--test-size", type=int, default=1000, help="SynthWorld test clips for the metrics")
    return p


def _test_data(model: Clap, size: int, seed: int) -> ClapData:
    from course_lib.data import SynthWorld
    return prepare(model, SynthWorld("test", size=size, seed=seed, sample_rate=model.sample_rate))


def train_cli(argv: list[str]) -> int:
    """``course-lib train clap [--preset small] [--steps N] [--out DIR] ...``: train, evaluate, save with a card."""
    import json
    import shutil
    import time
    from pathlib import Path

    from course_lib import get_device, profile
    from course_lib.data import SynthWorld
    p = _parser("course-lib train clap")
    p.add_argument("--out", default="runs/clap", help="checkpoint folder to write")
    p.add_argument("--steps", type=int, default=None, help="optimisation steps (default: the profile's max_steps)")
    p.add_argument("--train-size", type=int, default=None, help="SynthWorld training clips")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--towers", default=",".join(TEXT_TOWERS), help="text towers, comma-separated")
    p.add_argument("--time-budget", type=float, default=None, help="stop after this many seconds")
    args = p.parse_args(argv)
    prof = profile(args.profile)
    config = preset(args.preset or prof.model_scale, text_towers=tuple(args.towers.split(",")))
    steps, batch = args.steps or prof.max_steps, args.batch_size or max(prof.batch_size, 64)
    train_size = args.train_size or max(prof.train_examples, 4 * batch)
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)                                  # weight initialisation of a CLI run
    device = get_device() if prof.device != "cpu" else torch.device("cpu")
    model = Clap(config).to(device)
    data = prepare(model, SynthWorld("train", size=train_size, seed=args.seed, sample_rate=config.sample_rate))
    resume_dir = Path("runs") / f"{Path(args.out).name}.resume"   # resumable state, deleted once saved
    history = fit(model, data, steps, batch, args.lr, args.time_budget, generator, checkpoint_dir=resume_dir)
    model = model.cpu().eval()
    metrics = evaluate(model, _test_data(model, args.test_size, args.seed))
    card = {"command": "course-lib train clap " + " ".join(argv), "commit": checkpoint.git_commit(),
            "data": {"name": "SynthWorld", "train_split": "train", "train_size": train_size,
                     "test_split": "test", "test_size": args.test_size, "seed": args.seed,
                     "zero_shot_prompts": "captions.prompts(class, 'heldout')"},
            "seed": args.seed, "steps": history.records[-1]["step"] if history.records else 0,
            "batch_size": batch, "lr": args.lr, "wall_time_s": round(time.perf_counter() - start, 1),
            "final_loss": round(history.last("loss"), 4), "metrics": metrics}
    checkpoint.save_pretrained(model, config, args.out, card)
    shutil.rmtree(resume_dir, ignore_errors=True)
    print(json.dumps(card, indent=2))
    return 0


def eval_cli(argv: list[str]) -> dict:
    """``course-lib eval clap [--checkpoint NAME_OR_PATH]``: the card's metrics, recomputed."""
    p = _parser("course-lib eval clap")
    p.add_argument("--checkpoint", default="clap-synthworld")
    args = p.parse_args(argv)
    card = checkpoint.read_card(args.checkpoint)
    model = load_pretrained(args.checkpoint)
    data = card.get("data", {})
    # Defaults reproduce the card: its test size and seed unless given on the command line.
    size = args.test_size if "--test-size" in argv else data.get("test_size", args.test_size)
    seed = args.seed if "--seed" in argv else data.get("seed", args.seed)
    return {"checkpoint": args.checkpoint, "test_size": size, "seed": seed,
            **evaluate(model, _test_data(model, size, seed))}


def bench() -> dict:
    """Embedding speed on CPU: ms per one-second clip in a batch of 64, ms per caption."""
    import time
    try:
        model = load_pretrained("clap-synthworld")
    except checkpoint.CheckpointError:
        model = Clap(preset("small", text_towers=("scratch",))).eval()
    wav = 0.1 * torch.randn(64, 1, model.sample_rate, generator=torch.Generator().manual_seed(0))
    captions = [f"a short sound number {i}" for i in range(64)]

    def best(fn, repeat: int = 5) -> float:
        fn()
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    out = {"threads": torch.get_num_threads()}
    with torch.inference_mode():
        out["embed_audio_ms_per_1s_clip_batch64"] = round(1000 * best(lambda: model.embed_audio(wav)) / 64, 3)
        for t in model.config.text_towers:
            if t == "minilm":
                model.text_encoders[t]._cache.clear()
                model.embed_text(captions[:1], t)       # load the encoder once
                fn = lambda: (model.text_encoders[t]._cache.clear(), model.embed_text(captions, t))  # noqa: E731
            else:
                fn = lambda: model.embed_text(captions, t)  # noqa: E731
            out[f"embed_text_{t}_ms_per_caption_batch64"] = round(1000 * best(fn) / 64, 3)
    return out
