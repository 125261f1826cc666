"""``course-lib train|eval|generate audiolm``: the HuBERT tokenizer, the three stages, the rulers of notebook 05.

    course-lib train audiolm --stage hubert   --steps 6000 --warm-start --threads 1
    course-lib train audiolm --stage semantic --steps 4000 --hubert hubert-speech --threads 1
    course-lib train audiolm --stage coarse   --steps 4000 --hubert hubert-speech --threads 1
    course-lib train audiolm --stage fine     --steps 3000 --hubert hubert-speech --threads 1 \\
        --semantic runs/audiolm-voices/semantic/checkpoint --coarse runs/audiolm-voices/coarse/checkpoint
    course-lib eval audiolm --checkpoint audiolm-speech        # or hubert-speech, or one stage's folder

Data (``--data``): ``voices`` (default), espeak-ng utterances of the *training* speakers low-passed at
4 kHz at random levels (:func:`course_lib.recipes.codec.voices_clips`: codec-speech learnt 8 kHz FSDD);
``voices-mix`` adds FSDD's training takes of every speaker but ``--heldout-speaker``;
``--perturbed-size N`` adds N more utterances at random speeds (:func:`perturb_speed`: timbres no roster voice
has). Tokens are extracted once per run. The semantic and coarse stages train independently; the fine stage, given
``--semantic`` and ``--coarse`` (not resume settings: rerun a finished fine run with them to assemble),
measures the pipeline and writes ``OUT-semantic``, ``OUT-coarse``, ``OUT-fine`` (``--out
assets/checkpoints/audiolm-speech --force`` ships them); without them it exports OUT alone. The stages'
configs record ``--hubert`` and ``--codec`` as given: name shipped checkpoints there. ``--layers`` and ``--width``
size the trained stage apart from its preset; the stages of a pipeline need not be the same size.

Rulers (chosen before training, none used in training; :mod:`course_lib.recipes.audiolm_rulers`):

- HuBERT: linear probes on token histograms, content and speaker, for the semantic tokens, an MFCC k-means
  baseline and the codec's coarse and fine codes, on espeak-ng digits of held-out voices and on FSDD.
- each stage: held-out bits per token beside the unigram and uniform baselines, unseen and seen speakers.
- the pipeline (fine stage with ``--semantic``/``--coarse``): the speaker test (AudioLM Table III: 92.6% with
  the acoustic prompt, 3.2% without), seen and unseen speakers apart; the intelligibility test (a digit
  classifier trained on real digits of training voices, on held-out voices' digits resynthesised from their
  semantic tokens in another voice, beside the real clips and the codec's reconstructions).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from course_lib import checkpoint
from course_lib import codec as codec_lib
from course_lib import hubert as hubert_lib
from course_lib.audio import change_speed, load, resample, save, to_mono
from course_lib.audiolm import (PRESETS, STAGES, AudioLM, AudioLMConfig, AudioTokens, CoarseStage, FineStage,
                                SemanticStage, dedup, extract_tokens, fit_stage, load_pretrained, save_pretrained)
from course_lib.recipes import codec as codec_recipe
from course_lib.recipes.audiolm_rulers import (RULER_UTTERANCES, SR, digit_ruler, fsdd_digits, intelligibility_report,
                                               probe_report, speaker_test, spoken_digits, stage_report)
from course_lib.recipes.common import (best_time, cached, card, digest, eval_parser, eval_plan, export,
                                       nonnegative_int, plan_run, positive_float, positive_int, refuse_shipped_parts,
                                       runs_before, train_parser)
from course_lib.train import History, TrainResult, is_main_process

__all__ = ["DATA", "training_clips", "perturb_speed", "eval_sets", "tokens_of", "tokens_cached", "train_cli",
           "eval_cli", "generate_cli", "bench"]

DATA = ("voices", "voices-mix")
SOURCES = {"voices": ["voices"], "voices-mix": ["voices", "fsdd"]}      # keys of common.DATA_SOURCES
PERTURB_SPEED = (0.85, 1.15)          # --perturb-speed: 2.8 semitones down to 2.4 up


# ----------------------------------------------------------------------------- data
def training_clips(data: str, size: int, seed: int = 0,
                   heldout_speaker: str | None = codec_recipe.DEFAULT_HELDOUT, perturbed: int = 0,
                   speed: tuple[float, float] = PERTURB_SPEED) -> tuple[list[Tensor], list[str]]:
    """``size`` espeak-ng utterances (1, T) of training speakers (4 kHz band, random level), their ids;
    ``perturbed`` more utterances of the same stream (indices ``size`` on) each played at a random speed in
    ``speed`` (:func:`perturb_speed`: new timbres); ``voices-mix`` adds FSDD's training takes (10-49) of every
    speaker but ``heldout_speaker``."""
    clips, ids = codec_recipe.voices_clips("train", "train", size + perturbed, SR, seed)
    if perturbed:
        clips[size:], ids[size:] = perturb_speed(clips[size:], ids[size:], speed, seed, first_index=size)
    if data == "voices-mix":
        takes, names = codec_recipe.fsdd_takes("train", SR, exclude=heldout_speaker)
        clips, ids = clips + takes, ids + names
    return clips, ids


def perturb_speed(clips: list[Tensor], ids: list[str], speed: tuple[float, float], seed: int = 0,
                  first_index: int = 0) -> tuple[list[Tensor], list[str]]:
    """Each clip played at a speed drawn uniformly from ``speed`` (``default_rng([seed, 2, index])``), by
    resampling to ``SR / factor`` (rounded to 100 Hz) and playing at ``SR``: pitch *and* formants move, as if
    a shorter or longer vocal tract said it (vocal tract length perturbation, Jaitly & Hinton 2013). The
    espeak-ng roster has 84 training voice variants; the speed makes every perturbed utterance a timbre no
    roster voice has, so a stage cannot name the voice and must copy it from its acoustic prompt."""
    lo, hi = speed
    if not 0 < lo <= hi:
        raise ValueError(f"speed must be (low, high) with 0 < low <= high, got {speed}.")
    out_clips, out_ids = [], []
    for i, (c, name) in enumerate(zip(clips, ids)):
        f = float(np.random.default_rng([seed, 2, first_index + i]).uniform(lo, hi))
        clip, applied = change_speed(c, SR, f)
        out_clips.append(clip)
        out_ids.append(f"{name}@x{applied:.3f}")
    return out_clips, out_ids


def eval_sets(data: str, size: int, seed: int = 0,
              heldout_speaker: str | None = codec_recipe.DEFAULT_HELDOUT) -> dict[str, list[Tensor]]:
    """Held-out clips by name: unseen speakers first; every set says held-out sentences (or takes)."""
    sets = {"voices-unseen": codec_recipe.voices_clips("test", "heldout", size, SR, seed)[0],
            "voices-seen": codec_recipe.voices_clips("test", "train", size, SR, seed)[0]}
    if data == "voices-mix" and heldout_speaker is not None:
        sets[f"fsdd-unseen-{heldout_speaker}"] = codec_recipe.fsdd_takes("all", SR, [heldout_speaker], size=size)[0]
    return sets


@torch.no_grad()
def tokens_of(clips: Sequence[Tensor], hubert: hubert_lib.HuBERT, codec: codec_lib.Codec,
              num_coarse: int) -> list[AudioTokens]:
    """Both kinds of tokens of every clip (1, T), one clip at a time (HuBERT's first GroupNorm spans the clip)."""
    hubert.eval(), codec.eval()
    return [extract_tokens(c[None], hubert, codec, num_coarse) for c in clips]


def tokens_cached(path: Path, clips: Sequence[Tensor], hubert: hubert_lib.HuBERT, codec: codec_lib.Codec,
                  num_coarse: int) -> list[AudioTokens]:
    """:func:`tokens_of`, kept in ``path`` so that a resumed run does not tokenize again (2,048 clips take about
    ten minutes on one thread); other tokenizer weights or other clips tokenize again."""
    stamp = {"tokenizers_and_clips_sha256": digest(hubert, codec, num_coarse, *clips), "clips": len(clips)}
    return cached(path, stamp, lambda: tokens_of(clips, hubert, codec, num_coarse))


# ----------------------------------------------------------------------------- the pipeline's rulers
def _speaker_tests(model: AudioLM, speakers: int, prompts_per_speaker: int, seed: int,
                   ruler_utterances: int = RULER_UTTERANCES) -> dict:
    return {group: speaker_test(model, which, speakers, prompts_per_speaker, ruler_utterances, seed)
            for group, which in (("unseen", "heldout"), ("seen", "train"))}


def _intelligibility(model: AudioLM, probe_speakers: int, seed: int) -> dict:
    """Digits of ``probe_speakers`` held-out voices resynthesised in other held-out voices; the ruler learns the
    digits from ``3 * probe_speakers`` training voices at three speaking rates."""
    return intelligibility_report(model, digit_ruler(3 * probe_speakers), spoken_digits(probe_speakers,
                                                                                       which="heldout"), seed=seed)


# ----------------------------------------------------------------------------- command line
def _probability(text: str) -> float:
    if not 0 <= (value := float(text)) < 1:               # a ValueError: argparse names the flag
        raise argparse.ArgumentTypeError(f"{text} must be in [0, 1)")
    return value


def _train_parser() -> argparse.ArgumentParser:
    p = train_parser("audiolm", PRESETS, DATA)
    p.add_argument("--stage", choices=("hubert", *STAGES), required=True,
                   help="hubert first, then semantic and coarse (any order), then fine")
    p.add_argument("--hubert", default=None, help="stages semantic/coarse/fine: the HuBERT (shipped name or folder)")
    p.add_argument("--codec", default="codec-speech", help="the acoustic tokenizer (default: %(default)s)")
    p.add_argument("--semantic", default=None, help="stage fine: the semantic stage's folder (assemble and measure)")
    p.add_argument("--coarse", default=None, help="stage fine: the coarse stage's folder (assemble and measure)")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--lr", type=positive_float, default=None, help="default: 5e-4 (hubert), 1e-3 (stages)")
    p.add_argument("--dropout", type=_probability, default=None, help="default: the preset's; on a CPU 0 makes "
                   "the coarse stage ~5x faster (attention dropout forces PyTorch's slow attention path)")
    p.add_argument("--layers", type=positive_int, default=None, help="stages semantic/coarse/fine: the trained "
                   "stage's transformer blocks (default: the preset's)")
    p.add_argument("--width", type=positive_int, default=None, help="stages semantic/coarse/fine: its width, a "
                   "multiple of the preset's heads (default: the preset's)")
    p.add_argument("--aligned-semantic", action="store_true", help="stage coarse: each code also hears its frame's "
                   "semantic token (AudioLMConfig.aligned_semantic)")
    p.add_argument("--init", default=None, help="stages semantic/coarse/fine: start from this checkpoint's weights "
                   "(shipped name or folder); inputs it lacks start at zero, so the model starts as that one; "
                   "stage hubert: keep this HuBERT's weights and only cluster again (with --semantic-layer)")
    p.add_argument("--semantic-layer", type=positive_int, default=None, help="stage hubert: the block whose output "
                   "becomes the semantic tokens (HubertConfig.layer; default: the preset's, or --init's)")
    p.add_argument("--crop-s", type=positive_float, default=2.0, help="stage hubert: seconds per training crop")
    p.add_argument("--warm-start", action="store_true", help="stage hubert: iteration 2 starts from iteration 1")
    p.add_argument("--heldout-speaker", type=codec_recipe._speaker, default=codec_recipe.DEFAULT_HELDOUT,
                   help="voices-mix: FSDD speaker left out, 'none' for none (default: %(default)s)")
    p.add_argument("--probe-speakers", type=positive_int, default=8,
                   help="held-out espeak-ng speakers of the digit probes (stage hubert) and of the "
                        "intelligibility test (stage fine with --semantic/--coarse) (default: %(default)s)")
    p.add_argument("--fsdd-probe-takes", type=nonnegative_int, default=5,
                   help="stage hubert: FSDD takes per digit and speaker in the FSDD probe (0: none)")
    p.add_argument("--speakers", type=nonnegative_int, default=10,
                   help="stage fine with --semantic/--coarse: speakers per group in the speaker test (0: none)")
    p.add_argument("--prompts-per-speaker", type=positive_int, default=2)
    p.add_argument("--perturbed-size", type=nonnegative_int, default=0, help="every stage: this "
                   "many more training utterances, each at a random speed (new timbres; see --perturb-speed)")
    p.add_argument("--perturb-speed", type=positive_float, nargs=2, default=list(PERTURB_SPEED),
                   metavar=("LOW", "HIGH"), help="their speed range (default: %(default)s)")
    return p


def _result(results: list[TrainResult], model: torch.nn.Module) -> TrainResult:
    """HuBERT's iterations as one result: steps and wall time summed; finished when both are."""
    stopped = next((r.stopped_by for r in results if not r.finished), "max_steps" if len(results) == 2 else "stopped")
    return TrainResult(model, results[-1].history, sum(r.steps for r in results),
                       sum(r.wall_time_s for r in results), stopped)


def _hubert_metrics(model: hubert_lib.HuBERT, codec: codec_lib.Codec, sets: dict[str, list[Tensor]],
                    probe_speakers: int, fsdd_takes: int, seed: int) -> dict:
    out: dict = {"tokens": {}, "probes": {}}
    for name, clips in sets.items():
        toks = [model.semantic_tokens(c[None])[0] for c in clips]
        seconds = sum(len(t) for t in toks) / model.semantic_rate
        used = len(torch.cat(toks).unique())
        out["tokens"][name] = {"dedup_tokens_per_second": round(sum(len(dedup(t)) for t in toks) / seconds, 2),
                               "clusters_used": used, "clusters": model.quantizer.num_clusters}
    for probe in (spoken_digits(probe_speakers, takes=2), fsdd_digits(fsdd_takes) if fsdd_takes else None):
        if probe is not None:
            out["probes"][probe.name] = probe_report(probe, model, codec, seed)
    return out


def _with_layer(cfg: hubert_lib.HubertConfig, layer: int | None) -> hubert_lib.HubertConfig:
    """``cfg`` clustering block ``layer`` (``--semantic-layer``; None keeps its own)."""
    try:
        return cfg if layer is None else dataclasses.replace(cfg, layer=layer)
    except ValueError as e:
        raise SystemExit(f"--semantic-layer {layer}: {e}") from None


def _recluster_hubert(args, run, clips: list[Tensor], sets) -> int:
    """``--stage hubert --init HUBERT``: its weights, the semantic k-means fitted again on ``--semantic-layer``."""
    old = hubert_lib.load_pretrained(args.init)
    cfg = _with_layer(old.config, args.semantic_layer)
    model = hubert_lib.HuBERT(cfg)
    model.load_state_dict(old.state_dict())
    hubert_lib.fit_semantic_kmeans(model, clips, torch.Generator().manual_seed(args.seed))
    checkpoint.round_trip_(model, torch.float16)
    result = TrainResult(model, History(), 0, 0.0, "max_steps")
    metrics = _hubert_metrics(model, codec_lib.load_pretrained(args.codec), sets, args.probe_speakers,
                              args.fsdd_probe_takes, args.seed)
    info = card(run, result, SOURCES[args.data], metrics, stage="hubert", codec=args.codec, init=args.init,
                semantic_layer=cfg.layer, runs_before=runs_before(args.init), training_clips=len(clips),
                eval=_eval_info(args))
    return export(run, result, cfg, info, dtype=torch.float16)


def _train_hubert(args, run, lr: float, sets) -> int:
    clips, _ = training_clips(args.data, args.train_size or 2048, args.seed, args.heldout_speaker,
                              args.perturbed_size, tuple(args.perturb_speed))
    if args.init:
        return _recluster_hubert(args, run, clips, sets)
    cfg = hubert_lib.HubertConfig.preset(run.preset)
    cfg = cfg if args.dropout is None else dataclasses.replace(cfg, dropout=args.dropout)
    cfg = _with_layer(cfg, args.semantic_layer)
    n1 = max(1, run.steps // 2)
    hr = hubert_lib.train_iterations(clips, cfg, steps=(n1, max(1, run.steps - n1)), time_budget_s=args.time_budget,
                                     generator=torch.Generator().manual_seed(args.seed), checkpoint_dir=run.run_dir,
                                     warm_start=args.warm_start, device=run.device, batch_size=args.batch_size,
                                     crop_s=args.crop_s, lr=lr, settings=run.settings, progress=not args.no_progress,
                                     mixed_precision=run.mixed_precision)
    result = _result(hr.results, hr.model)
    if not is_main_process() or not result.finished:
        return export(run, result, cfg, {})
    model = hr.model.cpu().eval()
    checkpoint.round_trip_(model, torch.float16)                      # the card describes the fp16 file we ship
    metrics = _hubert_metrics(model, codec_lib.load_pretrained(args.codec), sets, args.probe_speakers,
                              args.fsdd_probe_takes, args.seed)
    info = card(run, result, SOURCES[args.data], metrics, stage="hubert", codec=args.codec,
                iteration_steps=[r.steps for r in hr.results], training_clips=len(clips), eval=_eval_info(args))
    return export(run, result, model.config, info, dtype=torch.float16)


def _eval_info(args) -> dict:
    return {"data": args.data, "eval_size": args.eval_size or 64, "ruler_utterances": RULER_UTTERANCES,
            **{k: getattr(args, k) for k in ("heldout_speaker", "probe_speakers", "fsdd_probe_takes", "speakers",
                                             "prompts_per_speaker")}}


def train_cli(argv: Sequence[str]) -> int:
    """``course-lib train audiolm --stage hubert|semantic|coarse|fine ...``."""
    args = _train_parser().parse_args(argv)
    if args.stage != "hubert" and args.hubert is None:
        raise SystemExit(f"--stage {args.stage} needs --hubert: the folder the hubert stage exported, or a shipped "
                         f"name (hubert-speech).")
    if args.semantic_layer and args.stage != "hubert":
        raise SystemExit("--semantic-layer belongs to --stage hubert (it chooses what the semantic tokens are).")
    if (args.layers or args.width) and args.stage == "hubert":
        raise SystemExit("--layers and --width size a token stage; --stage hubert takes its size from --preset.")
    if (args.semantic is None) != (args.coarse is None) or (args.semantic and args.stage != "fine"):
        raise SystemExit("--semantic and --coarse go together, with --stage fine (they assemble the three stages).")
    if args.perturb_speed[0] > args.perturb_speed[1]:
        raise SystemExit(f"--perturb-speed LOW HIGH needs LOW <= HIGH, got {args.perturb_speed}.")
    if args.data != "voices-mix":
        args.heldout_speaker = None
    elif args.heldout_speaker is not None:
        codec_recipe._check_speaker(args.heldout_speaker)
    lr = args.lr or (5e-4 if args.stage == "hubert" else 1e-3)
    trio = args.stage == "fine" and args.semantic is not None
    if trio:
        refuse_shipped_parts(args.out, STAGES, args.force)
    args.run_dir = args.run_dir or f"runs/audiolm-{args.data}/{args.stage}"
    run = plan_run(args, "audiolm", argv, stage=args.stage, lr=lr, batch_size=args.batch_size, codec=args.codec,
                   hubert=args.hubert, heldout_speaker=args.heldout_speaker, dropout=args.dropout,
                   **({"init": args.init} if args.init else {}),
                   **({"aligned_semantic": True} if args.aligned_semantic else {}),
                   **{k: getattr(args, k) for k in ("layers", "width") if getattr(args, k)},
                   **({"crop_s": args.crop_s, "warm_start": args.warm_start} if args.stage == "hubert" else {}),
                   **({"semantic_layer": args.semantic_layer} if args.semantic_layer else {}),
                   **({"perturbed_size": args.perturbed_size, "perturb_speed": args.perturb_speed}
                      if args.perturbed_size else {}))
    if args.width and args.width % (heads := AudioLMConfig.preset(run.preset).n_head):
        raise SystemExit(f"--width {args.width} must be a multiple of the preset's {heads} attention heads.")
    # The held-out clips before training: a missing synthesizer or speaker fails now, not after hours.
    sets = eval_sets(args.data, args.eval_size or 64, args.seed, args.heldout_speaker)
    if args.stage == "hubert":
        return _train_hubert(args, run, lr, sets)
    hubert, codec = hubert_lib.load_pretrained(args.hubert), codec_lib.load_pretrained(args.codec)
    config = AudioLMConfig.preset(run.preset).with_tokenizers(hubert, codec, args.hubert, args.codec)
    config = config if args.dropout is None else dataclasses.replace(config, dropout=args.dropout)
    config = _sized(config, args.stage, args.layers, args.width)
    if args.aligned_semantic:
        if args.stage != "coarse":
            raise SystemExit("--aligned-semantic belongs to --stage coarse (the stage that hears the semantic tokens).")
        config = dataclasses.replace(config, aligned_semantic=True)
    if trio:        # stages of other tokenizers fail now, not after training
        semantic, coarse = (checkpoint.load_pretrained(d, c, AudioLMConfig) for d, c in
                            ((args.semantic, SemanticStage), (args.coarse, CoarseStage)))
        AudioLM(semantic, coarse, FineStage(config), hubert, codec)
    clips, _ = training_clips(args.data, args.train_size or 2048, args.seed, args.heldout_speaker,
                              args.perturbed_size, tuple(args.perturb_speed))
    data = tokens_cached(run.run_dir / "tokens-train.pt", clips, hubert, codec, config.num_coarse)
    torch.manual_seed(args.seed)                                          # weight initialisation
    stage = STAGES[args.stage](config)
    if args.init:
        _warm_start(stage, args.init)
    stage = stage.to(run.device)
    result = fit_stage(stage, data, steps=run.steps, time_budget_s=args.time_budget,
                       generator=torch.Generator().manual_seed(args.seed), checkpoint_dir=run.run_dir,
                       batch_size=args.batch_size, lr=lr, settings=run.settings, progress=not args.no_progress)
    if not is_main_process() or not result.finished:
        return export(run, result, config, {})
    stage = checkpoint.round_trip_(result.model.cpu().eval(), torch.float16)   # the card describes the fp16 file
    metrics = {name: stage_report(stage, tokens_of(c, hubert, codec, config.num_coarse), seed=args.seed)
               for name, c in sets.items()}
    history = {"init": args.init, "runs_before": runs_before(args.init)} if args.init else {}
    if not trio:
        info = card(run, result, SOURCES[args.data], metrics, stage=args.stage, hubert=args.hubert,
                    codec=args.codec, **history, training_clips=len(clips), eval=_eval_info(args))
        return export(run, result, config, info, dtype=torch.float16)
    model = AudioLM(semantic, coarse, stage, hubert, codec)
    if args.speakers:
        metrics["speaker_test"] = _speaker_tests(model, args.speakers, args.prompts_per_speaker, args.seed)
        metrics["intelligibility"] = _intelligibility(model, args.probe_speakers, args.seed)
    info = card(run, result, SOURCES[args.data], metrics, stage="fine", hubert=args.hubert, codec=args.codec,
                semantic=args.semantic, coarse=args.coarse, **history, training_clips=len(clips),
                eval=_eval_info(args))
    save_pretrained((semantic, coarse, stage), run.out, cards={"semantic": checkpoint.read_card(args.semantic),
                                                               "coarse": checkpoint.read_card(args.coarse),
                                                               "fine": info}, dtype=torch.float16)
    print(f"saved {', '.join(f'{run.out}-{k}' for k in STAGES)}", file=sys.stderr)
    return 0


def _sized(config: AudioLMConfig, stage: str, layers: int | None, width: int | None) -> AudioLMConfig:
    """``config`` with the trained stage's ``--layers`` and ``--width`` (None keeps the preset's); the other
    stages' sizes stay, so the stage still assembles with stages of the preset. ``train_cli`` checked the width."""
    sizes = {f"{stage}_layers": layers, f"{stage}_width": width}
    return dataclasses.replace(config, **{k: v for k, v in sizes.items() if v is not None})


def _warm_start(stage: torch.nn.Module, init: str) -> None:
    """``stage`` takes the weights of the checkpoint ``init`` (same tokenizers and sizes); the projection of an
    input that checkpoint lacks (the aligned semantic tokens) starts at zero, so the stage starts as that one."""
    try:
        old = checkpoint.load_pretrained(init, type(stage), AudioLMConfig)
        missing, unexpected = stage.load_state_dict(old.float().state_dict(), strict=False)
    except (checkpoint.CheckpointError, RuntimeError) as e:              # another stage, sizes or vocabularies
        raise SystemExit(f"--init {init} does not fit this stage: {e}") from None
    if unexpected or any(not k.startswith(("lm.cond_proj.", "run_lengths")) for k in missing):
        raise SystemExit(f"--init {init} does not fit this stage (missing {missing}, unexpected {unexpected}): "
                         f"use a checkpoint of the same --stage, --preset and tokenizers.")
    for k in missing:
        if k.startswith("lm.cond_proj."):
            torch.nn.init.zeros_(stage.get_parameter(k))


def _reports(stages: dict[str, torch.nn.Module], cards: dict[str, dict], hubert, codec, num_coarse: int) -> dict:
    """Each stage's held-out report on the clips its own card names."""
    out, cache = {}, {}
    for k, stage in stages.items():
        ev, seed = cards[k].get("eval", {}), cards[k].get("seed", 0)
        key = (ev.get("data", "voices"), ev.get("eval_size", 64), seed, ev.get("heldout_speaker"))
        if key not in cache:
            cache[key] = {n: tokens_of(c, hubert, codec, num_coarse) for n, c in eval_sets(*key).items()}
        out[k] = {n: stage_report(stage, toks, seed=seed) for n, toks in cache[key].items()}
    return out


def eval_cli(argv: Sequence[str]) -> dict:
    """``course-lib eval audiolm [--checkpoint audiolm-speech | hubert-speech | a stage's folder]``: the cards'
    numbers, recomputed on the clips the cards name (``card_metrics`` beside them)."""
    p = eval_parser("audiolm", "audiolm-speech", DATA)
    p.add_argument("--speakers", type=nonnegative_int, default=None, help="speaker test: default the card's (0: none)")
    p.add_argument("--prompts-per-speaker", type=positive_int, default=None, help="default: the card's")
    p.add_argument("--probe-speakers", type=positive_int, default=None, help="hubert: default the card's")
    args = p.parse_args(argv)
    try:
        (info, ev, seed), names = eval_plan(args, args.checkpoint), None  # one folder: hubert or one stage
    except checkpoint.CheckpointError:
        names = {k: f"{args.checkpoint}-{k}" for k in STAGES}             # the three stages NAME-semantic, ...
        info, ev, seed = eval_plan(args, names["fine"])
    out = {"checkpoint": str(args.checkpoint), "stage": info.get("stage", "all")}
    if info.get("stage") == "hubert":
        model, codec = hubert_lib.load_pretrained(args.checkpoint), codec_lib.load_pretrained(info["codec"])
        sets = eval_sets(ev.get("data", "voices"), ev.get("eval_size", 64), seed, ev.get("heldout_speaker"))
        out["metrics"] = _hubert_metrics(model, codec, sets, args.probe_speakers or ev.get("probe_speakers", 8),
                                         ev.get("fsdd_probe_takes", 5), seed)
        return {**out, "card_metrics": info.get("metrics")}
    cards = {info["stage"]: {**info, "eval": ev, "seed": seed}} if names is None else \
        {k: checkpoint.read_card(n) for k, n in names.items()}
    if names is None:
        stage = checkpoint.load_pretrained(args.checkpoint, STAGES[info["stage"]], AudioLMConfig)
        hubert, codec = hubert_lib.load_pretrained(stage.config.hubert), codec_lib.load_pretrained(stage.config.codec)
        out["metrics"] = _reports({info["stage"]: stage}, cards, hubert, codec, stage.config.num_coarse)[info["stage"]]
        return {**out, "card_metrics": info.get("metrics")}
    model = load_pretrained(args.checkpoint)
    if args.data or args.eval_size or args.seed is not None:
        cards = {k: {**c, "eval": {**c.get("eval", {}), **ev}, "seed": seed} for k, c in cards.items()}
    stages = {"semantic": model.semantic, "coarse": model.coarse, "fine": model.fine}
    out["metrics"] = _reports(stages, cards, model.semantic_model, model.codec, model.config.num_coarse)
    speakers = args.speakers if args.speakers is not None else ev.get("speakers", 0) * (
        "speaker_test" in info.get("metrics", {}))
    if speakers:
        m = args.prompts_per_speaker or ev.get("prompts_per_speaker", 2)
        utterances = ev.get("ruler_utterances", 4)         # cards written before 2026-12-05 measured with 4
        out["metrics"]["fine"]["speaker_test"] = _speaker_tests(model, speakers, m, seed, utterances)
        out["metrics"]["fine"]["intelligibility"] = _intelligibility(
            model, args.probe_speakers or ev.get("probe_speakers", 8), seed)
    return {**out, "card_metrics": {k: c.get("metrics") for k, c in cards.items()}}


def generate_cli(argv: Sequence[str]) -> int:
    """``course-lib generate audiolm [--prompt FILE] --n 2 --out clips/``: continuations as WAV files.

    Without ``--prompt``, the prompts are the starts of ``--n`` utterances of held-out espeak-ng voices
    (saved beside their continuations); ``--unconditional`` generates from nothing.
    """
    p = argparse.ArgumentParser(prog="course-lib generate audiolm")
    p.add_argument("--checkpoint", default="audiolm-speech")
    p.add_argument("--prompt", default=None, help="an audio file to continue (any rate; mono is taken)")
    p.add_argument("--unconditional", action="store_true", help="generate from nothing instead")
    p.add_argument("--prompt-seconds", type=positive_float, default=None, help="default: half the coarse window")
    p.add_argument("--seconds", type=positive_float, default=None, help="prompt and continuation together "
                                                                         "(default: the coarse window)")
    p.add_argument("--no-acoustic-prompt", action="store_true", help="withhold the prompt's acoustic tokens")
    p.add_argument("--n", type=positive_int, default=1)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--out", default="audiolm-samples")
    args = p.parse_args(argv)
    if args.prompt and args.unconditional:
        raise SystemExit("--prompt and --unconditional exclude each other: continue a file, or generate from nothing.")
    model = load_pretrained(args.checkpoint)
    cfg, g, out = model.config, torch.Generator().manual_seed(args.seed), Path(args.out)
    window = cfg.coarse_frames / cfg.frame_rate
    seconds, prompt_s = args.seconds or window, args.prompt_seconds or window / 2
    if args.unconditional:
        for i, w in enumerate(model.generate(args.n, seconds, generator=g)):
            save(out / f"audiolm_{args.seed}_{i:03d}.wav", w, model.sample_rate)
        print(f"wrote {args.n} clips of {seconds:g} s to {out}/")
        return 0
    if prompt_s >= seconds:
        raise SystemExit(f"--prompt-seconds {prompt_s:g} leaves nothing to generate in --seconds {seconds:g}.")
    if args.prompt:
        wav, sr = load(args.prompt)
        wav = to_mono(wav)
        prompts = [(resample(wav, sr, model.sample_rate) if sr != model.sample_rate else wav)] * args.n
    else:
        prompts = codec_recipe.voices_clips("test", "heldout", args.n, SR, args.seed)[0]
    for i, w in enumerate(prompts):
        prompt = w[None, :, :round(prompt_s * model.sample_rate)]
        cont = model.continue_(prompt, seconds, g, acoustic_prompt=not args.no_acoustic_prompt)
        save(out / f"audiolm_{args.seed}_{i:03d}_prompt.wav", prompt[0], model.sample_rate)
        save(out / f"audiolm_{args.seed}_{i:03d}.wav", cont[0], model.sample_rate)
    print(f"wrote {args.n} continuations of {seconds:g} s (prompt {prompt_s:g} s) and their prompts to {out}/")
    return 0


def bench(seconds: float = 2.0, model: AudioLM | None = None) -> dict:
    """Real-time factor of each stage and of the decoder (this CPU) for ``seconds`` of new audio, of ``model``,
    by default the shipped one or, without it, an untrained small one."""
    name = "given"
    if model is None:
        try:
            model, name = load_pretrained(), "audiolm-speech"
        except checkpoint.CheckpointError:
            hubert = hubert_lib.HuBERT(hubert_lib.HubertConfig.preset("small"))
            try:
                codec = codec_lib.load_pretrained("codec-speech")
            except checkpoint.CheckpointError:
                codec = codec_lib.Codec(codec_lib.CodecConfig.preset("small"))
            cfg = AudioLMConfig.preset("small").with_tokenizers(hubert, codec)
            torch.manual_seed(0)
            model = AudioLM(SemanticStage(cfg), CoarseStage(cfg), FineStage(cfg), hubert, codec)
            name = "untrained small"
    g = torch.Generator().manual_seed(0)
    frames = model._frames(seconds)
    empty = torch.zeros(1, 0, dtype=torch.long)
    with torch.inference_mode():          # stage 1 as generate() runs it (run lengths for an aligned coarse stage)
        sem = model._new_semantic(empty, frames, g)
        coarse = model.coarse.sample(list(sem), frames, generator=g)
        fine = model.fine.sample(coarse, generator=g)
        times = {"semantic": best_time(lambda: model._new_semantic(empty, frames, g), repeat=1, warmup=0),
                 "coarse": best_time(lambda: model.coarse.sample(list(sem), frames, generator=g), repeat=1, warmup=0),
                 "fine": best_time(lambda: model.fine.sample(coarse, generator=g), repeat=1, warmup=0),
                 "decode": best_time(lambda: model.decode(coarse, fine), repeat=3)}
    return {"checkpoint": name, "seconds": seconds, **{f"{k}_rtf": round(v / seconds, 3) for k, v in times.items()},
            "total_rtf": round(sum(times.values()) / seconds, 3), "threads": torch.get_num_threads()}
