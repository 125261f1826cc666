"""WaveGAN: shapes, phase shuffle, the gradient penalty, a short training run, bad input."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib import checkpoint, gan_eval
from course_lib import wavegan as W
from course_lib.recipes import wavegan as R
from course_lib.train import TrainingDiverged

TINY = W.PRESETS["tiny"]


@pytest.mark.parametrize("num_layers, length", [(4, 4096), (5, 16384)])
def test_shapes(num_layers, length):
    cfg = replace(TINY, num_layers=num_layers)
    model = W.WaveGAN(cfg)
    assert cfg.slice_length == length
    x = model.generate(3, torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, length)
    assert x.abs().max() <= 1.0                                     # tanh output
    assert model.discriminator(x).shape == (3,)
    assert model.sample_latent(5).abs().max() <= 1.0                # z ~ U[-1, 1]
    # channels as in the paper: d, 2d, ... in the critic, mirrored in the generator
    assert [c.out_channels for c in model.discriminator.convs] == [cfg.d * 2 ** i for i in range(num_layers)]
    assert [u.in_channels for u in model.generator.ups] == [cfg.d * 2 ** i for i in reversed(range(num_layers))]


def test_generate_is_deterministic_under_a_generator():
    torch.manual_seed(0)              # some initial weights give a constant output whatever the latent
    model = W.WaveGAN(TINY)
    a = model.generate(2, torch.Generator().manual_seed(1))
    b = model.generate(2, torch.Generator().manual_seed(1))
    c = model.generate(2, torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("preset", ["tiny", "small", "base"])
def test_every_preset_builds_and_steps(preset):
    cfg = W.PRESETS[preset]
    model = W.WaveGAN(cfg)
    opt = W.make_optimizers(model)
    real = torch.rand(2, 1, cfg.slice_length) - 0.5                   # the preset's model, a cheap step
    before = {k: p.clone() for k, p in model.named_parameters()}
    losses = W.train_step(model, opt, lambda: real, torch.Generator().manual_seed(0), n_critic=1)
    assert all(torch.isfinite(v) for v in losses)
    # Both players moved. The critic's output bias cancels in E[D(fake)] - E[D(real)]: no gradient.
    # The weight average moves in fit(), not in train_step.
    frozen = [k for k, p in model.named_parameters() if torch.equal(before[k], p) and "generator_ema" not in k]
    assert frozen == ["discriminator.dense.bias"]


def test_weight_average_arithmetic_and_sampling():
    cfg = replace(W.PRESETS["tiny"], ema_decay=0.9)
    model = W.WaveGAN(cfg)
    avg0 = [p.clone() for p in model.generator_ema.parameters()]
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(1.0)
    model.update_ema(step=1000)                 # past the warm-up: d = ema_decay
    for a0, a, p in zip(avg0, model.generator_ema.parameters(), model.generator.parameters()):
        torch.testing.assert_close(a, 0.9 * a0 + 0.1 * p)
    model.update_ema(step=0)                    # warm-up: d = 1/10, the average jumps close to the weights
    for a, p in zip(model.generator_ema.parameters(), model.generator.parameters()):
        assert (a - p).abs().max() < 0.1
    z = model.sample_latent(3, torch.Generator().manual_seed(0))
    out = model.generate(3, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, model.generator_ema(z))                      # samples come from the average
    torch.testing.assert_close(model.eval()(z), model.generator_ema(z))          # and so does eval-mode forward
    torch.testing.assert_close(model.train()(z), model.generator(z))
    assert not any(p.requires_grad for p in model.generator_ema.parameters())
    assert W.WaveGAN(replace(cfg, ema_decay=0.0)).generator_ema is None
    with pytest.raises(ValueError, match="ema_decay"):
        replace(cfg, ema_decay=1.0)


def _reference_phase_shuffle(x: np.ndarray, k: int) -> np.ndarray:
    """The official TensorFlow code, in numpy: pad (k, 0) or (0, -k) with reflection, crop."""
    pad_l, pad_r = max(k, 0), max(-k, 0)
    padded = np.pad(x, [(0, 0), (0, 0), (pad_l, pad_r)], mode="reflect")
    return padded[..., pad_r:pad_r + x.shape[-1]]


def test_phase_shuffle_shift_range_and_reflection():
    x = torch.arange(20.0).view(1, 1, 20).repeat(2, 3, 1)           # (B, C, T) ramp: the shift is readable
    seen = set()
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        y = W.phase_shuffle(x, 2, g)
        assert y.shape == x.shape
        k = int(x[0, 0, 10] - y[0, 0, 10])                          # y[t] = x[t - k]
        seen.add(k)
        np.testing.assert_array_equal(y.numpy(), _reference_phase_shuffle(x.numpy(), k))
        assert torch.equal(y[1], y[0])                               # one shift for the whole batch
    assert seen == {-2, -1, 0, 1, 2}
    # reflection, not zeros or wrap-around: a right shift by 2 starts 2, 1, 0, 1, ...
    np.testing.assert_array_equal(_reference_phase_shuffle(x.numpy(), 2)[0, 0, :4], [2, 1, 0, 1])


def test_phase_shuffle_identity_at_zero_and_in_eval():
    x = torch.randn(2, 4, 32)
    assert torch.equal(W.phase_shuffle(x, 0), x)
    layer = W.PhaseShuffle(2).eval()
    assert torch.equal(layer(x), x)
    layer.train()
    outs = {tuple(layer(x, torch.Generator().manual_seed(s))[0, 0, :3].tolist()) for s in range(20)}
    assert len(outs) > 1


def test_critic_shuffles_only_between_convs():
    cfg = replace(TINY, phase_shuffle=0)
    torch.manual_seed(0)
    plain = W.Discriminator(cfg)
    shuffled = W.Discriminator(replace(cfg, phase_shuffle=2))
    shuffled.load_state_dict(plain.state_dict())
    x = torch.randn(4, 1, cfg.slice_length)
    torch.testing.assert_close(shuffled.eval()(x), plain(x))        # eval: no shuffle
    outs = torch.stack([shuffled.train()(x, torch.Generator().manual_seed(s)) for s in range(10)])
    assert outs.std(0).mean() > 0                                   # training: the critic sees shifted maps


def test_gradient_penalty_linear_critic_closed_form():
    w = torch.randn(1, 1, 64)
    critic = lambda x: (w * x).sum(dim=(1, 2))                       # noqa: E731 - gradient is w everywhere
    gp = W.gradient_penalty(critic, torch.randn(5, 1, 64), torch.randn(5, 1, 64))
    torch.testing.assert_close(gp, (w.norm() - 1) ** 2)


def test_gradient_penalty_matches_direct_autograd():
    cfg = replace(TINY, phase_shuffle=0)
    D = W.Discriminator(cfg)
    real, fake = torch.randn(4, 1, cfg.slice_length) * 0.3, torch.randn(4, 1, cfg.slice_length) * 0.3
    gp = W.gradient_penalty(D, real, fake, torch.Generator().manual_seed(3))
    eps = torch.rand(4, 1, 1, generator=torch.Generator().manual_seed(3))
    direct = []
    for i in range(4):                                               # one example at a time, no batching tricks
        x = (eps[i] * real[i] + (1 - eps[i]) * fake[i]).unsqueeze(0).requires_grad_(True)
        D(x).backward()
        direct.append((x.grad.norm() - 1) ** 2)
    torch.testing.assert_close(gp, torch.stack(direct).mean(), rtol=1e-4, atol=1e-6)
    gp.backward()                                                     # create_graph: the penalty trains D
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in D.parameters())


def _bursts(n: int, length: int, seed: int = 0) -> torch.Tensor:
    """Decaying 400-800 Hz tones: simple 'real' data for a quick run."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 16_000
    f = 400 + 400 * torch.rand(n, 1, 1, generator=g)
    return 0.8 * torch.sin(2 * torch.pi * f * t) * torch.exp(-t / 0.05)


def test_short_training_improves_wasserstein_estimate():
    torch.manual_seed(0)
    # lr 1e-3 (paper: 1e-4) so that 8 generator steps (40 critic steps) show the trend in seconds.
    model = W.WaveGAN(TINY)
    result = W.fit(model, _bursts(64, TINY.slice_length), steps=8, generator=torch.Generator().manual_seed(0),
                   batch_size=8, lr=1e-3, progress=False, log_every=1)
    w = result.history.values("wasserstein")
    assert len(w) == 8 and result.steps == 8 and result.finished
    # A freshly initialised critic cannot tell real from fake (estimate ~0); training makes it a
    # better (larger) lower bound on the Wasserstein distance.
    assert abs(w[0]) < 0.02
    assert w[-1] > 0.1 and w[-1] > 10 * abs(w[0]) and np.mean(w[-3:]) > np.mean(w[:3]), w


def test_fit_resumes_from_checkpoint(tmp_path):
    model = W.WaveGAN(TINY)
    clips = _bursts(8, TINY.slice_length)
    W.fit(model, clips, steps=2, checkpoint_dir=tmp_path, batch_size=4, n_critic=1, progress=False)
    assert (tmp_path / "last.pt").is_file()
    again = W.fit(W.WaveGAN(model.config), clips, steps=3, checkpoint_dir=tmp_path, batch_size=4, n_critic=1,
                  progress=False)
    assert again.steps == 3


def test_post_filter_added_as_the_identity_and_learns():
    """The paper's post-processing filter: set to a centre tap, adding it to a trained generator (as --init-from
    does) changes nothing; a (1, 1, k) kernel that the generator's loss reaches."""
    cfg = replace(TINY, post_filter_length=9, spectral_critic=4)
    model = W.WaveGAN(cfg)
    assert model.generator.post_filter.weight.shape == (1, 1, 9)
    plain = W.WaveGAN(replace(cfg, post_filter_length=0))
    R.warm_start(model, plain, "plain",
                 new=("spectral_critic.", "generator.post_filter.", "generator_ema.post_filter."))
    for g in (model.generator, model.generator_ema):
        g.identity_post_filter_()
    z = model.sample_latent(2, torch.Generator().manual_seed(0))
    torch.testing.assert_close(model(z), plain(z))
    torch.testing.assert_close(model.generate(2, torch.Generator().manual_seed(0)),
                               plain.generate(2, torch.Generator().manual_seed(0)))
    model(z).square().mean().backward()
    grad = model.generator.post_filter.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    with pytest.raises(SystemExit, match="layers differ"):                 # other parts must still match
        R.warm_start(model, W.WaveGAN(replace(TINY, d=8)), "wider", new=("generator.post_filter.",))


def test_checkpoint_round_trip(tmp_path):
    model = W.WaveGAN(TINY).eval()
    checkpoint.save_pretrained(model, model.config, tmp_path / "wg", card={"metrics": {}})
    loaded = W.load_pretrained(tmp_path / "wg")
    torch.testing.assert_close(loaded.generate(2, torch.Generator().manual_seed(0)),
                               model.generate(2, torch.Generator().manual_seed(0)))


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("n", [0, -3, 2.5])
def test_generate_rejects_bad_n(n):
    with pytest.raises(ValueError, match="n must be a positive int"):
        W.WaveGAN(TINY).generate(n)


def test_bad_shapes_and_config():
    model = W.WaveGAN(TINY)
    with pytest.raises(ValueError, match="slice_length"):
        model.discriminator(torch.zeros(2, 1, 1000))
    with pytest.raises(ValueError, match="sample_latent"):
        model(torch.zeros(2, 7))
    with pytest.raises(ValueError, match="num_layers must be 4"):
        W.WaveGANConfig(num_layers=3)
    with pytest.raises(ValueError, match=r"\(N, 1, 4096\)"):
        W.fit(model, torch.zeros(4, 1, 100), steps=1, progress=False)
    with pytest.raises(ValueError, match="silent"):
        W.fit(model, torch.zeros(4, 1, 4096), steps=1, progress=False)
    with pytest.raises(ValueError, match="Unknown data"):
        R.load_clips("mp3s")


def test_wrong_checkpoints_are_refused(tmp_path):
    clf = gan_eval.AudioClassifier(gan_eval.ClassifierConfig(("a", "b")))
    checkpoint.save_pretrained(clf, clf.config, tmp_path / "clf")
    with pytest.raises(checkpoint.CheckpointError, match="not a WaveGAN"):
        W.load_pretrained(tmp_path / "clf")
    model = W.WaveGAN(TINY)
    checkpoint.save_pretrained(model, model.config, tmp_path / "wg")
    meta = json.loads((tmp_path / "wg" / "config.json").read_text())
    meta["config"]["d"] = 8                                          # weights of another size
    (tmp_path / "wg" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(checkpoint.CheckpointError, match="was edited"):      # the card's checksum notices
        W.load_pretrained(tmp_path / "wg")
    checkpoint._seal(tmp_path / "wg")                                # trusted on purpose: the weights do not fit
    with pytest.raises(checkpoint.CheckpointError, match="do not fit"):
        W.load_pretrained(tmp_path / "wg")


def test_divergence_is_caught():
    model = W.WaveGAN(TINY)
    with pytest.raises(TrainingDiverged, match="Lower the learning rate"):
        W.fit(model, _bursts(8, TINY.slice_length) * 1e9, steps=3, batch_size=4, n_critic=1,
              progress=False)                                        # exploding critic


# ----------------------------------------------------------------------------- evaluation
def test_gan_metrics_references():
    clips = R.load_clips("synthworld-drums", "train", 96)
    test = R.load_clips("synthworld-drums", "test", 48)
    clf, acc = gan_eval.train_classifier(clips.audio, clips.labels, clips.classes, steps=80, batch_size=16,
                                         generator=torch.Generator().manual_seed(0))
    assert acc > 0.6
    real = gan_eval.gan_metrics(clf, test.audio, test.audio, test.labels, clips.audio)
    assert real.inception_ratio == pytest.approx(1.0) and real.frechet < 1e-3   # identical sets
    assert real.classes_generated == 8
    noise = gan_eval.gan_metrics(clf, gan_eval.noise_bursts(48, 4096), test.audio, test.labels, clips.audio)
    assert noise.frechet > 10 * real.frechet_train_vs_test


def test_noise_augmented_classifier_hears_drums_through_a_hiss():
    """A clean-trained classifier files hissy drums under 'snare'; the noise-augmented one does not."""
    clips = R.load_clips("synthworld-drums", "train", 192)
    test = R.load_clips("synthworld-drums", "test", 96)
    rms = test.audio.square().mean(-1, keepdim=True).sqrt()
    hissy = test.audio + torch.randn(test.audio.shape, generator=torch.Generator().manual_seed(5)) * rms * 0.1  # 20 dB SNR
    acc = {}
    for name, snr in (("noise", (10.0, 40.0)), ("clean", None)):
        clf, train_acc = gan_eval.train_classifier(clips.audio, clips.labels, clips.classes, steps=120, batch_size=32,
                                                   generator=torch.Generator().manual_seed(0), noise_snr_db=snr)
        assert train_acc > 0.9
        acc[name] = float((clf.predict(hissy).logits.argmax(-1) == test.labels).float().mean())
    assert acc["noise"] > 0.9 and acc["clean"] < 0.6, acc


def test_decay_db_known_values():
    t = torch.arange(4000) / 16_000
    steady = torch.sin(2 * torch.pi * 440 * t).reshape(1, 1, -1)
    assert float(gan_eval.decay_db(steady)) == pytest.approx(0.0, abs=0.05)
    silent_tail = steady.clone()
    silent_tail[..., 3000:] = 0                                      # the last quarter is digital silence
    first = 10 * np.log10(0.5)                                       # a sine's mean square: 1/2
    assert float(gan_eval.decay_db(silent_tail)) == pytest.approx(gan_eval.FLOOR_16BIT_DB - first, abs=0.01)
    assert float(gan_eval.decay_db(silent_tail, floor_db=-60)) == pytest.approx(-60 - first, abs=0.01)
    tau = 0.02                                                       # an exponential decay: energy falls 8.69 dB per tau
    hit = torch.randn(1, 1, 4000, generator=torch.Generator().manual_seed(0)) * torch.exp(-t / tau)
    expected = 10 * np.log10(np.exp(-2 * 3000 / 16_000 / tau))      # quarters 0.1875 s apart (mean of a decaying window)
    assert float(gan_eval.decay_db(hit, None)) == pytest.approx(expected, abs=1.5)
    noise_floor = hit + 0.01 * torch.randn(1, 1, 4000, generator=torch.Generator().manual_seed(1))
    assert float(gan_eval.decay_db(noise_floor)) > float(gan_eval.decay_db(hit)) + 30   # a hiss stops the decay
    with pytest.raises(ValueError, match=r"\(N, 1, T\)"):
        gan_eval.decay_db(torch.zeros(4000))


def test_decay_metrics_pool_the_draws_after_the_scored_one():
    model = W.WaveGAN(TINY).eval()
    n, seed = 16, 3
    clf = gan_eval.AudioClassifier(gan_eval.ClassifierConfig(("a", "b")))
    test = R.TrainingClips(_bursts(8, TINY.slice_length), torch.tensor([0, 1] * 4), ["a", "b"])
    with torch.no_grad():
        draws = [model.generate(n, torch.Generator().manual_seed(seed + 1 + k)) for k in range(R.DECAY_DRAWS)]
        m = R.decay_metrics(model, clf, test, draws[0], seed)
    pooled = gan_eval.decay_db(torch.cat(draws))
    assert m["decay_p10_db"]["generated_clips"] == R.DECAY_DRAWS * n
    assert m["decay_p10_db"]["generated"] == round(float(pooled.quantile(0.1)), 1)
    assert not torch.equal(draws[0], draws[1])                       # distinct draws, not one repeated
    assert m["decay_p10_db"]["real"] == round(float(gan_eval.decay_db(test.audio).quantile(0.1)), 1)


def test_max_correlation_finds_copies_at_any_lag_and_under_noise():
    g = torch.Generator().manual_seed(0)
    t = torch.arange(2048) / 16_000
    bank = torch.randn(5, 1, 2048, generator=g) * torch.exp(-t / 0.03)             # five decaying noise hits
    late = torch.roll(bank[2:3], 48, -1)                                           # 3 ms late
    later = F.pad(bank[4:5, :, :-100], (100, 0))                                   # 100 samples late, tail cut
    noisy = bank[1:2] + 10 ** (-30 / 20) * bank[1:2].pow(2).mean().sqrt() * torch.randn(1, 1, 2048, generator=g)
    new = torch.randn(3, 1, 2048, generator=g) * torch.exp(-t / 0.03)
    corr = gan_eval.max_correlation(torch.cat([bank[:1], late, later, noisy, new]), bank, chunk=2)
    assert corr[0] == pytest.approx(1.0, abs=1e-5)                                 # itself
    assert corr[1] > 0.999 and corr[2] > 0.999 and corr[3] > 0.999                 # shifted, cut, faint noise
    assert float(corr[4:].max()) < 0.5                                             # unrelated hits
    assert gan_eval.copy_share(torch.cat([late, new]), bank) == pytest.approx(0.25)
    # both directions of lag: the late copy as the bank, the original as the clip
    assert float(gan_eval.max_correlation(bank[4:5], later)) > 0.999
    # the FFT's lags equal a direct loop over lags
    x, b = new[0, 0], bank[3, 0]
    direct = max(float(torch.dot(x[max(0, -k):2048 - max(0, k)], b[max(0, k):2048 - max(0, -k)]))
                 for k in range(-2047, 2048)) / float(x.norm() * b.norm())
    assert float(gan_eval.max_correlation(new[:1], bank[3:4])) == pytest.approx(direct, abs=1e-5)
    with pytest.raises(ValueError, match="non-empty"):
        gan_eval.max_correlation(torch.zeros(0, 1, 10), bank)


def test_mu_law_training_domain():
    cfg = replace(TINY, mu_law=255)
    model = W.WaveGAN(cfg).eval()
    x = torch.tensor([[[-1.0, -0.001, 0.0, 0.001, 0.5, 1.0]]])
    y = model.compress(x)
    torch.testing.assert_close(y[0, 0, 3], torch.tensor(np.log1p(0.255) / np.log(256), dtype=torch.float32))  # -60 dB -> 0.04
    torch.testing.assert_close(model.expand(y), x)
    z = model.sample_latent(2, torch.Generator().manual_seed(0))
    torch.testing.assert_close(model(z), model.expand(model.generator_ema(z)))   # linear samples out ...
    torch.testing.assert_close(model.generate(2, torch.Generator().manual_seed(0)), model(z))
    linear = W.WaveGAN(TINY).eval()
    torch.testing.assert_close(linear.compress(x), x)                            # ... and off by default
    seen = []                                                                    # ... while the critic sees companded clips
    model.discriminator.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    clips = 0.001 * torch.ones(4, 1, cfg.slice_length)
    W.fit(model.train(), clips, steps=1, batch_size=2, n_critic=1, progress=False)
    assert torch.allclose(seen[0], model.compress(clips[:2]))                   # the first critic call: a real batch
    with pytest.raises(ValueError, match="mu_law"):
        W.WaveGANConfig(mu_law=-1)


def test_init_from_copies_every_weight(tmp_path):
    source = W.WaveGAN(TINY)
    checkpoint.save_pretrained(source, TINY, tmp_path / "a", card={})
    fresh = W.WaveGAN(replace(TINY, mu_law=255))
    R.warm_start(fresh, W.load_pretrained(str(tmp_path / "a")), "a")
    for (k, a), b in zip(source.state_dict().items(), fresh.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    with pytest.raises(SystemExit, match="same preset"):
        R.warm_start(W.WaveGAN(replace(TINY, d=8)), source, "a")


def test_spectral_critic_features_shapes_and_penalty_domain():
    cfg = replace(TINY, spectral_critic=2)
    model = W.WaveGAN(cfg)
    S = model.spectral_critic
    x = torch.zeros(3, 1, cfg.slice_length)
    f = S.features(x)
    assert f.shape == (3, 1, S.N_FFT // 2 + 1, cfg.slice_length // S.HOP + 1)
    torch.testing.assert_close(f, torch.full_like(f, -1.0))                     # digital silence sits at the floor
    assert S(x).shape == (3,)
    # A hiss 60 dB below full scale: a tiny step for the waveform critic's penalty, a long one for this one's.
    hiss = 1e-3 * torch.randn(3, 1, cfg.slice_length, generator=torch.Generator().manual_seed(0))
    assert float(hiss.flatten(1).norm(dim=1).mean()) < 0.07
    assert float((S.features(hiss) - f).flatten(1).norm(dim=1).mean()) > 20      # about 40 at this size
    # The penalty on features: the closed form for a critic linear in its features.
    w = torch.randn(1, 1, *f.shape[-2:])
    gp = W.gradient_penalty(lambda v: (w * v).sum(dim=(1, 2, 3)), S.features(hiss), f)
    torch.testing.assert_close(gp, (w.norm() - 1) ** 2)


def test_spectral_weight_scales_the_spectrogram_critics_pull_on_the_generator():
    cfg = replace(TINY, spectral_critic=2)
    real = torch.rand(2, 1, cfg.slice_length) - 0.5
    moves = {}
    for w in (0.0, 1.0, 2.0):
        torch.manual_seed(0)
        model = W.WaveGAN(cfg)
        with torch.no_grad():                                   # a waveform critic deaf to its input
            for p in model.discriminator.parameters():
                p.zero_()
        opt = W.make_optimizers(model)
        opt["generator"] = torch.optim.SGD(model.generator.parameters(), lr=1.0)   # the move is minus the gradient
        before = [p.clone() for p in model.generator.parameters()]
        W.train_step(model, opt, lambda: real, torch.Generator().manual_seed(0), n_critic=1, spectral_weight=w)
        moves[w] = torch.cat([(p - b).flatten() for p, b in zip(model.generator.parameters(), before)])
    assert moves[0.0].abs().max() == 0 and moves[1.0].abs().max() > 0
    torch.testing.assert_close(moves[2.0], 2 * moves[1.0])
    with pytest.raises(ValueError, match="spectrogram critic"):
        W.fit(W.WaveGAN(TINY), real, steps=1, spectral_weight=2.0, progress=False)
    with pytest.raises(SystemExit, match="--spectral-critic 8"):        # the command line says so before any work
        R.train_cli(["--preset", "tiny", "--steps", "1", "--spectral-weight", "2"])
    with pytest.raises(SystemExit, match="--ema-decay 1.0 never lets the average move"):
        R.train_cli(["--preset", "tiny", "--steps", "1", "--ema-decay", "1"])


def test_spectral_critic_trains_beside_the_waveform_critic():
    cfg = replace(TINY, spectral_critic=2)
    model = W.WaveGAN(cfg)
    opt = W.make_optimizers(model)
    assert set(opt) == {"generator", "discriminator", "spectral_critic"}
    real = torch.rand(2, 1, cfg.slice_length) - 0.5
    before = {k: p.clone() for k, p in model.named_parameters()}
    losses = W.train_step(model, opt, lambda: real, torch.Generator().manual_seed(0), n_critic=1)
    assert all(torch.isfinite(v) for v in losses)
    frozen = [k for k, p in model.named_parameters() if torch.equal(before[k], p) and "generator_ema" not in k]
    assert sorted(frozen) == ["discriminator.dense.bias", "spectral_critic.dense.bias"]
    # The generator climbs the spectrogram critic too: with a waveform critic deaf to its input (zero conv weights
    # stay zero, their gradient passes through a zero dense layer), the generator moves only through this critic.
    deaf = W.WaveGAN(cfg)
    with torch.no_grad():
        for p in [*deaf.discriminator.parameters()]:
            p.zero_()
    g_before = [p.clone() for p in deaf.generator.parameters()]
    W.train_step(deaf, W.make_optimizers(deaf), lambda: real, torch.Generator().manual_seed(0), n_critic=1)
    assert not all(torch.equal(a, b) for a, b in zip(g_before, deaf.generator.parameters()))
    assert all(p.requires_grad for p in [*deaf.discriminator.parameters(), *deaf.spectral_critic.parameters()])
    # Off by default; a model without it warm-starts one with it (the new critic keeps its fresh weights).
    assert W.WaveGAN(TINY).spectral_critic is None and "spectral_critic" not in W.make_optimizers(W.WaveGAN(TINY))
    plain = W.WaveGAN(TINY)
    own = {k: v.clone() for k, v in model.spectral_critic.state_dict().items()}
    R.warm_start(model, plain, "plain", new=("spectral_critic.",))
    torch.testing.assert_close(model.generator.dense.weight, plain.generator.dense.weight)
    for k, v in model.spectral_critic.state_dict().items():
        torch.testing.assert_close(v, own[k], msg=k)
    with pytest.raises(SystemExit, match="same preset"):
        R.warm_start(model, plain, "plain")                                      # without new=: refused
    # A checkpoint that already has the critic hands it over too (fine-tuning a SpecGAN-critic checkpoint).
    again = W.WaveGAN(cfg)
    R.warm_start(again, model, "model", new=("spectral_critic.",))
    for k, v in again.state_dict().items():
        torch.testing.assert_close(v, model.state_dict()[k], msg=k)
    with pytest.raises(SystemExit, match="same preset"):                         # a critic of another width
        R.warm_start(W.WaveGAN(replace(cfg, spectral_critic=3)), model, "model", new=("spectral_critic.",))
    with pytest.raises(ValueError, match="spectral_critic"):
        W.WaveGANConfig(spectral_critic=-1)


def _generator_step(cfg: W.WaveGANConfig, deaf: tuple[str, ...], real: torch.Tensor,
                    spectral_weight: float = 1.0) -> torch.Tensor:
    """How far one SGD step (lr 1) moves a fresh generator's weights when the critics named in ``deaf`` are zeroed."""
    torch.manual_seed(0)
    m = W.WaveGAN(cfg)
    with torch.no_grad():
        for p in (p for name in deaf for p in getattr(m, name).parameters()):
            p.zero_()
    o = W.make_optimizers(m)
    o["generator"] = torch.optim.SGD(m.generator.parameters(), lr=1.0)
    g0 = [p.clone() for p in m.generator.parameters()]
    W.train_step(m, o, lambda: real, torch.Generator().manual_seed(0), n_critic=1, spectral_weight=spectral_weight)
    return torch.cat([(p - b).flatten() for p, b in zip(m.generator.parameters(), g0)])


def _added_critic_keeps_its_weights_and_refuses_a_negative_width(model: W.WaveGAN, name: str) -> None:
    """A checkpoint without critic ``name`` warm-starts ``model``, which has it: the critic keeps its fresh weights."""
    own = {k: v.clone() for k, v in getattr(model, name).state_dict().items()}
    R.warm_start(model, W.WaveGAN(replace(model.config, **{name: 0})), "without it", new=(f"{name}.",))
    for k, v in getattr(model, name).state_dict().items():
        torch.testing.assert_close(v, own[k], msg=k)
    with pytest.raises(ValueError, match=name):
        W.WaveGANConfig(**{name: -1})


def test_long_critic_resolves_the_pitch_of_low_drums_and_pulls_the_generator():
    cfg = replace(TINY, spectral_critic=2, long_critic=2)
    model = W.WaveGAN(cfg)
    S, L = model.spectral_critic, model.long_critic
    assert list(model.spectrogram_critics()) == ["spectral_critic", "long_critic"]
    assert W.WaveGAN(TINY).spectrogram_critics() == {}
    t = torch.arange(cfg.slice_length) / cfg.sample_rate
    kick, tom = (0.5 * torch.sin(2 * torch.pi * f * t).view(1, 1, -1) for f in (50.0, 80.0))
    assert L.features(kick).shape == (1, 1, 513, cfg.slice_length // 256 + 1)
    peak = lambda critic, x: int(critic.features(x)[0, 0].mean(-1).argmax())  # noqa: E731
    assert peak(S, kick) == peak(S, tom) == 1                       # 62.5 Hz bins: one bin for both
    assert (peak(L, kick), peak(L, tom)) == (3, 5)                   # 15.6 Hz bins: 50 and 80 Hz apart
    # Every critic trains on the same batches (a dense bias cancels in E[D(fake)] - E[D(real)]).
    opt = W.make_optimizers(model)
    assert set(opt) == {"generator", "discriminator", "spectral_critic", "long_critic"}
    real = torch.rand(2, 1, cfg.slice_length) - 0.5
    before = {k: p.clone() for k, p in model.named_parameters()}
    W.train_step(model, opt, lambda: real, torch.Generator().manual_seed(0), n_critic=1)
    frozen = [k for k, p in model.named_parameters() if torch.equal(before[k], p) and "generator_ema" not in k]
    assert sorted(frozen) == ["discriminator.dense.bias", "long_critic.dense.bias", "spectral_critic.dense.bias"]
    # With the other two critics deaf, the generator moves through the long critic alone, by spectral_weight.
    moves = {w: _generator_step(cfg, ("discriminator", "spectral_critic"), real, w) for w in (1.0, 2.0)}
    assert moves[1.0].abs().max() > 0
    torch.testing.assert_close(moves[2.0], 2 * moves[1.0])
    _added_critic_keeps_its_weights_and_refuses_a_negative_width(model, "long_critic")


def test_body_critic_hears_only_the_lowest_bins_and_trains_with_the_others():
    cfg = replace(TINY, long_critic=2, body_critic=2)
    model = W.WaveGAN(cfg)
    B, L = model.body_critic, model.long_critic
    assert list(model.spectrogram_critics()) == ["long_critic", "body_critic"]
    t = torch.arange(cfg.slice_length, dtype=torch.float64) / cfg.sample_rate      # exact phases, then float32
    tone = lambda f: (0.5 * torch.sin(2 * torch.pi * f * t)).float().view(1, 1, -1)  # noqa: E731
    assert B.features(tone(50.0)).shape == (1, 1, 16, cfg.slice_length // 256 + 1)
    torch.testing.assert_close(B.features(tone(80.0)), L.features(tone(80.0))[:, :, :16])   # the long critic's bins
    # Deaf far above its band: a 1 kHz tone leaves the features at silence, a 50 Hz tone lifts them by 2 units
    # (60 dB). Inner frames only: the edges' reflection padding kinks a tone, which splashes into every bin.
    silence = B.features(torch.zeros(1, 1, cfg.slice_length))[..., 2:-2]
    hear = lambda f: float((B.features(tone(f))[..., 2:-2] - silence).abs().max())  # noqa: E731
    assert hear(1000.0) < 0.01 and hear(50.0) > 1.8
    assert B(tone(50.0)).shape == (1,)
    with pytest.raises(ValueError, match="bins must lie"):
        W.SpectrogramCritic(cfg, 2, n_fft=1024, hop=256, bins=600)
    opt = W.make_optimizers(model)
    assert set(opt) == {"generator", "discriminator", "long_critic", "body_critic"}
    before = {k: p.clone() for k, p in model.body_critic.named_parameters()}
    W.train_step(model, opt, lambda: torch.rand(2, 1, cfg.slice_length) - 0.5, torch.Generator().manual_seed(0),
                 n_critic=1)
    assert [k for k, p in model.body_critic.named_parameters() if torch.equal(before[k], p)] == ["dense.bias"]
    # With the other critics deaf, the generator still moves: through the body critic.
    real = torch.rand(2, 1, cfg.slice_length) - 0.5
    assert _generator_step(cfg, ("discriminator", "long_critic"), real).abs().max() > 0
    _added_critic_keeps_its_weights_and_refuses_a_negative_width(model, "body_critic")


def test_highpass_removes_the_offset_keeps_kick_bodies_and_passes_gradients():
    sr = 16_000
    t = torch.arange(4 * sr, dtype=torch.float64) / sr
    gain = lambda f: float(10 * torch.log10(2 * (  # noqa: E731 - a tone's steady-state power gain, after one second
        W.highpass(torch.sin(2 * torch.pi * f * t).view(1, 1, -1), 25.0, sr)[..., sr:].square().mean())))
    assert abs(gain(25.0) + 3.0) < 0.2                                  # Butterworth: -3 dB at the cutoff
    assert gain(5.0) < -55 and gain(12.5) < -24                         # 4th order: 24 dB per octave
    assert gain(40.0) > -0.3 and abs(gain(1000.0)) < 0.01               # a kick's body (40-65 Hz) passes
    offset = W.highpass(torch.full((1, 1, 4096), 0.3), 25.0, sr)       # one clip's length, 256 ms
    assert float(offset[..., 2048:].abs().amax()) < 0.01 * 0.3          # a constant becomes a transient at the start
    step = W.highpass(torch.cat([torch.ones(1, 1, 400), -torch.ones(1, 1, 400)], -1), 25.0, sr)
    assert float(step.abs().amax()) > 1.5                              # never clamped to [-1, 1]
    cfg = replace(TINY, highpass_hz=25.0)
    model = W.WaveGAN(cfg)
    z = model.sample_latent(2, torch.Generator().manual_seed(0))
    plain = W.Generator(TINY)
    plain.load_state_dict(model.generator.state_dict())
    torch.testing.assert_close(model.generator(z), W.highpass(plain(z), 25.0, cfg.sample_rate))
    model.generator(z).square().sum().backward()                        # every weight gets a gradient
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.generator.parameters())
    with pytest.raises(ValueError, match="highpass_hz must be 0"):
        replace(TINY, highpass_hz=9000.0)
    with pytest.raises(ValueError, match="highpass_hz filters linear waveforms"):
        replace(TINY, highpass_hz=25.0, mu_law=255)


def test_rulers_are_deterministic_and_differ_in_noise(monkeypatch):
    clips = R.load_clips("synthworld-drums", "train", 32)
    monkeypatch.setattr(gan_eval, "train_classifier", lambda *a, steps=400, **k: _real_train_classifier(*a, steps=5, **k))
    a, b = R.train_rulers(clips, 16_000, seed=3), R.train_rulers(clips, 16_000, seed=3)
    assert list(a) == ["classifier", "classifier-noise-trained"]     # the ruler of record first
    for name in a:
        for x, y in zip(a[name].state_dict().values(), b[name].state_dict().values()):
            torch.testing.assert_close(x, y)
    assert not torch.equal(next(iter(a["classifier"].state_dict().values())),
                           next(iter(R.train_rulers(clips, 16_000, seed=4)["classifier"].state_dict().values())))


_real_train_classifier = gan_eval.train_classifier


def test_load_rulers_names_a_legacy_classifier_by_what_it_is(tmp_path):
    clf = gan_eval.AudioClassifier(gan_eval.ClassifierConfig(("a", "b")))
    checkpoint.save_pretrained(clf, clf.config, tmp_path / "classifier", card={"data": "x"})   # no noise_snr_db: legacy
    assert list(R.load_rulers(tmp_path)) == ["classifier-noise-trained"]
    checkpoint.save_pretrained(clf, clf.config, tmp_path / "classifier", card={"noise_snr_db": None})
    checkpoint.save_pretrained(clf, clf.config, tmp_path / "classifier-noise-trained", card={"noise_snr_db": [10, 40]})
    assert list(R.load_rulers(tmp_path)) == ["classifier", "classifier-noise-trained"]


def test_train_cli_export_and_eval_cli_reproduce_the_card(tmp_path):
    out, run = tmp_path / "wg", tmp_path / "run"
    common = ["--preset", "tiny", "--steps", "3", "--train-size", "64", "--eval-size", "32", "--batch-size", "8",
              "--n-critic", "1", "--out", str(out), "--run-dir", str(run), "--threads", "1"]
    assert R.train_cli(common) == 0
    card = checkpoint.read_card(out)
    assert card["steps"] == 3 and card["metrics_without_weight_average"]["eval_clips"] == 32
    assert card["stopped_by"] == "max_steps" and card["data"][0]["license"].startswith("generated")
    m = card["metrics"]
    assert m["ruler"] == "classifier" and set(m["second_opinion"]) == {"classifier-noise-trained"}
    assert m["decay_p10_db"]["real"] < -40 and set(m["decay_p10_db_by_class"]) == set(card["classes"])
    assert m["decay_p10_db"]["generated_clips"] == R.DECAY_DRAWS * 32          # generated decay: pooled draws
    assert json.loads((out / "classifier" / "card.json").read_text())["noise_snr_db"] is None
    result = R.eval_cli(["--checkpoint", str(out), "--eval-size", "32"])
    assert all(result["matches_card"].values()), result
    assert {"decay_p10_db.generated", "second_opinion.classifier-noise-trained.inception_ratio"} <= set(
        result["matches_card"])
    assert R.train_cli(common) == 0                                  # at max_steps: re-exports last.pt
    state = torch.load(run / "last.pt", weights_only=True)["modules"]
    exported = W.load_pretrained(out)
    for key in ("generator", "generator_ema"):
        for name, value in getattr(exported, key).state_dict().items():
            torch.testing.assert_close(value, state[key][name])
    # Fine-tuned with the paper's post-filter added: it starts as the identity and is recorded.
    ft = tmp_path / "ft"
    assert R.train_cli([*common[:2], "--steps", "1", *common[4:10], "--post-filter", "9", "--init-from", str(out),
                        "--ema-decay", "0.99", "--out", str(ft), "--run-dir", str(tmp_path / "run-ft"),
                        "--threads", "1"]) == 0
    tuned = W.load_pretrained(ft)
    assert tuned.config.ema_decay == 0.99 and checkpoint.read_card(ft)["settings"]["ema_decay"] == 0.99
    identity = torch.zeros(1, 1, 9)
    identity[..., 4] = 1.0                                           # one step of Adam moves a tap by about lr
    assert tuned.config.post_filter_length == 9
    torch.testing.assert_close(tuned.generator.post_filter.weight, identity, atol=1e-2, rtol=0)
    assert checkpoint.read_card(ft)["settings"]["post_filter"] == 9
    # Fine-tuned from the filtered checkpoint without a filter: refused unless asked for, then the taps are dropped.
    bare = [*common[:2], "--steps", "1", *common[4:10], "--init-from", str(ft), "--out", str(tmp_path / "bare"),
            "--run-dir", str(tmp_path / "run-bare"), "--threads", "1"]
    with pytest.raises(SystemExit, match="--post-filter 9 to keep it, or --drop-post-filter"):
        R.train_cli(bare)
    with pytest.raises(SystemExit, match="which this run keeps"):
        R.train_cli([*bare, "--drop-post-filter", "--post-filter", "9"])
    with pytest.raises(SystemExit, match="add --init-from NAME"):
        R.train_cli([*common, "--drop-post-filter"])
    assert R.train_cli([*bare, "--drop-post-filter"]) == 0
    dropped = W.load_pretrained(tmp_path / "bare")
    assert dropped.generator.post_filter is None and checkpoint.read_card(tmp_path / "bare")["settings"][
        "drop_post_filter"] is True
    with pytest.raises(SystemExit, match="which has none"):                # nothing left to drop
        R.train_cli([*bare, "--drop-post-filter", "--init-from", str(tmp_path / "bare"), "--run-dir",
                     str(tmp_path / "run-bare2"), "--out", str(tmp_path / "bare2")])
