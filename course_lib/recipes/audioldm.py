"""``course-lib train|eval|generate audioldm``: three training stages on SynthWorld and the card's rulers.

    course-lib train audioldm --stage vae     --steps 1500 --threads 1
    course-lib train audioldm --stage vocoder --steps 2000 --threads 1
    course-lib train audioldm --stage unet    --steps 5000 --threads 1 \\
        --vae runs/audioldm-synthworld/vae/checkpoint --vocoder runs/audioldm-synthworld/vocoder/checkpoint
    course-lib eval audioldm --checkpoint audioldm-synthworld

The VAE and the vocoder learn from audio alone; the UNet from audio and the frozen CLAP's **audio**
embeddings (no captions). The unet stage writes the whole model as three checkpoints ``OUT-vae``, ``OUT-unet``, ``OUT-vocoder``
(``--out assets/checkpoints/audioldm-synthworld --force`` ships them).

Rulers (chosen before training, none used in training):

- VAE and vocoder: multi-scale mel distance (dB) to the test clips, through the vocoder and through
  Griffin-Lim from the same mel; wideband PESQ on SynthWorld's speech clips.
- text to audio: prompts from CLAP's *held-out* templates (never seen by CLAP, and the UNet saw no
  text at all), split in two: the guidance scale is chosen on the validation half, the test half is
  reported. An independent classifier trained on real *test* clips judges the class; a Fréchet
  distance in that classifier's embedding (not CLAP's) compares generated and real clips, beside the
  real-vs-real floor and noise bursts; the CLAP score (cosine of generated audio and prompt) is
  reported with its caveat: the same CLAP steered the sampler. The test accuracy is reported for each way
  of turning a prompt into a condition (``AudioLDM.condition``'s priors): the audio embeddings of training
  clips it retrieves (``BANK_SIZE`` of them stored in the UNet), its text embedding moved by the
  modality-gap shift (:func:`modality_gap_shift`), and its text embedding as it is.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from course_lib import checkpoint, gan_eval, vocoder as voc
from course_lib.audio import save
from course_lib.audioldm import (PARTS, PRESETS, PRIORS, AudioLDM, AudioLDMConfig, MelVAE, UNet, fit_unet, fit_vae,
                                 load_pretrained, measure_scale, save_pretrained)
from course_lib.clap import Clap, ClapConfig
from course_lib.clap import load_pretrained as load_clap
from course_lib.data import FAMILY_OF, SynthWorld, captions
from course_lib.metrics import frechet_distance, multiscale_mel_distance, pesq_wb
from course_lib.recipes.common import (best_time, card, eval_parser, eval_plan, export, nonnegative_int, plan_run,
                                       positive_float, positive_int, refuse_shipped_parts, runs_before, train_parser,
                                       warm_start)
from course_lib.train import is_main_process

__all__ = ["load_clips", "mels_of", "clap_embeddings", "modality_gap_shift", "reconstruction_report",
           "split_prompts", "text_to_audio_report", "generate_per_class", "classifier", "unet_config", "train_cli",
           "eval_cli", "generate_cli", "bench", "GUIDANCE_SCALES", "BANK_SIZE"]

SECONDS = 1.0                       # SynthWorld clips; the latent of one second is (8, 16, 25)
GUIDANCE_SCALES = (1.0, 2.5, 5.0, 7.5, 10.0)   # tried on the validation prompts; the best is used on the test prompts
GEN_STEPS = 50                      # DDIM steps for the card's clips
CLASSIFIER_STEPS = 400              # training steps of the independent classifier
BANK_SIZE = 4096                    # training clips' audio embeddings the UNet stores for prior="retrieval" (1 MB)


def load_clips(split: str, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``(N, 1, 16000)`` SynthWorld clips of one split at 16 kHz, their labels and the class names."""
    ds = SynthWorld(split, size=size, seed=seed, sample_rate=16_000, duration=SECONDS)
    batch = ds.examples(range(size))
    return batch.audio, batch.label, list(ds.classes)


@torch.no_grad()
def mels_of(audio: torch.Tensor, config: AudioLDMConfig) -> torch.Tensor:
    """Normalised log-mels ``(N, 1, 64, L)`` of clips ``(N, 1, T)``, in batches."""
    front = voc.LogMel(config.sample_rate, config.n_fft, config.hop_length, config.n_mels)
    return torch.cat([front(audio[i:i + 256]) for i in range(0, len(audio), 256)])


@torch.no_grad()
def clap_embeddings(clap, audio: torch.Tensor) -> torch.Tensor:
    """CLAP **audio** embeddings ``(N, D)``: the UNet's only condition in training."""
    return torch.cat([clap.embed_audio(audio[i:i + 256]) for i in range(0, len(audio), 256)])


@torch.no_grad()
def modality_gap_shift(clap, audio_embeddings: torch.Tensor, classes: Sequence[str]) -> torch.Tensor:
    """``(D,)`` that carries text embeddings towards audio ones across CLAP's modality gap (Liang et al. 2022):
    the centre of the training clips' audio embeddings minus the centre of the text embeddings of CLAP's
    *training* wordings of their classes. This one vector is all the UNet's side takes from captions; the
    test and validation prompts use held-out wordings."""
    text = torch.cat([clap.embed_text(captions.prompts(c, "train")) for c in classes])
    return audio_embeddings.mean(0) - text.mean(0)


def _speech(labels: torch.Tensor, classes: Sequence[str]) -> torch.Tensor:
    """Which clips are SynthWorld speech (syllables): PESQ is only defined for speech."""
    speech = [i for i, c in enumerate(classes) if FAMILY_OF.get(c) == "speech"]
    return torch.isin(labels, torch.tensor(speech or [-1]))


@torch.no_grad()
def reconstruction_report(audio: torch.Tensor, labels: torch.Tensor, classes: Sequence[str],
                          vocoder: voc.Vocoder | None = None, vae: MelVAE | None = None, seed: int = 0) -> dict:
    """Mel distance (dB) and speech PESQ of test clips resynthesised from their mel (or the VAE's).

    Each path is measured twice, through ``vocoder`` (when given) and through Griffin-Lim
    (32 iterations), so the vocoder's gain and the VAE's loss read off one table.
    """
    cfg = vae.config if vae is not None else AudioLDMConfig()
    mel = mels_of(audio, cfg)
    out: dict = {"clips": len(audio)}
    sources = {"mel": mel}
    if vae is not None:
        sources["vae"] = torch.cat([vae.decode(vae.encode(mel[i:i + 64]).mean) for i in range(0, len(mel), 64)])
        out["vae_l1"] = round(float((sources["vae"] - mel).abs().mean()), 4)   # normalised log-mel units
    speech = _speech(labels, classes)
    g = torch.Generator().manual_seed(seed)
    for name, m in sources.items():
        paths = {"griffin_lim": lambda m: voc.griffin_lim(m, generator=g)}
        if vocoder is not None:
            paths["vocoder"] = lambda m: torch.cat([vocoder(m[i:i + 64]) for i in range(0, len(m), 64)])
        for path, fn in paths.items():
            wav = fn(m)[..., :audio.shape[-1]]
            key = f"{name}->{path}"
            out[key] = {"mel_distance_db": round(float(multiscale_mel_distance(wav, audio).mean()), 3)}
            if speech.any():
                out[key]["speech_pesq_wb"] = round(float(pesq_wb(wav[speech], audio[speech], 16_000).mean()), 3)
    out["speech_clips"] = int(speech.sum())
    return out


def split_prompts(classes: Sequence[str]) -> tuple[list[list[str]], list[list[str]]]:
    """Held-out prompts per class, alternately to validation (choose the guidance) and test (report)."""
    every = [captions.prompts(c, "heldout") for c in classes]
    return [p[0::2] for p in every], [p[1::2] or p[:1] for p in every]


@torch.no_grad()
def generate_per_class(model: AudioLDM, prompts: list[list[str]], per_class: int, guidance: float, steps: int,
                       seed: int, decoder: str = "vocoder",
                       prior: str | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``per_class`` clips per class, cycling through the class's prompts; labels and prompts beside."""
    g = torch.Generator().manual_seed(seed)
    texts = [ps[j % len(ps)] for ps in prompts for j in range(per_class)]
    labels = torch.arange(len(prompts)).repeat_interleave(per_class)
    wav = torch.cat([model.generate(texts[i:i + 34], SECONDS, steps, guidance, generator=g, decoder=decoder,
                                    prior=prior) for i in range(0, len(texts), 34)])
    return wav, labels, texts


@torch.no_grad()
def text_to_audio_report(model: AudioLDM, clf: gan_eval.AudioClassifier, test_audio: torch.Tensor,
                         real_audio: torch.Tensor, classes: Sequence[str], per_class: int = 2, steps: int = GEN_STEPS,
                         seed: int = 0, guidance_scales: Sequence[float] = GUIDANCE_SCALES) -> dict:
    """Class accuracy of generated clips (guidance chosen on validation prompts), Fréchet distance, CLAP score."""
    val_prompts, test_prompts = split_prompts(classes)
    val = {}
    for s in guidance_scales:
        wav, labels, _ = generate_per_class(model, val_prompts, per_class, s, steps, seed + 1)
        val[str(s)] = round(float((clf.predict(wav).logits.argmax(-1) == labels).float().mean()), 4)
    best = float(max(val, key=val.get))
    wav, labels, texts = generate_per_class(model, test_prompts, per_class, best, steps, seed + 2)
    pred = clf.predict(wav)
    n = len(wav)
    real, other = clf.predict(test_audio[:n]).embedding, clf.predict(real_audio[:n]).embedding
    noise = clf.predict(gan_eval.noise_bursts(n, wav.shape[-1], generator=torch.Generator().manual_seed(seed)))
    clap_score = (model.clap.embed_audio(wav) * model.clap.embed_text(texts)).sum(-1)
    right = (pred.logits.argmax(-1) == labels).float()
    default = "retrieval" if len(model.unet.audio_bank) else "shift"
    others = {p: generate_per_class(model, test_prompts, per_class, best, steps, seed + 2, prior=p)[0]
              for p in PRIORS if p != default and (p != "retrieval" or len(model.unet.audio_bank))}
    return {"per_class": per_class, "steps": steps, "validation_accuracy_by_guidance": val, "guidance_scale": best,
            "test_accuracy": round(float(right.mean()), 4),
            "prior": default, "test_accuracy_by_prior": {default: round(float(right.mean()), 4), **{
                p: round(float((clf.predict(w).logits.argmax(-1) == labels).float().mean()), 4)
                for p, w in others.items()}},
            "classes_at_least_half_right": int((right.view(len(classes), -1).mean(1) >= 0.5).sum()),
            "frechet_generated_vs_test": round(frechet_distance(pred.embedding, real), 3),
            "frechet_real_vs_test": round(frechet_distance(other, real), 3),
            "frechet_noise_vs_test": round(frechet_distance(noise.embedding, real), 3),
            "clap_score": round(float(clap_score.mean()), 4),
            "clap_score_caveat": "the same CLAP steered the sampler: a high score is partly circular"}


def classifier(audio: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], seed: int = 0,
               steps: int | None = None) -> gan_eval.AudioClassifier:
    """The independent ruler: a log-mel conv net trained on real *test* clips only (never on generated audio)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)                                       # its initial weights, as on the card
        clf, _ = gan_eval.train_classifier(audio, labels, list(classes), 16_000, steps=steps or CLASSIFIER_STEPS,
                                           batch_size=64, generator=torch.Generator().manual_seed(seed),
                                           noise_snr_db=None)
    return clf


def unet_config(preset: AudioLDMConfig, vae: AudioLDMConfig) -> AudioLDMConfig:
    """The UNet's sizes (``unet_*``) from the run's preset, everything else (front end, latent, CLAP) from the
    VAE it denoises for: ``--preset medium`` trains a wider UNet on the shipped small VAE."""
    return dataclasses.replace(vae, **{f.name: getattr(preset, f.name) for f in dataclasses.fields(preset)
                                       if f.name.startswith("unet_")})


def _train_parser() -> argparse.ArgumentParser:
    p = train_parser("audioldm", PRESETS, ("synthworld",))
    p.add_argument("--stage", choices=("vae", "vocoder", "unet"), required=True,
                   help="vae and vocoder first (in any order), then unet")
    p.add_argument("--vae", default=None, help="stage unet: the VAE folder the vae stage exported")
    p.add_argument("--vocoder", default=None, help="stage unet: the vocoder folder the vocoder stage exported")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--lr", type=positive_float, default=None, help="default: 5e-4 vae, 2e-4 vocoder and unet")
    p.add_argument("--adversarial-start", type=nonnegative_int, default=None,
                   help="stage vocoder: the step at which HiFi-GAN's discriminators join (default: 3/4 of --steps; "
                        "never for the istft vocoder)")
    p.add_argument("--vocoder-preset", choices=sorted(voc.PRESETS), default=None,
                   help="stage vocoder: a course_lib.vocoder preset (default: the AudioLDM preset's, e.g. small = "
                        "HiFi-GAN; istft = Vocos)")
    p.add_argument("--init-from", default=None,
                   help="stage vocoder: start from this vocoder of the same preset (a folder or name), e.g. to let "
                        "the discriminators join a vocoder trained without them (--adversarial-start 0); stage "
                        "unet: start from the UNet of this model (e.g. audioldm-synthworld) and train it on")
    p.add_argument("--ema-decay", type=float, default=0.999,
                   help="stage unet: decay of the moving average of the weights that is exported (0: none)")
    p.add_argument("--per-class", type=nonnegative_int, default=2, help="stage unet: generated clips per class "
                                                                         "and prompt split on the card (0: none)")
    p.add_argument("--gen-steps", type=positive_int, default=GEN_STEPS, help="stage unet: DDIM steps of those clips")
    return p


def train_cli(argv: Sequence[str]) -> int:
    """``course-lib train audioldm --stage vae|vocoder|unet ...``."""
    args = _train_parser().parse_args(argv)
    if args.stage == "unet" and (args.vae is None or args.vocoder is None):
        raise SystemExit("--stage unet needs --vae and --vocoder: the folders the vae and vocoder stages exported.")
    if args.init_from and args.stage == "vae":
        raise SystemExit("--init-from starts a vocoder or a UNet from a trained one: use it with --stage vocoder "
                         "or --stage unet.")
    if not 0.0 <= args.ema_decay < 1.0:
        raise SystemExit(f"--ema-decay {args.ema_decay} must lie in [0, 1), e.g. 0.999 (0: no moving average).")
    lr = args.lr or (5e-4 if args.stage == "vae" else 2e-4)
    if args.stage == "unet":
        refuse_shipped_parts(args.out, PARTS, args.force)
    args.run_dir = args.run_dir or f"runs/audioldm-synthworld/{args.stage}"
    run = plan_run(args, "audioldm", argv, stage=args.stage, lr=lr, batch_size=args.batch_size, vae=args.vae,
                   vocoder=args.vocoder, adversarial_start=args.adversarial_start, init_from=args.init_from,
                   **({"vocoder_preset": args.vocoder_preset} if args.vocoder_preset else {}),
                   **({"ema_decay": args.ema_decay} if args.stage == "unet" else {}))
    config = AudioLDMConfig.preset(run.preset)
    n_train, n_test = args.train_size or 4096, args.eval_size or 256
    audio, _, classes = load_clips("train", n_train, args.seed)
    test_audio, test_labels, _ = load_clips("test", n_test, args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)                                          # weight initialisation
    common = dict(steps=run.steps, time_budget_s=args.time_budget, generator=gen, checkpoint_dir=run.run_dir,
                  batch_size=args.batch_size, lr=lr, settings=run.settings, progress=not args.no_progress)
    eval_info = {"data": "synthworld", "split": "test", "eval_size": n_test, "per_class": args.per_class,
                 "gen_steps": args.gen_steps}
    if args.stage == "vae":
        mels = mels_of(audio, config)
        result = fit_vae(MelVAE(config).to(run.device), mels, **common)
        if not is_main_process() or not result.finished:
            return export(run, result, config, {})
        vae = result.model.cpu()
        measure_scale(vae, mels, generator=torch.Generator().manual_seed(args.seed))
        checkpoint.round_trip_(vae, torch.float16)                      # the card describes the fp16 file we ship
        metrics = reconstruction_report(test_audio, test_labels, classes, vae=vae, seed=args.seed)
        metrics["scale_factor"] = round(float(vae.scale_factor), 4)
        return export(run, result, config, card(run, result, ["synthworld"], metrics, stage="vae", eval=eval_info),
                      dtype=torch.float16)
    if args.stage == "vocoder":
        vcfg = voc.VocoderConfig.preset(args.vocoder_preset or config.vocoder)
        default_start = run.steps if vcfg.generator == "istft" else 3 * run.steps // 4
        start = args.adversarial_start if args.adversarial_start is not None else default_start
        vocoder = voc.Vocoder(vcfg)
        if args.init_from:
            warm_start(vocoder, voc.load_pretrained(args.init_from), args.init_from)
        result = voc.fit_vocoder(vocoder.to(run.device), list(audio), adversarial_start=start,
                                 adversarial=start < run.steps, **common)
        if not is_main_process() or not result.finished:
            return export(run, result, vcfg, {})
        checkpoint.round_trip_(result.model.cpu(), torch.float16)
        metrics = reconstruction_report(test_audio, test_labels, classes, vocoder=result.model, seed=args.seed)
        info = card(run, result, ["synthworld"], metrics, stage="vocoder", adversarial_start=start,
                    init_from=args.init_from, runs_before=runs_before(args.init_from) if args.init_from else [],
                    eval=eval_info)
        return export(run, result, vcfg, info, dtype=torch.float16)
    vae = checkpoint.load_pretrained(args.vae, MelVAE, AudioLDMConfig)
    clap = load_clap(config.clap)
    unet = UNet(unet_config(config, vae.config))
    if args.init_from:
        start = checkpoint.load_pretrained(f"{args.init_from}-unet", UNet, AudioLDMConfig)
        start.audio_bank = start.audio_bank[:0]                           # refilled from this run's clips at export
        warm_start(unet, start, args.init_from)
    emb = clap_embeddings(clap, audio)
    result = fit_unet(vae, unet.to(run.device), mels_of(audio, vae.config), emb, ema_decay=args.ema_decay, **common)
    if not is_main_process() or not result.finished:
        return export(run, result, unet.config, {})
    result.model.text_shift.copy_(modality_gap_shift(clap, emb, classes))
    result.model.audio_bank = emb[:BANK_SIZE].clone()                     # for prior="retrieval"
    checkpoint.round_trip_(result.model.cpu(), torch.float16)
    model = AudioLDM(unet.config, clap, vae, result.model, voc.load_pretrained(args.vocoder)).eval()
    metrics = {}
    if args.per_class:
        clf = classifier(test_audio, test_labels, classes, args.seed)
        real, _, _ = load_clips("val", n_test, args.seed)
        metrics = text_to_audio_report(model, clf, test_audio, real, classes, args.per_class, args.gen_steps,
                                       seed=args.seed)
    info = card(run, result, ["synthworld"], metrics, stage="unet", vae=args.vae, vocoder=args.vocoder,
                clap=config.clap, eval=eval_info, init_from=args.init_from,
                runs_before=runs_before(f"{args.init_from}-unet") if args.init_from else [])
    save_pretrained(model, run.out, cards={"unet": info, "vae": checkpoint.read_card(args.vae),
                                           "vocoder": checkpoint.read_card(args.vocoder)}, dtype=torch.float16)
    print(f"saved {', '.join(f'{run.out}-{p}' for p in PARTS)}", file=sys.stderr)
    return 0


def eval_cli(argv: Sequence[str]) -> dict:
    """``course-lib eval audioldm [--checkpoint audioldm-synthworld]``: the cards' numbers, recomputed."""
    p = eval_parser("audioldm", "audioldm-synthworld", ("synthworld",))
    p.add_argument("--per-class", type=nonnegative_int, default=None, help="default: the card's (0: skip generation)")
    args = p.parse_args(argv)
    info, ev, seed = eval_plan(args, f"{args.checkpoint}-unet")
    model = load_pretrained(args.checkpoint)
    n_test = ev.get("eval_size", 256)
    test_audio, test_labels, classes = load_clips("test", n_test, seed)
    out = {"checkpoint": args.checkpoint,
           "vae": reconstruction_report(test_audio, test_labels, classes, vae=model.vae, seed=seed),
           "vocoder": reconstruction_report(test_audio, test_labels, classes, vocoder=model.vocoder, seed=seed)}
    per_class = args.per_class if args.per_class is not None else ev.get("per_class", 2)
    if per_class:
        clf = classifier(test_audio, test_labels, classes, seed)
        real, _, _ = load_clips("val", n_test, seed)
        out["unet"] = text_to_audio_report(model, clf, test_audio, real, classes, per_class,
                                           ev.get("gen_steps", GEN_STEPS), seed=seed)
    return out


def generate_cli(argv: Sequence[str]) -> int:
    """``course-lib generate audioldm --prompt "a dog barks" --n 2 --out clips/``: WAV files."""
    p = argparse.ArgumentParser(prog="course-lib generate audioldm")
    p.add_argument("--checkpoint", default="audioldm-synthworld")
    p.add_argument("--prompt", required=True)
    p.add_argument("--n", type=positive_int, default=1)
    p.add_argument("--seconds", type=positive_float, default=SECONDS)
    p.add_argument("--steps", type=positive_int, default=GEN_STEPS)
    p.add_argument("--guidance", type=float, default=2.5)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--out", default="audioldm-samples")
    args = p.parse_args(argv)
    model = load_pretrained(args.checkpoint)
    wav = model.generate([args.prompt] * args.n, args.seconds, args.steps, args.guidance,
                         generator=torch.Generator().manual_seed(args.seed))
    for i, w in enumerate(wav):
        save(Path(args.out) / f"audioldm_{args.seed}_{i:03d}.wav", w, model.sample_rate)
    print(f"wrote {args.n} clips of {args.seconds:g} s to {args.out}/")
    return 0


def bench(seconds: float = 1.0, steps: int = 50) -> dict:
    """Cost of each part of generating ``seconds`` of audio: the UNet's DDIM steps, the VAE decoder, the vocoder."""
    try:
        model = load_pretrained("audioldm-synthworld")
    except checkpoint.CheckpointError:
        model = None
    if model is None:
        clap = Clap(dataclasses.replace(ClapConfig.preset("small"), text_towers=("scratch",)))   # untrained, offline
        model = AudioLDM(AudioLDMConfig.preset("small"), clap)
    model.eval()
    cfg, g = model.config, torch.Generator().manual_seed(0)
    frames = round(seconds * cfg.sample_rate / cfg.hop_length / cfg.downsample)
    z = torch.randn(1, cfg.latent_dim, cfg.n_mels // cfg.downsample, frames, generator=g)
    cond = model.unet.uncond[None]
    t = torch.tensor([500])
    with torch.inference_mode():
        unet = best_time(lambda: model.unet(torch.cat([z, z]), t.repeat(2), torch.cat([cond, cond])), repeat=3)
        mel = model.vae.decode(z / model.vae.scale_factor)
        vae = best_time(lambda: model.vae.decode(z / model.vae.scale_factor), repeat=3)
        vocoder = best_time(lambda: model.vocoder(mel), repeat=3)
        total = best_time(lambda: model.generate(["a kick drum"], seconds, steps, generator=g), repeat=3)
    return {"seconds": seconds, "ddim_steps": steps, "unet_step_ms_guided": round(1000 * unet, 2),
            "unet_rtf": round(steps * unet / seconds, 3), "vae_decode_rtf": round(vae / seconds, 4),
            "vocoder_rtf": round(vocoder / seconds, 4), "total_rtf": round(total / seconds, 3),
            "threads": torch.get_num_threads()}
