"""``course-lib train|eval codec`` and the codec's data, evaluation report and benchmark.

    course-lib train codec --data voices-mix --preset speech --heldout-speaker george --level natural
    course-lib eval codec --checkpoint codec-speech          # the card's metrics, recomputed

Training data (``--data``):

* ``synthworld``: every SynthWorld family (:mod:`course_lib.data`).
* ``fsdd``: FSDD's training takes (10-49) of every speaker but ``--heldout-speaker``, plus copies
  played 0.9 and 1.1 times as fast (:func:`speed_perturb`).
* ``voices-mix``: the same FSDD clips mixed 50/50 (``--voices-fraction``) with utterances of
  espeak-ng's *training* speakers (:class:`course_lib.data.voices.Voices`), low-passed at 4 kHz
  like FSDD's 8 kHz recordings, each at a random level (:func:`voices_clips`).

Evaluation (:func:`evaluation_sets`, :func:`evaluation_report`), on voices never trained on:
all takes of the held-out FSDD speaker, held-out espeak-ng speakers saying held-out sentences,
and, labelled as such, the test takes of the training speakers. Every set reports the codec at
1, Q/4, Q/2 and Q quantizers, the unquantized autoencoder (the ceiling) and Opus at 6 and 8 kbps,
all on exactly the same clips: mel distance, SI-SDR, wideband PESQ and STOI.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from course_lib import baselines, checkpoint, data
from course_lib.audio import AudioError, change_speed, resample
from course_lib.codec import AUGMENT_SPEED, PRESETS, Codec, CodecConfig, fit, load_pretrained
from course_lib.data import voices
from course_lib.metrics import multiscale_mel_distance, pesq_wb, si_sdr, stoi
from course_lib.quantize import codebook_stats
from course_lib.recipes.common import (DATA_SOURCES, best_time, card, eval_parser, eval_plan, export,
                                       nonnegative_int, plan_run, positive_float, positive_int, runs_before,
                                       train_parser)
from course_lib.train import is_main_process

__all__ = ["DATA", "load_clips", "fsdd_takes", "fsdd_speakers", "seen_speakers", "speed_perturb", "voices_clips",
           "mix", "training_clips", "EvalSet", "evaluation_sets", "evaluation_report", "train_cli", "eval_cli",
           "bench"]

DATA = ("synthworld", "fsdd", "voices-mix")
FSDD_BAND_HZ = 4000.0            # FSDD is recorded at 8 kHz: nothing above 4 kHz
DEFAULT_HELDOUT = "george"
RULERS = {"mel_distance": "dB, 0 = identical (lower is better)",
          "si_sdr": "dB, higher is better; very negative when the phase is wrong",
          "pesq_wb": "ITU-T P.862.2 MOS, about 1.02 (white noise against speech) .. 4.64 (identical)",
          "stoi": "0..1: about 1 identical, 0.1-0.25 white noise; over the scored clips joined end to end"}


# ----------------------------------------------------------------------------- data
def fsdd_speakers() -> list[str]:
    """The FSDD speakers found on this machine (4 in the course's shared subset, 6 in the full set)."""
    return data.fsdd("all").speakers


def _check_speaker(name: str | None) -> None:
    if name is not None and name not in (found := fsdd_speakers()):
        raise ValueError(f"--heldout-speaker {name!r} is not an FSDD speaker here; choose one of {found} "
                         f"or 'none' (train on every speaker, no unseen FSDD speaker in the report).")


def seen_speakers(heldout_speaker: str | None, trained_speakers: Sequence[str] | None = None) -> list[str]:
    """The FSDD speakers a codec heard: ``trained_speakers`` as its card records them (all must be on this machine),
    else every speaker here but ``heldout_speaker``. A machine with the full dataset (six speakers) holds voices
    that a codec trained on the course's four-speaker copy never heard; the card's list keeps them out of "seen"."""
    if trained_speakers is None:
        return [s for s in fsdd_speakers() if s != heldout_speaker]
    if missing := sorted(set(trained_speakers) - set(fsdd_speakers())):
        raise ValueError(f"the checkpoint was trained on FSDD speakers {missing}, who are not on this machine: "
                         "install the dataset (course_lib.data.download_fsdd) or set COURSE_DATA_DIR to a copy "
                         "with them.")
    return list(trained_speakers)


def _spread(n: int, size: int | None) -> list[int]:
    """``size`` indices spread evenly over ``range(n)`` (all of them when ``size`` is None or larger)."""
    return list(range(n)) if size is None or size >= n else [i * n // size for i in range(size)]


def fsdd_takes(split: str, sample_rate: int = 16_000, speakers: Sequence[str] | None = None,
               exclude: str | None = None, size: int | None = None) -> tuple[list[Tensor], list[str]]:
    """FSDD clips (1, T) and their file names, of ``speakers`` (default all) minus ``exclude``.

    ``size`` keeps that many takes spread evenly over the (speaker, digit, take)-sorted list.
    """
    ds = data.fsdd(split, sample_rate=sample_rate)
    keep = [i for i, f in enumerate(ds.files) if (speakers is None or f.stem.split("_")[1] in speakers)
            and f.stem.split("_")[1] != exclude]
    keep = [keep[j] for j in _spread(len(keep), size)]
    return [ds[i].audio.float() for i in keep], [ds.files[i].name for i in keep]


def load_clips(source: str, split: str, sample_rate: int = 16_000, size: int | None = None,
               seed: int = 0, heldout_speaker: str | None = None) -> list[Tensor]:
    """Clips (1, T) of ``"synthworld"`` (all families) or ``"fsdd"`` (test = takes 0-4 of each speaker,
    without ``heldout_speaker``)."""
    if source == "synthworld":
        ds = data.SynthWorld(split, sample_rate=sample_rate, size=size or (2000 if split == "train" else 200),
                             seed=seed)
        audio = torch.cat([ds.batch(range(i, min(len(ds), i + 64))) for i in range(0, len(ds), 64)])
        return list(audio.float())                                  # B clips of (1, T)
    if source != "fsdd":
        raise ValueError(f"Unknown clip source {source!r}; use 'synthworld' or 'fsdd' (training_clips builds "
                         f"voices-mix).")
    return fsdd_takes(split, sample_rate, exclude=heldout_speaker)[0][:size]


def speed_perturb(clips: list[Tensor], sample_rate: int, factors: Sequence[float] = (0.9, 1.1)) -> list[Tensor]:
    """Clips plus copies played ``factor`` times faster (pitch moves too): more speakers for free."""
    out = list(clips)
    for f in factors:
        out += [change_speed(c, sample_rate, f)[0] for c in clips]
    return out


def voices_clips(split: str, speakers: str, size: int, sample_rate: int = 16_000,
                 seed: int = 0) -> tuple[list[Tensor], list[str]]:
    """espeak-ng utterances (1, T) low-passed at 4 kHz like FSDD, each at a random level, and their ids.

    espeak-ng's output peaks at 0.99; FSDD's takes peak at 0.13-0.67. Each utterance is scaled to
    a peak drawn uniformly in -20 .. -3 dBFS (``default_rng([seed, 1])``), so the codec hears
    speech at the levels it will code. ``speakers``: ``"train"`` or ``"heldout"``.
    """
    ds = voices.Voices(split, size=size, sample_rate=sample_rate, seed=seed, speakers=speakers,
                       band_limit_hz=FSDD_BAND_HZ)
    examples = ds.render(range(size))
    peak_db = np.random.default_rng([seed, 1]).uniform(-20.0, -3.0, size)
    clips = [ex.audio * float(10 ** (db / 20) / ex.audio.abs().max().clamp(min=1e-4))
             for ex, db in zip(examples, peak_db)]
    return clips, [f"voices-{split}-{i}:{ex.attributes['speaker']}" for i, ex in enumerate(examples)]


def mix(a: list, b: list, fraction_b: float) -> list:
    """``a`` and ``b`` repeated cyclically (no copies) so that ``b`` makes ``fraction_b`` of the entries.

    :func:`course_lib.codec.random_batch` draws clips uniformly, so this is the share of training crops.
    """
    if not 0 < fraction_b < 1 or not a or not b:
        raise ValueError(f"mix needs two non-empty lists and 0 < fraction_b < 1, got {len(a)}, {len(b)}, "
                         f"{fraction_b}.")
    total = max(len(a) / (1 - fraction_b), len(b) / fraction_b)
    n_a, n_b = round(total * (1 - fraction_b)), round(total * fraction_b)
    return [a[i % len(a)] for i in range(n_a)] + [b[i % len(b)] for i in range(n_b)]


class TrainingClips(NamedTuple):
    clips: list[Tensor]         # (1, T_i) each, what fit() draws crops from
    ids: list[str]              # one per clip: FSDD file name (+ speed), voices id, or synthworld index
    sources: list[str]          # data-source keys of recipes.common.DATA_SOURCES


def training_clips(source: str, sample_rate: int, *, size: int | None = None, seed: int = 0,
                   heldout_speaker: str | None = DEFAULT_HELDOUT, speed: Sequence[float] = (0.9, 1.1),
                   voices_size: int = 2048, voices_fraction: float = 0.5) -> TrainingClips:
    """What ``course-lib train codec --data SOURCE`` trains on; deterministic for a given seed."""
    if source == "synthworld":
        clips = speed_perturb(load_clips(source, "train", sample_rate, size, seed), sample_rate, speed)
        return TrainingClips(clips, [f"synthworld-{i}" for i in range(len(clips))], ["synthworld"])
    _check_speaker(heldout_speaker)
    audio, names = fsdd_takes("train", sample_rate, exclude=heldout_speaker, size=size)
    if not audio:
        raise ValueError(f"No FSDD training takes left once {heldout_speaker!r} is held out.")
    clips = speed_perturb(audio, sample_rate, speed)
    ids = names + [f"{n}@x{f:g}" for f in speed for n in names]
    if source == "fsdd":
        return TrainingClips(clips, ids, ["fsdd"])
    v_clips, v_ids = voices_clips("train", "train", voices_size, sample_rate, seed)
    return TrainingClips(mix(clips, v_clips, voices_fraction), mix(ids, v_ids, voices_fraction), ["fsdd", "voices"])


# ----------------------------------------------------------------------------- evaluation
class EvalSet(NamedTuple):
    name: str                   # e.g. "fsdd-unseen-george"
    description: str
    clips: list[Tensor]         # (1, T_i) each
    ids: list[str]
    speech: bool                # PESQ and STOI apply


def evaluation_sets(source: str, sample_rate: int = 16_000, heldout_speaker: str | None = DEFAULT_HELDOUT,
                    size: int | None = None, voices_size: int = 64, seed: int = 0,
                    trained_speakers: Sequence[str] | None = None) -> list[EvalSet]:
    """The report's clip sets, unseen voices first. ``size`` caps each FSDD set (evenly spread takes).
    ``trained_speakers`` (a card's ``eval.trained_speakers``) are the seen voices; by default every FSDD speaker on
    this machine but the held-out one, which is what training uses (:func:`seen_speakers`)."""
    if source == "synthworld":
        clips = load_clips(source, "test", sample_rate, size, seed)
        return [EvalSet("synthworld-test", "SynthWorld test split, every family", clips,
                        [f"synthworld-test-{i}" for i in range(len(clips))], speech=False)]
    _check_speaker(heldout_speaker)
    sets = []
    if heldout_speaker is not None:
        clips, ids = fsdd_takes("all", sample_rate, speakers=[heldout_speaker], size=size)
        sets.append(EvalSet(f"fsdd-unseen-{heldout_speaker}", f"all takes (0-49) of FSDD speaker {heldout_speaker}, "
                            f"held out of training", clips, ids, True))
    if voices_size:
        clips, ids = voices_clips("test", "heldout", voices_size, sample_rate, seed)
        sets.append(EvalSet("voices-unseen", "held-out espeak-ng speakers saying held-out sentences, low-passed "
                            "at 4 kHz, peaks at -20..-3 dBFS", clips, ids, True))
    seen = seen_speakers(heldout_speaker, trained_speakers)
    clips, ids = fsdd_takes("test", sample_rate, speakers=seen, size=size)
    sets.append(EvalSet("fsdd-seen-speakers", f"test takes (0-4) of the training speakers {seen}: voices heard "
                        f"in training, takes not", clips, ids, True))
    return sets


def _at_16k(x: Tensor, sample_rate: int) -> Tensor:
    return x if sample_rate == 16_000 else resample(x, sample_rate, 16_000)


def _scores(outs: list[Tensor], refs: list[Tensor], keep: list[int], sample_rate: int,
            pesq: dict[int, float] | None) -> dict:
    """Mean mel distance, SI-SDR (and with ``pesq``, clip index -> score: PESQ, STOI) of one system over ``keep``."""
    mel = [float(multiscale_mel_distance(outs[i][None], refs[i][None], sample_rate)[0]) for i in keep]
    sdr = [float(si_sdr(outs[i][None], refs[i][None])[0]) for i in keep]
    row = {"mel_distance": float(np.mean(mel)), "si_sdr": float(np.mean(sdr))}
    if pesq is not None:
        row["pesq_wb"] = float(np.mean([pesq[i] for i in keep]))
        est, ref = (_at_16k(torch.cat([x[i] for i in keep], -1), sample_rate) for x in (outs, refs))
        try:                        # most FSDD takes hold < 0.41 s of speech, too little for STOI alone
            row["stoi"] = float(stoi(est[None], ref[None], 16_000)[0])
        except AudioError:
            row["stoi"] = None
    return row


@torch.no_grad()
def evaluation_report(model: Codec, clips: list[Tensor], opus_kbps: tuple[float, ...] = (6.0, 8.0),
                      speech: bool = True, ids: Sequence[str] | None = None) -> dict:
    """One set's table: the codec at 1, Q/4, Q/2 and Q quantizers, the autoencoder without RVQ, Opus.

    Every system is scored on exactly the same clips. With ``speech``, wideband PESQ is computed
    per clip (at 16 kHz), and a clip on which PESQ raises for *any* system (1-10% of FSDD takes,
    mostly shorter than its 0.25 s) leaves every row and is listed under ``skipped``. STOI needs
    0.41 s of speech, more than most FSDD takes hold, so it is computed once per system on the
    scored clips joined end to end (its 384 ms segments averaged over all of them).

    Args:
        clips: (1, T_i) clips at ``model.sample_rate``.
        ids: a name per clip for the ``skipped`` list (default its index).
    """
    model.eval()
    sr, q_all = model.sample_rate, model.num_quantizers
    ids = list(ids) if ids is not None else [str(i) for i in range(len(clips))]
    levels = sorted({1, max(1, q_all // 4), max(1, q_all // 2), q_all})
    outs, bitrates = {}, {}                                          # system -> one (1, T_i) output per clip
    codes = [model.encode(c[None]) for c in clips]              # (1, Q, L) each; the first q rows are encode(x, q)
    for q in levels:
        outs[f"q{q}"] = [model.decode(k[:, :q])[0, :, : c.shape[-1]] for k, c in zip(codes, clips)]
    outs["autoencoder"] = [model.reconstruct_unquantized(c[None])[0] for c in clips]
    for kbps in opus_kbps:
        res = [baselines.opus(c, sr, bitrate=kbps * 1000) for c in clips]
        outs[f"opus{kbps:g}"], bitrates[kbps] = [r.audio for r in res], float(np.mean([r.bitrate for r in res]))
    pesq: dict[str, dict[int, float]] = {name: {} for name in outs}   # system -> clip index -> PESQ
    keep, skipped = [], {}
    for i, ref in enumerate(clips):
        if speech:
            try:
                scores = {name: float(pesq_wb(_at_16k(o[i], sr)[None], _at_16k(ref, sr)[None], 16_000)[0])
                          for name, o in outs.items()}
            except AudioError as err:                                # the take leaves every system's row
                skipped[ids[i]] = str(err).split(";")[0].split(". ")[0]
                continue
            for name, score in scores.items():
                pesq[name][i] = score
        keep.append(i)
    if not keep:
        raise AudioError(f"PESQ failed on every one of the {len(clips)} clips (e.g. {next(iter(skipped.values()))}); "
                         f"check that they hold speech at {sr} Hz.")

    def row(name: str) -> dict:
        return _scores(outs[name], clips, keep, sr, pesq[name] if speech else None)

    report: dict = {"clips": len(clips), "scored": len(keep), "skipped": skipped, "codec": {}}
    for q in levels:
        stats = codebook_stats(torch.cat([codes[i][:, :q] for i in keep], -1), model.config.codebook_size)
        report["codec"][f"q{q}"] = {"num_quantizers": q, "bitrate": model.bitrate(q), **row(f"q{q}"),
                                    "usage": [round(float(u), 4) for u in stats.usage],
                                    "perplexity": [round(float(p), 1) for p in stats.perplexity],
                                    "dead": [int(d) for d in stats.dead]}
    report["autoencoder"] = row("autoencoder")
    report["opus"] = {f"{k:g}kbps": {"bitrate": bitrates[k], **row(f"opus{k:g}")} for k in opus_kbps}
    return report


def _report_all(model: Codec, sets: list[EvalSet]) -> dict:
    return {s.name: evaluation_report(model, s.clips, speech=s.speech, ids=s.ids) for s in sets}


def _summary(metrics: dict, q_all: int) -> str:
    """One line per set: PESQ (or mel) of the codec at Q, the autoencoder and Opus 6 kbps."""
    key = "pesq_wb" if "pesq_wb" in metrics[next(iter(metrics))]["autoencoder"] else "mel_distance"
    return "\n".join(f"{name:>22}: {key} codec q{q_all} {r['codec'][f'q{q_all}'][key]:.2f}, "
                     f"autoencoder {r['autoencoder'][key]:.2f}, opus 6 kbps {r['opus']['6kbps'][key]:.2f} "
                     f"({r['scored']}/{r['clips']} clips scored)" for name, r in metrics.items())


# ----------------------------------------------------------------------------- command line
def _speaker(text: str) -> str | None:
    return None if text.lower() == "none" else text


def _train_parser():
    p = train_parser("codec", PRESETS, DATA)
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--crop-s", type=positive_float, default=0.5, help="seconds per training crop")
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--speed-perturb", type=positive_float, nargs="+", default=[0.9, 1.1],
                   help="also train on copies played this many times faster (default: %(default)s)")
    p.add_argument("--no-speed-perturb", dest="speed_perturb", action="store_const", const=[],
                   help="train on the recordings as they are")
    p.add_argument("--augment", action="store_true",
                   help=f"each training crop also played a random {AUGMENT_SPEED[0]:g}-{AUGMENT_SPEED[1]:g}x as fast and "
                        "through a random EQ: new voices and microphones from the same recordings "
                        "(codec.augment_voices)")
    p.add_argument("--level", choices=("peak", "natural"), default="peak",
                   help="training loudness: peaks at 0.3..1 (peak) or the recording's level +-6 dB (natural)")
    p.add_argument("--dead-code-threshold", type=positive_float, default=None,
                   help="restart codes used less than this fraction of their fair share (default: the preset's)")
    p.add_argument("--adversarial", action="store_true", help="add the MS-STFT discriminator (7x slower on CPU)")
    p.add_argument("--init-from", default=None,
                   help="start from this checkpoint's weights, e.g. codec-speech: all of them for the same "
                        "configuration, else its encoder when that has the same shape")
    p.add_argument("--decoder-only", action="store_true",
                   help="with --init-from of the same preset: freeze its encoder and codebooks (every clip keeps "
                        "its codes, so AudioLM's token models stay valid) and train only the decoder")
    p.add_argument("--heldout-speaker", type=_speaker, default=DEFAULT_HELDOUT,
                   help="FSDD speaker left out of training and reported as unseen; 'none' trains on all "
                        "(default: %(default)s)")
    p.add_argument("--voices-size", type=positive_int, default=2048,
                   help="voices-mix: espeak-ng training utterances (default: %(default)s)")
    p.add_argument("--voices-fraction", type=positive_float, default=0.5,
                   help="voices-mix: share of training crops from espeak-ng (default: %(default)s)")
    p.add_argument("--voices-eval-size", type=nonnegative_int, default=64,
                   help="held-out espeak-ng utterances in the report; 0 leaves them out (default: %(default)s)")
    return p


def train_cli(argv: Sequence[str]) -> int:
    """``course-lib train codec ...``: train, evaluate on unseen and seen voices, export with a card."""
    args = _train_parser().parse_args(argv)
    speech = args.data != "synthworld"
    heldout = args.heldout_speaker if speech else None
    mixed = args.data == "voices-mix"
    run = plan_run(args, "codec", argv, lr=args.lr, batch_size=args.batch_size, crop_s=args.crop_s,
                   speed_perturb=tuple(args.speed_perturb), level=args.level, adversarial=args.adversarial,
                   dead_code_threshold=args.dead_code_threshold, heldout_speaker=heldout,
                   voices_size=args.voices_size if mixed else None,
                   voices_fraction=args.voices_fraction if mixed else None,
                   **({"decoder_only": True} if args.decoder_only else {}),
                   **({"augment": True} if args.augment else {}))
    cfg = CodecConfig.preset(run.preset)
    if args.dead_code_threshold is not None:
        cfg = dataclasses.replace(cfg, dead_code_threshold=args.dead_code_threshold)
    torch.manual_seed(args.seed)                                   # model initialisation
    model = Codec(cfg)
    init_parts = _warm_start(model, args.init_from) if args.init_from else None
    if args.decoder_only and init_parts != "all":
        raise SystemExit("--decoder-only keeps a trained codec's codes: use it with --init-from a checkpoint of the "
                         f"same preset ({run.preset!r}), e.g. codec-speech for --preset speech.")
    train = training_clips(args.data, cfg.sample_rate, size=args.train_size, seed=args.seed, heldout_speaker=heldout,
                           speed=args.speed_perturb, voices_size=args.voices_size,
                           voices_fraction=args.voices_fraction)
    sources = list(train.sources)
    # The report's clips before training: a missing speaker or synthesizer fails now, not after hours.
    sets = evaluation_sets(args.data, cfg.sample_rate, heldout, args.eval_size,
                           args.voices_eval_size if speech else 0, args.seed)
    if args.init_from:
        sources += [d for d in _card_sources(args.init_from) if d not in sources]
    result = fit(model.to(run.device), train.clips, steps=run.steps, time_budget_s=args.time_budget,
                 generator=torch.Generator().manual_seed(args.seed), checkpoint_dir=run.run_dir,
                 batch_size=args.batch_size, crop_s=args.crop_s, lr=args.lr, adversarial=args.adversarial,
                 level=args.level, mixed_precision=run.mixed_precision, settings=run.settings,
                 progress=not args.no_progress, decoder_only=args.decoder_only,
                 augment=args.augment)
    if not is_main_process():
        return 0
    if not result.finished:
        return export(run, result, cfg, {})
    model = result.model.cpu()
    checkpoint.round_trip_(model, torch.float16)                   # the card describes the fp16 file we ship
    metrics = _report_all(model, sets)
    info = card(run, result, sources, metrics, init_from=args.init_from, init_from_parts=init_parts,
                runs_before=runs_before(args.init_from) if args.init_from else [], stored_dtype="float16",
                training_clips=len(train.clips), heldout_speaker=heldout,
                eval={"data": args.data, "heldout_speaker": heldout, "eval_size": args.eval_size,
                      **({"trained_speakers": seen_speakers(heldout)} if "fsdd" in train.sources else {}),
                      "voices_eval_size": args.voices_eval_size if speech else 0, "rulers": RULERS,
                      "sets": {s.name: {"description": s.description, "clips": len(s.clips)} for s in sets}})
    print(_summary(metrics, cfg.num_quantizers), file=sys.stderr)
    return export(run, result, cfg, info, dtype=torch.float16)


def _warm_start(model: Codec, name: str) -> str:
    """Copy ``name``'s weights into ``model``: all of them (same configuration), else its encoder (same shape).

    The second case starts a new decoder and quantizer (e.g. the ``speech`` preset) on an encoder that has
    already learned speech (the ``small`` preset's); returns which part was copied, for the card.
    """
    start = load_pretrained(name)
    if start.config == model.config:
        model.load_state_dict(start.state_dict())
        return "all"
    theirs, ours = start.encoder.state_dict(), model.encoder.state_dict()
    if {k: v.shape for k, v in theirs.items()} != {k: v.shape for k, v in ours.items()}:
        raise SystemExit(f"--init-from {name}: neither its configuration nor its encoder's shape matches this preset's; "
                         f"pick a checkpoint of the same preset (or encoder) or drop --init-from.")
    model.encoder.load_state_dict(theirs)
    return "encoder"


def _card_sources(name: str) -> list[str]:
    """The data-source keys named on a checkpoint's card."""
    info = checkpoint.read_card(name)
    text = json.dumps(info.get("data"))
    return [k for k, src in DATA_SOURCES.items() if src.name.split(" (")[0] in text] or ["synthworld"]


def eval_cli(argv: Sequence[str]) -> dict:
    """``course-lib eval codec --checkpoint codec-speech``: the card's report on the card's clips.

    Data, sizes, seed and held-out speaker default to the card's. Cards written before the
    held-out split (the shipped ``codec-speech``) name no held-out speaker: that model heard every
    FSDD speaker, so its report has the FSDD test takes (seen voices) and the unseen espeak-ng voices.
    """
    p = eval_parser("codec", "codec-speech", DATA)
    p.add_argument("--heldout-speaker", type=_speaker, default=argparse.SUPPRESS,
                   help="default: the card's ('none': no unseen FSDD speaker)")
    p.add_argument("--voices-eval-size", type=nonnegative_int, default=None, help="default: the card's, else 64")
    args = p.parse_args(argv)
    info, ev, seed = eval_plan(args, args.checkpoint)
    torch.set_flush_denormal(True)   # as in training (fit): subnormal activations slow CPU convolutions 10-100x
    source, size = ev.get("data", "synthworld"), ev.get("eval_size")
    heldout = getattr(args, "heldout_speaker", ev.get("heldout_speaker"))
    n_voices = args.voices_eval_size if args.voices_eval_size is not None else ev.get("voices_eval_size", 64)
    model = load_pretrained(args.checkpoint)
    sets = evaluation_sets(source, model.sample_rate, heldout, size, n_voices if source != "synthworld" else 0, seed,
                           trained_speakers=ev.get("trained_speakers"))
    return {"checkpoint": str(args.checkpoint), "data": source, "heldout_speaker": heldout,
            "clips": {s.name: len(s.clips) for s in sets}, "metrics": _report_all(model, sets),
            "card_metrics": info.get("metrics")}


def bench(seconds: float = 10.0, presets: Sequence[str] = ("small", "speech")) -> dict:
    """Encode+decode real-time factor (CPU, current threads), parameters and float16 size per preset."""
    out = {"threads": torch.get_num_threads(), "audio_s": seconds}
    for name in presets:
        model = Codec(CodecConfig.preset(name)).eval()
        wav = 0.1 * torch.randn(1, 1, int(seconds * model.sample_rate), generator=torch.Generator().manual_seed(0))
        best = best_time(lambda m=model, x=wav: m.decode(m.encode(x)), repeat=3)
        stored = sum(t.numel() for t in model.state_dict().values())
        out[name] = {"encode_decode_rtf": round(best / seconds, 4), "bitrate_bps": model.bitrate(),
                     "parameters": sum(p.numel() for p in model.parameters()), "float16_mb": round(2 * stored / 1e6, 2)}
    return out


if __name__ == "__main__":                                         # python -m course_lib.recipes.codec ...
    sys.exit(train_cli(sys.argv[1:]))
