"""Measuring a GAN of sounds with a small in-course classifier (WaveGAN's evaluation, paper section 5).

The WaveGAN paper scores SC09 digits with an inception score computed by a digit classifier
trained on the real data. We do the same at course scale:

- :class:`AudioClassifier`: a small conv net on log-mels that learns the training classes
  (eight SynthWorld drums, or ten FSDD digits); its penultimate layer is the embedding.
- *inception-score analogue* ``exp(E_x KL(p(y|x) || p(y)))``: high when every clip is
  classified confidently and all classes occur. Easy to fool: a clip that is confidently
  "hihat" scores as well as a real hihat even if it is plain noise.
- *Frechet distance* between Gaussians fitted to embeddings of generated and real clips (FAD
  with our classifier as the embedding): sensitive to everything the embedding sees,
  including variety inside a class, so it catches what the score misses.
- *coverage*: the share of generated clips per class (mode collapse shows as empty classes).
- *nearest-neighbour distance* to the training set in embedding space, against the same
  distance for real test clips: a generator that memorised its data sits much closer. Only exact
  copies, though: a training drum played 3 ms late lies as far from its original as a new drum
  from its nearest cousin (notebook 08). :func:`max_correlation` catches copies wherever they
  start and under faint noise (:func:`copy_share`).
- *decay* (:func:`decay_db`): the energy of a clip's last quarter relative to its first. Real
  drums fall silent; a generator that leaves a noise floor under them does not, and a
  classifier can miss that while the ear does not.

Reference rows (real test clips, decaying noise bursts) show what "good" and "fooled" look like.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import checkpoint
from course_lib.metrics import frechet_distance, inception_score
from course_lib.spectral import log_mel_spectrogram

__all__ = ["ClassifierConfig", "AudioClassifier", "train_classifier", "load_classifier", "ClassifierOutput",
           "GanMetrics", "gan_metrics", "noise_bursts", "decay_db", "FLOOR_16BIT_DB", "max_correlation", "copy_share",
           "COPY_THRESHOLD"]

# The power of 16-bit rounding noise, 10 log10((2 / 2**16)**2 / 12) = -101.2 dB re full scale: the course
# writes 16-bit WAV files, so a decay below this level is silence in every file a student hears.
FLOOR_16BIT_DB = -101.2


@dataclass(frozen=True)
class ClassifierConfig:
    classes: tuple[str, ...] = ()
    sample_rate: int = 16_000
    n_fft: int = 512
    hop_length: int = 128
    n_mels: int = 64             # F
    channels: int = 64           # C
    embedding_dim: int = 64      # D of the embedding the Frechet distance uses


class ClassifierOutput(NamedTuple):
    embedding: Tensor   # (B, D)
    logits: Tensor      # (B, K)


class AudioClassifier(nn.Module):
    """``wav (B, 1, T) -> (embedding (B, D), logits (B, K))``: log-mel, 3 convs, mean+max pooling."""

    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        if len(cfg.classes) < 2:
            raise ValueError(f"The classifier needs at least 2 classes, got {cfg.classes!r}.")
        self.config = cfg
        C = cfg.channels
        self.norm = nn.BatchNorm1d(cfg.n_mels)
        self.convs = nn.Sequential(
            nn.Conv1d(cfg.n_mels, C, 3, padding=1), nn.BatchNorm1d(C), nn.ReLU(),
            nn.Conv1d(C, C, 3, padding=1, stride=2), nn.BatchNorm1d(C), nn.ReLU(),
            nn.Conv1d(C, C, 3, padding=1, stride=2), nn.BatchNorm1d(C), nn.ReLU())
        self.embed = nn.Linear(2 * C, cfg.embedding_dim)
        self.head = nn.Linear(cfg.embedding_dim, len(cfg.classes))

    def forward(self, wav: Tensor) -> ClassifierOutput:
        c = self.config
        x = log_mel_spectrogram(wav[:, 0], c.sample_rate, c.n_fft, c.hop_length, c.n_mels)  # (B, F, L)
        h = self.convs(self.norm(x))                                                      # (B, C, L / 4)
        e = F.relu(self.embed(torch.cat([h.mean(-1), h.amax(-1)], dim=1)))                # (B, D)
        return ClassifierOutput(e, self.head(e))

    @torch.no_grad()
    def predict(self, wav: Tensor, batch_size: int = 256) -> ClassifierOutput:
        """Eval-mode outputs for many clips ``(N, 1, T)``, in batches."""
        was = self.training
        self.eval()
        outs = [self(w) for w in wav.split(batch_size)]
        self.train(was)
        return ClassifierOutput(torch.cat([o.embedding for o in outs]), torch.cat([o.logits for o in outs]))


def train_classifier(clips: Tensor, labels: Tensor, classes: list[str], sample_rate: int = 16_000,
                     steps: int = 400, batch_size: int = 64, generator: torch.Generator | None = None,
                     noise_snr_db: tuple[float, float] | None = (10.0, 40.0)) -> tuple[AudioClassifier, float]:
    """Train the classifier (Adam 1e-3, cosine decay) with random gain, onset shift and added noise.

    The noise (white, 10-40 dB below the clip, on half of each batch) matters for synthetic
    training data: SynthWorld's drums are digitally clean, and a classifier that never heard
    a noise floor learns "any hiss = snare". It then calls a generated kick with a faint hiss
    a snare, and the inception score measures the hiss instead of the drums (measured on the
    22k-step drums WaveGAN: 20% of the real score and 2 classes without noise augmentation,
    55-59% and all 8 classes with it over two classifier seeds; decaying noise bursts score
    1.3 either way, and real test clips are still classified 100% correctly).

    Args:
        clips: ``(N, 1, T)`` training audio; labels ``(N,)`` int64 into ``classes``.
        noise_snr_db: range of the added noise's signal-to-noise ratio; None trains on clean clips.

    Returns:
        The classifier (eval mode) and its accuracy on ``clips``.
    """
    model = AudioClassifier(ClassifierConfig(tuple(classes), sample_rate))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)   # a settled classifier, not the last batch's
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(clips), (batch_size,), generator=generator)
        x = clips[idx] * (0.4 + 0.8 * torch.rand(batch_size, 1, 1, generator=generator))  # level changes
        shift = int(torch.randint(0, 400, (1,), generator=generator))                      # later onsets
        x = F.pad(x, (shift, 0))[..., :clips.shape[-1]]
        if noise_snr_db is not None:
            lo, hi = noise_snr_db
            snr_db = lo + (hi - lo) * torch.rand(batch_size, 1, 1, generator=generator)
            noisy = (torch.rand(batch_size, 1, 1, generator=generator) < 0.5).float()      # half the batch
            rms = x.square().mean(-1, keepdim=True).sqrt()
            x = x + noisy * torch.randn(x.shape, generator=generator) * rms * 10 ** (-snr_db / 20)
        loss = F.cross_entropy(model(x).logits, labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    acc = float((model.predict(clips).logits.argmax(-1) == labels).float().mean())
    return model, acc


def load_classifier(name_or_path: str | Path) -> AudioClassifier:
    return checkpoint.load_pretrained(name_or_path, AudioClassifier, ClassifierConfig)


class GanMetrics(NamedTuple):
    inception_score: float            # generated clips
    inception_score_real: float       # real test clips (the ceiling the target is relative to)
    inception_ratio: float            # generated / real
    frechet: float                    # generated vs real test, classifier embedding
    frechet_train_vs_test: float      # real vs real at the same N: the floor
    classes_generated: int            # classes that get >= 1% of the generated clips (argmax)
    class_fractions: dict             # {class: share of generated clips}
    mean_confidence: float            # mean max p(y|x) of generated clips
    nn_distance_generated: float      # median embedding distance, generated clip -> nearest training clip
    nn_distance_test: float           # the same for real test clips (what "not memorised" looks like)
    test_accuracy: float              # the classifier on real test clips


def gan_metrics(clf: AudioClassifier, generated: Tensor, test: Tensor, test_labels: Tensor, train: Tensor,
                ) -> GanMetrics:
    """All metrics for ``generated (N, 1, T)`` against real ``test`` and ``train`` clips."""
    g, t, tr = clf.predict(generated), clf.predict(test), clf.predict(train)
    pg, pt = g.logits.softmax(-1), t.logits.softmax(-1)
    counts = torch.bincount(pg.argmax(-1), minlength=len(clf.config.classes)).float() / len(pg)
    n = min(len(tr.embedding), len(t.embedding))
    is_g, is_t = inception_score(pg), inception_score(pt)
    return GanMetrics(
        inception_score=round(is_g, 4), inception_score_real=round(is_t, 4), inception_ratio=round(is_g / is_t, 4),
        frechet=round(frechet_distance(g.embedding, t.embedding), 4),
        frechet_train_vs_test=round(frechet_distance(tr.embedding[:n], t.embedding[:n]), 4),
        classes_generated=int((counts >= 0.01).sum()),
        class_fractions={c: round(float(f), 4) for c, f in zip(clf.config.classes, counts)},
        mean_confidence=round(float(pg.amax(-1).mean()), 4),
        nn_distance_generated=round(float(torch.cdist(g.embedding, tr.embedding).amin(1).median()), 4),
        nn_distance_test=round(float(torch.cdist(t.embedding, tr.embedding).amin(1).median()), 4),
        test_accuracy=round(float((pt.argmax(-1) == test_labels).float().mean()), 4),
    )


def noise_bursts(n: int, length: int, sample_rate: int = 16_000, generator: torch.Generator | None = None) -> Tensor:
    """``(n, 1, T)`` white noise with random exponential decays: a "generator" that learned nothing."""
    tau = 0.01 + 0.2 * torch.rand(n, 1, 1, generator=generator)                      # seconds
    t = torch.arange(length) / sample_rate
    level = 0.3 + 0.6 * torch.rand(n, 1, 1, generator=generator)
    x = torch.randn(n, 1, length, generator=generator) * torch.exp(-t / tau)
    return (x / x.abs().amax(-1, keepdim=True) * level).clamp(-1, 1)


def decay_db(clips: Tensor, floor_db: float | None = FLOOR_16BIT_DB) -> Tensor:
    """``(N, 1, T) -> (N,)``: energy of each clip's last quarter over its first quarter, in dB.

    ``10 log10(E_last / E_first)`` with mean-square energies, both floored at ``floor_db`` (re
    full scale; default: 16-bit rounding noise, so digital silence counts as -101 dBFS and not as
    minus infinity; None: no floor, only 1e-30 against log 0). A drum that decays to silence
    scores far below zero; one that sits on a noise floor stops at the floor's level.
    """
    if clips.ndim != 3 or clips.shape[-1] < 4:
        raise ValueError(f"decay_db expects (N, 1, T) clips with T >= 4, got {tuple(clips.shape)}.")
    q = clips.shape[-1] // 4
    floor = 1e-30 if floor_db is None else 10 ** (floor_db / 10)
    first = clips[..., :q].double().square().mean((-2, -1)).clamp_min(floor)   # (N,)
    last = clips[..., -q:].double().square().mean((-2, -1)).clamp_min(floor)
    return (10 * torch.log10(last / first)).float()


# A copy keeps a normalised correlation near 1 (0.9995 under noise 30 dB down, 0.995 at 20 dB); the closest real test
# drum to any SynthWorld training drum correlates at most 0.94 (a kick's sweep against another kick's).
COPY_THRESHOLD = 0.99


@torch.no_grad()
def max_correlation(clips: Tensor, bank: Tensor, chunk: int = 1024) -> Tensor:
    """``(N, 1, T), (M, 1, T') -> (N,)``: each clip's highest normalised cross-correlation with any clip of ``bank``
    at any lag, ``max_{m, lag} <x, shift(b_m, lag)> / (|x| |b_m|)``: 1 for an exact copy wherever it starts.

    Computed with the FFT, zero-padded to ``T + T'`` so that the correlation is linear, not circular; ``chunk``
    bank clips at a time bound the memory (``chunk * (T + T')`` floats per clip).
    """
    if clips.ndim != 3 or bank.ndim != 3 or not len(clips) or not len(bank):
        raise ValueError(f"max_correlation expects non-empty (N, 1, T) clips and (M, 1, T') bank, got "
                         f"{tuple(clips.shape)} and {tuple(bank.shape)}.")
    n = clips.shape[-1] + bank.shape[-1]
    fx = torch.fft.rfft(F.normalize(clips.flatten(1).double(), dim=1), n)           # (N, n // 2 + 1)
    best = torch.full((len(clips),), -1.0, dtype=torch.float64)
    for start in range(0, len(bank), chunk):
        fb = torch.fft.rfft(F.normalize(bank[start:start + chunk].flatten(1).double(), dim=1), n)   # (m, n // 2 + 1)
        for i, f in enumerate(fx):
            best[i] = torch.maximum(best[i], torch.fft.irfft(f.conj()[None] * fb, n).amax())
    return best.float()


def copy_share(clips: Tensor, bank: Tensor, threshold: float = COPY_THRESHOLD) -> float:
    """Share of ``clips`` whose :func:`max_correlation` with ``bank`` exceeds ``threshold``: copies of bank clips."""
    return float((max_correlation(clips, bank) > threshold).float().mean())
