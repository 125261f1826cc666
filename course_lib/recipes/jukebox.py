"""``course-lib train|eval|generate jukebox``: songs, the two training stages, the card's measurements.

    course-lib train jukebox --stage vqvae  --preset small --steps 1500 --threads 1
    course-lib train jukebox --stage priors --preset small --steps 3000 --vqvae runs/jukebox-songs/vqvae
    course-lib eval jukebox --checkpoint jukebox-songs

Rulers (chosen before training, none of them used in training):

- VQ-VAE: codebook usage per level and reconstruction error per level (multi-scale mel distance and
  the spectral loss) on test songs; the paper's ordering is that the error rises from bottom to top.
- priors: held-out bits per token per level beside a unigram baseline (the codes' own histogram).
- generated songs: a style classifier trained on *test-split* songs only (never on the training
  songs, never on generated audio), as recorded and through Opus (:func:`style_classifier`; the same
  classifier trained on songs as recorded only is kept as a second opinion); tempo and key estimated from the audio
  (:func:`course_lib.data.songs.estimate_tempo`, :func:`~course_lib.data.songs.estimate_key`);
  nearest-neighbour distance to the training songs' top codes against that of real test songs.
"""
from __future__ import annotations

import math
import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from course_lib import checkpoint, gan_eval
from course_lib.baselines import RULER_OPUS_BITRATES, opus
from course_lib.data.songs import STYLES, Songs, estimate_key, estimate_tempo
from course_lib.jukebox import (KEYS, PRESETS, HierarchicalVQVAE, Jukebox, JukeboxPriors, PriorConfig, SongCodes,
                                VQVAEConfig, fit_priors, fit_vqvae, load_pretrained, prior_losses, spectral_loss)
from course_lib.metrics import multiscale_mel_distance
from course_lib.quantize import codebook_stats
from course_lib.audio import save
from course_lib.recipes.common import (best_time, cached, card, digest, eval_parser, eval_plan, export,
                                       nonnegative_int, plan_run, positive_float, positive_int, runs_before,
                                       train_parser, warm_start)
from course_lib.train import is_main_process

__all__ = ["load_songs", "encode_songs", "encode_songs_cached", "top_codes", "vqvae_report", "prior_report",
           "style_classifier", "generation_report", "reference_report", "train_cli", "eval_cli", "generate_cli", "bench"]

SECONDS = 6.0          # training and test songs
GEN_PER_STYLE = 2                         # generated songs per style on the card
GEN_SECONDS = SECONDS                     # and their length: the songs' (the length token and timing learnt)
REFERENCE_SONGS = 24                      # val songs whose reconstructions show what generated songs could score


def load_songs(split: str, size: int, seconds: float = SECONDS, seed: int = 0, sample_rate: int = 16_000):
    """(audio (N, 1, T), examples' attributes, the dataset) of ``size`` songs of one split."""
    ds = Songs(split, size=size, seconds=seconds, sample_rate=sample_rate, seed=seed)
    batch = ds.examples(range(size))
    return batch.audio, batch.attributes, ds


@torch.no_grad()
def encode_songs(vqvae: HierarchicalVQVAE, audio: torch.Tensor, attributes: list[dict], styles: Sequence[str],
                 seconds: float) -> SongCodes:
    """Codes of every level, computed once, with each song's style, key and tempo."""
    codes = [torch.cat(c) for c in zip(*(vqvae.encode(audio[i:i + 16]) for i in range(0, len(audio), 16)))]
    style = torch.tensor([list(styles).index(a["style"]) for a in attributes])
    return SongCodes(codes, style, [a["key"] for a in attributes], [float(a["tempo_bpm"]) for a in attributes],
                     seconds)


def top_codes(vqvae: HierarchicalVQVAE, audio: torch.Tensor) -> torch.Tensor:
    """Top-level codes (N, T/128) of songs, 16 at a time: the nearest-neighbour check needs no other level,
    and the top encoder alone costs a third of :func:`encode_songs`."""
    return torch.cat([vqvae.encode(audio[i:i + 16], levels=(2,))[0] for i in range(0, len(audio), 16)])


def encode_songs_cached(path: Path, vqvae: HierarchicalVQVAE, audio: torch.Tensor, attributes: list[dict],
                        styles: Sequence[str], seconds: float) -> SongCodes:
    """:func:`encode_songs`, kept in ``path`` so that a resumed run does not encode again (4,096 songs took
    44 minutes on one thread). The file names the VQ-VAE's weights, the songs and the order of ``styles``;
    any change re-encodes."""
    songs = [sorted(a.items()) for a in attributes]
    stamp = {"vqvae_and_songs_sha256": digest(vqvae, *songs, tuple(styles)),   # the order behind the style indices
             "songs": len(audio), "samples": audio.shape[-1]}
    return SongCodes(**cached(path, stamp, lambda: encode_songs(vqvae, audio, attributes, styles, seconds)._asdict()))


@torch.no_grad()
def vqvae_report(vqvae: HierarchicalVQVAE, audio: torch.Tensor) -> dict:
    """Per level: codebook usage, mel distance and spectral loss of the reconstruction (test songs)."""
    out = {}
    codes = [torch.cat(c) for c in zip(*(vqvae.encode(audio[i:i + 16]) for i in range(0, len(audio), 16)))]
    for level, name in enumerate(("bottom", "middle", "top")):
        rec = torch.cat([vqvae.decode(codes[level][i:i + 16], level) for i in range(0, len(audio), 16)])
        rec = rec[..., :audio.shape[-1]]
        stats = codebook_stats(codes[level][:, None], vqvae.config.codebook_sizes[level])
        out[name] = {"hop_length": vqvae.hop_lengths[level], "tokens_per_second": vqvae.tokens_per_second(level),
                     "codebook_usage": round(float(stats.usage[0]), 4),
                     "mel_distance_db": round(float(multiscale_mel_distance(rec, audio, vqvae.sample_rate).mean()), 3),
                     "spectral_loss": round(float(spectral_loss(rec, audio)), 4)}
    return out


@torch.no_grad()
def prior_report(priors: JukeboxPriors, data: SongCodes, batches: int = 8, seed: int = 0) -> dict:
    """Held-out bits per token per level (random windows of test songs) beside the unigram baseline."""
    g = torch.Generator().manual_seed(seed)
    losses = [prior_losses(priors, data, 16, g, condition_dropout=0.0) for _ in range(batches)]
    out = {}
    for name, level, values in (("top", 2, [x.top for x in losses]), ("middle", 1, [x.middle for x in losses]),
                                ("bottom", 0, [x.bottom for x in losses])):
        counts = torch.bincount(data.codes[level].flatten(), minlength=priors.config.codebook_sizes[level]).float() + 1
        p = counts / counts.sum()
        unigram = float(-(p * p.log2()).sum())                  # entropy of the codes' own histogram
        out[name] = {"bits_per_token": round(float(torch.stack(values).mean()) / math.log(2), 3),
                     "unigram_bits_per_token": round(unigram, 3)}
    return out


def style_classifier(audio: torch.Tensor, attributes: list[dict], styles: Sequence[str], seed: int = 0,
                     steps: int = 300, coded_bitrates: Sequence[float] = RULER_OPUS_BITRATES) -> gan_eval.AudioClassifier:
    """A log-mel conv net trained on real songs of the *test* split only (the ruler of generated styles), as
    recorded and through Opus at each of ``coded_bitrates`` (``()``: as recorded only). Generated songs reach the
    ear through a decoder; trained on clean songs alone, the ruler named the style of 89% of real validation songs
    but of 56% of their bottom-level reconstructions (and of 44% of their Opus-6-kbps copies); with the coded
    copies: 94%, 89% and 100% (36 songs, the VQ-VAE of ``runs/jukebox-vq2``)."""
    labels = torch.tensor([list(styles).index(a["style"]) for a in attributes])
    clips = torch.cat([audio, *(opus(audio, 16_000, b).audio for b in coded_bitrates)])
    with torch.random.fork_rng(devices=[]):                       # the same initial weights in train and eval
        torch.manual_seed(seed)
        clf, _ = gan_eval.train_classifier(clips, labels.repeat(1 + len(coded_bitrates)), list(styles), 16_000,
                                           steps=steps, batch_size=16, generator=torch.Generator().manual_seed(seed),
                                           noise_snr_db=None)
    return clf


@torch.no_grad()
def generation_report(model: Jukebox, clf: gan_eval.AudioClassifier, train_top: torch.Tensor, test_top: torch.Tensor,
                      per_style: int, seconds: float, seed: int = 0,
                      uncoded_clf: gan_eval.AudioClassifier | None = None) -> dict:
    """Style accuracy, tempo error and key accuracy of generated songs, and a nearest-neighbour check.
    ``uncoded_clf``: a second opinion on the style, the ruler trained on songs as recorded only.

    Tempos are requested at the two ends of each style's range (half the songs each), never in its middle: a prior
    that knew only each style's usual tempo would then miss by half the range, reported beside the error as
    ``median_relative_tempo_error_style_only``; ``tempo_order_right`` is the share of (slow, fast) request pairs of
    a style whose songs are heard in that order (chance 0.5).

    Keys: song i of style s asks for ``KEYS[(4 s + i) % 24]``: each style asks for different keys and, with six
    styles of 16 songs, every key is asked for four times (one fixed key per style put six style/key pairs behind
    the figure; a prior that missed one pair missed all its songs)."""
    g = torch.Generator().manual_seed(seed)
    right, right_uncoded, tempo_err, blind_err, key_right, n, nn_gen, order = 0, 0, [], [], 0, 0, [], []
    for s, style in enumerate(model.styles):
        keys, (slow, fast) = [KEYS[(4 * s + i) % len(KEYS)] for i in range(per_style)], STYLES[style].tempo
        heard = {}
        for tempo, count, first in ((float(slow), (per_style + 1) // 2, 0),
                                    (float(fast), per_style // 2, (per_style + 1) // 2)):
            if not count:
                continue
            asked = keys[first:first + count]
            wav = torch.cat([model.generate(1, style, key, tempo, seconds, generator=g) for key in asked])
            right += int((clf.predict(wav).logits.argmax(-1) == s).sum())
            if uncoded_clf is not None:
                right_uncoded += int((uncoded_clf.predict(wav).logits.argmax(-1) == s).sum())
            heard[tempo] = [estimate_tempo(w, model.sample_rate) for w in wav]
            tempo_err += [abs(h - tempo) / tempo for h in heard[tempo]]
            blind_err += [abs((slow + fast) / 2 - tempo) / tempo] * count
            key_right += sum(estimate_key(w, model.sample_rate).name == key for w, key in zip(wav, asked))
            nn_gen.append(_nn_distance(top_codes(model.vqvae, wav), train_top))
            n += count
        if len(heard) == 2:
            order += [h_fast > h_slow for h_slow in heard[float(slow)] for h_fast in heard[float(fast)]]
    out = {"songs": n, "style_accuracy": round(right / n, 4), "tempo_requests": "both ends of each style's range",
           "key_requests": "every key equally often, each style different keys",
           "median_relative_tempo_error": round(float(torch.tensor(tempo_err).median()), 4),
           "median_relative_tempo_error_style_only": round(float(torch.tensor(blind_err).median()), 4),
           "key_accuracy": round(key_right / n, 4),
           "nn_top_code_mismatch_generated": round(float(torch.cat(nn_gen).median()), 4),
           "nn_top_code_mismatch_test": round(float(_nn_distance(test_top, train_top).median()), 4)}
    if order:
        out["tempo_order_right"] = round(sum(order) / len(order), 4)
    if uncoded_clf is not None:
        out["style_accuracy_uncoded_ruler"] = round(right_uncoded / n, 4)
    return out


@torch.no_grad()
def reference_report(model: Jukebox, clf: gan_eval.AudioClassifier, audio: torch.Tensor, attributes: list[dict],
                     seconds: float, uncoded_clf: gan_eval.AudioClassifier | None = None) -> dict:
    """The rulers on real songs of another split (``val``), cut to ``seconds``, and on their VQ-VAE
    reconstructions from true codes: what generated songs could score at best through this VQ-VAE."""
    audio = audio[..., :round(seconds * model.sample_rate)]
    codes = model.encode(audio)
    out = {"songs": len(audio)}
    style = torch.tensor([list(model.styles).index(a["style"]) for a in attributes])
    for name, wav in (("real", audio), ("bottom_reconstruction", model.decode(codes[0], 0)[..., :audio.shape[-1]]),
                      ("top_reconstruction", model.decode(codes[2], 2)[..., :audio.shape[-1]])):
        tempo_err = [abs(estimate_tempo(w, model.sample_rate) - a["tempo_bpm"]) / a["tempo_bpm"]
                     for w, a in zip(wav, attributes)]
        out[name] = {"style_accuracy": round(float((clf.predict(wav).logits.argmax(-1) == style).float().mean()), 4),
                     "median_relative_tempo_error": round(float(torch.tensor(tempo_err).median()), 4),
                     "key_accuracy": round(sum(estimate_key(w, model.sample_rate).name == a["key"]
                                               for w, a in zip(wav, attributes)) / len(wav), 4)}
        if uncoded_clf is not None:
            out[name]["style_accuracy_uncoded_ruler"] = round(
                float((uncoded_clf.predict(wav).logits.argmax(-1) == style).float().mean()), 4)
    return out


def _nn_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Fraction of differing top codes to the nearest training song (aligned, over the shorter length)."""
    n = min(a.shape[1], b.shape[1])
    return torch.stack([(x[:n] != b[:, :n]).float().mean(1).min() for x in a])


def _train_parser():
    p = train_parser("jukebox", PRESETS, ("songs",))
    p.add_argument("--stage", choices=("vqvae", "priors"), required=True, help="the VQ-VAE first, then the priors")
    p.add_argument("--vqvae", default=None, help="the VQ-VAE to encode with (stage priors): a folder or name")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--lr", type=positive_float, default=None, help="default: 3e-4 (vqvae) / 1e-3 (priors)")
    p.add_argument("--seconds", type=positive_float, default=SECONDS, help="length of the training songs")
    p.add_argument("--init-from", default=None,
                   help="start from this checkpoint of the same stage and preset (a folder or name), e.g. to fine-tune")
    p.add_argument("--decoders-only", action="store_true",
                   help="stage vqvae with --init-from: keep its encoders and codebooks (every song keeps its codes, "
                        "its priors stay valid) and train only the decoders")
    p.add_argument("--upsamplers-only", action="store_true",
                   help="stage priors with --init-from: keep its top prior and train only the two upsamplers")
    p.add_argument("--beat-clock", action="store_true",
                   help="stage priors: the top prior also hears a metronome at the song's tempo (PriorConfig.beat_clock)")
    p.add_argument("--key-clock", action="store_true",
                   help="stage priors: the top prior also hears the key at every position (PriorConfig.key_clock); "
                        "with --init-from a prior without it, the key starts silent and is learned")
    p.add_argument("--top-only", action="store_true",
                   help="with --init-from: keep its other parts and train only the top level (stage vqvae: the top "
                        "autoencoder, afresh if --top-width/--top-depth/--top-codebook-size change it; stage priors: "
                        "the top prior, its upsamplers kept)")
    for name, what in (("width", "channels"), ("depth", "residual units per block"), ("codebook-size", "codes")):
        p.add_argument(f"--top-{name}", type=positive_int, default=None,
                       help=f"stage vqvae: the top level's {what} (default: the preset's, as the other levels)")
    p.add_argument("--unknown-style", action="store_true",
                   help="stage priors: the top prior also learns songs asked for nothing (style, key and tempo hidden "
                        "together), so that guidance amplifies the style too (PriorConfig.unknown_style)")
    p.add_argument("--key-upsamplers", action="store_true",
                   help="stage priors: the upsamplers hear the key beside the style (PriorConfig.key_upsamplers)")
    p.add_argument("--gen-per-style", type=nonnegative_int, default=GEN_PER_STYLE,
                   help="generated songs per style measured on the priors' card (0: none)")
    p.add_argument("--gen-seconds", type=positive_float, default=GEN_SECONDS, help="their length")
    return p


def train_cli(argv: Sequence[str]) -> int:
    """``course-lib train jukebox --stage vqvae|priors ...``."""
    args = _train_parser().parse_args(argv)
    vq = args.stage == "vqvae"
    batch, lr = args.batch_size, args.lr or (3e-4 if vq else 1e-3)
    if args.decoders_only and not (vq and args.init_from):
        raise SystemExit("--decoders-only keeps a trained VQ-VAE's codes: use it with --stage vqvae --init-from NAME.")
    if args.upsamplers_only and not (not vq and args.init_from):
        raise SystemExit("--upsamplers-only keeps a trained top prior: use it with --stage priors --init-from NAME.")
    if args.top_only and not args.init_from:
        raise SystemExit("--top-only keeps a trained checkpoint's other parts: use it with --init-from NAME.")
    if args.top_only and (args.upsamplers_only or args.decoders_only):
        raise SystemExit(f"--top-only and {'--upsamplers-only' if args.upsamplers_only else '--decoders-only'} "
                         f"exclude each other: pick one (or neither to train all).")
    top_capacity = {f"top_{k}": getattr(args, f"top_{k}") for k in ("width", "depth", "codebook_size")
                    if getattr(args, f"top_{k}") is not None}
    if top_capacity and not vq:
        raise SystemExit("--top-width, --top-depth and --top-codebook-size shape the VQ-VAE: use them with --stage vqvae "
                         "(the priors take the codebook sizes from --vqvae).")
    if vq and (args.beat_clock or args.key_upsamplers or args.key_clock or args.unknown_style):
        raise SystemExit("--beat-clock, --key-clock, --key-upsamplers and --unknown-style shape the priors: use them "
                         "with --stage priors.")
    if not vq and args.vqvae is None:
        raise SystemExit("--stage priors needs --vqvae (the folder the vqvae stage exported, or a shipped name).")
    if args.run_dir is None:
        args.run_dir = f"runs/jukebox-songs/{args.stage}"
    run = plan_run(args, "jukebox", argv, stage=args.stage, lr=lr, batch_size=batch, seconds=args.seconds,
                   vqvae=args.vqvae, init_from=args.init_from,
                   decoders_only=args.decoders_only, upsamplers_only=args.upsamplers_only,
                   **({"top_only": True} if args.top_only else {}), **top_capacity,
                   **({"beat_clock": True} if args.beat_clock else {}),
                   **({"key_clock": True} if args.key_clock else {}),
                   **({"unknown_style": True} if args.unknown_style else {}),
                   **({"key_upsamplers": True} if args.key_upsamplers else {}))
    n_train, n_test = args.train_size or 256, args.eval_size or 64
    audio, attrs, ds = load_songs("train", n_train, args.seconds, args.seed)
    test_audio, test_attrs, _ = load_songs("test", n_test, args.seconds, args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)                                    # weight initialisation
    if vq:
        model = HierarchicalVQVAE(replace(VQVAEConfig.preset(run.preset), **top_capacity))
        if args.init_from:                        # a top level of another capacity starts afresh
            fresh = tuple(f"{m}.2." for m in ("encoders", "decoders", "quantizers")) if top_capacity else ()
            warm_start(model, checkpoint.load_pretrained(args.init_from, HierarchicalVQVAE, VQVAEConfig), args.init_from,
                       fresh=fresh)
        model = model.to(run.device)
        result = fit_vqvae(model, audio, steps=run.steps, time_budget_s=args.time_budget, generator=gen,
                           checkpoint_dir=run.run_dir, batch_size=batch, lr=lr, settings=run.settings,
                           progress=not args.no_progress, decoders_only=args.decoders_only, top_only=args.top_only)
        if not is_main_process() or not result.finished:
            return export(run, result, model.config, {})
        checkpoint.round_trip_(result.model.cpu(), torch.float16)     # the card describes the fp16 file we ship
        metrics = vqvae_report(result.model, test_audio)
        config = model.config
    else:
        vqvae = checkpoint.load_pretrained(args.vqvae, HierarchicalVQVAE, VQVAEConfig)
        data, test = (encode_songs_cached(run.run_dir / f"codes-{split}.pt", vqvae, a, t, ds.classes, args.seconds)
                      for split, a, t in (("train", audio, attrs), ("test", test_audio, test_attrs)))
        config = replace(PriorConfig.preset(run.preset), styles=tuple(ds.classes),
                         codebook_size=vqvae.config.codebook_size, top_codebook_size=vqvae.config.top_codebook_size,
                         beat_clock=args.beat_clock,
                         key_upsamplers=args.key_upsamplers, key_clock=args.key_clock, unknown_style=args.unknown_style,
                         song_seconds=args.seconds)
        model = JukeboxPriors(config)
        if args.init_from:
            start = checkpoint.load_pretrained(args.init_from, JukeboxPriors, PriorConfig)
            new_top = start.config.codebook_sizes[2] != config.codebook_sizes[2]   # the top prior and the middle
            if new_top and (args.top_only or args.upsamplers_only):               # conditioner start afresh
                raise SystemExit(f"--vqvae's top level has {config.codebook_sizes[2]} codes, --init-from's priors "
                                 f"{start.config.codebook_sizes[2]}: the top prior and the middle upsampler must both "
                                 f"learn the new codes; drop --top-only / --upsamplers-only.")
            warm_start(model, start, args.init_from, fresh=("top.", "conditioners.1.") if new_top else (),
                       widened=() if new_top else ("top.cond_proj.weight", "top.prefix_emb.weight"))
        model = model.to(run.device)
        result = fit_priors(model, data, steps=run.steps, time_budget_s=args.time_budget, generator=gen,
                            checkpoint_dir=run.run_dir, batch_size=batch, lr=lr, settings=run.settings,
                            progress=not args.no_progress, upsamplers_only=args.upsamplers_only,
                            top_only=args.top_only)
        if not is_main_process() or not result.finished:
            return export(run, result, config, {})
        checkpoint.round_trip_(result.model.cpu(), torch.float16)     # the card describes the fp16 file we ship
        metrics = prior_report(result.model, test, seed=args.seed)
        if args.gen_per_style:
            clf, uncoded = (style_classifier(test_audio, test_attrs, ds.classes, args.seed, coded_bitrates=b)
                            for b in (RULER_OPUS_BITRATES, ()))
            model = Jukebox(vqvae, result.model)
            metrics["generated"] = generation_report(model, clf, data.codes[2], test.codes[2], args.gen_per_style,
                                                     args.gen_seconds, args.seed, uncoded)
            val_audio, val_attrs, _ = load_songs("val", REFERENCE_SONGS, args.seconds, args.seed)
            metrics["reference"] = reference_report(model, clf, val_audio, val_attrs, args.gen_seconds, uncoded)
    info = card(run, result, ["synthworld"], metrics, stage=args.stage, vqvae=args.vqvae, init_from=args.init_from,
                decoders_only=args.decoders_only, upsamplers_only=args.upsamplers_only,
                **({"top_only": True} if args.top_only else {}),
                runs_before=runs_before(args.init_from) if args.init_from else [],
                eval={"data": "songs", "split": "test", "eval_size": n_test, "seconds": args.seconds,
                      "gen_per_style": args.gen_per_style, "gen_seconds": args.gen_seconds})
    return export(run, result, config, info, dtype=torch.float16)



def eval_cli(argv: Sequence[str]) -> dict:
    """``course-lib eval jukebox --checkpoint jukebox-songs``: the cards' numbers, recomputed, and generated songs."""
    p = eval_parser("jukebox", "jukebox-songs", ("songs",))
    p.add_argument("--per-style", type=nonnegative_int, default=None,
                   help="generated songs per style (default: the card's; 0: none)")
    p.add_argument("--seconds", type=positive_float, default=None, help="length of each generated song (the card's)")
    p.add_argument("--guidance", type=positive_float, default=None,
                   help="the top prior's classifier-free guidance on key and tempo (default: the checkpoint's)")
    args = p.parse_args(argv)
    info, ev, seed = eval_plan(args, f"{args.checkpoint}-priors")
    model = load_pretrained(args.checkpoint)
    if args.guidance is not None:
        model.priors.config = replace(model.priors.config, guidance=args.guidance)
    n_test = ev.get("eval_size", 64)
    seconds = ev.get("seconds", SECONDS)
    test_audio, test_attrs, ds = load_songs("test", n_test, seconds, seed)
    train_audio, train_attrs, _ = load_songs("train", info.get("settings", {}).get("train_size") or 256, seconds, seed)
    out = {"checkpoint": args.checkpoint, "vqvae": vqvae_report(model.vqvae, test_audio),
           "priors": prior_report(model.priors, encode_songs(model.vqvae, test_audio, test_attrs, ds.classes, seconds),
                                  seed=seed)}
    per_style = args.per_style if args.per_style is not None else ev.get("gen_per_style", GEN_PER_STYLE)
    if per_style:
        clf, uncoded = (style_classifier(test_audio, test_attrs, ds.classes, seed, coded_bitrates=b)
                        for b in (RULER_OPUS_BITRATES, ()))
        train_top, test_top = top_codes(model.vqvae, train_audio), top_codes(model.vqvae, test_audio)
        gen_seconds = args.seconds or ev.get("gen_seconds", GEN_SECONDS)
        out["generated"] = generation_report(model, clf, train_top, test_top, per_style, gen_seconds, seed, uncoded)
        val_audio, val_attrs, _ = load_songs("val", REFERENCE_SONGS, seconds, seed)
        out["reference"] = reference_report(model, clf, val_audio, val_attrs, gen_seconds, uncoded)
    return out


def generate_cli(argv: Sequence[str]) -> int:
    """``course-lib generate jukebox --style waltz --n 2 --seconds 4 --out songs/``: WAV files."""
    p = argparse.ArgumentParser(prog="course-lib generate jukebox")
    p.add_argument("--checkpoint", default="jukebox-songs")
    p.add_argument("--style", required=True)
    p.add_argument("--key", default=None, help='e.g. "A minor" (default: the model chooses)')
    p.add_argument("--tempo", type=positive_float, default=None, help="bpm (default: the model chooses)")
    p.add_argument("--n", type=positive_int, default=1)
    p.add_argument("--seconds", type=positive_float, default=4.0)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--out", default="jukebox-samples")
    args = p.parse_args(argv)
    model = load_pretrained(args.checkpoint)
    wav = model.generate(args.n, args.style, args.key, args.tempo, args.seconds, torch.Generator().manual_seed(args.seed))
    for i, w in enumerate(wav):
        save(Path(args.out) / f"jukebox_{args.style}_{args.seed}_{i:03d}.wav", w, model.sample_rate)
    print(f"wrote {args.n} songs of {args.seconds:g} s to {args.out}/")
    return 0


def bench(seconds: float = 1.0) -> dict:
    """Sampling speed per level (real-time factor on this CPU) of the shipped model, or an untrained small one."""
    try:
        model = load_pretrained()
    except checkpoint.CheckpointError:
        model = Jukebox(HierarchicalVQVAE(VQVAEConfig.preset("small")), JukeboxPriors(PriorConfig.preset("small")))
    style, g = model.styles[0], torch.Generator().manual_seed(0)
    ask = (style, "A minor", float(sum(STYLES[style].tempo) / 2))   # key and tempo: the top prior's guidance runs
    top = model.sample_top(1, *ask, seconds, generator=g)
    middle = model.upsample(1, top, style, generator=g)
    bottom = model.upsample(0, middle, style, generator=g)
    times = {"top": best_time(lambda: model.sample_top(1, *ask, seconds, generator=g), repeat=1),
             "middle": best_time(lambda: model.upsample(1, top, style, generator=g), repeat=1, warmup=0),
             "bottom": best_time(lambda: model.upsample(0, middle, style, generator=g), repeat=1, warmup=0),
             "decode": best_time(lambda: model.decode(bottom, 0), repeat=3)}
    out = {f"{k}_rtf": round(v / seconds, 3) for k, v in times.items()}
    out["total_rtf"] = round(sum(times.values()) / seconds, 3)
    out["threads"], out["top_guidance"] = torch.get_num_threads(), model.priors.config.guidance
    return out
