"""One decoder-only transformer over discrete tokens: Jukebox's priors and AudioLM's three stages.

The architecture of Vaswani et al. 2017, "Attention Is All You Need", in the decoder-only, pre-norm
form of GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners"), written
in the shape of karpathy/nanoGPT's ``model.py``. Nothing here knows about audio: a model family
turns its codes into token ids and its conditioning into data, never into a subclass.

* **Prefix tokens** (``prefix_vocab_size``): condition tokens such as style, key or a tempo bucket,
  with their own embedding table, placed before the sequence. The last prefix position predicts
  ``idx[:, 0]``, so a prefixed model can generate from the prefix alone.
* **An added sequence** (``cond_dim``): a vector per position, projected and added to the input,
  e.g. a Jukebox upsampler's upsampled upper-level codes.
* **A KV cache** (:class:`KVCache`) passed through ``forward`` and returned, so that sampling a token
  costs O(N) instead of re-running the whole sequence.

One time axis rule: ``logits[:, j]``, ``targets[:, j]`` and ``cond[:, j]`` all belong to the same
predicted token. Without a prefix that is ``idx[:, j + 1]`` (``targets = x[:, 1:]``); with a prefix
the last prefix position comes first and predicts ``idx[:, 0]`` (``targets = x``).

Shapes: B batch, N tokens, M prefix tokens, D width (n_embd), V vocabulary, nh heads, hs head size.

Example:
    >>> cfg = TransformerConfig(vocab_size=16, block_size=32, n_layer=2, n_head=2, n_embd=32, prefix_vocab_size=4)
    >>> model = TokenLM(cfg)
    >>> x, style = torch.randint(0, 16, (2, 20)), torch.tensor([[1], [3]])
    >>> out = model(x[:, :-1], targets=x, prefix=style)     # 19 inputs, 20 predictions
    >>> out.logits.shape
    torch.Size([2, 20, 16])
    >>> model.sample(x[:, :0], steps=8, prefix=style).shape  # empty prompt: start from the style
    torch.Size([2, 8])
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TransformerConfig", "KVCache", "LMOutput", "CausalSelfAttention", "MLP", "Block", "TokenLM",
           "top_k_filter", "top_p_filter", "IGNORE_INDEX"]

IGNORE_INDEX = -100  # targets with this value add nothing to the loss (prompt, padding)


@dataclass(frozen=True)
class TransformerConfig:
    """A small GPT; the defaults train on a laptop CPU."""

    vocab_size: int = 1024       # V, token ids are in [0, V)
    block_size: int = 256        # most positions one forward pass sees: prefix + tokens
    n_layer: int = 4
    n_head: int = 4              # nh
    n_embd: int = 128            # D, must be a multiple of n_head
    dropout: float = 0.0
    bias: bool = True            # biases in Linear and LayerNorm (GPT-2 has them)
    prefix_vocab_size: int = 0   # condition-token ids are in [0, prefix_vocab_size); 0 = no prefix
    cond_dim: int = 0            # width of the added per-position sequence; 0 = none

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be a multiple of n_head={self.n_head}")


@dataclass(frozen=True)
class KVCache:
    """Keys and values of every layer for the positions seen so far (prefix included)."""

    layers: tuple[tuple[Tensor, Tensor], ...]  # n_layer x (k, v), each (B, nh, length, hs)

    @property
    def length(self) -> int:
        return self.layers[0][0].size(2)


class LMOutput(NamedTuple):
    """Result of :meth:`TokenLM.forward`."""

    logits: Tensor        # (B, N_out, V), N_out = N, or N + 1 with a prefix
    loss: Tensor | None   # () mean cross-entropy over targets != IGNORE_INDEX; None without targets
    cache: KVCache        # pass it to the next call to continue the sequence


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which a position sees itself and the past only."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, past: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x (B, N, D) and this layer's cached (k, v) -> (B, N, D) and the extended (k, v)."""
        B, N, D = x.shape
        q, k, v = self.c_attn(x).split(D, dim=2)
        q, k, v = (t.view(B, N, self.n_head, D // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, N, hs)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (B, nh, P + N, hs)
        P = k.size(2) - N  # positions already in the cache
        dropout_p = self.dropout if self.training else 0.0
        if P == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            # is_causal would align the mask to the top-left corner; new query i sits at position P + i
            # and may see keys 0 .. P + i, so the mask is shifted right by P.
            mask = torch.ones(N, P + N, dtype=torch.bool, device=x.device).tril(diagonal=P)  # (N, P + N)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)  # (B, nh, N, hs)
        y = y.transpose(1, 2).reshape(B, N, D)  # heads side by side again
        return self.resid_dropout(self.c_proj(y)), (k, v)


class MLP(nn.Module):
    """Position-wise feed-forward network, 4x wide as in GPT-2."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))  # (B, N, D)


class Block(nn.Module):
    """Pre-norm transformer block: the residual path stays an identity, which keeps deep stacks trainable."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, past: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        a, kv = self.attn(self.ln_1(x), past)
        x = x + a                          # communicate between positions
        x = x + self.mlp(self.ln_2(x))     # compute at each position
        return x, kv


class TokenLM(nn.Module):
    """Decoder-only language model over token ids, with optional prefix and added conditioning."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)          # token embedding
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)          # learned positions, as in GPT-2
        self.prefix_emb = nn.Embedding(cfg.prefix_vocab_size, cfg.n_embd) if cfg.prefix_vocab_size else None
        self.cond_proj = nn.Linear(cfg.cond_dim, cfg.n_embd) if cfg.cond_dim else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        # Weight tying (Press & Wolf 2017, used by GPT-2): input and output vocabularies are one and the
        # same here (sampled tokens are fed back), so one matrix serves both and saves V x D parameters.
        self.lm_head.weight = self.wte.weight
        # GPT-2's initialisation: N(0, 0.02) matrices, zero biases, and residual projections scaled down
        # by depth so that the residual stream, a sum of 2 * n_layer branches, does not grow with depth.
        for name, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer) if name.endswith("c_proj.weight") else 0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)          # LayerNorm gains (1-D "weight") keep their ones

    def num_parameters(self) -> int:
        """Number of parameters (the tied embedding counted once)."""
        return sum(p.numel() for p in self.parameters())

    def configure_optimizers(self, weight_decay: float, learning_rate: float,
                             betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
        """AdamW that decays matrices and embeddings (2-D) but not biases and norm gains (nanoGPT)."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)

    def forward(self, idx: Tensor, targets: Tensor | None = None, *, prefix: Tensor | None = None,
                cond: Tensor | None = None, cache: KVCache | None = None) -> LMOutput:
        """Next-token logits for the positions that predict tokens of the vocabulary.

        Args:
            idx: (B, N) token ids in [0, vocab_size). May be empty (N = 0) when a prefix is given.
            targets: (B, N_out) the tokens to predict, IGNORE_INDEX (-100) where no loss is wanted.
            prefix: (B, M) condition-token ids in [0, prefix_vocab_size), placed before ``idx``. Only in
                the first call of a sequence: afterwards the cache holds it.
            cond: (B, N_out, cond_dim) added conditioning; ``cond[:, j]`` joins the input position that
                predicts ``logits[:, j]``. Required when ``cond_dim > 0``.
            cache: what the previous call returned; ``idx`` continues that sequence.

        Returns:
            LMOutput with logits (B, N_out, V), where N_out = N + 1 with a prefix (the last prefix
            position predicts ``idx[:, 0]``) and N_out = N without; the loss; the extended cache.
        """
        cfg = self.config
        B, N = _check_tokens("idx", idx, cfg.vocab_size, "vocab_size")
        M = 0 if prefix is None else self._check_prefix(prefix, B, cache)
        past = 0 if cache is None else cache.length
        n_out = N + (1 if M else 0)
        if n_out == 0:
            raise ValueError("idx is empty: give at least one token, or a prefix to predict the first token from")
        if past + M + N > cfg.block_size:
            raise ValueError(f"{past} cached + {M} prefix + {N} new positions = {past + M + N} exceed block_size="
                             f"{cfg.block_size}: crop idx to its last {max(cfg.block_size - past - M, 0)} tokens, "
                             f"build the model with a larger block_size, or use sample(..., window_stride=...)")
        if cache is not None and cache.layers[0][0].size(0) != B:
            raise ValueError(f"the cache holds batch size {cache.layers[0][0].size(0)} but idx has B={B}")

        x = self.wte(idx.long())  # (B, N, D)
        if M:
            x = torch.cat([self.prefix_emb(prefix.long()), x], dim=1)  # (B, M + N, D)
        pos = torch.arange(past, past + M + N, device=idx.device)  # positions continue after the cache
        x = x + self.wpe(pos)
        if self.cond_proj is not None:
            _check_cond(cond, (B, n_out, cfg.cond_dim))
            # Zero-pad on the left: the prefix positions before the last one predict nothing.
            x = x + F.pad(self.cond_proj(cond), (0, 0, M + N - n_out, 0))  # (B, M + N, D)
        elif cond is not None:
            raise ValueError("this model has no cond input (cond_dim=0); build it with TransformerConfig(cond_dim=...)")
        x = self.drop(x)

        kvs = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if cache is None else cache.layers[i])
            kvs.append(kv)
        logits = self.lm_head(self.ln_f(x[:, M + N - n_out:]))  # (B, N_out, V)

        loss = None
        if targets is not None:
            _check_targets(targets, (B, n_out), cfg.vocab_size)
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten().long(), ignore_index=IGNORE_INDEX)
        return LMOutput(logits, loss, KVCache(tuple(kvs)))

    def _check_prefix(self, prefix: Tensor, batch: int, cache: KVCache | None) -> int:
        if self.prefix_emb is None:
            raise ValueError("this model has no prefix embedding (prefix_vocab_size=0); build it with "
                             "TransformerConfig(prefix_vocab_size=...) to condition on prefix tokens")
        if cache is not None:
            raise ValueError("pass the prefix only in the first call of a sequence; the cache already holds it")
        B, M = _check_tokens("prefix", prefix, self.config.prefix_vocab_size, "prefix_vocab_size")
        if B != batch or M == 0:
            raise ValueError(f"prefix must have shape (B={batch}, M>=1), got {tuple(prefix.shape)}")
        return M

    @torch.no_grad()
    def sample(self, prompt: Tensor, steps: int, *, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, generator: torch.Generator | None = None, prefix: Tensor | None = None,
               cond: Tensor | None = None, window_stride: int | None = None, guidance: float = 1.0,
               uncond_prefix: Tensor | None = None, uncond_cond: Tensor | None = None) -> Tensor:
        """Continue ``prompt`` by ``steps`` tokens, one at a time, with the KV cache.

        Args:
            prompt: (B, P) token ids; P may be 0 only when a prefix is given.
            steps: number of tokens to generate.
            temperature: divides the logits; 0 means greedy (argmax, no random draw).
            top_k: keep only the k most likely tokens (:func:`top_k_filter`).
            top_p: keep the smallest set of tokens whose probability reaches p (:func:`top_p_filter`).
            generator: source of every random draw; a fixed seed gives the same tokens.
            prefix: (B, M) condition tokens, kept at the start of every window.
            cond: (B, >= P + steps, cond_dim) added conditioning; ``cond[:, t]`` belongs to token t.
            window_stride: when M + P + steps exceeds block_size, sample in windows (Jukebox): keep the
                prefix and the last ``block_size - M - window_stride`` tokens, recompute the cache, and
                generate ``window_stride`` more tokens before the next shift.
            guidance: classifier-free guidance (Ho & Salimans 2022) for a model trained with its condition
                sometimes hidden: every step draws from ``u + guidance * (c - u)``, c the logits under ``prefix``
                and ``cond``, u those of the same tokens under ``uncond_prefix`` and ``uncond_cond`` (the hidden
                condition); 1 turns it off (MusicGen, Copet et al. 2023, samples its token LM at 3).

        Returns:
            (B, P + steps) the prompt followed by the generated tokens.
        """
        cfg = self.config
        B, P = _check_tokens("prompt", prompt, cfg.vocab_size, "vocab_size")
        M = 0 if prefix is None else prefix.size(-1)
        if P == 0 and M == 0:
            raise ValueError("an empty prompt needs a prefix to start from: pass at least one token or a prefix")
        bad_top_p = top_p is not None and not 0 < top_p <= 1
        if steps < 0 or temperature < 0 or (top_k is not None and top_k < 1) or bad_top_p:
            raise ValueError(f"need steps >= 0, temperature >= 0, top_k >= 1, 0 < top_p <= 1; got {steps}, "
                             f"{temperature}, {top_k}, {top_p}")
        if cfg.cond_dim and (cond is None or cond.dim() != 3 or cond.size(1) < P + steps):
            raise ValueError(f"cond must cover prompt + steps = {P + steps} positions: shape (B, >= {P + steps}, "
                             f"cond_dim={cfg.cond_dim}), got {None if cond is None else tuple(cond.shape)}")
        keep = 0
        if M + P + steps > cfg.block_size:
            if window_stride is None:
                raise ValueError(f"prefix ({M}) + prompt ({P}) + steps ({steps}) = {M + P + steps} positions exceed "
                                 f"block_size={cfg.block_size}; pass window_stride=... (e.g. {cfg.block_size // 4}) "
                                 f"to sample in sliding windows, or generate fewer steps")
            keep = cfg.block_size - M - window_stride  # context tokens carried into the next window
            if window_stride < 1 or keep < (0 if M else 1):
                raise ValueError(f"window_stride must be in [1, {cfg.block_size - M - (0 if M else 1)}] for "
                                 f"block_size={cfg.block_size} and a prefix of {M}, got {window_stride}")

        guided = guidance != 1.0
        if guided:  # one batch of 2B rows: the conditioned ones, then the same tokens under the hidden condition
            if uncond_prefix is None and uncond_cond is None:
                raise ValueError(f"guidance={guidance} needs the hidden condition: pass uncond_prefix and/or "
                                 f"uncond_cond (as prefix and cond, with the condition set to 'unknown')")
            for name, x, ux in (("prefix", prefix, uncond_prefix), ("cond", cond, uncond_cond)):
                if ux is not None and (x is None or ux.shape != x.shape):
                    raise ValueError(f"uncond_{name} must have the shape of {name} "
                                     f"({None if x is None else tuple(x.shape)}), got {tuple(ux.shape)}")
            prefix = None if prefix is None else torch.cat([prefix, prefix if uncond_prefix is None else uncond_prefix])
            cond = None if cond is None else torch.cat([cond, cond if uncond_cond is None else uncond_cond])
            prompt = prompt.repeat(2, 1)
        was_training = self.training
        self.eval()  # no dropout while sampling; the previous mode comes back at the end
        tokens, cache = prompt.long(), None
        try:
            for _ in range(steps):
                t = tokens.size(1)  # index of the token to generate
                if cache is None or cache.length == cfg.block_size:  # start a (new) window
                    ctx = tokens if M + t <= cfg.block_size else tokens[:, t - keep:]
                    n_out = ctx.size(1) + (1 if M else 0)  # this call predicts tokens t + 1 - n_out .. t
                    c = None if cond is None else cond[:, t + 1 - n_out:t + 1]
                    out = self(ctx, prefix=prefix, cond=c)
                else:                                                # one more token through the cache
                    c = None if cond is None else cond[:, t:t + 1]
                    out = self(tokens[:, -1:], cond=c, cache=cache)
                cache = out.cache
                logits = out.logits[:, -1]
                if guided:
                    c, u = logits.chunk(2)
                    logits = u + guidance * (c - u)
                nxt = _next_token(logits, temperature, top_k, top_p, generator)  # (B, 1)
                tokens = torch.cat([tokens, nxt.repeat(2, 1) if guided else nxt], dim=1)
        finally:
            self.train(was_training)
        return tokens[:B]


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Set every logit below the k-th largest of its row to -inf (ties with the k-th are kept).

    Args:
        logits: (..., V).
        k: how many tokens to keep; k >= V keeps all.
    """
    if k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filtering (Holtzman et al. 2020): keep the most likely tokens until their mass reaches p.

    Args:
        logits: (..., V).
        p: probability mass to keep, in (0, 1]; the most likely token always survives.
    """
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    drop = probs.cumsum(dim=-1) - probs >= p  # the mass *before* a token already reaches p
    return logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))


def _next_token(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None,
                generator: torch.Generator | None) -> Tensor:
    """(B, V) logits -> (B, 1) token ids."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)


def _check_tokens(name: str, x: Tensor, vocab: int, field: str) -> tuple[int, int]:
    """Fail early, naming the fix, unless x is a (B, N) integer tensor of ids in [0, vocab)."""
    if not isinstance(x, Tensor) or x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of token ids (torch.long), got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (B, N), got {tuple(x.shape)}; add a batch axis with {name}[None]")
    if x.numel() and (x.min() < 0 or x.max() >= vocab):
        raise ValueError(f"{name} holds ids in [{int(x.min())}, {int(x.max())}] but this model's {field} is {vocab} "
                         f"(ids must be in [0, {vocab})); map them into the vocabulary or build a larger model")
    return x.shape[0], x.shape[1]


def _check_cond(cond: Tensor | None, shape: tuple[int, int, int]) -> None:
    if cond is None:
        raise ValueError(f"this model was built with cond_dim={shape[2]}: pass cond of shape {shape}")
    if not cond.dtype.is_floating_point:
        raise TypeError(f"cond must be a float tensor, got {cond.dtype}")
    if tuple(cond.shape) != shape:
        raise ValueError(f"cond must have shape (B, N_out, cond_dim) = {shape} like the logits, got {tuple(cond.shape)}")


def _check_targets(targets: Tensor, shape: tuple[int, int], vocab: int) -> None:
    if tuple(targets.shape) != shape:
        raise ValueError(f"targets must have shape {shape} like the logits, got {tuple(targets.shape)}; with a prefix "
                         f"pass idx = x[:, :-1], targets = x, without one idx = x[:, :-1], targets = x[:, 1:]")
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise TypeError(f"targets must be integer token ids, got {targets.dtype}")
    bad = (targets != IGNORE_INDEX) & ((targets < 0) | (targets >= vocab))
    if bad.any():
        raise ValueError(f"targets hold ids outside [0, {vocab}) (vocab_size); use {IGNORE_INDEX} to mask positions")
