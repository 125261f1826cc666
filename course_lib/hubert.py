"""A course-sized HuBERT: masked prediction of hidden units, clustered into AudioLM's semantic tokens.

Hsu et al. 2021, "HuBERT: Self-Supervised Speech Representation Learning by Masked Prediction of Hidden
Units" (IEEE/ACM TASLP 29, arXiv:2106.07447); sections and equations are that paper's.

* **Feature encoder** (Sec. II.E, wav2vec 2.0's): seven convs, kernels (10, 3, 3, 3, 3, 2, 2), strides
  (5, 2, 2, 2, 2, 2, 2): 320 samples per frame, 50 Hz at 16 kHz, course-sized widths (HuBERT: 512). The
  waveform is padded by 40 samples per side, so T samples give ``T // 320`` frames and the convs of frame
  ``l`` see samples ``[320 l - 40, 320 l + 360)`` (the first layer's GroupNorm spans the clip, as in HuBERT).
* **Iteration 1 targets** (Sec. IV.B): k-means of 39 MFCCs (13 + deltas + delta-deltas) computed on those
  same windows (:func:`mfcc_features`), so every target belongs to one encoder frame.
* **Masked prediction** (Sec. II.B): each frame starts a masked span of 10 frames with probability 0.08
  (about half the frames get masked) and masked frames become a learned embedding; a bidirectional
  transformer (pre-norm ``nn.TransformerEncoderLayer``, convolutional positions) scores every cluster by
  cosine similarity over a temperature (eq. 5); cross-entropy on masked frames only (eq. 1-3, alpha = 1).
* **Iteration 2** (Sec. II.D, IV.B): block ``layer``'s output of the iteration-1 model, z-scored per
  dimension, is clustered into ``num_clusters`` targets for a new model.
* **Semantic tokens** (AudioLM, Borsos et al. 2023: k-means of a middle w2v-BERT layer at 25 Hz): the final
  model's ``layer`` output averaged over pairs of 50 Hz frames (rather than a stride-2 layer: the targets
  stay at the paper's 50 Hz and nothing new is trained), z-scored and clustered into ``num_clusters``
  ids. Mean, std and centroids are buffers, so a loaded checkpoint gives the same tokens.

Example (:func:`train_iterations` runs the whole recipe):
    >>> model = HuBERT(HubertConfig.preset("tiny"))
    >>> km = fit_kmeans(torch.cat(clip_features(clips)), model.config.num_clusters_iter1)   # MFCC clusters
    >>> fit(model, clips, label_clips(clips, km), steps=100)             # iteration 1
    >>> fit_semantic_kmeans(model, clips).num_clusters
    64
    >>> model.semantic_tokens(wav).shape                                   # wav (1, 1, 16000): 1 s
    torch.Size([1, 25])

Shapes: B batch, T samples, L frames (50 Hz), N tokens (25 Hz), C conv channels, D width, K clusters.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from course_lib import checkpoint
from course_lib.audio import check_audio
from course_lib.nn import conv_output_length, receptive_field
from course_lib.quantize import kmeans
from course_lib.train import (TrainConfig, Trainer, TrainResult, autocast, distribute, init_distributed, optimizer_step,
                              rank_generator, unwrap)

__all__ = ["HubertConfig", "PRESETS", "HuBERT", "HubertOutput", "HubertLosses", "KMeans", "HubertRun", "mfcc_features",
           "fit_kmeans", "span_mask", "pool_pairs", "hubert_loss", "random_batch", "fit", "clip_features",
           "label_clips", "fit_semantic_kmeans", "train_iterations", "load_pretrained", "IGNORE_INDEX"]

IGNORE_INDEX = -100    # target of a frame without audio (zero padding past a clip's end)
SAMPLE_RATE = 16_000
CONV_KERNELS, CONV_STRIDES = (10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)   # wav2vec 2.0's feature encoder
HOP_LENGTH = math.prod(CONV_STRIDES)                                          # 320 samples: 50 Hz frames
_EXTRA = receptive_field(CONV_KERNELS, CONV_STRIDES) - HOP_LENGTH             # 400 - 320
PADDING = (_EXTRA // 2, _EXTRA - _EXTRA // 2)                                 # (40, 40) zeros around the waveform


def num_frames(num_samples: int) -> int:
    """Encoder frames of ``num_samples`` samples, through the padded conv stack: ``T // 320``."""
    length = num_samples + sum(PADDING)
    for k, s in zip(CONV_KERNELS, CONV_STRIDES):
        length = conv_output_length(length, k, s)
    return max(length, 0)


@dataclass(frozen=True)
class HubertConfig:
    """A small HuBERT at 16 kHz; the defaults (the ``small`` preset) train on a laptop CPU."""

    conv_dim: int = 64                 # C, width of every feature-encoder conv (HuBERT base: 512)
    n_embd: int = 128                  # D, transformer width (768)
    n_layer: int = 4                   # (12)
    n_head: int = 4                    # (12)
    pos_conv_kernel: int = 31          # odd; relative positions by a grouped conv (wav2vec 2.0: 128)
    pos_conv_groups: int = 8           # (16)
    dropout: float = 0.1
    final_dim: int = 64                # width of the projection A in eq. 5 (256)
    temperature: float = 0.1           # tau in eq. 5
    num_clusters_iter1: int = 100      # MFCC clusters, iteration 1's targets (as the paper)
    num_clusters: int = 256            # K: iteration 2's targets and the semantic vocabulary (AudioLM: 1024)
    layer: int = 2                     # block (1-based) whose output is clustered (paper: 6 of 12)
    iteration: int = 1                 # 1 predicts MFCC clusters, 2 predicts num_clusters
    mask_prob: float = 0.08            # p: a frame starts a masked span (Sec. II.B)
    mask_length: int = 10              # l: frames per span
    unmasked_weight: float = 0.0       # 1 - alpha in eq. 3; the paper's alpha = 1 ignores unmasked frames

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head or self.n_embd % self.pos_conv_groups or self.pos_conv_kernel % 2 == 0:
            raise ValueError(f"n_embd={self.n_embd} must be a multiple of n_head={self.n_head} and pos_conv_groups="
                             f"{self.pos_conv_groups}, and pos_conv_kernel={self.pos_conv_kernel} must be odd.")
        if not 1 <= self.layer <= self.n_layer or self.iteration not in (1, 2):
            raise ValueError(f"layer must be in 1..n_layer={self.n_layer} (got {self.layer}) and iteration 1 or 2 "
                             f"(got {self.iteration}).")
        if not (0 < self.mask_prob < 1 and self.mask_length >= 1 and 0 <= self.unmasked_weight <= 1):
            raise ValueError(f"need 0 < mask_prob < 1, mask_length >= 1 and 0 <= unmasked_weight <= 1, got "
                             f"{self.mask_prob}, {self.mask_length}, {self.unmasked_weight}.")

    @property
    def num_targets(self) -> int:
        """Classes this model predicts: the MFCC clusters in iteration 1, ``num_clusters`` in iteration 2."""
        return self.num_clusters_iter1 if self.iteration == 1 else self.num_clusters

    @staticmethod
    def preset(name: str) -> HubertConfig:
        """Named sizes: ``tiny`` (smoke profile), ``small`` (cpu), ``base`` (gpu)."""
        return checkpoint.preset(PRESETS, name, "HuBERT")


PRESETS: dict[str, HubertConfig] = {
    "tiny": HubertConfig(conv_dim=32, n_embd=64, n_layer=2, n_head=2, pos_conv_groups=4, final_dim=32,
                         num_clusters_iter1=50, num_clusters=64, layer=1),
    "small": HubertConfig(),
    "base": HubertConfig(conv_dim=256, n_embd=256, n_layer=6, n_head=4, final_dim=128, num_clusters=512, layer=3),
}


# ----------------------------------------------------------------------------- targets: MFCC and k-means
def mfcc_features(wav: Tensor, sample_rate: int | None = None) -> Tensor:
    """Iteration 1's features (Sec. IV.B): 13 MFCCs, deltas and delta-deltas, one row per encoder frame.

    Args:
        wav: (B, 1, T) at 16 kHz.
        sample_rate: rate of ``wav``, checked when given.

    Returns:
        (B, L, 39) with L = T // 320: 25 ms windows (400 samples) every 20 ms, on the encoder's frame windows.
    """
    wav = check_audio(wav, sample_rate=sample_rate, expected_sample_rate=SAMPLE_RATE, ndim=3, channels=1,
                      min_samples=HOP_LENGTH, allow_silent=True, name="mfcc_features input")
    mfcc = torchaudio.transforms.MFCC(SAMPLE_RATE, n_mfcc=13, melkwargs=dict(   # Kaldi's 23 mel bands
        n_fft=sum(PADDING) + HOP_LENGTH, hop_length=HOP_LENGTH, n_mels=23, center=False)).to(wav.device)
    m = mfcc(F.pad(wav, PADDING))[:, 0]                                        # (B, 13, L)
    d1 = torchaudio.functional.compute_deltas(m)
    return torch.cat([m, d1, torchaudio.functional.compute_deltas(d1)], 1).transpose(1, 2)  # (B, L, 39)


class KMeans(nn.Module):
    """K centroids of z-scored features: ``predict(x) = argmin_k |(x - mean) / std - centroids[k]|``."""

    def __init__(self, num_clusters: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("centroids", torch.zeros(num_clusters, dim))   # (K, D), in z-scored units
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def num_clusters(self) -> int:
        return self.centroids.shape[0]

    def standardize(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std                                     # (..., D)

    def predict(self, x: Tensor) -> Tensor:
        """(..., D) features -> (...) int64 cluster ids."""
        if not bool(self.fitted):
            raise RuntimeError("This k-means has no centroids yet. Fit it: course_lib.hubert.fit_kmeans(features, k), "
                               "or for a model's semantic tokens fit_semantic_kmeans(model, clips).")
        z = self.standardize(x.to(self.centroids.dtype))
        d = torch.cdist(z.reshape(-1, z.shape[-1]), self.centroids)           # (n, K)
        return d.argmin(-1).reshape(x.shape[:-1])


def fit_kmeans(features: Tensor, k: int, generator: torch.Generator | None = None, *, standardize: bool = True,
               iters: int = 20, max_frames: int | None = 200_000) -> KMeans:
    """Lloyd's k-means (:func:`course_lib.quantize.kmeans`) on (N, D) frame features.

    ``standardize`` z-scores every dimension first (fairseq's HuBERT recipe does not): otherwise the
    dimension of largest variance (c0, the loudness, for MFCCs; a few outliers in transformer layers)
    decides most assignments. At most ``max_frames`` rows, drawn with ``generator``, are used.
    """
    if features.ndim != 2 or features.shape[0] == 0 or not bool(torch.isfinite(features).all()):
        raise ValueError(f"fit_kmeans needs finite features of shape (N >= 1, D), got {tuple(features.shape)}"
                         f"{' with NaN/inf' if features.numel() and not torch.isfinite(features).all() else ''}.")
    x = features.float()
    if max_frames is not None and x.shape[0] > max_frames:
        x = x[torch.randperm(x.shape[0], generator=generator)[:max_frames].to(x.device)]
    km = KMeans(k, x.shape[1]).to(x.device)
    if standardize:
        km.mean.copy_(x.mean(0))
        km.std.copy_(x.std(0).clamp_min(1e-5))
    km.centroids.copy_(kmeans(km.standardize(x), k, iters, generator)[0])
    km.fitted.fill_(True)
    return km


# ----------------------------------------------------------------------------- model
def span_mask(batch: int, length: int, mask_prob: float, mask_length: int,
              generator: torch.Generator | None = None) -> Tensor:
    """HuBERT's mask (Sec. II.B): each frame starts a span of ``mask_length`` with probability ``mask_prob``.

    Spans that would run past the end start earlier (starts are drawn in ``[0, L - l]``); every row gets at
    least one span. An interior frame is masked with probability ``1 - (1 - p)^l`` (0.57 for 0.08 and 10).

    Returns:
        (B, L) bool, True where masked (on the CPU, as the generator).
    """
    n_start = max(length - mask_length + 1, 1)
    starts = torch.rand(batch, n_start, generator=generator) < mask_prob                  # (B, L - l + 1)
    forced = torch.randint(n_start, (batch,), generator=generator)                        # drawn always: determinism
    empty = ~starts.any(1)
    starts[empty, forced[empty]] = True
    # frame t is masked when a span started at t - l + 1 .. t: a running max over l start flags
    padded = F.pad(starts.float()[:, None], (mask_length - 1, mask_length - 1))
    return F.max_pool1d(padded, mask_length, stride=1)[:, 0, :length].bool()           # (B, L)


def pool_pairs(x: Tensor) -> Tensor:
    """(B, L, D) at 50 Hz -> (B, L // 2, D) at 25 Hz: the mean of frames 2n and 2n + 1 (an odd last one is dropped)."""
    n = x.shape[1] // 2
    return x[:, : 2 * n].unflatten(1, (n, 2)).mean(2)


class HubertOutput(NamedTuple):
    logits: Tensor          # (B, L, K) cosine similarity / temperature, eq. 5
    hidden: list[Tensor]    # output of every block, n_layer x (B, L, D)


class HuBERT(nn.Module):
    """Conv feature encoder, masking, bidirectional transformer, cosine-similarity head; a semantic k-means."""

    def __init__(self, config: HubertConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or HubertConfig()
        convs: list[nn.Module] = []
        for i, (k, s) in enumerate(zip(CONV_KERNELS, CONV_STRIDES)):   # wav2vec 2.0's "group_norm" mode
            convs += [nn.Conv1d(1 if i == 0 else cfg.conv_dim, cfg.conv_dim, k, s, bias=False),
                      nn.GroupNorm(cfg.conv_dim, cfg.conv_dim) if i == 0 else nn.Identity(), nn.GELU()]
        self.feature_encoder = nn.Sequential(*convs)                            # (B, 1, T) -> (B, C, L)
        self.feature_norm = nn.LayerNorm(cfg.conv_dim)
        self.feature_proj = nn.Linear(cfg.conv_dim, cfg.n_embd)
        self.mask_emb = nn.Parameter(torch.rand(cfg.n_embd))                    # the learned mask embedding
        self.pos_conv = nn.Conv1d(cfg.n_embd, cfg.n_embd, cfg.pos_conv_kernel, padding=cfg.pos_conv_kernel // 2,
                                  groups=cfg.pos_conv_groups)
        self.dropout = nn.Dropout(cfg.dropout)
        # Pre-norm blocks (HuBERT base is post-norm): they train without a long warm-up at course sizes.
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(
            cfg.n_embd, cfg.n_head, 4 * cfg.n_embd, cfg.dropout, activation="gelu", batch_first=True,
            norm_first=True) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.final_proj = nn.Linear(cfg.n_embd, cfg.final_dim)                  # A in eq. 5
        self.label_emb = nn.Parameter(torch.randn(cfg.num_targets, cfg.final_dim))  # e_c in eq. 5
        self.quantizer = KMeans(cfg.num_clusters, cfg.n_embd)                   # semantic tokens, fitted after training

    sample_rate: int = SAMPLE_RATE
    hop_length: int = HOP_LENGTH
    frame_rate: float = SAMPLE_RATE / HOP_LENGTH          # 50 Hz: targets and masks
    semantic_rate: float = frame_rate / 2                 # 25 Hz: pairs of frames averaged

    def frame_features(self, wav: Tensor) -> Tensor:
        """(B, 1, T) -> (B, L, D): conv features, layer norm and projection, before masking."""
        x = self.feature_encoder(F.pad(wav, PADDING))                           # (B, C, L)
        return self.feature_proj(self.feature_norm(x.transpose(1, 2)))          # (B, L, D)

    def encode(self, x: Tensor, num_layers: int | None = None) -> list[Tensor]:
        """(B, L, D) frame features -> the output of each of the first ``num_layers`` blocks, each (B, L, D)."""
        x = x + F.gelu(self.pos_conv(x.transpose(1, 2))).transpose(1, 2)         # relative positions
        x, hidden = self.dropout(x), []
        for block in self.blocks[:num_layers]:
            x = block(x)
            hidden.append(x)
        return hidden

    def forward(self, wav: Tensor, mask: Tensor | None = None) -> HubertOutput:
        """Logits of eq. 5 for every frame of (B, 1, T); frames where ``mask`` (B, L) is True are masked."""
        x = self.frame_features(wav)                                            # (B, L, D)
        if mask is not None:
            x = torch.where(mask[..., None], self.mask_emb.to(x.dtype), x)      # X~ = r(X, M), Sec. II.B
        hidden = self.encode(x)
        o = F.normalize(self.final_proj(self.ln_f(hidden[-1])), dim=-1)         # A o_t, (B, L, final_dim)
        logits = o @ F.normalize(self.label_emb, dim=-1).t() / self.config.temperature  # sim(A o_t, e_c) / tau
        return HubertOutput(logits, hidden)

    def _check(self, wav: Tensor, sample_rate: int | None) -> Tensor:
        return check_audio(wav, sample_rate=sample_rate, expected_sample_rate=self.sample_rate, ndim=3, channels=1,
                           min_samples=2 * self.hop_length, name="HuBERT input")

    @torch.no_grad()
    def layer_features(self, wav: Tensor, sample_rate: int | None = None) -> Tensor:
        """(B, 1, T) -> (B, L, D): output of block ``config.layer`` at 50 Hz (no mask; call ``eval()`` first)."""
        x = self.frame_features(self._check(wav, sample_rate))
        return self.encode(x, self.config.layer)[-1]

    @torch.no_grad()
    def semantic_features(self, wav: Tensor, sample_rate: int | None = None) -> Tensor:
        """(B, 1, T) -> (B, N, D): :meth:`layer_features` average-pooled to 25 Hz, N = T // 640."""
        return pool_pairs(self.layer_features(wav, sample_rate))

    @torch.no_grad()
    def semantic_tokens(self, wav: Tensor, sample_rate: int | None = None) -> Tensor:
        """(B, 1, T) at 16 kHz -> (B, N) int64 semantic tokens at 25 Hz in ``[0, num_clusters)``.

        Raises:
            AudioError: wrong shape or sample rate, NaN, silence, or shorter than one token (640 samples).
            RuntimeError: the semantic k-means was never fitted (:func:`fit_semantic_kmeans`).
        """
        return self.quantizer.predict(self.semantic_features(wav, sample_rate))


def load_pretrained(name_or_path: str | Path) -> HuBERT:
    """A folder written by ``checkpoint.save_pretrained(model, model.config, DIR)`` (or a shipped name)."""
    return checkpoint.load_pretrained(name_or_path, HuBERT, HubertConfig)


# ----------------------------------------------------------------------------- loss and training
class HubertLosses(NamedTuple):
    total: Tensor       # eq. 3: (1 - unmasked_weight) * masked + unmasked_weight * unmasked
    masked: Tensor      # L_m, eq. 1: mean cross-entropy over masked frames
    unmasked: Tensor    # L_u, eq. 2: the same over unmasked frames
    accuracy: Tensor    # fraction of masked frames whose cluster is the argmax


def hubert_loss(model: nn.Module, wav: Tensor, targets: Tensor, mask: Tensor) -> HubertLosses:
    """Masked-prediction loss of ``model`` on (B, 1, T) with targets (B, L) (IGNORE_INDEX: no audio) and mask (B, L)."""
    w = unwrap(model).config.unmasked_weight
    logits = model(wav, mask).logits.float()                                   # (B, L, K)
    valid = targets != IGNORE_INDEX
    ce = F.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none")  # (B, L)
    m, u = mask & valid, ~mask & valid
    l_m = ce[m].sum() / m.sum().clamp(min=1)
    l_u = ce[u].sum() / u.sum().clamp(min=1)
    acc = (logits.argmax(-1) == targets)[m].float().sum() / m.sum().clamp(min=1)
    return HubertLosses((1 - w) * l_m + w * l_u if w else l_m, l_m, l_u, acc.detach())


def random_batch(clips: list[Tensor], targets: list[Tensor], batch_size: int, frames: int,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Random crops (B, 1, frames * hop) starting on frame boundaries and their targets (B, frames).

    A clip shorter than the crop is zero-padded; its frames past the end get IGNORE_INDEX.
    """
    wav = torch.zeros(batch_size, 1, frames * HOP_LENGTH)
    tgt = torch.full((batch_size, frames), IGNORE_INDEX, dtype=torch.long)
    for b, i in enumerate(torch.randint(len(clips), (batch_size,), generator=generator).tolist()):
        y = targets[i]
        s = int(torch.randint(max(1, len(y) - frames + 1), (1,), generator=generator))
        piece = clips[i][..., s * HOP_LENGTH:(s + frames) * HOP_LENGTH]
        wav[b, :, : piece.shape[-1]] = piece
        tgt[b, : min(frames, len(y) - s)] = y[s:s + frames]
    return wav, tgt


def _check_clips(clips: list[Tensor]) -> list[Tensor]:
    if not clips:
        raise ValueError("No clips: pass a list of (1, T) tensors at 16 kHz (e.g. [ex.audio for ex in dataset]).")
    return [check_audio(c, ndim=2, channels=1, min_samples=2 * HOP_LENGTH, name=f"clip {i}")
            for i, c in enumerate(clips)]


def fit(model: HuBERT, clips: list[Tensor], targets: list[Tensor], *, steps: int, time_budget_s: float | None = None,
        generator: torch.Generator | None = None, checkpoint_dir: str | Path | None = None, batch_size: int = 8,
        crop_s: float = 2.0, lr: float = 5e-4, mixed_precision: bool = False, settings: dict | None = None,
        progress: bool = True, log_every: int = 10) -> TrainResult:
    """One iteration of masked prediction (Sec. II.B): ``model`` learns the frame targets of ``clips``.

    Adam (betas 0.9, 0.98, Sec. IV.C) with the paper's schedule: linear warm-up over the first 8% of the
    steps, then linear decay to zero; gradients clipped at 10. Resumable through ``checkpoint_dir``/last.pt.

    Args:
        clips: (1, T_i) at 16 kHz, each at least 640 samples.
        targets: per clip (T_i // 320,) int64 in ``[0, config.num_targets)``, e.g. :func:`label_clips`.
        generator: crops and masks; checkpointed with the run.
    """
    cfg = model.config
    clips = _check_clips(clips)
    if len(targets) != len(clips) or any(len(y) != num_frames(c.shape[-1]) for y, c in zip(targets, clips)):
        raise ValueError("targets must hold one (T_i // 320,) tensor per clip: compute them with "
                         "label_clips(clips, km).")
    if any(int(y.min()) < 0 or int(y.max()) >= cfg.num_targets for y in targets):
        raise ValueError(f"targets must be in [0, {cfg.num_targets}) (iteration {cfg.iteration}'s num_targets); "
                         f"fit the k-means with k = config.num_targets.")
    if steps < 1 or batch_size < 1 or crop_s * model.frame_rate < cfg.mask_length:
        raise ValueError(f"need steps >= 1, batch_size >= 1 and crop_s >= {cfg.mask_length / model.frame_rate} s "
                         f"(one mask span), got {steps}, {batch_size}, {crop_s}.")
    init_distributed()
    device = next(model.parameters()).device
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    net = distribute(model)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    warm = max(1, round(0.08 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, (steps - s) / max(1, steps - warm)))
    trainer = Trainer({"hubert": model}, {"opt": opt}, TrainConfig(
        max_steps=steps, time_budget_s=time_budget_s, checkpoint_dir=checkpoint_dir, log_every=log_every,
        progress=progress, settings=settings), schedulers={"lr": sched}, generators={"batches": generator})
    gen, frames = rank_generator(generator), round(crop_s * model.frame_rate)

    def step_fn(step: int) -> HubertLosses:
        wav, tgt = random_batch(clips, targets, batch_size, frames, gen)
        mask = span_mask(batch_size, frames, cfg.mask_prob, cfg.mask_length, gen)
        with autocast(device, mixed_precision):
            losses = hubert_loss(net, wav.to(device), tgt.to(device), mask.to(device))
        return optimizer_step(losses, opt, 10.0)

    trainer.fit(step_fn)
    return trainer.result(model.eval())


# ----------------------------------------------------------------------------- iterations and clustering
@torch.no_grad()
def clip_features(clips: list[Tensor], model: HuBERT | None = None) -> list[Tensor]:
    """Per clip (L_i, D) features at 50 Hz: 39 MFCCs without a model (iteration 1), else its ``layer`` output."""
    if model is None:
        return [mfcc_features(c[None])[0] for c in clips]
    device = next(model.parameters()).device
    return [model.eval().layer_features(c[None].to(device))[0].cpu() for c in clips]


def label_clips(clips: list[Tensor], km: KMeans, model: HuBERT | None = None) -> list[Tensor]:
    """Targets per clip (L_i,) int64: ``km`` applied to :func:`clip_features` (MFCCs, or ``model``'s layer)."""
    return [km.predict(f.to(km.centroids.device)).cpu() for f in clip_features(clips, model)]


@torch.no_grad()
def fit_semantic_kmeans(model: HuBERT, clips: list[Tensor], generator: torch.Generator | None = None,
                        max_frames: int | None = 200_000) -> KMeans:
    """Fit ``model.quantizer``: z-scored 25 Hz :meth:`HuBERT.semantic_features` into ``num_clusters`` clusters."""
    device = next(model.parameters()).device
    feats = torch.cat([model.eval().semantic_features(c[None].to(device))[0].cpu()
                       for c in _check_clips(clips)])          # (sum N_i, D)
    model.quantizer.load_state_dict(fit_kmeans(feats, model.config.num_clusters, generator,
                                               max_frames=max_frames).state_dict())
    return model.quantizer


def _build(config: HubertConfig, seed: int, device: str | torch.device) -> HuBERT:
    """A model initialised from ``seed``, without touching the caller's global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return HuBERT(config).to(device)


class HubertRun(NamedTuple):
    model: HuBERT                  # the last model trained; its quantizer gives the semantic tokens
    results: list[TrainResult]     # one per iteration trained (1 or 2)
    kmeans: list[KMeans]           # the k-means that made each iteration's targets (MFCC, then layer features)


def train_iterations(clips: list[Tensor], config: HubertConfig, *, steps: tuple[int, int],
                     time_budget_s: float | None = None, generator: torch.Generator | None = None,
                     checkpoint_dir: str | Path | None = None, warm_start: bool = False,
                     device: str | torch.device = "cpu", **fit_kwargs) -> HubertRun:
    """HuBERT's recipe (Sec. II.D, IV.B), then AudioLM's tokens, on a course budget:

    1. targets_1 = k-means of MFCCs (``num_clusters_iter1``) -> 2. train model_1 on them ->
    3. targets_2 = k-means of model_1's z-scored ``layer`` output (``num_clusters``) -> 4. train model_2
    (``iteration=2``) on them -> 5. :func:`fit_semantic_kmeans` on model_2: 25 Hz semantic tokens.

    The paper trains each iteration from scratch (``warm_start=False``); ``warm_start=True`` starts model_2
    from model_1's weights (a new prediction head), cheaper on a CPU. ``time_budget_s`` is shared in
    proportion to ``steps``. Models are initialised from ``generator`` (the global random state is left alone;
    dropout draws from it). If iteration 1 stops early, model_1 gets the semantic k-means and is returned
    alone; calling again with the same ``checkpoint_dir`` resumes (each stage has its own seed).
    ``fit_kwargs`` go to :func:`fit` (batch_size, crop_s, lr, progress, ...).
    """
    clips = _check_clips(clips)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    seeds = torch.randint(2**62, (5,), generator=generator).tolist()
    gens = [torch.Generator().manual_seed(s) for s in seeds]     # one stream per stage: resuming repeats them
    budgets = [None if time_budget_s is None else time_budget_s * s / sum(steps) for s in steps]
    km1 = fit_kmeans(torch.cat(clip_features(clips)), config.num_clusters_iter1, gens[0])
    model = _build(dataclasses.replace(config, iteration=1), seeds[0], device)
    folder = (lambda i: None) if checkpoint_dir is None else (lambda i: Path(checkpoint_dir) / f"iteration{i}")
    settings = {**(fit_kwargs.pop("settings", None) or {}), "config": dataclasses.asdict(config)}
    run = [fit(model, clips, label_clips(clips, km1), steps=steps[0], time_budget_s=budgets[0], generator=gens[1],
               checkpoint_dir=folder(1), settings=settings, **fit_kwargs)]
    if not run[0].finished:
        fit_semantic_kmeans(model, clips, gens[4])
        return HubertRun(model, run, [km1])
    km2 = fit_kmeans(torch.cat(clip_features(clips, model)), config.num_clusters, gens[2])
    model2 = _build(dataclasses.replace(config, iteration=2), seeds[2], device)
    if warm_start:
        model2.load_state_dict({k: v for k, v in model.state_dict().items() if k != "label_emb"}, strict=False)
    if budgets[1] is not None:
        budgets[1] = max(1.0, time_budget_s - run[0].wall_time_s)
    run.append(fit(model2, clips, label_clips(clips, km2, model), steps=steps[1], time_budget_s=budgets[1],
                   generator=gens[3], checkpoint_dir=folder(2), settings=settings, **fit_kwargs))
    fit_semantic_kmeans(model2, clips, gens[4])
    return HubertRun(model2, run, [km1, km2])
