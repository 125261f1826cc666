"""Tests of course_lib.transformer: the decoder-only token LM, its KV cache, conditioning and sampling."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_lib.transformer import (IGNORE_INDEX, TokenLM, TransformerConfig, top_k_filter, top_p_filter)

V, PV, CD = 11, 5, 3  # vocabulary, prefix vocabulary, cond width of the tiny test models


def _model(prefix: bool = False, cond: bool = False, seed: int = 0, **kw) -> TokenLM:
    kw = {"vocab_size": V, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 16, **kw}
    cfg = TransformerConfig(prefix_vocab_size=PV if prefix else 0, cond_dim=CD if cond else 0, **kw)
    torch.manual_seed(seed)
    return TokenLM(cfg).eval()


def _data(B: int = 2, N: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (B, N) tokens, a (B, 2) prefix and cond (B, N, CD), one cond vector per token of x."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, V, (B, N), generator=g), torch.randint(0, PV, (B, 2), generator=g),
            torch.randn(B, N, CD, generator=g))


def _call(model: TokenLM, x: torch.Tensor, prefix: torch.Tensor | None, cond: torch.Tensor | None, **kw):
    """Teacher forcing on the whole sequence x, following the module's one-time-axis rule."""
    if prefix is not None:            # the last prefix position predicts x[:, 0]: targets = x
        return model(x[:, :-1], prefix=prefix, cond=cond, **kw)
    return model(x[:, :-1], cond=None if cond is None else cond[:, 1:], **kw)  # targets = x[:, 1:]


@pytest.mark.parametrize("with_prefix", [False, True])
@pytest.mark.parametrize("with_cond", [False, True])
def test_shapes_and_weight_tying(with_prefix: bool, with_cond: bool) -> None:
    model = _model(with_prefix, with_cond)
    x, prefix, cond = _data()
    out = _call(model, x, prefix if with_prefix else None, cond if with_cond else None)
    n_out = 12 if with_prefix else 11
    assert out.logits.shape == (2, n_out, V)
    assert out.loss is None
    assert out.cache.length == (2 + 11 if with_prefix else 11)
    assert out.cache.layers[0][0].shape == (2, 2, out.cache.length, 8)  # (B, nh, length, hs)
    assert model.lm_head.weight is model.wte.weight
    assert model.num_parameters() == sum(p.numel() for p in set(model.parameters()))


@pytest.mark.parametrize("with_prefix", [False, True])
@pytest.mark.parametrize("with_cond", [False, True])
@pytest.mark.parametrize("chunk", [1, 4])
def test_cached_logits_equal_uncached(with_prefix: bool, with_cond: bool, chunk: int) -> None:
    """Feeding the sequence a chunk at a time through the cache gives the logits of one full pass."""
    model = _model(with_prefix, with_cond)
    x, prefix, cond = _data(N=13)
    prefix, cond = (prefix if with_prefix else None), (cond if with_cond else None)
    full = _call(model, x, prefix, cond).logits

    # cond[:, t] belongs to the token x[:, t]; feeding x[:, a:b] predicts x[:, a + 1:b + 1].
    inputs, start = x[:, :-1], (0 if prefix is not None else 1)
    out = model(inputs[:, :start], prefix=prefix, cond=None if cond is None else cond[:, start:start + 1])
    pieces, cache = [out.logits], out.cache
    while start < inputs.size(1):
        stop = min(start + chunk, inputs.size(1))
        c = None if cond is None else cond[:, start + 1:stop + 1]
        out = model(inputs[:, start:stop], cond=c, cache=cache)
        pieces.append(out.logits)
        cache, start = out.cache, stop
    torch.testing.assert_close(torch.cat(pieces, dim=1), full)


@pytest.mark.parametrize("with_prefix", [False, True])
def test_causality(with_prefix: bool) -> None:
    """Changing token j changes the predictions from position j on, never those before it."""
    model = _model(with_prefix, cond=True)
    x, prefix, cond = _data()
    prefix = prefix if with_prefix else None
    before = _call(model, x, prefix, cond).logits
    j = 5
    x2 = x.clone()
    x2[:, j] = (x2[:, j] + 1) % V
    after = _call(model, x2, prefix, cond).logits
    first_seeing_j = j + 1 if with_prefix else j  # with a prefix, logits[:, j + 1] is the first to read x[:, j]
    torch.testing.assert_close(after[:, :first_seeing_j], before[:, :first_seeing_j])
    assert not torch.allclose(after[:, first_seeing_j:], before[:, first_seeing_j:])

    cond2 = cond.clone()
    cond2[:, j] += 1.0                # cond[:, j] acts on logits[:, j] (with a prefix) and later only
    after = _call(model, x, prefix, cond2).logits
    k = j if with_prefix else j - 1
    torch.testing.assert_close(after[:, :k], before[:, :k])
    assert not torch.allclose(after[:, k], before[:, k])


def test_prefix_and_cond_change_the_logits() -> None:
    model = _model(prefix=True, cond=True)
    x, prefix, cond = _data()
    base = _call(model, x, prefix, cond).logits
    assert not torch.allclose(_call(model, x, (prefix + 1) % PV, cond).logits, base)
    assert not torch.allclose(_call(model, x, prefix, torch.zeros_like(cond)).logits, base)
    # The prefix alone (empty idx) already predicts the first token.
    assert model(x[:, :0], prefix=prefix, cond=cond[:, :1]).logits.shape == (2, 1, V)


@pytest.mark.parametrize("with_prefix", [False, True])
def test_loss_ignores_masked_positions(with_prefix: bool) -> None:
    model = _model(with_prefix)
    x, prefix, _ = _data()
    targets = (x if with_prefix else x[:, 1:]).clone()
    targets[:, :4] = IGNORE_INDEX          # e.g. a prompt that should not be learned
    targets[1, -2:] = IGNORE_INDEX         # e.g. padding
    out = _call(model, x, prefix if with_prefix else None, None, targets=targets)
    kept = targets != IGNORE_INDEX
    expected = F.cross_entropy(out.logits[kept], targets[kept])
    torch.testing.assert_close(out.loss, expected)
    # The logits at ignored positions do not matter: other targets there give the same loss.
    other = torch.where(kept, targets, torch.full_like(targets, IGNORE_INDEX))
    torch.testing.assert_close(_call(model, x, prefix if with_prefix else None, None, targets=other).loss, out.loss)


@pytest.mark.parametrize("k, kept", [(1, {2}), (2, {2, 0}), (3, {2, 0, 3}), (10, {0, 1, 2, 3})])
def test_top_k_filter(k: int, kept: set[int]) -> None:
    logits = torch.tensor([[1.0, -1.0, 3.0, 0.5]])
    out = top_k_filter(logits, k)
    assert set(torch.isfinite(out[0]).nonzero().flatten().tolist()) == kept
    torch.testing.assert_close(out[torch.isfinite(out)], logits[torch.isfinite(out)])


@pytest.mark.parametrize("p, kept", [(0.4, {1}), (0.7, {1, 3}), (0.9, {1, 3, 0}), (1.0, {0, 1, 2, 3})])
def test_top_p_filter(p: float, kept: set[int]) -> None:
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3])     # sorted: 0.5 (1), 0.3 (3), 0.15 (0), 0.05 (2)
    logits = probs.log().expand(3, 4)                # several rows
    out = top_p_filter(logits, p)
    for row in out:
        assert set(torch.isfinite(row).nonzero().flatten().tolist()) == kept
    torch.testing.assert_close(out[torch.isfinite(out)], logits[torch.isfinite(out)])


@pytest.mark.parametrize("with_prefix", [False, True])
def test_sampling_is_deterministic_under_a_generator(with_prefix: bool) -> None:
    model = _model(with_prefix, cond=True)
    x, prefix, cond = _data(N=20)
    prompt = x[:, :0] if with_prefix else x[:, :3]
    kw = dict(prefix=prefix if with_prefix else None, cond=cond, top_k=8, top_p=0.95, temperature=1.5)
    a = model.sample(prompt, 12, generator=torch.Generator().manual_seed(1), **kw)
    b = model.sample(prompt, 12, generator=torch.Generator().manual_seed(1), **kw)
    c = model.sample(prompt, 12, generator=torch.Generator().manual_seed(2), **kw)
    assert a.shape == (2, prompt.size(1) + 12) and a.dtype == torch.long
    assert torch.equal(a[:, :prompt.size(1)], prompt)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert ((a >= 0) & (a < V)).all()


def test_sample_restores_training_mode() -> None:
    model = _model(dropout=0.5).train()
    model.sample(torch.zeros(1, 1, dtype=torch.long), 3, generator=torch.Generator().manual_seed(0))
    assert model.training


@pytest.mark.parametrize("with_prefix", [False, True])
def test_windowed_sampling_matches_uncached_reference(with_prefix: bool) -> None:
    """Greedy windowed sampling equals a plain loop that re-runs each window without a cache."""
    model = _model(with_prefix, cond=True, block_size=12)
    x, prefix, _ = _data(N=5)
    prefix = prefix if with_prefix else None
    M, steps, stride = (2 if with_prefix else 0), 30, 3
    cond = torch.randn(2, 5 + steps, CD, generator=torch.Generator().manual_seed(3))  # cond[:, t] for token t
    with pytest.raises(ValueError, match="window_stride"):
        model.sample(x, steps, prefix=prefix, cond=cond)
    got = model.sample(x, steps, temperature=0, prefix=prefix, cond=cond, window_stride=stride)
    assert got.shape == (2, 5 + steps)

    keep, tokens, start = 12 - M - stride, x, 0
    for _ in range(steps):
        t = tokens.size(1)
        if M + t - start > 12:                     # the window is full: slide it
            start = t - keep
        c = cond[:, start if with_prefix else start + 1:t + 1]  # one vector per predicted token
        logits = model(tokens[:, start:], prefix=prefix, cond=c).logits[:, -1]
        tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
    torch.testing.assert_close(got, tokens)


@pytest.mark.parametrize("w", [0.0, 2.5])
def test_guided_sampling_matches_uncached_reference(w: float) -> None:
    """Classifier-free guidance: greedy tokens of u + w (c - u), c and u recomputed without a cache;
    w = 0 samples the hidden condition alone."""
    model = _model(prefix=True, cond=True)
    x, prefix, cond = _data(N=10)
    hidden_prefix, hidden_cond = torch.full_like(prefix, PV - 1), torch.zeros_like(cond)
    got = model.sample(x[:, :0], 10, temperature=0, prefix=prefix, cond=cond, guidance=w,
                       uncond_prefix=hidden_prefix, uncond_cond=hidden_cond)
    tokens = x[:, :0]
    for t in range(10):
        c, u = (model(tokens, prefix=p, cond=k[:, :t + 1]).logits[:, -1]
                for p, k in ((prefix, cond), (hidden_prefix, hidden_cond)))
        tokens = torch.cat([tokens, (u + w * (c - u)).argmax(-1, keepdim=True)], dim=1)
    torch.testing.assert_close(got, tokens)
    if w == 0:
        assert torch.equal(model.sample(x[:, :0], 10, temperature=0, prefix=hidden_prefix, cond=hidden_cond), got)


def test_guidance_one_is_plain_sampling_and_bad_guidance_names_the_fix() -> None:
    model = _model(prefix=True, cond=True)
    x, prefix, cond = _data(N=10)
    kw = dict(prefix=prefix, cond=cond, temperature=1.0)
    plain = model.sample(x[:, :0], 10, generator=torch.Generator().manual_seed(4), **kw)
    same = model.sample(x[:, :0], 10, generator=torch.Generator().manual_seed(4), guidance=1.0,
                        uncond_prefix=torch.zeros_like(prefix), **kw)
    assert torch.equal(plain, same)
    with pytest.raises(ValueError, match="uncond_prefix and/or uncond_cond"):
        model.sample(x[:, :0], 3, guidance=3.0, **kw)
    with pytest.raises(ValueError, match="uncond_prefix must have the shape of prefix"):
        model.sample(x[:, :0], 3, guidance=3.0, uncond_prefix=prefix[:, :1], **kw)


@pytest.mark.parametrize("with_prefix", [False, True])
def test_overfit_repeating_patterns(with_prefix: bool) -> None:
    """The model learns two repeating patterns; greedy sampling reproduces them.

    With a prefix (pattern, phase) chooses the sequence and sampling starts from an empty prompt.
    Without one, two tokens of context tell the patterns apart (6 and 4 occur in both), so the first
    target, predicted from one token, is ambiguous and masked with IGNORE_INDEX.
    """
    patterns = torch.tensor([[1, 2, 3, 4, 5, 6], [6, 5, 4, 7, 8, 9]])
    seqs = patterns.repeat(1, 4)                                    # (2, 24)
    model = _model(with_prefix, n_embd=32).train()
    opt = model.configure_optimizers(weight_decay=0.0, learning_rate=3e-3)
    g = torch.Generator().manual_seed(0)
    ambiguous = torch.arange(15) == 0
    for _ in range(120):
        which, shift = torch.randint(0, 2, (16,), generator=g), torch.randint(0, PV, (16,), generator=g)
        x = torch.stack([seqs[w, s:s + 16] for w, s in zip(which.tolist(), shift.tolist())])  # (16, 16)
        prefix = torch.stack([which, shift], dim=1) if with_prefix else None   # style and phase as prefix
        targets = x if with_prefix else x[:, 1:].masked_fill(ambiguous, IGNORE_INDEX)
        out = model(x[:, :-1], prefix=prefix, targets=targets)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
    assert out.loss.item() < 0.05, out.loss.item()

    if with_prefix:
        got = model.sample(seqs[:, :0], 16, temperature=0, prefix=torch.tensor([[0, 0], [1, 0]]))
    else:
        got = model.sample(seqs[:, :2], 14, temperature=0)
    torch.testing.assert_close(got, seqs[:, :16])


def test_configure_optimizers_decays_only_matrices() -> None:
    model = _model(prefix=True, cond=True)
    decay, no_decay = model.configure_optimizers(0.1, 1e-3).param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_dropout_only_in_training() -> None:
    model = _model(dropout=0.5)
    x, _, _ = _data()
    torch.testing.assert_close(model(x).logits, model(x).logits)
    model.train()
    assert not torch.allclose(model(x).logits, model(x).logits)


def test_errors_name_the_fix() -> None:
    model, cond_model = _model(), _model(prefix=True, cond=True)
    x, prefix, cond = _data()
    with pytest.raises(ValueError, match="vocab_size is 11"):
        model(torch.tensor([[1, 11]]))
    with pytest.raises(ValueError, match="vocab_size is 11"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="prefix_vocab_size is 5"):
        cond_model(x, prefix=prefix + PV, cond=cond)
    with pytest.raises(TypeError, match="torch.long"):
        model(x.float())
    with pytest.raises(ValueError, match=r"\(B, N\).*idx\[None\]"):
        model(x[0])
    with pytest.raises(ValueError, match="block_size=32"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="block_size=32"):         # the cache counts too
        model(x[:, :1], cache=model(torch.zeros(2, 32, dtype=torch.long)).cache)
    with pytest.raises(ValueError, match="prefix_vocab_size=0"):
        model(x, prefix=prefix)
    with pytest.raises(ValueError, match="cond_dim=3"):
        cond_model(x, prefix=prefix)
    with pytest.raises(ValueError, match="cond_dim=0"):
        model(x, cond=cond)
    with pytest.raises(ValueError, match="cond must have shape"):
        cond_model(x, prefix=prefix, cond=cond)                      # needs N + 1 positions with a prefix
    with pytest.raises(ValueError, match="only in the first call"):
        out = cond_model(x[:, :3], prefix=prefix, cond=cond[:, :4])
        cond_model(x[:, 3:4], prefix=prefix, cond=cond[:, 4:5], cache=out.cache)
    with pytest.raises(ValueError, match="targets must have shape"):
        model(x[:, :-1], targets=x)
    with pytest.raises(ValueError, match="-100"):
        model(x[:, :-1], targets=x[:, 1:] + V)
    with pytest.raises(ValueError, match="empty prompt needs a prefix"):
        model.sample(x[:, :0], 3)
    with pytest.raises(ValueError, match="cover prompt \\+ steps"):
        cond_model.sample(x[:, :2], 11, prefix=prefix, cond=cond)   # cond has 12 positions, 13 needed
    with pytest.raises(ValueError, match="0 < top_p <= 1"):
        model.sample(x, 3, top_p=0.0)
    with pytest.raises(ValueError, match="window_stride must be in"):
        model.sample(x, 30, window_stride=32)
