"""Jukebox: the hierarchical VQ-VAE's levels, the conditioner's alignment, priors that learn, sampling."""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from course_lib import checkpoint
from course_lib import jukebox as J
from course_lib.data.songs import STYLES
from course_lib.recipes.common import warm_start

TINY = J.VQVAEConfig.preset("tiny")
TINY_PRIOR = replace(J.PriorConfig.preset("tiny"), styles=("a", "b"))


def _tones(n: int = 4, seconds: float = 0.5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(16_000 * seconds) // 128 * 128) / 16_000       # whole top-level tokens
    f = 200 + 600 * torch.rand(n, 1, 1, generator=g)
    return 0.5 * torch.sin(2 * torch.pi * f * t) * (0.6 + 0.4 * torch.sin(2 * torch.pi * 3 * t))


def test_each_level_has_its_hop_length_and_reconstructs_on_its_own():
    model = J.HierarchicalVQVAE(TINY).eval()
    wav = _tones(2)                                                      # (2, 1, 7936)
    codes = model.encode(wav)
    assert [c.shape for c in codes] == [(2, 7936 // h) for h in (8, 32, 128)]
    for level, c in enumerate(codes):
        assert model.decode(c, level).shape == (2, 1, 7936)             # every level alone makes audio
    assert [model.tokens_per_second(i) for i in range(3)] == [2000, 500, 125]
    assert len(model.encoders) == len(model.decoders) == 3 and model.encoders[0] is not model.encoders[2]
    top, bottom = model.encode(wav, levels=(2, 0))                       # one level without the others
    assert torch.equal(top, codes[2]) and torch.equal(bottom, codes[0])
    with pytest.raises(ValueError, match="levels must be among 0"):
        model.encode(wav, levels=(3,))


def test_vqvae_training_lowers_the_loss_and_the_error_rises_from_bottom_to_top():
    torch.manual_seed(0)
    model = J.HierarchicalVQVAE(replace(TINY, width=16, codebook_size=32, log_spectral_weight=0.0))   # the paper's
    clips = _tones(8, 1.0)
    before = model(clips[:4], torch.Generator().manual_seed(0)).total.item()
    result = J.fit_vqvae(model, clips, steps=80, batch_size=4, crop_s=0.25, lr=1e-3, progress=False,
                         generator=torch.Generator().manual_seed(0))
    assert result.finished and result.history.mean("total", last_n=3) < 0.8 * before
    errors = []
    with torch.no_grad():
        codes = model.encode(clips)
        for level in range(3):
            errors.append(float((model.decode(codes[level], level) - clips).square().mean()))
    assert errors[0] < errors[2], errors                                  # the paper's ordering (at least ends)


def test_a_wider_top_level_trains_alone_and_the_priors_follow_its_codebook():
    wide = replace(TINY, top_width=12, top_depth=2, top_codebook_size=96)
    assert wide.capacity(0) == wide.capacity(1) == (8, 1, 64) and wide.capacity(2) == (12, 2, 96)
    assert wide.codebook_sizes == (64, 64, 96) and TINY.codebook_sizes == (64, 64, 64)
    torch.manual_seed(0)
    model = J.HierarchicalVQVAE(wide)
    assert model.encoders[2][0].conv.out_channels == 12 and model.quantizers[2].codebook_size == 96
    lower = {k: v.clone() for k, v in model.state_dict().items() if not k.split(".")[1] == "2"}
    top = {k: v.clone() for k, v in model.state_dict().items() if k.split(".")[1] == "2"}
    J.fit_vqvae(model, _tones(4, 0.5), steps=3, batch_size=2, crop_s=0.25, progress=False, top_only=True)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in lower.items())          # bottom and middle untouched
    assert any(not torch.equal(after[k], v) for k, v in top.items())        # the top level learned
    codes = model.encode(_tones(1, 0.25))
    assert int(codes[2].max()) < 96 and model.decode(codes[2], 2).shape[-1] == codes[2].shape[1] * 128
    with pytest.raises(ValueError, match="level 2 must lie in 0..95"):
        model.decode(torch.full((1, 2), 96), 2)
    with pytest.raises(ValueError, match="exclude each other"):
        J.fit_vqvae(model, _tones(2), steps=1, progress=False, top_only=True, decoders_only=True)
    priors = J.JukeboxPriors(replace(TINY_PRIOR, top_codebook_size=96))
    assert priors.top.config.vocab_size == 96 and priors.upsamplers[1].config.vocab_size == 64
    assert priors.conditioners[1].embed.num_embeddings == 96 and priors.conditioners[0].embed.num_embeddings == 64
    J.Jukebox(model.eval(), priors)                                         # codebooks agree level by level
    with pytest.raises(ValueError, match="codes per level"):
        J.Jukebox(model, J.JukeboxPriors(TINY_PRIOR))
    # A warm start that rebuilds the top level keeps the others' weights.
    narrow = J.HierarchicalVQVAE(TINY)
    rebuilt = J.HierarchicalVQVAE(wide)
    warm_start(rebuilt, narrow, "narrow", fresh=("encoders.2.", "decoders.2.", "quantizers.2."))
    assert torch.equal(rebuilt.encoders[0][0].conv.weight, narrow.encoders[0][0].conv.weight)
    with pytest.raises(SystemExit, match="layers differ"):
        warm_start(J.HierarchicalVQVAE(wide), narrow, "narrow")


def test_spectral_loss_is_zero_for_equal_signals_and_grows_with_noise():
    x = _tones(2, 0.5)
    assert J.spectral_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    small = J.spectral_loss(x + 0.01 * torch.randn_like(x), x)
    large = J.spectral_loss(x + 0.1 * torch.randn_like(x), x)
    assert 0 < small < large


def test_log_magnitude_loss_hears_a_quiet_hiss_that_the_spectral_loss_ignores():
    x = _tones(2, 0.5)
    x[..., x.shape[-1] // 2:] = 0.0                                       # a note, then silence
    assert J.log_magnitude_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    hiss = x + 1e-3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))   # -60 dB of full scale
    assert J.spectral_loss(hiss, x).item() < 0.02                          # set by the loud note: hardly moves
    assert J.log_magnitude_loss(hiss, x).item() > 2.0                      # the silent half: nats per bin
    loud = x + 1e-1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert J.log_magnitude_loss(hiss, x) < J.log_magnitude_loss(loud, x)


def test_conditioner_upsamples_to_the_lower_level_and_stays_aligned():
    cond = J.Conditioner(codebook_size=16, width=8, ratio=4, depth=1)
    upper = torch.randint(0, 16, (2, 10))
    out = cond(upper)
    assert out.shape == (2, 40, 8)
    # Changing the last upper token changes the last lower positions most (alignment), not the first ones.
    changed = upper.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 16
    diff = (cond(changed) - out).abs().sum(-1)                            # (2, 40)
    assert diff[:, -4:].mean() > 10 * diff[:, :4].mean()


def test_prior_prefix_and_timing():
    priors = J.JukeboxPriors(TINY_PRIOR)
    p = priors.prefix("b", "A minor", 120.0, 6.0)
    assert p.shape == (1, 4) and int(p.max()) < TINY_PRIOR.prefix_vocab_size
    assert priors.prefix("b", None, None, 6.0)[0, 1] != p[0, 1]           # unknown key has its own token
    t = priors.timing(0, 8, 8)
    assert t.shape == (1, 8, TINY_PRIOR.fraction_buckets) and t.sum() == 8
    with pytest.raises(ValueError, match="Unknown style"):
        priors.prefix("polka", None, None, 4.0)
    with pytest.raises(ValueError, match="Unknown key"):
        priors.prefix("a", "H major", None, 4.0)


def test_beat_clock_and_key_upsamplers():
    cfg = replace(TINY_PRIOR, beat_clock=True, key_upsamplers=True)
    priors = J.JukeboxPriors(cfg)
    t = priors.timing(0, 250, 250, tempo_bpm=120.0, tokens_per_second=125.0)
    assert t.shape == (1, 250, cfg.fraction_buckets + 4) and cfg.top_cond_dim == cfg.fraction_buckets + 4
    clock = t[0, :, cfg.fraction_buckets:]
    # 120 bpm at 125 tokens/s: a beat every 62.5 tokens, so the clock repeats every 125 tokens (two beats).
    torch.testing.assert_close(clock[:125], clock[125:], atol=1e-4, rtol=0)
    assert clock[0, 1] == 1 and clock[31, 1] < -0.99                      # cos: +1 on the beat, -1 half-way
    assert priors.timing(0, 8, 8)[0, :, cfg.fraction_buckets:].abs().sum() == 0   # tempo unknown: silent clock
    assert priors.upsampler_prefix("b", "A minor").shape == (1, 2)
    assert priors.upsampler_prefix("b", "A minor")[0, 1] != priors.upsampler_prefix("b", None)[0, 1]
    assert J.JukeboxPriors(TINY_PRIOR).upsampler_prefix("b", "A minor").shape == (1, 1)   # style only
    losses = J.prior_losses(priors, _fake_songs(), 4, torch.Generator().manual_seed(0))
    assert torch.isfinite(losses.total)
    model = J.Jukebox(J.HierarchicalVQVAE(replace(TINY, codebook_size=64)).eval(), priors)
    seen = []                                                             # what each model is asked with
    for lm in (priors.top, *priors.upsamplers):
        lm.sample = (lambda f: lambda *a, **k: seen.append(k) or f(*a, **k))(lm.sample)
    wav = model.generate(1, "a", "C major", 120.0, 0.5, generator=torch.Generator().manual_seed(0))
    assert wav.shape == (1, 1, round(0.5 * 125) * 128)
    top, *ups = seen                                                      # top, then middle and bottom
    assert top["cond"][..., cfg.fraction_buckets:].abs().sum() > 0        # the metronome reaches the sampler
    assert all(torch.equal(u["prefix"], priors.upsampler_prefix("a", "C major")) for u in ups)   # and the key


def test_key_clock_and_a_widened_warm_start():
    cfg = replace(TINY_PRIOR, beat_clock=True, key_clock=True)
    priors = J.JukeboxPriors(cfg).eval()
    t = priors.timing(0, 8, 8, 120.0, key="A minor")
    assert t.shape == (1, 8, cfg.fraction_buckets + 4 + 24) and cfg.top_cond_dim == t.shape[-1]
    tonic = t[0, :, -24:]
    assert tonic.sum() == 8 and (tonic.argmax(-1) == J.KEYS.index("A minor")).all()     # the key at every position
    assert priors.timing(0, 8, 8, 120.0)[0, :, -24:].abs().sum() == 0                    # key unknown: silent
    with pytest.raises(ValueError, match="Unknown key"):
        priors.timing(0, 8, 8, key="H major")
    # Warm-started from a prior without the key clock, it starts by computing what that prior computed.
    plain = J.JukeboxPriors(replace(TINY_PRIOR, beat_clock=True)).eval()
    warm_start(priors, plain, "plain", widened=("top.cond_proj.weight",))
    codes = torch.randint(0, TINY_PRIOR.codebook_size, (2, 9), generator=torch.Generator().manual_seed(0))
    prefix = plain.prefix("a", "A minor", 120.0, 4.0).expand(2, -1)
    before = plain.top(codes[:, :-1], targets=codes, prefix=prefix, cond=plain.timing(0, 9, 9, 120.0).expand(2, -1, -1))
    after = priors.top(codes[:, :-1], targets=codes, prefix=prefix,
                       cond=priors.timing(0, 9, 9, 120.0, key="A minor").expand(2, -1, -1))
    torch.testing.assert_close(before.logits, after.logits)
    assert torch.isfinite(J.prior_losses(priors, _fake_songs(), 4, torch.Generator().manual_seed(0)).total)
    # The requested key reaches the top sampler's clock.
    model = J.Jukebox(J.HierarchicalVQVAE(replace(TINY, codebook_size=64)).eval(), priors)
    seen = []
    priors.top.sample = (lambda f: lambda *a, **k: seen.append(k) or f(*a, **k))(priors.top.sample)
    model.generate(1, "a", "C major", 120.0, 0.5, generator=torch.Generator().manual_seed(0))
    assert (seen[0]["cond"][0, :, -24:].argmax(-1) == J.KEYS.index("C major")).all()


def test_unknown_style_learns_unconditional_songs_and_guides_the_style(monkeypatch):
    """With ``unknown_style`` the top prior has a 'no style' id, sees windows with nothing asked, warm-starts from a
    prior without it computing the same logits, and guidance contrasts the request with that empty one."""
    cfg = replace(TINY_PRIOR, unknown_style=True)
    priors = J.JukeboxPriors(cfg).eval()
    assert cfg.prefix_vocab_size == TINY_PRIOR.prefix_vocab_size + 1
    assert int(priors.prefix(None, None, None, 4.0)[0, 0]) == cfg.prefix_vocab_size - 1
    with pytest.raises(ValueError, match="never learned songs without a style"):
        J.JukeboxPriors(TINY_PRIOR).prefix(None, None, None, 4.0)
    plain = J.JukeboxPriors(TINY_PRIOR).eval()
    warm_start(priors, plain, "plain", widened=("top.prefix_emb.weight",))
    codes = torch.randint(0, TINY_PRIOR.codebook_size, (2, 9), generator=torch.Generator().manual_seed(0))
    prefix, cond = plain.prefix("a", "A minor", 120.0, 4.0).expand(2, -1), plain.timing(0, 9, 9).expand(2, -1, -1)
    torch.testing.assert_close(plain.top(codes[:, :-1], targets=codes, prefix=prefix, cond=cond).logits,
                               priors.top(codes[:, :-1], targets=codes, prefix=prefix, cond=cond).logits)
    asked = []                                                            # (style, key, tempo) of each top window
    real_prefix = priors.prefix
    monkeypatch.setattr(priors, "prefix", lambda *a: asked.append(a[:3]) or real_prefix(*a))
    assert torch.isfinite(J.prior_losses(priors, _fake_songs(), 4, torch.Generator().manual_seed(0),
                                         condition_dropout=1.0).total)
    assert asked[:4] == [(None, None, None)] * 4                          # every top window asked for nothing
    held_out = [J.prior_losses(p, _fake_songs(), 4, torch.Generator().manual_seed(0), condition_dropout=0.0).bottom
                for p in (priors, plain)]                               # without dropout: the same windows
    torch.testing.assert_close(*held_out)
    monkeypatch.undo()
    model = J.Jukebox(J.HierarchicalVQVAE(replace(TINY, codebook_size=64)).eval(), priors)
    seen = {}
    monkeypatch.setattr(priors.top, "sample", lambda *a, **kw: (seen.clear(), seen.update(kw)))
    model.sample_top(2, "a", None, None, 0.5, guidance=3.0)              # the style alone is still guided
    assert seen["guidance"] == 3.0
    assert torch.equal(seen["uncond_prefix"], priors.prefix(None, None, None, 0.5).expand(2, -1))


def _fake_songs(n: int = 8, top: int = 32) -> J.SongCodes:
    """Codes with structure: style a repeats 0..7, style b counts down; lower levels repeat the upper code."""
    styles = torch.arange(n) % 2
    tops = torch.stack([torch.arange(top) % 8 if s == 0 else (7 - torch.arange(top) % 8) for s in styles])
    middle = tops.repeat_interleave(4, dim=1)
    bottom = middle.repeat_interleave(4, dim=1)
    return J.SongCodes([bottom, middle, tops], styles, ["A minor"] * n, [120.0] * n, 4.0)


def test_priors_learn_structured_codes():
    torch.manual_seed(0)
    priors = J.JukeboxPriors(TINY_PRIOR)
    data = _fake_songs()
    first = J.prior_losses(priors, data, 8, torch.Generator().manual_seed(0))
    result = J.fit_priors(priors, data, steps=150, batch_size=8, lr=3e-3, progress=False,
                          generator=torch.Generator().manual_seed(0))
    last = result.history.records[-1]
    assert last["top"] < 0.3 * first.top.item() and last["bottom"] < 0.3 * first.bottom.item(), (first, last)


def test_sampling_is_deterministic_and_has_the_requested_length():
    model = J.Jukebox(J.HierarchicalVQVAE(replace(TINY, codebook_size=64)).eval(), J.JukeboxPriors(TINY_PRIOR))
    a = model.generate(2, "a", seconds=0.5, generator=torch.Generator().manual_seed(1))
    b = model.generate(2, "a", seconds=0.5, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 1, round(0.5 * 125) * 128)
    torch.testing.assert_close(a, b)
    top = model.sample_top(1, "a", None, None, 1.0, generator=torch.Generator().manual_seed(0))
    assert top.shape == (1, 125)                                          # windowed past the 64-token context
    # The first seconds of a longer song: the same tokens as that song's start (length token and timing of 1 s).
    first = model.sample_top(1, "a", None, None, 0.4, generator=torch.Generator().manual_seed(0), song_seconds=1.0)
    assert torch.equal(first, top[:, :50])
    with pytest.raises(ValueError, match="song_seconds"):
        model.sample_top(1, "a", None, None, 1.0, song_seconds=0.5)
    # By default the prior writes a song of its training songs' length (PriorConfig.song_seconds) and keeps the start.
    trained_on_1s = J.Jukebox(model.vqvae, J.JukeboxPriors(replace(TINY_PRIOR, song_seconds=1.0)))
    trained_on_1s.priors.load_state_dict(model.priors.state_dict())
    assert torch.equal(trained_on_1s.sample_top(1, "a", None, None, 0.4, generator=torch.Generator().manual_seed(0)),
                       first)


def test_guidance_acts_through_the_key_and_tempo_only(monkeypatch):
    """Classifier-free guidance contrasts the request with key and tempo hidden: without them nothing changes."""
    torch.manual_seed(0)
    model = J.Jukebox(J.HierarchicalVQVAE(replace(TINY, codebook_size=64)).eval(), J.JukeboxPriors(TINY_PRIOR))

    def top(key, tempo, **kw):
        return model.sample_top(3, "a", key, tempo, 0.5, generator=torch.Generator().manual_seed(0), **kw)

    assert torch.equal(top(None, None, guidance=4.0), top(None, None))
    seen = {}
    monkeypatch.setattr(model.priors.top, "sample", lambda *a, **kw: (seen.clear(), seen.update(kw)))
    model.priors.config = replace(model.priors.config, guidance=4.0)     # the checkpoint's default
    top("A minor", 120.0)
    secs, n = model.priors.config.song_seconds or 0.5, round(0.5 * 125)
    assert seen["guidance"] == 4.0 and torch.equal(seen["prefix"], model.priors.prefix("a", "A minor", 120.0, secs)
                                                   .expand(3, -1))
    assert torch.equal(seen["uncond_prefix"], model.priors.prefix("a", None, None, secs).expand(3, -1))
    assert torch.equal(seen["uncond_cond"], model.priors.timing(0, n, n, None, 125.0, None).expand(3, -1, -1))
    top("A minor", 120.0, guidance=1.0)
    assert seen["guidance"] == 1.0 and "uncond_prefix" not in seen


def test_continuation_keeps_the_prompt_codes():
    model = J.Jukebox(J.HierarchicalVQVAE(replace(TINY, codebook_size=64)).eval(), J.JukeboxPriors(TINY_PRIOR))
    prompt = _tones(1, 0.25)
    out = model.continue_(prompt, 0.5, "b", generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 1, round(0.5 * 125) * 128)
    # Primed sampling keeps the prompt's own codes and continues after them.
    codes = model.encode(prompt)
    top = model.sample_top(1, "b", None, None, 0.5, prompt=codes[2], generator=torch.Generator().manual_seed(0))
    assert top.shape == (1, 62) and torch.equal(top[:, :codes[2].shape[1]], codes[2])


def test_bad_input_is_refused():
    model = J.Jukebox(J.HierarchicalVQVAE(replace(TINY, codebook_size=64)).eval(), J.JukeboxPriors(TINY_PRIOR))
    with pytest.raises(ValueError, match="Unknown style"):
        model.generate(1, "polka", seconds=0.5)
    with pytest.raises(ValueError, match="too short"):
        model.encode(torch.zeros(1, 1, 100))
    with pytest.raises(ValueError, match="resample"):
        model.continue_(_tones(1, 0.25), 1.0, "a", sample_rate=44_100)
    with pytest.raises(ValueError, match="level must be"):
        model.decode(torch.zeros(1, 4, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="0..63"):
        model.decode(torch.full((1, 4), 64), 0)
    with pytest.raises(ValueError, match="codes per level"):
        J.Jukebox(J.HierarchicalVQVAE(TINY), J.JukeboxPriors(replace(TINY_PRIOR, codebook_size=32)))
    with pytest.raises(ValueError, match="powers of two"):
        J.VQVAEConfig(hop_lengths=(8, 24, 128))


def test_checkpoints_round_trip(tmp_path):
    vq, pr = J.HierarchicalVQVAE(replace(TINY, codebook_size=64)).eval(), J.JukeboxPriors(TINY_PRIOR).eval()
    checkpoint.save_pretrained(vq, vq.config, tmp_path / "jb-vqvae")
    checkpoint.save_pretrained(pr, pr.config, tmp_path / "jb-priors")
    loaded = J.load_pretrained(str(tmp_path / "jb"))
    wav = _tones(1, 0.25)
    torch.testing.assert_close(loaded.encode(wav)[1], vq.encode(wav)[1])
    assert loaded.styles == ("a", "b")


def test_song_codes_are_encoded_once_and_again_when_the_vqvae_changes(tmp_path, monkeypatch):
    from course_lib.recipes import jukebox as R
    torch.manual_seed(0)
    vqvae, wav = J.HierarchicalVQVAE(TINY).eval(), _tones(3)
    attrs = [{"style": "a", "key": "C major", "tempo_bpm": 100.0}] * 3
    path = tmp_path / "codes-train.pt"
    first = R.encode_songs_cached(path, vqvae, wav, attrs, ("a", "b"), 0.5)
    assert path.exists() and list(tmp_path.iterdir()) == [path]                   # no temporary file left
    calls = []
    monkeypatch.setattr(R, "encode_songs", lambda *a: calls.append(a) or first)
    again = R.encode_songs_cached(path, vqvae, wav, attrs, ("a", "b"), 0.5)
    assert calls == [] and all(torch.equal(a, b) for a, b in zip(first.codes, again.codes))
    with torch.no_grad():
        next(vqvae.decoders[0].parameters()).add_(0.1)
    R.encode_songs_cached(path, vqvae, wav, attrs, ("a", "b"), 0.5)              # other weights: encoded again
    R.encode_songs_cached(path, vqvae, wav, attrs[:2] + [{**attrs[0], "style": "b"}], ("a", "b"), 0.5)
    R.encode_songs_cached(path, vqvae, wav, attrs, ("b", "a"), 0.5)      # other style order: other indices
    assert len(calls) == 3


def test_train_cli_both_stages_and_eval_cli_reproduce_the_cards(tmp_path, monkeypatch):
    from functools import partial

    from course_lib.recipes import jukebox as R
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(R, "style_classifier", partial(R.style_classifier, steps=10))   # a quick ruler for the test
    common = ["--preset", "tiny", "--steps", "2", "--train-size", "6", "--eval-size", "6", "--threads", "1",
              "--no-progress"]
    assert R.train_cli(["--stage", "vqvae", *common, "--out", "jb-vqvae"]) == 0
    assert R.train_cli(["--stage", "priors", *common, "--vqvae", "jb-vqvae", "--out", "jb-priors",
                        "--gen-per-style", "2", "--gen-seconds", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "runs/jukebox-songs/priors").glob("codes-*.pt")) == \
        ["codes-test.pt", "codes-train.pt"]                                     # a resumed run does not encode again
    vq_card, prior_card = checkpoint.read_card("jb-vqvae"), checkpoint.read_card("jb-priors")
    assert vq_card["stopped_by"] == prior_card["stopped_by"] == "max_steps"
    assert set(vq_card["metrics"]) == {"bottom", "middle", "top"} and prior_card["metrics"]["generated"]["songs"] == 12
    again = R.eval_cli(["--checkpoint", str(tmp_path / "jb"), "--threads", "1"])
    assert again["vqvae"] == vq_card["metrics"]
    assert again["priors"] == {k: v for k, v in prior_card["metrics"].items() if k not in ("generated", "reference")}
    assert again["generated"] == prior_card["metrics"]["generated"]
    assert again["reference"] == prior_card["metrics"]["reference"]
    assert set(again["reference"]) == {"songs", "real", "bottom_reconstruction", "top_reconstruction"}
    assert {"style_accuracy", "style_accuracy_uncoded_ruler"} <= set(again["generated"])   # both rulers reported
    # Tempos are asked at both ends of each style's range: a prior that knew only the style would miss by half of it.
    half = [(hi - lo) / 2 / t for lo, hi in (STYLES[s].tempo for s in STYLES) for t in (lo, hi)]
    assert again["generated"]["median_relative_tempo_error_style_only"] == round(float(torch.tensor(half).median()), 4)
    # Each song heard faster than the one before: slow requests come first, so every (slow, fast) pair is in order.
    model, heard = R.load_pretrained(str(tmp_path / "jb")), iter(range(1000))
    monkeypatch.setattr(R, "estimate_tempo", lambda wav, sr: float(next(heard)))
    blind = SimpleNamespace(predict=lambda wav: SimpleNamespace(logits=torch.zeros(len(wav), len(model.styles))))
    top = model.encode(torch.randn(1, 1, 16_000, generator=torch.Generator().manual_seed(0)) * 0.1)[2]
    assert R.generation_report(model, blind, top, top, per_style=2, seconds=1.0)["tempo_order_right"] == 1.0
    # A decoder-only fine-tune keeps every code, so the priors stay valid.
    with pytest.raises(SystemExit, match="--init-from"):
        R.train_cli(["--stage", "vqvae", *common, "--decoders-only", "--out", "jb2-vqvae"])
    assert R.train_cli(["--stage", "vqvae", *common, "--init-from", "jb-vqvae", "--decoders-only",
                        "--run-dir", "runs/jb2", "--out", "jb2-vqvae"]) == 0
    before = J.load_pretrained(str(tmp_path / "jb"))
    after = checkpoint.load_pretrained("jb2-vqvae", J.HierarchicalVQVAE, J.VQVAEConfig)
    wav = _tones(2, 0.5)
    for a, b in zip(before.encode(wav), after.encode(wav)):
        torch.testing.assert_close(a, b)
    fine = checkpoint.read_card("jb2-vqvae")
    assert fine["decoders_only"] is True and fine["init_from"] == "jb-vqvae"
    assert [r["checkpoint"] for r in fine["runs_before"]] == ["jb-vqvae"]
    assert fine["runs_before"][0]["metrics"] == vq_card["metrics"] and fine["runs_before"][0]["steps"] == 2
    # Upsamplers trained on their own keep the top prior, weight for weight.
    with pytest.raises(SystemExit, match="--init-from"):
        R.train_cli(["--stage", "priors", *common, "--vqvae", "jb-vqvae", "--upsamplers-only", "--out", "jb3-priors"])
    assert R.train_cli(["--stage", "priors", *common, "--vqvae", "jb-vqvae", "--init-from", "jb-priors",
                        "--upsamplers-only", "--gen-per-style", "0", "--run-dir", "runs/jb3", "--out", "jb3-priors"]) == 0
    ups = checkpoint.load_pretrained("jb3-priors", J.JukeboxPriors, J.PriorConfig)
    assert ups.config.song_seconds == R.SECONDS                              # the training songs' length, recorded
    for (k, a), b in zip(before.priors.top.state_dict().items(), ups.top.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    assert not all(torch.equal(a, b) for a, b in zip(before.priors.upsamplers.parameters(), ups.upsamplers.parameters()))
    assert checkpoint.read_card("jb3-priors")["upsamplers_only"] is True
    # A top prior trained on its own, with the key clock added, keeps the upsamplers weight for weight.
    with pytest.raises(SystemExit, match="exclude each other"):
        R.train_cli(["--stage", "priors", *common, "--vqvae", "jb-vqvae", "--init-from", "jb-priors", "--top-only",
                     "--upsamplers-only", "--out", "jb4-priors"])
    assert R.train_cli(["--stage", "priors", *common, "--vqvae", "jb-vqvae", "--init-from", "jb-priors", "--top-only",
                        "--key-clock", "--unknown-style", "--gen-per-style", "0", "--run-dir", "runs/jb4",
                        "--out", "jb4-priors"]) == 0
    top_only = checkpoint.load_pretrained("jb4-priors", J.JukeboxPriors, J.PriorConfig)
    assert top_only.config.key_clock and top_only.config.unknown_style
    assert checkpoint.read_card("jb4-priors")["top_only"] is True
    for a, b in zip([*before.priors.upsamplers.parameters(), *before.priors.conditioners.parameters()],
                    [*top_only.upsamplers.parameters(), *top_only.conditioners.parameters()]):
        torch.testing.assert_close(a, b)
    assert not torch.equal(before.priors.top.cond_proj.weight, top_only.top.cond_proj.weight[:, :-24])
    # A wider top level trained alone beside the kept bottom and middle levels; priors follow its codebook.
    with pytest.raises(SystemExit, match="--stage vqvae"):
        R.train_cli(["--stage", "priors", *common, "--vqvae", "jb-vqvae", "--top-width", "12", "--out", "jb5-priors"])
    with pytest.raises(SystemExit, match="--init-from"):
        R.train_cli(["--stage", "vqvae", *common, "--top-only", "--out", "jb5-vqvae"])
    assert R.train_cli(["--stage", "vqvae", *common, "--init-from", "jb-vqvae", "--top-only", "--top-width", "12",
                        "--top-codebook-size", "96", "--run-dir", "runs/jb5", "--out", "jb5-vqvae"]) == 0
    wide = checkpoint.load_pretrained("jb5-vqvae", J.HierarchicalVQVAE, J.VQVAEConfig)
    assert wide.config.codebook_sizes == (64, 64, 96) and wide.config.capacity(2)[0] == 12
    for a, b in zip(before.encode(wav)[:2], wide.encode(wav)[:2]):          # bottom and middle codes kept
        torch.testing.assert_close(a, b)
    assert checkpoint.read_card("jb5-vqvae")["settings"]["top_width"] == 12
    with pytest.raises(SystemExit, match="must both learn the new codes"):
        R.train_cli(["--stage", "priors", *common, "--vqvae", "jb5-vqvae", "--init-from", "jb-priors", "--top-only",
                     "--out", "jb5-priors"])
    assert R.train_cli(["--stage", "priors", *common, "--vqvae", "jb5-vqvae", "--init-from", "jb-priors",
                        "--gen-per-style", "0", "--run-dir", "runs/jb5p", "--out", "jb5-priors"]) == 0
    assert R.load_pretrained(str(tmp_path / "jb5")).priors.config.codebook_sizes == (64, 64, 96)


def test_generation_report_asks_every_key_equally_often_and_each_style_for_different_keys(monkeypatch):
    from collections import Counter

    from course_lib.recipes import jukebox as R
    asked = []

    def generate(n, style, key, tempo, seconds, generator=None):
        asked.append((style, key))
        return torch.zeros(n, 1, 160)
    model = SimpleNamespace(styles=tuple(STYLES)[:6], sample_rate=16_000, vqvae=None, generate=generate)
    keys_heard = iter(k for _, k in asked)                  # lazily: the ruler hears what was asked
    monkeypatch.setattr(R, "estimate_key", lambda wav, sr: SimpleNamespace(name=next(keys_heard)))
    monkeypatch.setattr(R, "estimate_tempo", lambda wav, sr: 100.0)
    monkeypatch.setattr(R, "top_codes", lambda vqvae, wav: torch.zeros(len(wav), 4, dtype=torch.long))
    blind = SimpleNamespace(predict=lambda wav: SimpleNamespace(logits=torch.zeros(len(wav), 6)))
    codes = torch.zeros(3, 4, dtype=torch.long)
    out = R.generation_report(model, blind, codes, codes, per_style=16, seconds=0.01)
    assert out["songs"] == len(asked) == 96 and out["key_accuracy"] == 1.0
    assert set(Counter(k for _, k in asked).values()) == {4} and len({k for _, k in asked}) == 24
    for style in model.styles:
        assert len({k for s, k in asked if s == style}) == 16          # no style asks for a key twice
