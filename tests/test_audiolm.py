"""Tests of course_lib.audiolm: tokens, their layout and alignment, the three stages, the pipeline, bad input.

Every model here is a tiny one built in the test (untrained, or trained for a few dozen steps); nothing
needs a shipped checkpoint.
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from course_lib import audiolm as A
from course_lib import codec as C
from course_lib import hubert as H
from course_lib.audio import AudioError
from course_lib.checkpoint import CheckpointError

SR = 16_000


def _clip(seconds: float, seed: int = 0, pitch: float = 1.0) -> torch.Tensor:
    """(1, 1, T) speech-like test audio: 0.16 s 'syllables' of changing pitch, with a little noise."""
    g = torch.Generator().manual_seed(seed)
    n, seg = int(seconds * SR), int(0.16 * SR)
    f0 = (120 + 240 * torch.rand(n // seg + 1, generator=g)).repeat_interleave(seg)[:n] * pitch
    phase = 2 * math.pi * torch.cumsum(f0, 0) / SR
    wav = sum(torch.sin(k * phase) / k for k in range(1, 5)) * 0.2 + 0.01 * torch.randn(n, generator=g)
    return wav[None, None].float()


@pytest.fixture(scope="module")
def tokenizers() -> tuple[H.HuBERT, C.Codec]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        hubert = H.HuBERT(H.HubertConfig.preset("tiny")).eval()
        codec = C.Codec(C.CodecConfig.preset("tiny")).eval()
    clips = [_clip(4.0, seed=s)[0] for s in range(2)]
    H.fit_semantic_kmeans(hubert, clips, torch.Generator().manual_seed(0))
    with torch.no_grad():          # k-means initialises every RVQ level on the first training batch: varied codes
        codec.train()(torch.stack(clips), num_quantizers=codec.num_quantizers, generator=torch.Generator().manual_seed(0))
    return hubert, codec.eval()


@pytest.fixture(scope="module")
def config(tokenizers) -> A.AudioLMConfig:
    return A.AudioLMConfig.preset("tiny").with_tokenizers(*tokenizers)


def _stages(config: A.AudioLMConfig, seed: int = 0) -> tuple[A.SemanticStage, A.CoarseStage, A.FineStage]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return A.SemanticStage(config), A.CoarseStage(config), A.FineStage(config)


@pytest.fixture(scope="module")
def model(tokenizers, config) -> A.AudioLM:
    return A.AudioLM(*_stages(config), *tokenizers)


@pytest.fixture(scope="module")
def data(model) -> list[A.AudioTokens]:
    return [A.extract_tokens(_clip(2.0, seed=s), model.semantic_model, model.codec, model.config.num_coarse)
            for s in range(3)]


# ----------------------------------------------------------------------------- tokens
def test_config_reads_the_tokenizers(config):
    assert (config.semantic_vocab_size, config.codebook_size, config.num_quantizers) == (64, 64, 4)
    assert (config.num_coarse, config.num_fine, config.frames_per_semantic) == (1, 3, 2)
    assert A.coarse_quantizers(12) == 4 and A.coarse_quantizers(15) == 5   # AudioLM: 4 of 12


def test_dedup_removes_consecutive_repeats_only():
    assert A.dedup(torch.tensor([5, 5, 7, 7, 7, 5, 3])).tolist() == [5, 7, 5, 3]
    assert A.dedup(torch.tensor([], dtype=torch.long)).numel() == 0
    with pytest.raises(ValueError, match="one sequence"):
        A.dedup(torch.zeros(2, 3, dtype=torch.long))


@pytest.mark.parametrize("num_quantizers", [1, 3])
def test_flatten_unflatten_round_trip(num_quantizers):
    K = 7
    codes = torch.randint(0, K, (2, num_quantizers, 5), generator=torch.Generator().manual_seed(0))
    ids = A.flatten_codes(codes, K)                                       # (B, L * Q), frame-major
    assert ids.shape == (2, 5 * num_quantizers)
    assert ids[:, :num_quantizers].tolist() == (codes[:, :, 0] + torch.arange(num_quantizers) * K).tolist()
    torch.testing.assert_close(A.unflatten_codes(ids, num_quantizers, K), codes)
    with pytest.raises(ValueError, match="outside this model's vocabulary"):
        A.flatten_codes(codes + K, K)
    if num_quantizers > 1:
        with pytest.raises(ValueError, match="level's range"):
            A.unflatten_codes(ids.roll(1, dims=1), num_quantizers, K)


def test_tokens_are_aligned(model, tokenizers):
    hubert, codec = tokenizers
    wav = _clip(1.01)                                                      # 16160 samples: 25 tokens + 160 samples
    tok = model.tokens(wav)
    assert tok.semantic.shape == (1, 25) and tok.coarse.shape == (1, 1, 50) and tok.fine.shape == (1, 3, 50)
    assert len(set(tok.semantic[0].tolist())) > 3 and len(set(tok.coarse[0, 0].tolist())) > 3   # varied tokens
    torch.testing.assert_close(tok.semantic, hubert.semantic_tokens(wav[..., :16000]))
    torch.testing.assert_close(torch.cat([tok.coarse, tok.fine], 1), codec.encode(wav[..., :16000]))
    assert A.semantic_span(4, 8, 2) == (2, 4) and A.semantic_span(3, 7, 2) == (1, 4)


def test_coarse_windows_pair_frames_with_the_semantic_tokens_of_their_span(config):
    """Frame l carries code l, token n carries id 10 + n: each window's prefix must be its span's tokens."""
    tok = A.AudioTokens(torch.arange(30)[None] + 10, torch.arange(60)[None, None], torch.zeros(1, 3, 60).long())
    stage = A.CoarseStage(config)
    prefix, codes = stage.batch([tok], 8, torch.Generator().manual_seed(0))
    assert prefix.shape == (8, 25) and codes.shape == (8, 1, 50)
    for p, c in zip(prefix, codes):
        a = int(c[0, 0])
        assert a % 2 == 0 and c[0].tolist() == list(range(a, a + 50))
        assert p.tolist() == list(range(10 + a // 2, 10 + a // 2 + 25))


def test_windows_past_a_clip_end_are_padded(config):
    short = A.AudioTokens(torch.tensor([[3, 3, 4]]), torch.ones(1, 1, 6).long(), torch.ones(1, 3, 6).long())
    longer = A.AudioTokens(torch.tensor([[5] * 6]), torch.full((1, 1, 12), 2), torch.full((1, 3, 12), 2))
    prefix, codes = A.CoarseStage(config).batch([short, longer], 8, torch.Generator().manual_seed(0))
    assert codes.shape == (8, 1, 12) and {int(c[0, 0]) for c in codes} == {1, 2}
    for p, c in zip(prefix, codes):
        if c[0, 0] == 1:                                                   # the short clip: dedup, then PAD
            assert p.tolist() == [3, 4] + [config.semantic_vocab_size] * 23
            assert (c[:, 6:] == A.IGNORE_INDEX).all() and (c[:, :6] == 1).all()
    (tokens,) = A.SemanticStage(config).batch([short, A.AudioTokens(torch.tensor([[1, 2, 3, 4]]), *short[1:])], 4,
                                             torch.Generator().manual_seed(1))
    assert tokens.shape[1] == 4 and {tuple(r.tolist()) for r in tokens} <= {(3, 4, -100, -100), (1, 2, 3, 4)}


# ----------------------------------------------------------------------------- stages
def test_each_stage_is_conditioned_on_the_stage_above(config):
    _, coarse, fine = _stages(config)
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 64, (1, 1, 20), generator=g)
    a, b = coarse.prefix([torch.tensor([1, 2, 3])]), coarse.prefix([torch.tensor([1, 9, 3])])
    assert not torch.allclose(coarse.logits(a, codes), coarse.logits(b, codes))
    fine_codes = torch.randint(0, 64, (1, 3, 10), generator=g)
    c1 = fine.prefix(torch.randint(0, 64, (1, 1, 10), generator=g))
    c2 = fine.prefix(torch.randint(0, 64, (1, 1, 10), generator=g))
    assert not torch.allclose(fine.logits(c1, fine_codes), fine.logits(c2, fine_codes))
    assert coarse.logits(a, codes).shape == (1, 20, 64) and fine.logits(c1, fine_codes).shape == (1, 30, 64)


def test_sampling_is_deterministic_under_a_generator(config):
    semantic, coarse, fine = _stages(config)

    def run(seed: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        s = semantic.sample(torch.zeros(2, 0, dtype=torch.long), 12, generator=g)
        c = coarse.sample(list(s), 24, generator=g)
        return [s, c, fine.sample(c, generator=g)]

    first, again, other = run(0), run(0), run(1)
    for x, y in zip(first, again):
        assert torch.equal(x, y)
    assert not all(torch.equal(x, y) for x, y in zip(first, other))
    assert first[1].shape == (2, 1, 24) and first[2].shape == (2, 3, 24)
    assert first[2].max() < 64 and first[2].min() >= 0                  # every level drew from its own K codes
    greedy = [coarse.sample(list(first[0]), 24, temperature=0, generator=torch.Generator().manual_seed(s))
              for s in (0, 1)]
    assert torch.equal(*greedy)


def test_prompts_are_kept(config):
    _, coarse, fine = _stages(config)
    g = torch.Generator().manual_seed(0)
    prompt_c, prompt_f = torch.randint(0, 64, (1, 1, 14), generator=g), torch.randint(0, 64, (1, 3, 14), generator=g)
    c = coarse.sample([torch.tensor([4, 5, 6])], 30, prompt=prompt_c, generator=g)
    assert torch.equal(c[..., :14], prompt_c)
    f = fine.sample(c, prompt=prompt_f, generator=g)                      # 3 chunks of 10 frames; 1.4 given
    assert f.shape == (1, 3, 30) and torch.equal(f[..., :14], prompt_f)


@pytest.mark.parametrize("name", ["semantic", "coarse", "fine"])
def test_a_stage_overfits_a_clip(config, data, name):
    data = [A.AudioTokens(data[0].semantic[:, :10], data[0].coarse[..., :20], data[0].fine[..., :20])]   # 0.4 s
    stage = A.STAGES[name](config)
    batch = stage.batch(data, 8, torch.Generator().manual_seed(5))
    with torch.no_grad():
        before = float(stage.losses(*batch).total)
    result = A.fit_stage(stage, data, steps=40, lr=1e-2, batch_size=8, progress=False,
                         generator=torch.Generator().manual_seed(0))
    assert result.finished and result.steps == 40
    with torch.no_grad():
        after = float(stage.losses(*batch).total)
    assert after < 0.6 * before, (before, after)
    if name == "semantic":
        rate = len(A.dedup(data[0].semantic[0])) / 0.4
        assert float(stage.tokens_per_second) == pytest.approx(rate)


def test_fit_stage_resumes(config, data, tmp_path):
    stage = A.FineStage(config)
    A.fit_stage(stage, data, steps=3, checkpoint_dir=tmp_path, progress=False, batch_size=2)
    result = A.fit_stage(A.FineStage(config), data, steps=5, checkpoint_dir=tmp_path, progress=False, batch_size=2)
    assert result.steps == 5 and result.history.records[0]["step"] == 1


def test_an_aligned_coarse_stage_hears_each_frames_semantic_token(config, data):
    cfg = dataclasses.replace(config, aligned_semantic=True, max_run=4)
    coarse = A.CoarseStage(cfg)
    Q, V = cfg.num_coarse, cfg.semantic_vocab_size
    cond = coarse.aligned([torch.tensor([3, 3, 5])], 5)                   # 5 frames, 2 per semantic token
    assert cond.shape == (1, 5 * Q, V + 1)
    assert cond.argmax(-1)[0].tolist() == [t for t in (3, 3, 3, 3, 5) for _ in range(Q)]
    assert A.CoarseStage(config).aligned([torch.tensor([3])], 2) is None  # the shipped design: prefix only
    prefix, codes, cond = coarse.batch(data, 2, torch.Generator().manual_seed(0))
    assert cond.shape == (2, codes.shape[-1] * Q, V + 1)
    # Another frame's token changes the logits of that frame's codes (and later ones), of no earlier position.
    a = coarse.aligned([torch.tensor([1, 2, 3, 4])], 8)
    b = coarse.aligned([torch.tensor([1, 2, 9, 4])], 8)
    x = torch.randint(0, cfg.codebook_size, (1, Q, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        la, lb = coarse.logits(coarse.prefix([torch.tensor([1, 2, 3, 4])]), x, a), \
            coarse.logits(coarse.prefix([torch.tensor([1, 2, 3, 4])]), x, b)
    changed = (la - lb).abs().amax(-1)[0] > 1e-6
    assert not changed[:4 * Q].any() and changed[4 * Q:6 * Q].all()
    # Incremental sampling adds each token's conditioning at the right position: greedy codes are the argmax
    # of a full forward pass over them.
    sem = [torch.tensor([1, 2, 9, 4])]
    greedy = coarse.sample(sem, 8, temperature=0)
    with torch.no_grad():
        full = coarse.logits(coarse.prefix(sem), greedy, coarse.aligned(sem, 8)).argmax(-1)
    assert torch.equal(full, greedy.transpose(1, 2).flatten(1))
    with pytest.raises(ValueError, match="duplicates kept"):
        coarse.sample([torch.tensor([1, 2])], 8)


def test_fit_stage_learns_run_lengths_and_expand_restores_them(config):
    cfg = dataclasses.replace(config, aligned_semantic=True, max_run=4)
    semantic = torch.tensor([[7, 7, 7, 2, 2, 2, 2, 2, 2, 5]])            # runs: 7 x3, 2 x6 (counted as 4), 5 x1
    tok = A.AudioTokens(semantic, torch.zeros(1, cfg.num_coarse, 20, dtype=torch.long),
                        torch.zeros(1, cfg.num_fine, 20, dtype=torch.long))
    coarse = A.CoarseStage(cfg)
    A.fit_stage(coarse, [tok], steps=1, progress=False, batch_size=1)
    assert coarse.run_lengths[7].tolist() == [1, 1, 2, 1] and coarse.run_lengths[2].tolist() == [1, 1, 1, 2]
    g = torch.Generator().manual_seed(0)
    out = coarse.expand(torch.tensor([[7, 2, 5], [2, 5, 7]]), 12, g)
    assert out.shape == (2, 12) and torch.equal(A.dedup(out[0])[:3], torch.tensor([7, 2, 5]))
    again = coarse.expand(torch.tensor([[7, 2, 5], [2, 5, 7]]), 12, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    with pytest.raises(ValueError, match="N' >= 1"):
        coarse.expand(torch.zeros(2, 0, dtype=torch.long), 12)


def test_prompt_use_scores_the_second_half_after_each_prompt(config):
    from course_lib.recipes.audiolm_rulers import prompt_use_bits
    cfg = dataclasses.replace(config, aligned_semantic=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        coarse = A.CoarseStage(cfg).eval()
    L, half, r = cfg.coarse_frames, cfg.coarse_frames // 2, cfg.frames_per_semantic
    g = torch.Generator().manual_seed(0)

    def window() -> A.AudioTokens:
        return A.AudioTokens(torch.randint(0, cfg.semantic_vocab_size, (1, L // r), generator=g),
                             torch.randint(0, cfg.codebook_size, (1, cfg.num_coarse, L), generator=g),
                             torch.zeros(1, 1, L, dtype=torch.long))
    a, b = window(), window()
    same = prompt_use_bits(coarse, [a, a], ["x", "y"])       # the other speaker's first half is the window's own
    assert same["windows"] == 2 and same["own"] == pytest.approx(same["other"], abs=1e-4)
    two = prompt_use_bits(coarse, [a, b], ["x", "y"])
    assert abs(two["other"] - two["own"]) > 1e-3                # another first half changes the score
    with torch.no_grad():                                       # "none": the second half after its own semantic tokens
        rest = [t.semantic[0, slice(*A.semantic_span(half, L, r))] for t in (a, b)]
        none = [float(coarse.losses(coarse.prefix([s]), t.coarse[:, :, half:], coarse.aligned([s], L - half)).total)
                for s, t in zip(rest, (a, b))]
    assert two["none"] == pytest.approx(sum(none) / 2 / math.log(2), abs=1e-3)
    short = A.AudioTokens(b.semantic[:, :2], b.coarse[:, :, :2 * r], b.fine[:, :, :2 * r])
    with pytest.raises(ValueError, match="two speakers"):       # one full window left: nothing to borrow
        prompt_use_bits(coarse, [a, short], ["x", "y"])


def test_a_pipeline_with_an_aligned_coarse_stage_generates(tokenizers, config):
    cfg = dataclasses.replace(config, aligned_semantic=True)
    semantic, _, fine = _stages(config)
    model = A.AudioLM(semantic, A.CoarseStage(cfg), fine, *tokenizers)
    g = torch.Generator().manual_seed(0)
    assert model.generate(2, 0.4, generator=g).shape == (2, 1, 6400)
    assert model.continue_(_clip(0.5), 0.8, generator=g).shape == (1, 1, int(0.8 * SR))
    other = model.tokens(_clip(0.4, seed=3)).semantic
    assert model.resynthesize(other, _clip(0.5), generator=g).shape == (1, 1, int(0.4 * SR))


# ----------------------------------------------------------------------------- the pipeline
def test_generate_continue_and_resynthesize_shapes(model):
    g = torch.Generator().manual_seed(0)
    assert model.generate(2, 0.4, generator=g).shape == (2, 1, 6400)
    prompt = _clip(0.5)
    out = model.continue_(prompt, 0.8, generator=g)
    assert out.shape == (1, 1, int(0.8 * SR))
    other = model.tokens(_clip(0.4, seed=3, pitch=1.5)).semantic
    assert model.resynthesize(other, prompt, generator=g).shape == (1, 1, int(0.4 * SR))


def test_the_acoustic_prompt_reaches_the_output(model):
    prompt = _clip(0.5)
    runs = [model.continue_(prompt, 0.8, generator=torch.Generator().manual_seed(0), acoustic_prompt=p)
            for p in (True, True, False)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    a = model.resynthesize(model.tokens(_clip(0.4, seed=3)).semantic, prompt, torch.Generator().manual_seed(0))
    b = model.resynthesize(model.tokens(_clip(0.4, seed=3)).semantic, _clip(0.5, seed=9, pitch=2.0),
                           torch.Generator().manual_seed(0))
    assert not torch.equal(a, b)


def test_save_load_round_trip(model, tokenizers, tmp_path, monkeypatch):
    model.semantic.tokens_per_second.fill_(11.5)
    folders = A.save_pretrained(model, tmp_path / "lm")
    assert [f.name for f in folders] == ["lm-semantic", "lm-coarse", "lm-fine"]
    loaded = A.load_pretrained(tmp_path / "lm", *tokenizers)
    assert loaded.config == model.config and float(loaded.semantic.tokens_per_second) == 11.5
    for x, y in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(x, y)
    g0, g1 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(model.generate(1, 0.3, generator=g0), loaded.generate(1, 0.3, generator=g1))
    monkeypatch.setenv("COURSE_CHECKPOINTS", str(tmp_path / "nothing shipped"))
    with pytest.raises(CheckpointError, match="hubert-speech"):               # the tokenizer named in the config
        A.load_pretrained(tmp_path / "lm")
    monkeypatch.undo()
    with pytest.raises(ValueError, match="do not fit"):                      # the shipped ones are other tokenizers
        A.load_pretrained(tmp_path / "lm")


# ----------------------------------------------------------------------------- bad input
def test_bad_prompts_fail_early(model):
    prompt = _clip(0.5)
    with pytest.raises(AudioError, match="too short"):
        model.continue_(prompt[..., :600], 1.0)                           # one semantic token needs 640 samples
    with pytest.raises(AudioError, match="8000 Hz"):
        model.continue_(prompt, 1.0, sample_rate=8000)
    with pytest.raises(AudioError, match="shape"):
        model.continue_(prompt[0], 1.0)
    with pytest.raises(AudioError, match="silent"):
        model.continue_(torch.zeros(1, 1, 8000), 1.0)
    with pytest.raises(ValueError, match="one prompt at a time"):
        model.continue_(prompt.repeat(2, 1, 1), 1.0)
    with pytest.raises(ValueError, match="more seconds"):
        model.continue_(prompt, 0.3)
    with pytest.raises(ValueError, match="window"):
        model.generate(1, 3.0)                                            # the tiny coarse window holds 1 s


def test_token_ids_outside_a_stage_vocabulary_are_refused(model, config):
    with pytest.raises(ValueError, match="vocab_size is 64"):
        model.semantic.sample(torch.tensor([[64]]), 3)
    with pytest.raises(ValueError, match="vocabulary"):
        model.coarse.sample([torch.tensor([1, 70])], 10)
    with pytest.raises(ValueError, match="vocabulary"):
        model.resynthesize(torch.tensor([[1, 99]]), _clip(0.5))
    with pytest.raises(ValueError, match="vocabulary"):
        model.fine.sample(torch.full((1, 1, 10), 64))
    bad = A.AudioTokens(torch.tensor([[1, 2]]), torch.zeros(1, 2, 4).long(), torch.zeros(1, 3, 4).long())
    with pytest.raises(ValueError, match="does not fit this config"):
        A.fit_stage(A.CoarseStage(config), [bad], steps=1, progress=False)


def test_tokenizers_must_fit_the_stages(config, tokenizers):
    hubert, _ = tokenizers
    other_codec = C.Codec(dataclasses.replace(C.CodecConfig.preset("tiny"), codebook_size=32))
    with pytest.raises(ValueError, match="codebook_size 32 != 64"):
        A.AudioLM(*_stages(config), hubert, other_codec)
    s, _, f = _stages(config)
    with pytest.raises(ValueError, match="different tokenizers"):
        A.AudioLM(s, A.CoarseStage(dataclasses.replace(config, codec="codec-other")), f, *tokenizers)


@pytest.mark.parametrize("preset", ["tiny", "small", "base"])
def test_every_preset_builds_and_steps(preset):
    cfg = A.AudioLMConfig.preset(preset)
    g = torch.Generator().manual_seed(0)
    n = 4                                                                   # short clips: a quick step
    tok = A.AudioTokens(torch.randint(0, cfg.semantic_vocab_size, (1, n), generator=g),
                        torch.randint(0, cfg.codebook_size, (1, cfg.num_coarse, 2 * n), generator=g),
                        torch.randint(0, cfg.codebook_size, (1, cfg.num_fine, 2 * n), generator=g))
    for stage in _stages(cfg):
        assert A.fit_stage(stage, [tok], steps=1, batch_size=1, progress=False).finished
