"""The rulers of AudioLM's notebook and cards, none of them used in training.

- :func:`stage_report`: held-out bits per token of one stage beside the unigram and uniform baselines.
- :func:`probe_report`: what each kind of token keeps. Linear probes on token histograms predict the
  *content* (which digit, tested on speakers the probe never saw) and the *speaker* (tested on digits it
  never saw), for the semantic tokens, a k-means of MFCCs with the same vocabulary (the baseline) and the
  codec's coarse and fine codes, beside chance.
- :func:`speaker_test`: AudioLM's speaker test (Borsos et al. 2023, Table III): a speaker classifier on mel
  statistics, trained on other real utterances of the prompts' speakers (as recorded and through Opus), names
  the speaker of each continuation with and without the acoustic prompt; :func:`prompt_use` asks stage 2 the
  same question without sampling: how many bits per token the prompt's own voice saves.
- :func:`intelligibility_report`: a digit classifier on time-normalised log-mel spectrograms, trained on real
  digits of other voices, recognises digits resynthesised from their ground-truth semantic tokens in another
  speaker's voice, beside the real clips and the codec's own reconstruction.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from course_lib import codec as codec_lib
from course_lib import hubert as hubert_lib
from course_lib.audio import resample
from course_lib.baselines import RULER_OPUS_BITRATES, opus
from course_lib.audiolm import (IGNORE_INDEX, AudioLM, AudioTokens, CoarseStage, FineStage, SemanticStage,
                               coarse_quantizers, dedup, semantic_span)
from course_lib.data import voices
from course_lib.data.fsdd import DIGITS, find_fsdd, fsdd
from course_lib.recipes import codec as codec_recipe
from course_lib.spectral import log_mel_spectrogram

__all__ = ["SR", "DIGITS", "ENGLISH", "stage_report", "ProbeSet", "spoken_digits", "fsdd_digits", "LinearClassifier",
           "fit_linear", "linear_probe", "probe_report", "speaker_features", "SpeakerRuler", "speaker_ruler",
           "roster", "language_floor", "speaker_test", "prompt_use_bits", "prompt_use", "RULER_UTTERANCES",
           "digit_features", "DigitRuler", "digit_ruler", "intelligibility_report"]

SR = 16_000
ENGLISH = ("en-us", "en", "en-gb-scotland", "en-029")


# ----------------------------------------------------------------------------- stage ruler
def _entropy_bits(ids: Tensor, vocab: int) -> float:
    p = torch.bincount(ids.flatten(), minlength=vocab).float() + 1            # add-one, as jukebox's prior_report
    p = p / p.sum()
    return float(-(p * p.log2()).sum())


@torch.no_grad()
def stage_report(stage: SemanticStage | CoarseStage | FineStage, data: list[AudioTokens], batches: int = 8,
                 batch_size: int = 16, seed: int = 0) -> dict:
    """Held-out bits per token of one stage (random windows, ``seed``) beside the unigram and uniform baselines."""
    g, was = torch.Generator().manual_seed(seed), stage.training
    stage.eval()
    device = next(stage.parameters()).device
    losses = [stage.losses(*(x.to(device) for x in stage.batch(data, batch_size, g))) for _ in range(batches)]
    stage.train(was)
    K = stage.codebook_size
    if isinstance(stage, SemanticStage):
        unigram = _entropy_bits(torch.cat([dedup(t.semantic[0]) for t in data]), K)
    else:
        codes = torch.cat([t.coarse[0] if isinstance(stage, CoarseStage) else t.fine[0] for t in data], -1)
        unigram = float(np.mean([_entropy_bits(level, K) for level in codes]))     # per level, averaged
    return {"bits_per_token": round(float(torch.stack([x.total for x in losses]).mean()) / math.log(2), 3),
            "accuracy": round(float(torch.stack([x.accuracy for x in losses]).mean()), 4),
            "unigram_bits_per_token": round(unigram, 3), "uniform_bits_per_token": round(math.log2(K), 3),
            "clips": len(data)}


# ----------------------------------------------------------------------------- probes: what each token keeps
class ProbeSet(NamedTuple):
    name: str                    # e.g. "fsdd-digits"
    clips: list[Tensor]          # (1, T_i)
    content: Tensor              # (N,) digit
    speaker: Tensor              # (N,) index into speakers
    speakers: list[str]


def _band_limit(wav: Tensor, hz: float = codec_recipe.FSDD_BAND_HZ) -> Tensor:
    low = int(2 * hz)
    return resample(resample(wav, SR, low), low, SR)[..., :wav.shape[-1]]


def spoken_digits(n_speakers: int = 8, takes: int = 1, which: str = "heldout") -> ProbeSet:
    """English digits said by ``n_speakers`` espeak-ng voices (spread over the roster), 4 kHz band;
    take ``t`` is ``4 t`` words per minute faster than the speaker's own rate."""
    roster = voices.list_speakers(which, ENGLISH)
    picked = [roster[i * len(roster) // n_speakers] for i in range(min(n_speakers, len(roster)))]
    clips, content, speaker = [], [], []
    for s, spk in enumerate(picked):
        for d, word in enumerate(DIGITS):
            for t in range(takes):
                wav = torch.from_numpy(voices.synthesize(word, spk.voice, spk.rate_wpm + 4 * t, spk.pitch,
                                                         spk.pitch_range))[None]
                clips.append(0.5 * _band_limit(wav))
                content.append(d), speaker.append(s)
    return ProbeSet(f"voices-digits-{which}", clips, torch.tensor(content), torch.tensor(speaker),
                    [s.name for s in picked])


def fsdd_digits(takes: int = 5) -> ProbeSet | None:
    """FSDD's test takes (0..takes-1) of every speaker found, or None without FSDD."""
    if find_fsdd() is None:
        return None
    ds = fsdd("all")
    keep = [i for i, f in enumerate(ds.files) if int(f.stem.split("_")[2]) < takes]
    examples = [ds[i] for i in keep]
    speakers = sorted({ex.attributes["speaker"] for ex in examples})
    return ProbeSet("fsdd-digits", [ex.audio for ex in examples], torch.tensor([ex.label for ex in examples]),
                    torch.tensor([speakers.index(ex.attributes["speaker"]) for ex in examples]), speakers)


class LinearClassifier(NamedTuple):
    """Multinomial logistic regression on z-scored features: ``predict(x (N, D)) -> (N,)``."""
    mean: Tensor        # (D,)
    std: Tensor         # (D,)
    weight: Tensor      # (D, classes)
    bias: Tensor        # (classes,)

    def predict(self, x: Tensor) -> Tensor:
        return (((x - self.mean) / self.std) @ self.weight + self.bias).argmax(-1)


def fit_linear(x: Tensor, y: Tensor, num_classes: int, weight_decay: float = 1e-2,
               steps: int = 100) -> LinearClassifier:
    """Full-batch L-BFGS from zeros (deterministic) with an L2 penalty, on features z-scored by ``x``'s statistics."""
    mean, std = x.mean(0), (x.std(0) if len(x) > 1 else torch.ones(x.shape[1])).clamp_min(1e-6)
    z = (x - mean) / std
    w = torch.zeros(z.shape[1], num_classes, requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z @ w + b, y) + weight_decay * w.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return LinearClassifier(mean, std, w.detach(), b.detach())


def linear_probe(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, num_classes: int) -> float:
    """Test accuracy of :func:`fit_linear` trained on ``(x_train, y_train)``."""
    return float((fit_linear(x_train, y_train, num_classes).predict(x_test) == y_test).float().mean())


def _histogram(ids: Tensor, vocab: int) -> Tensor:
    """(levels, N) ids of one clip -> (levels * vocab,) relative frequencies per level."""
    return torch.cat([torch.bincount(level, minlength=vocab).float() / max(1, level.numel()) for level in ids])


def _mfcc_kmeans(clips: Sequence[Tensor], k: int, seed: int) -> Callable[[Tensor], Tensor]:
    """The baseline tokenizer: 25 Hz MFCCs (+ deltas) in ``k`` clusters, fitted on ``clips`` without labels."""
    feats = [hubert_lib.pool_pairs(hubert_lib.mfcc_features(c[None]))[0] for c in clips]
    km = hubert_lib.fit_kmeans(torch.cat(feats), k, torch.Generator().manual_seed(seed))
    return lambda wav: km.predict(hubert_lib.pool_pairs(hubert_lib.mfcc_features(wav[None])))


@torch.no_grad()
def probe_report(probe: ProbeSet, hubert: hubert_lib.HuBERT, codec: codec_lib.Codec, seed: int = 0) -> dict:
    """Content and speaker accuracy of linear probes on token histograms, per tokenizer, beside chance.

    Content probes train on the even-numbered speakers and test on the others; speaker probes train
    on the even digits and test on the odd ones: each must generalise to what it never saw.
    """
    hubert.eval(), codec.eval()
    q, K, Ks = coarse_quantizers(codec.num_quantizers), codec.config.codebook_size, hubert.quantizer.num_clusters
    mfcc = _mfcc_kmeans(probe.clips, Ks, seed)
    clips = [c[..., : max(640, c.shape[-1] // 640 * 640)] for c in probe.clips]
    tokenizers = {"semantic": (lambda w: hubert.semantic_tokens(w[None]), Ks),
                  "mfcc_kmeans_baseline": (mfcc, Ks),
                  "acoustic_coarse": (lambda w: codec.encode(w[None])[0, :q], K),
                  "acoustic_fine": (lambda w: codec.encode(w[None])[0, q:], K)}
    by_speaker = probe.speaker % 2 == 0
    by_digit = probe.content % 2 == 0
    out = {"clips": len(clips), "speakers": probe.speakers,
           "chance": {"content": 0.1, "speaker": round(1 / len(probe.speakers), 4)}}
    for name, (fn, vocab) in tokenizers.items():
        x = torch.stack([_histogram(fn(c), vocab) for c in clips])       # (N, levels * vocab)
        content = linear_probe(x[by_speaker], probe.content[by_speaker], x[~by_speaker], probe.content[~by_speaker], 10)
        speaker = linear_probe(x[by_digit], probe.speaker[by_digit], x[~by_digit], probe.speaker[~by_digit],
                               len(probe.speakers))
        out[name] = {"content_accuracy": round(content, 4), "speaker_accuracy": round(speaker, 4)}
    return out


# ----------------------------------------------------------------------------- the speaker test
def _log_mel(clip: Tensor) -> Tensor:
    """(F=40, L) log-mel, 0-4 kHz, 10 ms hop: the band every clip of this course's speech shares."""
    return log_mel_spectrogram(clip.reshape(1, -1).float(), SR, 512, 160, 40, f_max=4000.0)[0]


def _voiced(m: Tensor) -> Tensor:
    """(F, L) log-mel -> (L,) bool: the frames within 40 dB of the loudest."""
    level = m.mean(0)
    return level >= level.max() - math.log(100.0)


def speaker_features(clips: Sequence[Tensor]) -> Tensor:
    """(N, 80): mean and std of 40 log-mel bands (0-4 kHz, 10 ms hop) over the frames within 40 dB of the loudest."""
    rows = []
    for c in clips:
        m = _log_mel(c)                                                                          # (F, L)
        keep = m[:, _voiced(m)]
        rows.append(torch.cat([keep.mean(1), keep.std(1) if keep.shape[1] > 1 else torch.zeros(40)]))
    return torch.stack(rows)


class SpeakerRuler(NamedTuple):
    """A speaker classifier on :func:`speaker_features`, never trained on generated audio."""
    classifier: LinearClassifier
    speakers: list[str]

    def predict(self, clips: Sequence[Tensor]) -> Tensor:
        return self.classifier.predict(speaker_features(clips))


CODED_BITRATES = RULER_OPUS_BITRATES   # Opus bitrates (bit/s) the speaker test's ruler also hears its voices at
RULER_UTTERANCES = 32                  # "val" utterances per speaker the speaker test's ruler learns from


def speaker_ruler(clips: Sequence[Tensor], speakers: Sequence[str],
                  coded_bitrates: Sequence[float] = ()) -> SpeakerRuler:
    """Fit the ruler on real clips (1, T) labelled by speaker name, and on the same clips coded and decoded by
    Opus at each of ``coded_bitrates``: a voice must be named through a codec too (a continuation always is
    coded), and Opus is no part of any model it judges."""
    coded = [opus(c.reshape(1, 1, -1), SR, b).audio.reshape(1, -1) for b in coded_bitrates for c in clips]
    names = sorted(set(speakers))
    y = torch.tensor([names.index(s) for s in speakers] * (1 + len(coded_bitrates)))
    return SpeakerRuler(fit_linear(speaker_features([*clips, *coded]), y, len(names)), names)


def roster(which: str, n: int) -> list[str]:
    """The speaker test's ``n`` speakers ("language+variant" names), spread over the ``which`` roster."""
    speakers = voices.list_speakers(which)
    return [speakers[i * len(speakers) // n].name for i in range(min(n, len(speakers)))]


def language_floor(speakers: Sequence[str]) -> float:
    """The speaker test's score if a continuation kept only its prompt's language and guessed among the
    roster's speakers of that language (English dialects, :data:`ENGLISH`, as one): the mean over ``speakers``
    of 1 / (speakers sharing its language). Stage 1 continues the prompt's words in their language, so with
    several languages on a roster this, not 1 / len(speakers), is the floor of the test without the acoustic
    prompt (AudioLM's 3.2 % is on one language)."""
    if not speakers or any("+" not in s for s in speakers):
        raise ValueError(f"speakers must be 'language+variant' names such as 'en-us+adam' (see roster()), "
                         f"got {list(speakers)!r}.")
    lang = ["en" if s.split("+")[0] in ENGLISH else s.split("+")[0] for s in speakers]
    return sum(1 / lang.count(x) for x in lang) / len(lang)


@torch.no_grad()
def speaker_test(model: AudioLM, which: str = "heldout", n_speakers: int = 10, prompts_per_speaker: int = 2,
                 ruler_utterances: int = RULER_UTTERANCES, seed: int = 0,
                 coded_bitrates: Sequence[float] = CODED_BITRATES) -> dict:
    """AudioLM's speaker test: does a continuation keep its prompt's speaker?

    ``n_speakers`` espeak-ng speakers of the ``which`` roster ("train": seen in training, "heldout": never);
    the ruler learns them from ``ruler_utterances`` "val" utterances each, as recorded and through Opus at
    ``coded_bitrates`` (trained on uncoded speech alone it named the speaker of 30% of Opus-6-kbps-coded
    held-out sentences, against 100% uncoded: a ruler that fails on any codec cannot judge acoustic tokens).
    32 utterances, not fewer: on real second halves of 10 x 10 prompts (seed 1) the ruler named the speaker
    0.89 / 0.92 / 0.97 / 0.98 of the time (seen voices) and 0.88 / 0.90 / 0.91 / 0.93 (unseen) after 4 / 8 / 16 /
    32 utterances per speaker, and a ruler that misses real speech cannot certify a continuation;
    the prompts are the first half of the coarse window of "test" utterances, continued by the other half, with
    and without the acoustic prompt; the real rest of each utterance is the ceiling, and the same rest coded and
    decoded by the model's codec is the ceiling its acoustic tokens allow. ``real_coarse_generated_fine`` keeps the
    rest's real coarse codes and lets stage 3 draw its fine codes (from its own generator, so the other figures
    do not move): the speaker that stage 3 alone keeps, which tells a voice lost in stage 2 from one lost in 3.
    """
    names = roster(which, n_speakers)
    r_clips, r_ids = codec_recipe.voices_clips("val", names, ruler_utterances * len(names), SR, seed)
    ruler = speaker_ruler(r_clips, [i.rsplit(":", 1)[1] for i in r_ids], coded_bitrates)
    cfg, hop = model.config, model.config.hop_length * model.config.frames_per_semantic    # samples per token
    half = cfg.coarse_frames // cfg.frames_per_semantic // 2                                 # tokens
    p_len, new_len = half * hop, half * hop
    clips, ids = codec_recipe.voices_clips("test", names, prompts_per_speaker * len(names), SR, seed)
    truth = torch.tensor([ruler.speakers.index(i.rsplit(":", 1)[1]) for i in ids])
    g, g_fine = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    nc, p_frames = cfg.num_coarse, p_len // cfg.hop_length
    got: dict[str, list[Tensor]] = {"real_continuation": [], "real_continuation_through_codec": [],
                                    "real_coarse_generated_fine": [],
                                    "with_acoustic_prompt": [], "without_acoustic_prompt": []}
    for c in clips:
        c = F.pad(c, (0, max(0, p_len + new_len - c.shape[-1])))
        prompt = c[None, :, :p_len]
        got["real_continuation"].append(c[:, p_len:p_len + new_len])
        codes = model.codec.encode(c[None, :, :p_len + new_len])
        got["real_continuation_through_codec"].append(model.codec.decode(codes)[0, :, p_len:p_len + new_len])
        fine = model.fine.sample(codes[:, :nc], codes[:, nc:, :p_frames], generator=g_fine)
        got["real_coarse_generated_fine"].append(model.decode(codes[:, :nc], fine)[0, :, p_len:p_len + new_len])
        for key, acoustic in (("with_acoustic_prompt", True), ("without_acoustic_prompt", False)):
            wav = model.continue_(prompt, (p_len + new_len) / SR, g, acoustic_prompt=acoustic)
            got[key].append(wav[0, :, p_len:])
    out = {"speakers": len(names), "prompts": len(clips), "prompt_seconds": p_len / SR,
           "continuation_seconds": new_len / SR, "chance": round(1 / len(names), 4),
           "ruler_accuracy_on_prompts": round(float((ruler.predict([c[:, :p_len] for c in clips]) == truth)
                                                    .float().mean()), 4)}
    for key, wavs in got.items():
        out[key] = round(float((ruler.predict(wavs) == truth).float().mean()), 4)
    return out


def prompt_use_bits(stage: CoarseStage, tokens: Sequence[AudioTokens], speakers: Sequence[str]) -> dict:
    """Does stage 2 hear the voice of its acoustic prompt? Teacher-forced bits per coarse token of the real second
    half of each full window (``coarse_frames`` frames), after the window's own first half (``own``), after the
    first half of the next window of another speaker (``other``; the semantic tokens stay the window's own), and
    with no acoustic prompt (``none``: the second half after its own semantic tokens alone, as a continuation
    without the prompt is written). A stage that copies the voice scores ``own`` well below ``other``."""
    cfg = stage.config
    frames, half = cfg.coarse_frames, cfg.coarse_frames // 2
    keep = [k for k, t in enumerate(tokens) if t.coarse.shape[-1] >= frames]
    if len({speakers[k] for k in keep}) < 2:
        raise ValueError(f"prompt_use_bits needs full windows ({frames} frames) of at least two speakers; pad short "
                         f"clips to {frames * cfg.hop_length} samples before tokenizing them.")

    def bits(semantic: Tensor, codes: Tensor, scored_from: int) -> float:
        logits = stage.logits(stage.prefix([semantic]), codes, stage.aligned([semantic], codes.shape[-1]))
        target = codes.transpose(1, 2).flatten(1).clone()
        target[:, :scored_from * cfg.num_coarse] = IGNORE_INDEX
        return float(F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=IGNORE_INDEX)) / math.log(2)

    out: dict[str, list[float]] = {"own": [], "other": [], "none": []}
    was = stage.training
    stage.eval()
    with torch.no_grad():
        for i, k in enumerate(keep):
            other = next(j for j in keep[i + 1:] + keep[:i] if speakers[j] != speakers[k])
            codes = tokens[k].coarse[:, :, :frames]
            semantic = tokens[k].semantic[0, slice(*semantic_span(0, frames, cfg.frames_per_semantic))]
            borrowed = torch.cat([tokens[other].coarse[:, :, :half], codes[:, :, half:]], -1)
            out["own"].append(bits(semantic, codes, half))
            out["other"].append(bits(semantic, borrowed, half))
            rest = tokens[k].semantic[0, slice(*semantic_span(half, frames, cfg.frames_per_semantic))]
            out["none"].append(bits(rest, codes[:, :, half:], 0))
    stage.train(was)
    return {key: round(sum(v) / len(v), 4) for key, v in out.items()} | {"windows": len(keep)}


@torch.no_grad()
def prompt_use(model: AudioLM, which: str = "heldout", n_speakers: int = 10, prompts_per_speaker: int = 2,
               seed: int = 0) -> dict:
    """:func:`prompt_use_bits` of ``model.coarse`` on the speaker test's "test" utterances (the same speakers and
    seed give the same utterances), each padded to the coarse window as the speaker test pads its prompts."""
    n = model.config.coarse_frames * model.config.hop_length
    names = roster(which, n_speakers)
    clips, ids = codec_recipe.voices_clips("test", names, prompts_per_speaker * len(names), SR, seed)
    tokens = [model.tokens(F.pad(c, (0, max(0, n - c.shape[-1])))[None]) for c in clips]
    return prompt_use_bits(model.coarse, tokens, [i.rsplit(":", 1)[1] for i in ids])


# ----------------------------------------------------------------------------- intelligibility
def digit_features(clips: Sequence[Tensor], frames: int = 24) -> Tensor:
    """(N, 40 * frames): each clip's log-mel over its voiced span (frames within 40 dB of the loudest),
    its mean removed (level), stretched to ``frames`` frames (speaking rate)."""
    rows = []
    for c in clips:
        m = _log_mel(c)
        on = _voiced(m).nonzero()[:, 0]
        m = m[:, int(on[0]):int(on[-1]) + 1]
        m = F.interpolate((m - m.mean())[None], size=frames, mode="linear", align_corners=True)[0]
        rows.append(m.flatten())
    return torch.stack(rows)


class DigitRuler(NamedTuple):
    """A digit classifier on :func:`digit_features`, trained on real clips only."""
    classifier: LinearClassifier

    def predict(self, clips: Sequence[Tensor]) -> Tensor:
        return self.classifier.predict(digit_features(clips))


def digit_ruler(n_speakers: int = 24, takes: int = 3) -> DigitRuler:
    """Fit on the ten digits said by ``n_speakers`` English voices of the *training* roster, ``takes`` rates each."""
    probe = spoken_digits(n_speakers, takes, which="train")
    return DigitRuler(fit_linear(digit_features(probe.clips), probe.content, 10))


@torch.no_grad()
def intelligibility_report(model: AudioLM, ruler: DigitRuler, probe: ProbeSet, prompt_seconds: float = 2.0,
                           seed: int = 0) -> dict:
    """Digit accuracy of the ruler on ``probe``'s real clips, on the codec's reconstructions, and on the clips
    resynthesised from their ground-truth semantic tokens in the voice of another speaker's prompt
    (:meth:`AudioLM.resynthesize`; prompts: "test" utterances of held-out voices), beside chance."""
    n = int(prompt_seconds * SR)
    utterances, ids = codec_recipe.voices_clips("test", "heldout", 4 * len(probe.speakers), SR, seed)
    prompts = [(F.pad(u, (0, max(0, n - u.shape[-1])))[None, :, :n], i.rsplit(":", 1)[1])
               for u, i in zip(utterances, ids)]
    g = torch.Generator().manual_seed(seed)
    real, codec, resynth = [], [], []
    for k, clip in enumerate(probe.clips):
        wav = clip[None, :, : max(640, clip.shape[-1] // 640 * 640)]
        real.append(wav[0])
        codec.append(model.codec.decode(model.codec.encode(wav))[0])
        others = [p for p, spk in prompts if spk != probe.speakers[int(probe.speaker[k])]]
        prompt = others[k % len(others)]
        resynth.append(model.resynthesize(model.tokens(wav).semantic, prompt, g)[0])
    out = {"clips": len(real), "chance": 0.1, "prompt_seconds": prompt_seconds}
    for key, wavs in (("real", real), ("codec", codec), ("resynthesized", resynth)):
        out[key] = round(float((ruler.predict(wavs) == probe.content).float().mean()), 4)
    return out
