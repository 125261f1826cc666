"""AudioLM (Borsos et al. 2023), course-sized: semantic tokens, acoustic tokens, three language models.

Borsos, Marinier, Vincent, Kharitonov, Pietquin, Sharifi, Roblek, Teboul, Grangier, Tagliasacchi, Zeghidour,
"AudioLM: a Language Modeling Approach to Audio Generation", IEEE/ACM TASLP 31 (2023), arXiv:2209.03143:
two tokenizers and three decoder-only transformers (:class:`course_lib.transformer.TokenLM`), as in its
"Hierarchical modeling of semantic and acoustic tokens" and Fig. 2.

* **Semantic tokens** z (what is said): k-means ids of a middle layer of a self-supervised model at 25 Hz,
  :meth:`course_lib.hubert.HuBERT.semantic_tokens` or :mod:`course_lib.external.hubert` (paper: w2v-BERT, 1,024).
* **Acoustic tokens** y (how it sounds): residual-VQ codes of :mod:`course_lib.codec` at 50 Hz (paper:
  SoundStream, 12 levels of 1,024). The first Q' levels are *coarse* (paper: 4 of 12; here the first third,
  :func:`coarse_quantizers`), the others *fine*.
* **Stage 1** (:class:`SemanticStage`): p(z_t | z_<t) over semantic tokens without consecutive repeats
  (:func:`dedup`; lucidrains/audiolm-pytorch ``batch_unique_consecutive``, ``unique_consecutive=True`` in its
  semantic and coarse wrappers).
* **Stage 2** (:class:`CoarseStage`): p(y^{1..Q'} | z): the deduplicated semantic tokens of the same time span
  (:func:`semantic_span`) are TokenLM's prefix, the coarse codes follow frame-major (y_1^1 .. y_1^Q', y_2^1,
  ...; :func:`flatten_codes`). In a continuation the prompt's coarse codes start the sequence: this
  *acoustic prompt* keeps the speaker. Course variant (``aligned_semantic``): each code also hears its own
  frame's semantic token, added per position; stage 1's deduplicated tokens then get run lengths drawn from
  the training data's (:meth:`CoarseStage.expand`), a simple stand-in for the duration model of prosody-aware
  GSLM (Kharitonov et al. 2022).
* **Stage 3** (:class:`FineStage`): p(y^{Q'+1..Q} | y^{1..Q'}) in non-overlapping chunks (paper: 3 s), the
  chunk's coarse codes as prefix.

Level q's codes are offset by q * K into one vocabulary; a position is scored and sampled over its own
level's K codes only (lucidrains ``CoarseTransformer``: offsets and per-quantizer ``coarse_logit_weights``).
Training crops (paper: 30, 10 and 3 s per stage, quoted in lucidrains/audiolm-pytorch issue #36) are
course-sized in :data:`PRESETS`. Course choices: no EOS token (outputs have a duration; stage 1 samples
as many tokens as the deduplicated rate of its training data, ``SemanticStage.tokens_per_second``, gives);
stage 2 sees all its semantic tokens at once, so one call makes at most ``coarse_frames`` frames; prefixes
are right-padded with one PAD id.

The token layout (:func:`dedup`, :func:`flatten_codes`, :func:`extract_tokens`) is in :mod:`course_lib.audiolm_tokens`.

Shapes: B batch, T samples, N semantic tokens (25 Hz), L codec frames (50 Hz), Q levels, K codes per level.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import checkpoint
from course_lib import codec as codec_lib
from course_lib import hubert as hubert_lib
from course_lib.audiolm_tokens import (AudioTokens, _check_codes, _pad, dedup, extract_tokens, flatten_codes,
                                      semantic_span, unflatten_codes)
from course_lib.train import TrainConfig, Trainer, TrainResult, optimizer_step, warmup_cosine
from course_lib.transformer import IGNORE_INDEX, TokenLM, TransformerConfig, top_k_filter

__all__ = ["AudioLMConfig", "PRESETS", "AudioTokens", "StageLosses", "coarse_quantizers", "dedup", "semantic_span",
           "flatten_codes", "unflatten_codes", "extract_tokens", "SemanticStage", "CoarseStage",
           "FineStage", "fit_stage", "AudioLM", "save_pretrained", "load_pretrained", "STAGES", "IGNORE_INDEX"]


def coarse_quantizers(num_quantizers: int) -> int:
    """Q': the first third of the RVQ levels, at least one (AudioLM: 4 of 12)."""
    return max(1, round(num_quantizers / 3))


@dataclass(frozen=True)
class AudioLMConfig:
    """Tokenizer vocabularies (:meth:`with_tokenizers` reads them) and the three transformers' sizes."""

    hubert: str = "hubert-speech"            # semantic tokenizer checkpoint the stages pair with
    codec: str = "codec-speech"              # acoustic tokenizer checkpoint
    semantic_vocab_size: int = 256           # K_s, semantic clusters (AudioLM: 1,024)
    codebook_size: int = 256                 # K per RVQ level (AudioLM: 1,024)
    num_quantizers: int = 15                 # Q (AudioLM: 12)
    num_coarse: int = 5                      # Q' (AudioLM: 4)
    sample_rate: int = 16_000
    hop_length: int = 320                    # samples per codec frame: 50 Hz
    frames_per_semantic: int = 2             # r, codec frames per semantic token: 50 Hz / 25 Hz
    semantic_context: int = 256              # deduplicated tokens per window (AudioLM: 30 s)
    coarse_frames: int = 150                 # codec frames per coarse window: 3 s (AudioLM: 10 s)
    fine_frames: int = 25                    # frames per fine chunk: 0.5 s (AudioLM: 3 s)
    semantic_layers: int = 4
    semantic_width: int = 128
    coarse_layers: int = 4
    coarse_width: int = 128
    fine_layers: int = 3
    fine_width: int = 128
    n_head: int = 4
    dropout: float = 0.1
    # Per-stage temperatures as the course's brief gives AudioLM's (unchecked here; lucidrains: 1.0 in every stage)
    semantic_temperature: float = 0.6
    coarse_temperature: float = 0.8
    fine_temperature: float = 0.6
    # Stage 2 also hears each frame's semantic token, added per position (as Jukebox's upsamplers hear the level
    # above): the deduplicated prefix alone leaves it to find the alignment. Stage 1's tokens get run lengths
    # drawn from the training data's (up to max_run tokens), like GSLM's unit durations (Lakhotia et al. 2021).
    aligned_semantic: bool = False
    max_run: int = 16

    def __post_init__(self) -> None:
        if not 1 <= self.num_coarse < self.num_quantizers:
            raise ValueError(f"need 1 <= num_coarse < num_quantizers (some fine levels), got {self.num_coarse} of "
                             f"{self.num_quantizers}; use num_coarse=coarse_quantizers(num_quantizers).")
        if self.coarse_frames % self.frames_per_semantic or min(self.coarse_frames, self.fine_frames) < 1:
            raise ValueError(f"coarse_frames={self.coarse_frames} must be a positive multiple of frames_per_semantic="
                             f"{self.frames_per_semantic}, and fine_frames={self.fine_frames} positive.")

    @property
    def num_fine(self) -> int:
        return self.num_quantizers - self.num_coarse

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def semantic_rate(self) -> float:
        return self.frame_rate / self.frames_per_semantic

    @staticmethod
    def preset(name: str) -> AudioLMConfig:
        """``tiny`` (smoke), ``small`` (cpu), ``base`` (gpu); then :meth:`with_tokenizers` reads the vocabularies."""
        return checkpoint.preset(PRESETS, name, "AudioLM")

    def with_tokenizers(self, semantic_model: nn.Module, codec: codec_lib.Codec, hubert: str | None = None,
                        codec_name: str | None = None) -> AudioLMConfig:
        """This config with the vocabularies and rates of ``semantic_model`` and ``codec`` (and their names)."""
        if semantic_model.quantizer is None:
            raise ValueError("the semantic model has no k-means yet: fit it first (hubert.fit_semantic_kmeans).")
        q = codec.num_quantizers
        return dataclasses.replace(
            self, hubert=hubert or self.hubert, codec=codec_name or self.codec,
            semantic_vocab_size=semantic_model.quantizer.num_clusters, codebook_size=codec.config.codebook_size,
            num_quantizers=q, num_coarse=coarse_quantizers(q), sample_rate=codec.sample_rate,
            hop_length=codec.hop_length, frames_per_semantic=round(codec.frame_rate / semantic_model.semantic_rate))


# Presets size the transformers and windows; the tokenizer fields are those of codec-speech and a small HuBERT
# until with_tokenizers(hubert, codec) reads the real ones.
PRESETS = {
    "tiny": AudioLMConfig(semantic_context=32, coarse_frames=50, fine_frames=10, semantic_layers=1, semantic_width=32,
                          coarse_layers=1, coarse_width=32, fine_layers=1, fine_width=32, n_head=2, dropout=0.0),
    "small": AudioLMConfig(),
    "base": AudioLMConfig(semantic_context=512, coarse_frames=300, fine_frames=50, semantic_layers=8, semantic_width=256,
                          coarse_layers=8, coarse_width=256, fine_layers=6, fine_width=256, n_head=8),
}


# ============================================================================= the three stages
class StageLosses(NamedTuple):
    total: Tensor      # mean next-token cross-entropy (nats) over targets != IGNORE_INDEX
    accuracy: Tensor   # fraction of those targets that are the argmax


def _losses(logits: Tensor, targets: Tensor) -> StageLosses:
    """(B, N, V) logits and (B, N) targets (IGNORE_INDEX where no loss) -> StageLosses."""
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
    return StageLosses(ce, (logits.argmax(-1) == targets)[targets != IGNORE_INDEX].float().mean().detach())


def _level_logits(logits: Tensor, num_quantizers: int, codebook_size: int) -> Tensor:
    """(B, N, Q * K) -> (B, N, K): position j keeps the logits of its own level j % Q (lucidrains' per-level heads)."""
    j = torch.arange(logits.shape[1], device=logits.device)
    return logits.unflatten(-1, (num_quantizers, codebook_size))[:, j, j % num_quantizers]


def _draw(logits: Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None) -> Tensor:
    """(B, V) -> (B, 1): temperature sampling (0 = argmax), optionally among the top k."""
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)


def _window(length: int, size: int, align: int, generator: torch.Generator | None) -> tuple[int, int]:
    """A random span [a, a + n) of at most ``size`` of ``length`` positions, ``a`` a multiple of ``align``."""
    n = min(length, size)
    return align * int(torch.randint((length - n) // align + 1, (1,), generator=generator)), n


class _Stage(nn.Module):
    """A TokenLM over ``levels`` RVQ levels of flattened codes after a prefix; built from the whole config."""

    def __init__(self, config: AudioLMConfig, levels: int, codebook_size: int, prefix_vocab: int, block: int,
                 layers: int, width: int, cond_dim: int = 0) -> None:
        super().__init__()
        self.config, self.levels, self.codebook_size = config, levels, codebook_size
        self.lm = TokenLM(TransformerConfig(vocab_size=levels * codebook_size, block_size=block, n_layer=layers,
                                            n_head=config.n_head, n_embd=width, dropout=config.dropout,
                                            prefix_vocab_size=prefix_vocab, cond_dim=cond_dim))

    def _pick(self, data: list[AudioTokens], batch_size: int, generator: torch.Generator | None) -> list[AudioTokens]:
        return [data[i] for i in torch.randint(len(data), (batch_size,), generator=generator).tolist()]

    def logits(self, prefix: Tensor, codes: Tensor, cond: Tensor | None = None) -> Tensor:
        """Prefix ids (B, M), codes (B, levels, L) and, for a stage with a cond input, cond (B, L * levels, C)
        -> (B, L * levels, K): each position scores its level's codes."""
        x = flatten_codes(codes.clamp(min=0), self.codebook_size)
        return _level_logits(self.lm(x[:, :-1], prefix=prefix, cond=cond).logits, self.levels, self.codebook_size)

    def losses(self, prefix: Tensor, codes: Tensor, cond: Tensor | None = None) -> StageLosses:
        """Next-token loss of codes (B, levels, L) (IGNORE_INDEX = padding) after the prefix (B, M)."""
        return _losses(self.logits(prefix, codes, cond), codes.transpose(1, 2).flatten(1))

    @torch.no_grad()
    def _continue(self, prefix: Tensor, prompt: Tensor, frames: int, temperature: float, top_k: int | None,
                  generator: torch.Generator | None, cond: Tensor | None = None) -> Tensor:
        """Codes (B, levels, L_p) -> (B, levels, frames): each new token drawn from its level's K codes, KV-cached;
        ``cond`` (B, frames * levels, C): the added conditioning of every token."""
        K, ids, was_training = self.codebook_size, flatten_codes(prompt, self.codebook_size), self.training
        steps, n = frames * self.levels - ids.shape[1], ids.shape[1]
        c = (lambda a, b: None) if cond is None else (lambda a, b: cond[:, a:b])
        self.eval()
        try:
            out = self.lm(ids, prefix=prefix, cond=c(0, n + 1)) if steps else None
            for t in range(steps):
                q = ids.shape[1] % self.levels                       # level of the token to draw
                code = _draw(out.logits[:, -1, q * K:(q + 1) * K], temperature, top_k, generator)
                ids = torch.cat([ids, code + q * K], dim=1)
                if t + 1 < steps:
                    out = self.lm(ids[:, -1:], cache=out.cache, cond=c(ids.shape[1], ids.shape[1] + 1))
        finally:
            self.train(was_training)
        return unflatten_codes(ids, self.levels, K)


class SemanticStage(_Stage):
    """Stage 1: deduplicated semantic tokens after a one-token BOS prefix."""

    def __init__(self, config: AudioLMConfig | None = None) -> None:
        cfg = config or AudioLMConfig()
        super().__init__(cfg, 1, cfg.semantic_vocab_size, 1, cfg.semantic_context, cfg.semantic_layers,
                         cfg.semantic_width)
        # Deduplicated tokens per second of the training data (set by fit_stage): how many to sample per second.
        self.register_buffer("tokens_per_second", torch.tensor(cfg.semantic_rate))

    def batch(self, data: list[AudioTokens], batch_size: int, generator: torch.Generator | None) -> tuple[Tensor]:
        """Random windows of deduplicated tokens, (B, N) padded with IGNORE_INDEX."""
        rows = []
        for tok in self._pick(data, batch_size, generator):
            d = dedup(tok.semantic[0])
            a, n = _window(len(d), self.config.semantic_context, 1, generator)
            rows.append(d[a:a + n])
        return (_pad(rows, IGNORE_INDEX),)

    def losses(self, tokens: Tensor) -> StageLosses:
        """Next-token loss of (B, N) deduplicated tokens (IGNORE_INDEX = padding): one level, a BOS prefix."""
        return super().losses(tokens.new_zeros(tokens.shape[0], 1), tokens[:, None])

    @torch.no_grad()
    def sample(self, prompt: Tensor, steps: int, temperature: float | None = None, top_k: int | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        """Continue deduplicated tokens (B, P) (P may be 0) by ``steps``: (B, P + steps), windowed past the context."""
        bos = torch.zeros(prompt.shape[0], 1, dtype=torch.long, device=prompt.device)
        t = self.config.semantic_temperature if temperature is None else temperature
        return self.lm.sample(prompt, steps, temperature=t, top_k=top_k, generator=generator, prefix=bos,
                              window_stride=max(1, self.config.semantic_context // 2))


class CoarseStage(_Stage):
    """Stage 2: [deduplicated semantic tokens of the span, PAD...] as prefix, then the coarse codes; with
    ``config.aligned_semantic`` each code also hears its frame's semantic token (:meth:`aligned`)."""

    def __init__(self, config: AudioLMConfig | None = None) -> None:
        cfg = config or AudioLMConfig()
        m = cfg.coarse_frames // cfg.frames_per_semantic                     # M: semantic tokens of a window, at most
        super().__init__(cfg, cfg.num_coarse, cfg.codebook_size, cfg.semantic_vocab_size + 1,
                         m + cfg.coarse_frames * cfg.num_coarse, cfg.coarse_layers, cfg.coarse_width,
                         cond_dim=cfg.semantic_vocab_size + 1 if cfg.aligned_semantic else 0)
        self.max_semantic = m
        if cfg.aligned_semantic:    # how often token k lasted 1..max_run tokens in the training data (fit_stage)
            self.register_buffer("run_lengths", torch.ones(cfg.semantic_vocab_size, cfg.max_run))

    def aligned(self, semantic: list[Tensor], frames: int) -> Tensor | None:
        """Semantic rows (duplicates kept, one token per ``frames_per_semantic`` frames) -> (B, frames * Q', K_s + 1)
        one-hot: the token of each code's frame (PAD past a row's end). None without ``config.aligned_semantic``."""
        cfg = self.config
        if not cfg.aligned_semantic:
            return None
        rows = [s.repeat_interleave(cfg.frames_per_semantic * cfg.num_coarse)[:frames * cfg.num_coarse] for s in semantic]
        return F.one_hot(_pad(rows, cfg.semantic_vocab_size, frames * cfg.num_coarse), cfg.semantic_vocab_size + 1).float()

    def expand(self, tokens: Tensor, length: int, generator: torch.Generator | None = None) -> Tensor:
        """Deduplicated tokens (B, N') -> (B, length) with each token repeated for a run length drawn from
        :attr:`run_lengths` (stage 1 writes no durations); the last token fills up a short row."""
        if tokens.ndim != 2 or tokens.shape[1] == 0:
            raise ValueError(f"tokens must be (B, N') with N' >= 1 semantic tokens to expand, got {tuple(tokens.shape)}.")
        rows = []
        for row in tokens:
            runs = torch.multinomial(self.run_lengths[row], 1, generator=generator)[:, 0] + 1
            out = row.repeat_interleave(runs)[:length]
            rows.append(F.pad(out, (0, length - len(out)), value=int(row[-1])))
        return torch.stack(rows)

    def prefix(self, semantic: list[Tensor]) -> Tensor:
        """Semantic token rows (any length, duplicates allowed) -> (B, M) deduplicated, PAD-padded prefix ids."""
        _check_codes(torch.cat([s.flatten() for s in semantic]), self.config.semantic_vocab_size, "semantic tokens")
        return _pad([dedup(s) for s in semantic], self.config.semantic_vocab_size, self.max_semantic, "coarse prefix")

    def batch(self, data: list[AudioTokens], batch_size: int, generator: torch.Generator | None) -> tuple[Tensor, ...]:
        """Random windows: prefix (B, M), coarse codes (B, Q', <= coarse_frames) (IGNORE_INDEX past a clip's end)
        and, with ``config.aligned_semantic``, :meth:`aligned` tokens."""
        cfg, sem, codes = self.config, [], []
        for tok in self._pick(data, batch_size, generator):
            a, n = _window(tok.coarse.shape[-1], cfg.coarse_frames, cfg.frames_per_semantic, generator)
            s0, s1 = semantic_span(a, a + n, cfg.frames_per_semantic)
            sem.append(tok.semantic[0, s0:s1])
            codes.append(tok.coarse[0, :, a:a + n])
        codes = _pad(codes, IGNORE_INDEX)
        return (self.prefix(sem), codes) + ((self.aligned(sem, codes.shape[-1]),) if cfg.aligned_semantic else ())

    @torch.no_grad()
    def sample(self, semantic: list[Tensor], frames: int, prompt: Tensor | None = None,
               temperature: float | None = None, top_k: int | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        """Coarse codes (B, Q', frames) for the span of ``semantic`` (B rows), continuing ``prompt`` (B, Q', L_p).
        With ``config.aligned_semantic`` the rows keep their repeats and cover every frame (:meth:`expand`)."""
        cfg = self.config
        if frames > cfg.coarse_frames:
            raise ValueError(f"{frames} frames ({frames / cfg.frame_rate:.2f} s) exceed the coarse stage's window of "
                             f"{cfg.coarse_frames} ({cfg.coarse_frames / cfg.frame_rate:.2f} s): ask for less audio.")
        if cfg.aligned_semantic and min(len(s) for s in semantic) * cfg.frames_per_semantic < frames:
            raise ValueError(f"this stage hears the semantic token of every frame: give {frames} / "
                             f"{cfg.frames_per_semantic} tokens per row, duplicates kept (coarse.expand(dedup_tokens, n)).")
        prefix = self.prefix(semantic)
        prompt = prefix.new_zeros(len(semantic), cfg.num_coarse, 0) if prompt is None else prompt
        if prompt.shape[1] != cfg.num_coarse or prompt.shape[-1] > frames:
            raise ValueError(f"prompt must be (B, {cfg.num_coarse}, L_p <= {frames}), got {tuple(prompt.shape)}.")
        t = cfg.coarse_temperature if temperature is None else temperature
        return self._continue(prefix, prompt, frames, t, top_k, generator, self.aligned(semantic, frames))


class FineStage(_Stage):
    """Stage 3: [coarse codes of a chunk, PAD...] as prefix, then the chunk's fine codes."""

    def __init__(self, config: AudioLMConfig | None = None) -> None:
        cfg = config or AudioLMConfig()
        super().__init__(cfg, cfg.num_fine, cfg.codebook_size, cfg.num_coarse * cfg.codebook_size + 1,
                         cfg.fine_frames * cfg.num_quantizers, cfg.fine_layers, cfg.fine_width)

    def prefix(self, coarse: Tensor) -> Tensor:
        """Coarse codes (B, Q', n <= fine_frames) -> (B, fine_frames * Q') flattened, PAD-padded prefix ids."""
        cfg, x = self.config, flatten_codes(coarse, self.config.codebook_size)
        return _pad(list(x), cfg.num_coarse * cfg.codebook_size, cfg.fine_frames * cfg.num_coarse, "fine prefix")

    def batch(self, data: list[AudioTokens], batch_size: int,
              generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Random chunks: prefix (B, fine_frames * Q') and fine codes (B, Q - Q', <= fine_frames)."""
        cfg, coarse, fine = self.config, [], []
        for tok in self._pick(data, batch_size, generator):
            a, n = _window(tok.fine.shape[-1], cfg.fine_frames, 1, generator)
            coarse.append(self.prefix(tok.coarse[:, :, a:a + n])[0])
            fine.append(tok.fine[0, :, a:a + n])
        return torch.stack(coarse), _pad(fine, IGNORE_INDEX)

    @torch.no_grad()
    def sample(self, coarse: Tensor, prompt: Tensor | None = None, temperature: float | None = None,
               top_k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Fine codes (B, Q - Q', L) for coarse codes (B, Q', L), chunk by chunk; ``prompt`` (B, Q - Q', L_p)
        gives the first L_p frames (they are kept, the rest of their chunk continues them)."""
        cfg, W = self.config, self.config.fine_frames
        prompt = coarse.new_zeros(coarse.shape[0], cfg.num_fine, 0) if prompt is None else prompt
        if coarse.dim() != 3 or coarse.shape[1] != cfg.num_coarse or prompt.shape[1] != cfg.num_fine:
            raise ValueError(f"coarse must be (B, {cfg.num_coarse}, L) and prompt (B, {cfg.num_fine}, L_p), got "
                             f"{tuple(coarse.shape)} and {tuple(prompt.shape)}.")
        t = cfg.fine_temperature if temperature is None else temperature
        spans = [(a, min(a + W, coarse.shape[-1])) for a in range(0, coarse.shape[-1], W)]   # non-overlapping chunks
        return torch.cat([self._continue(self.prefix(coarse[..., a:b]), prompt[..., a:b], b - a, t, top_k, generator)
                          for a, b in spans], dim=-1)


STAGES: dict[str, type[_Stage]] = {"semantic": SemanticStage, "coarse": CoarseStage, "fine": FineStage}


# ============================================================================= training
def _check_data(cfg: AudioLMConfig, data: list[AudioTokens]) -> None:
    if not data:
        raise ValueError("No training tokens: pass [extract_tokens(c[None], hubert, codec, Q') for c in clips].")
    for i, tok in enumerate(data):
        n, lc, lf = tok.semantic.shape[-1], tok.coarse.shape[-1], tok.fine.shape[-1]
        if tok.coarse.shape[:2] != (1, cfg.num_coarse) or tok.fine.shape[:2] != (1, cfg.num_fine) or \
                lc != lf or lc != n * cfg.frames_per_semantic:
            raise ValueError(f"data[{i}] does not fit this config: semantic {tuple(tok.semantic.shape)}, coarse "
                             f"{tuple(tok.coarse.shape)}, fine {tuple(tok.fine.shape)}; expected (1, N), (1, "
                             f"{cfg.num_coarse}, {cfg.frames_per_semantic}N), (1, {cfg.num_fine}, same L).")
        _check_codes(tok.semantic, cfg.semantic_vocab_size, f"data[{i}].semantic")
        _check_codes(torch.cat([tok.coarse, tok.fine], 1), cfg.codebook_size, f"data[{i}] acoustic codes")


def fit_stage(stage: _Stage, data: list[AudioTokens], *, steps: int, time_budget_s: float | None = None,
              generator: torch.Generator | None = None, checkpoint_dir: str | Path | None = None,
              batch_size: int = 8, lr: float = 1e-3, settings: dict | None = None, progress: bool = True,
              log_every: int = 10) -> TrainResult:
    """Train one stage on pre-computed tokens (the paper trains the three stages separately).

    AdamW (nanoGPT's decay groups), linear warm-up over 5% of the steps, cosine decay to 10%; gradients
    clipped at 1. Resumable through ``checkpoint_dir``/last.pt. The semantic stage first records its
    data's deduplicated token rate (``tokens_per_second``), which ``generate`` uses.
    """
    cfg = stage.config
    _check_data(cfg, data)
    if isinstance(stage, SemanticStage):
        seconds = sum(t.semantic.shape[-1] for t in data) / cfg.semantic_rate
        stage.tokens_per_second.fill_(sum(len(dedup(t.semantic[0])) for t in data) / seconds)
    if isinstance(stage, CoarseStage) and cfg.aligned_semantic:          # run lengths, one pseudo-count each
        runs = torch.ones_like(stage.run_lengths)
        for t in data:
            ids, n = torch.unique_consecutive(t.semantic[0], return_counts=True)
            runs.index_put_((ids, n.clamp(max=cfg.max_run) - 1), torch.ones(len(ids)), accumulate=True)
        stage.run_lengths.copy_(runs)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    device = next(stage.parameters()).device
    opt = stage.lm.configure_optimizers(weight_decay=0.01, learning_rate=lr)
    sched = warmup_cosine(opt, steps, warmup=max(1, steps // 20), floor=0.1)
    trainer = Trainer({type(stage).__name__: stage}, {"adamw": opt}, TrainConfig(
        max_steps=steps, time_budget_s=time_budget_s, checkpoint_dir=checkpoint_dir, log_every=log_every,
        progress=progress, settings=settings), {"lr": sched}, generators={"batches": generator})

    def step_fn(step: int) -> StageLosses:
        batch = [x.to(device) for x in stage.batch(data, batch_size, generator)]
        return optimizer_step(stage.losses(*batch), opt, 1.0)

    trainer.fit(step_fn)
    return trainer.result(stage.eval())


# ============================================================================= the pipeline
_TOKENIZER = ("semantic_vocab_size", "codebook_size", "num_quantizers", "sample_rate", "hop_length",
              "frames_per_semantic")                      # what the tokenizers decide
_SHARED = ("hubert", "codec", "num_coarse", *_TOKENIZER)  # what the three stages must agree on


class AudioLM(nn.Module):
    """The three stages with their tokenizers: ``tokens``, ``generate``, ``continue_``, ``resynthesize``."""

    def __init__(self, semantic: SemanticStage, coarse: CoarseStage, fine: FineStage, semantic_model: nn.Module,
                 codec: codec_lib.Codec) -> None:
        super().__init__()
        cfg = semantic.config
        diff = {f for st in (coarse, fine) for f in _SHARED if getattr(st.config, f) != getattr(cfg, f)}
        if diff:
            raise ValueError(f"The stages were trained with different tokenizers ({sorted(diff)} differ): train all "
                             f"three on tokens of one HuBERT and one codec.")
        want = cfg.with_tokenizers(semantic_model, codec, cfg.hubert, cfg.codec)
        diff = [f for f in _TOKENIZER if getattr(want, f) != getattr(cfg, f)]
        if diff:
            pairs = ", ".join(f"{f} {getattr(want, f)} != {getattr(cfg, f)}" for f in diff)
            raise ValueError(f"The tokenizers do not fit the stages (tokenizers vs stages: {pairs}). Load the HuBERT "
                             f"{cfg.hubert!r} and codec {cfg.codec!r} the stages were trained with.")
        self.semantic, self.coarse, self.fine = semantic.eval(), coarse.eval(), fine.eval()
        self.semantic_model, self.codec = semantic_model.eval(), codec.eval()
        self.config = cfg

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def tokens(self, wav: Tensor, sample_rate: int | None = None) -> AudioTokens:
        """(B, 1, T) -> semantic (B, N) at 25 Hz and coarse/fine codes (B, Q', 2N), (B, Q - Q', 2N)."""
        return extract_tokens(wav, self.semantic_model, self.codec, self.config.num_coarse, sample_rate)

    def decode(self, coarse: Tensor, fine: Tensor) -> Tensor:
        """All Q levels -> audio (B, 1, L * hop_length)."""
        return self.codec.decode(torch.cat([coarse, fine], dim=1))

    def _frames(self, seconds: float) -> int:
        r = self.config.frames_per_semantic
        frames = round(seconds * self.config.semantic_rate) * r
        if frames < r:
            raise ValueError(f"seconds={seconds} is shorter than one semantic token ({1 / self.config.semantic_rate} s).")
        return frames

    def _new_semantic(self, prompt: Tensor, frames: int, generator: torch.Generator | None) -> Tensor:
        """Stage 1: continue deduplicated tokens (B, P) by as many tokens as ``frames`` of audio hold on average;
        for a coarse stage that hears every frame's token, with run lengths (:meth:`CoarseStage.expand`)."""
        steps = max(1, round(frames / self.config.frame_rate * float(self.semantic.tokens_per_second)))
        new = self.semantic.sample(prompt, steps, generator=generator)[:, prompt.shape[1]:]
        aligned = self.coarse.config.aligned_semantic
        return self.coarse.expand(new, -(-frames // self.config.frames_per_semantic), generator) if aligned else new

    def _acoustics(self, prompt: AudioTokens, semantic: Tensor, frames: int, generator: torch.Generator | None,
                   acoustic_prompt: bool = True) -> tuple[Tensor, Tensor]:
        """Stages 2 and 3: codes of ``prompt`` followed by ``frames`` new frames that say ``semantic`` (1-D).

        The coarse stage sees the last ``coarse_frames - frames`` frames of the prompt (semantic tokens and,
        with ``acoustic_prompt``, coarse codes); the fine stage continues the prompt's fine codes.
        """
        cfg, r = self.config, self.config.frames_per_semantic
        n_p = prompt.coarse.shape[-1]
        keep = min(n_p, (cfg.coarse_frames - frames) // r * r)       # prompt frames inside the coarse window
        if frames > cfg.coarse_frames or (acoustic_prompt and keep == 0):
            raise ValueError(f"{frames / cfg.frame_rate:.2f} s of new audio leave no room for the prompt in the coarse "
                             f"stage's {cfg.coarse_frames / cfg.frame_rate:.2f} s window: ask for fewer seconds.")
        a = n_p - keep
        sem = torch.cat([prompt.semantic[0, a // r:], semantic.to(prompt.semantic.device)])
        coarse = self.coarse.sample([sem], keep + frames, prompt.coarse[..., a:] if acoustic_prompt else None,
                                    generator=generator)
        coarse = torch.cat([prompt.coarse[..., :a], coarse], dim=-1)
        return coarse, self.fine.sample(coarse, prompt.fine if acoustic_prompt else None, generator=generator)

    @torch.no_grad()
    def generate(self, n: int, seconds: float, generator: torch.Generator | None = None) -> Tensor:
        """``n`` clips (n, 1, T) of ``seconds`` from nothing: semantic -> coarse -> fine -> codec decoder."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}.")
        frames = self._frames(seconds)
        sem = self._new_semantic(torch.zeros(n, 0, dtype=torch.long), frames, generator)
        coarse = self.coarse.sample(list(sem), frames, generator=generator)
        return self.decode(coarse, self.fine.sample(coarse, generator=generator))

    def _prompt(self, wav: Tensor, sample_rate: int | None) -> AudioTokens:
        if isinstance(wav, Tensor) and wav.dim() == 3 and wav.shape[0] != 1:
            raise ValueError(f"one prompt at a time: prompt_wav must be (1, 1, T), got {tuple(wav.shape)}.")
        return self.tokens(wav, sample_rate)

    @torch.no_grad()
    def continue_(self, prompt_wav: Tensor, seconds: float, generator: torch.Generator | None = None, *,
                  sample_rate: int | None = None, acoustic_prompt: bool = True) -> Tensor:
        """The prompt (1, 1, T) continued to ``seconds`` in all: (1, 1, seconds * sample_rate), prompt re-decoded.

        The prompt's semantic tokens start stage 1; its coarse and fine codes start stages 2 and 3 (the
        acoustic prompt that keeps the speaker). ``acoustic_prompt=False`` withholds them from stages 2
        and 3 (the paper's speaker test without an acoustic prompt).
        """
        tok = self._prompt(prompt_wav, sample_rate)
        total, n_p = self._frames(seconds), tok.coarse.shape[-1]
        if total <= n_p:
            raise ValueError(f"The prompt lasts {n_p / self.config.frame_rate:.2f} s; ask for more seconds than that "
                             f"(got {seconds}).")
        new = self._new_semantic(dedup(tok.semantic[0])[None], total - n_p, generator)[0]
        return self.decode(*self._acoustics(tok, new, total - n_p, generator, acoustic_prompt))

    @torch.no_grad()
    def resynthesize(self, semantic: Tensor, prompt_wav: Tensor, generator: torch.Generator | None = None, *,
                     sample_rate: int | None = None) -> Tensor:
        """Say ground-truth semantic tokens (1, N) (e.g. ``tokens(other).semantic``) in the voice of ``prompt_wav``.

        Stage 1 is skipped; stages 2 and 3 continue the prompt's acoustic tokens. Returns the new part only:
        (1, 1, N * frames_per_semantic * hop_length).
        """
        if semantic.dim() != 2 or semantic.shape[0] != 1:
            raise ValueError(f"semantic must be (1, N) tokens of one clip, got {tuple(semantic.shape)}.")
        _check_codes(semantic, self.config.semantic_vocab_size, "semantic")
        tok = self._prompt(prompt_wav, sample_rate)
        frames = semantic.shape[1] * self.config.frames_per_semantic
        wav = self.decode(*self._acoustics(tok, semantic[0], frames, generator))
        return wav[..., tok.coarse.shape[-1] * self.config.hop_length:]


def save_pretrained(model: AudioLM | tuple[SemanticStage, CoarseStage, FineStage], directory: str | Path,
                    cards: dict[str, dict] | None = None, dtype: torch.dtype | None = None) -> list[Path]:
    """Three checkpoint folders ``DIR-semantic``, ``DIR-coarse``, ``DIR-fine``; each config names the
    HuBERT and codec checkpoints the stages pair with. ``cards`` maps a stage name to its card; ``dtype``
    (e.g. ``torch.float16``) stores the weights at that precision."""
    stages = (model.semantic, model.coarse, model.fine) if isinstance(model, AudioLM) else model
    return [checkpoint.save_pretrained(s, s.config, f"{directory}-{k}", card=(cards or {}).get(k), dtype=dtype)
            for k, s in zip(STAGES, stages)]


def load_pretrained(name: str | Path = "audiolm-speech", semantic_model: nn.Module | None = None,
                    codec: codec_lib.Codec | None = None) -> AudioLM:
    """The three stages ``NAME-semantic``, ``NAME-coarse``, ``NAME-fine`` with their tokenizers: the
    HuBERT and codec named in their config (``hubert.load_pretrained``, ``codec.load_pretrained``) unless given."""
    s, c, f = (checkpoint.load_pretrained(f"{name}-{k}", cls, AudioLMConfig) for k, cls in STAGES.items())
    semantic_model = semantic_model if semantic_model is not None else hubert_lib.load_pretrained(s.config.hubert)
    codec = codec if codec is not None else codec_lib.load_pretrained(s.config.codec)
    return AudioLM(s, c, f, semantic_model, codec)
