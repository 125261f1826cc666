"""``course-lib train|eval clap``, SynthWorld's zero-shot prompts, and CLAP's benchmark.

    course-lib train clap --preset small --steps 3000 --threads 2
    course-lib eval clap --checkpoint clap-synthworld
"""
from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence

import torch

from course_lib import checkpoint, profile
from course_lib.clap import PRESETS, TEXT_TOWERS, Clap, ClapConfig, ClapData, evaluate, fit, load_pretrained, prepare
from course_lib.data import SynthWorld, captions
from course_lib.recipes.common import best_time, card, eval_parser, eval_plan, export, plan_run, positive_float, \
    positive_int, train_parser
from course_lib.train import is_main_process

__all__ = ["class_prompts", "test_data", "train_cli", "eval_cli", "bench"]


def class_prompts(classes: Sequence[str], template_set: str = "heldout") -> list[list[str]]:
    """Zero-shot prompts per class: every held-out prompt template x every synonym (never seen in training)."""
    return [captions.prompts(c, template_set) for c in classes]


def test_data(model: Clap, size: int, seed: int) -> ClapData:
    """SynthWorld's test split, ready for :func:`course_lib.clap.evaluate`."""
    return prepare(model, SynthWorld("test", size=size, seed=seed, sample_rate=model.sample_rate))


def _towers(text: str) -> tuple[str, ...]:
    towers = tuple(t for t in text.split(",") if t)
    unknown = [t for t in towers if t not in TEXT_TOWERS]
    if unknown or not towers:
        raise SystemExit(f"--towers takes a comma-separated subset of {','.join(TEXT_TOWERS)}, got {text!r}.")
    return towers


def train_cli(argv: Sequence[str]) -> int:
    """``course-lib train clap ...``: train on SynthWorld captions, evaluate zero-shot and retrieval, export."""
    p = train_parser("clap", PRESETS, ("synthworld",))
    p.add_argument("--batch-size", type=positive_int, default=None, help="default: the profile's, at least 64")
    p.add_argument("--lr", type=positive_float, default=2e-3)
    p.add_argument("--towers", default=",".join(TEXT_TOWERS), help="text towers, comma-separated")
    args = p.parse_args(argv)
    towers = _towers(args.towers)
    run = plan_run(args, "clap", argv, lr=args.lr, batch_size=args.batch_size, towers=towers)
    prof = profile(args.profile)
    config = dataclasses.replace(ClapConfig.preset(run.preset), text_towers=towers)
    batch = args.batch_size or max(prof.batch_size, 64)
    train_size = args.train_size or max(prof.train_examples, 4 * batch)
    eval_size = args.eval_size or 1000
    torch.manual_seed(args.seed)                                  # weight initialisation of a CLI run
    model = Clap(config).to(run.device)
    data = prepare(model, SynthWorld("train", size=train_size, seed=args.seed, sample_rate=config.sample_rate))
    result = fit(model, data, steps=run.steps, time_budget_s=args.time_budget,
                 generator=torch.Generator().manual_seed(args.seed), checkpoint_dir=run.run_dir, batch_size=batch,
                 lr=args.lr, settings=run.settings, progress=not args.no_progress)
    if not is_main_process() or not result.finished:
        return export(run, result, config, {})
    model = result.model.cpu().eval()
    test = test_data(model, eval_size, args.seed)
    metrics = evaluate(model, test, class_prompts(test.classes))
    info = card(run, result, ["synthworld"], metrics, batch_size=batch, train_size=train_size,
                eval={"data": "synthworld", "split": "test", "eval_size": eval_size,
                      "zero_shot_prompts": "captions.prompts(class, 'heldout')"},
                final_loss=round(result.history.last("loss"), 4))
    print(json.dumps(metrics, indent=2), file=sys.stderr)
    return export(run, result, config, info)


def eval_cli(argv: Sequence[str]) -> dict:
    """``course-lib eval clap [--checkpoint NAME_OR_PATH]``: the card's metrics, recomputed."""
    args = eval_parser("clap", "clap-synthworld", ("synthworld",)).parse_args(argv)
    info, ev, seed = eval_plan(args, args.checkpoint)
    model = load_pretrained(args.checkpoint)
    old = info.get("data") if isinstance(info.get("data"), dict) else {}          # cards before the one schema
    size = ev.get("eval_size") or old.get("test_size", 1000)
    test = test_data(model, size, seed)
    return {"checkpoint": args.checkpoint, "eval_size": size, "seed": seed,
            **evaluate(model, test, class_prompts(test.classes))}


def bench() -> dict:
    """Embedding speed on CPU: ms per one-second clip in a batch of 64, ms per caption."""
    try:
        model = load_pretrained("clap-synthworld")
    except checkpoint.CheckpointError:
        model = Clap(dataclasses.replace(ClapConfig.preset("small"), text_towers=("scratch",))).eval()
    wav = 0.1 * torch.randn(64, 1, model.sample_rate, generator=torch.Generator().manual_seed(0))
    texts = [f"a short sound number {i}" for i in range(64)]
    out = {"threads": torch.get_num_threads()}
    with torch.inference_mode():
        out["embed_audio_ms_per_1s_clip_batch64"] = round(1000 * best_time(lambda: model.embed_audio(wav)) / 64, 3)
        for t in model.config.text_towers:
            if t == "minilm":
                model.text_encoders[t]._cache.clear()
                model.embed_text(texts[:1], t)           # load the encoder once
                fn = lambda: (model.text_encoders[t]._cache.clear(), model.embed_text(texts, t))  # noqa: E731
            else:
                fn = lambda: model.embed_text(texts, t)  # noqa: E731
            out[f"embed_text_{t}_ms_per_caption_batch64"] = round(1000 * best_time(fn) / 64, 3)
    return out


if __name__ == "__main__":
    sys.exit(train_cli(sys.argv[1:]))
