"""Tests of course_lib.codec: shapes, API arithmetic, causality, bad input, training, checkpoints, both decoders."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from course_lib.audio import AudioError, change_speed
from course_lib.checkpoint import CheckpointError, save_pretrained
from course_lib.codec import (PRESETS, Codec, CodecConfig, ISTFTDecoder, augment_voices, codec_loss, complex_stft_loss,
                              evaluate, fit, load_pretrained, mel_loss, random_batch)
from course_lib.nn import MultiScaleSTFTDiscriminator
from course_lib.metrics import multiscale_mel_distance
from course_lib.spectral import MultiResolutionSTFTLoss, stft

TINY = CodecConfig.preset("tiny")
TINY_ISTFT = CodecConfig.preset("tiny-istft")


def _tones(n: int = 6, seconds: float = 1.0, sr: int = 16_000) -> list[torch.Tensor]:
    t = torch.arange(int(seconds * sr)) / sr
    return [(0.5 * torch.sin(2 * math.pi * (150 + 90 * i) * t) * torch.exp(-2 * t))[None] for i in range(n)]


@pytest.fixture(scope="module")
def tiny() -> Codec:
    torch.manual_seed(0)
    return Codec(TINY).eval()


@pytest.mark.parametrize("config", [TINY, TINY_ISTFT], ids=["conv", "istft"])
@pytest.mark.parametrize("length", [320, 16_000, 16_001])
def test_shapes(config: CodecConfig, length: int) -> None:
    torch.manual_seed(0)
    codec = Codec(config).eval()
    wav = 0.1 * torch.randn(2, 1, length)
    codes = codec.encode(wav)
    assert codes.shape == (2, config.num_quantizers, math.ceil(length / 320))
    assert codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < config.codebook_size
    assert codec.decode(codes).shape == (2, 1, codes.shape[-1] * 320)
    assert codec.reconstruct(wav).shape == wav.shape
    assert codec.reconstruct_unquantized(wav).shape == wav.shape
    assert codec(wav).audio.shape == wav.shape


@pytest.mark.parametrize("upsample", [1, 2, 4])
def test_istft_decoder_shapes_and_sizes(upsample: int) -> None:
    dec = ISTFTDecoder(latent_dim=16, hop_length=320, dim=32, layers=2, upsample=upsample)
    assert dec.hop == 320 // upsample and dec.n_fft == 4 * dec.hop
    z = torch.randn(2, 16, 7)                                        # (B, D, L)
    assert dec.spectrum(z).shape == (2, dec.n_fft // 2 + 1, 7 * upsample)
    assert dec(z).shape == (2, 1, 7 * 320)


@pytest.mark.parametrize("upsample", [1, 2])
def test_istft_decoder_inverts_a_perfect_spectrum(upsample: int) -> None:
    """Given the true STFT frames (one per hop, frame l centred on sample l * hop), the head's
    istft framing (n_fft = 4 hops, Hann, centre) gives the waveform back exactly."""
    dec = ISTFTDecoder(latent_dim=8, hop_length=320, dim=16, layers=1, upsample=upsample)
    x = 0.1 * torch.randn(2, 1, 10 * 320, generator=torch.Generator().manual_seed(0))
    spec = stft(x[:, 0], dec.n_fft, dec.hop)[..., :-1]              # (B, F, L'): drop the frame centred on T
    dec.spectrum = lambda z_q: spec
    torch.testing.assert_close(dec(torch.zeros(2, 8, 10)), x, atol=1e-5, rtol=0)


def test_speech_preset_size_and_rate() -> None:
    cfg = CodecConfig.preset("speech")
    assert cfg.bitrate() == 6000.0 and cfg.num_quantizers == 12 and cfg.codebook_size == 1024
    model = Codec(cfg)
    stored = sum(t.numel() for t in model.state_dict().values())
    assert 2 * stored < 8 * 2 ** 20                                 # float16 checkpoint under test_project's 8 MiB
    assert 0.5e6 < sum(p.numel() for p in model.decoder.parameters()) < 2e6


def test_rates_and_bitrate() -> None:
    small = CodecConfig.preset("small")
    assert small.hop_length == 320 and small.frame_rate == 50.0
    assert small.bitrate() == 6000.0                       # 15 quantizers * 8 bits * 50 Hz
    assert small.bitrate(2) == 800.0
    codec = Codec(TINY)
    assert codec.sample_rate == 16_000 and codec.frame_rate == 50.0
    assert codec.bitrate() == 4 * 6 * 50 and codec.bitrate(1) == 300.0
    with pytest.raises(ValueError, match="1..4"):
        codec.bitrate(5)


def test_decode_from_fewer_quantizers(tiny: Codec) -> None:
    codes = tiny.encode(0.1 * torch.randn(1, 1, 3200))
    for q in range(1, TINY.num_quantizers + 1):
        assert tiny.decode(codes[:, :q]).shape == (1, 1, 3200)
    torch.testing.assert_close(tiny.encode(0.1 * torch.randn(1, 1, 3200), num_quantizers=2).shape[1], 2)


def test_causal_output_ignores_the_future() -> None:
    torch.manual_seed(0)
    causal = Codec(replace(TINY, causal=True)).eval()
    noncausal = Codec(TINY).eval()
    x = 0.1 * torch.randn(1, 1, 6400)
    y = x.clone()
    t0 = 3200                                              # a frame boundary (10 frames)
    y[..., t0:] = 0.1 * torch.randn(1, 1, 6400 - t0)
    torch.testing.assert_close(causal.reconstruct(x)[..., :t0], causal.reconstruct(y)[..., :t0])

    def future_gradient(m: Codec) -> float:   # |d output[:t0] / d input[t0:]| through the conv path
        wav = x.clone().requires_grad_(True)
        m.decoder(m.encoder(wav))[..., :t0].sum().backward()
        return float(wav.grad[..., t0:].abs().sum())
    assert future_gradient(causal) == 0.0
    assert future_gradient(noncausal) > 0.0   # the check can fail


@pytest.mark.parametrize("config", [TINY, TINY_ISTFT], ids=["conv", "istft"])
def test_gradients_reach_encoder(config: CodecConfig) -> None:
    torch.manual_seed(0)
    codec = Codec(config).train()
    losses = codec_loss(codec, 0.1 * torch.randn(2, 1, 3200), torch.Generator().manual_seed(0))
    losses.total.backward()
    first_conv = codec.encoder[0].conv.weight
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0
    assert all(torch.isfinite(v) for v in losses)
    assert (float(losses.complex_stft.detach()) > 0) == (config.complex_stft_weight > 0)


def test_unquantized_path_skips_the_quantizer(tiny: Codec) -> None:
    wav = 0.1 * torch.randn(1, 1, 3300, generator=torch.Generator().manual_seed(0))   # not a whole number of frames
    y = tiny.reconstruct_unquantized(wav)
    padded = torch.nn.functional.pad(wav, (0, 3520 - 3300))
    torch.testing.assert_close(y, tiny.decoder(tiny.encoder(padded))[..., :3300])
    assert not torch.allclose(y, tiny.reconstruct(wav))             # the RVQ changes the latent
    with pytest.raises(AudioError, match="NaN"):
        tiny.reconstruct_unquantized(torch.full((1, 1, 1000), float("nan")))
    with pytest.raises(ValueError, match="too short"):
        tiny.reconstruct_unquantized(torch.zeros(1, 1, 100))


def test_complex_stft_loss_sees_phase_that_magnitude_losses_miss() -> None:
    x = 0.1 * torch.randn(2, 1, 4000, generator=torch.Generator().manual_seed(0))
    assert float(complex_stft_loss(x, x)) == 0.0
    # -x has the magnitudes of x and every phase turned by pi: magnitude losses are blind to it.
    assert float(MultiResolutionSTFTLoss()(-x, x)) < 1e-4 and float(mel_loss(-x, x)) < 1e-3
    assert float(complex_stft_loss(-x, x)) > 0.1


def test_complex_stft_loss_matches_its_formula() -> None:
    """Braun & Tashev 2021, eq. 7, written out with torch.stft for one resolution."""
    g = torch.Generator().manual_seed(1)
    est, ref = 0.1 * torch.randn(1, 1, 3000, generator=g), 0.1 * torch.randn(1, 1, 3000, generator=g)

    def compressed(x: torch.Tensor) -> torch.Tensor:
        s = torch.stft(x[:, 0], 512, 128, window=torch.hann_window(512), return_complex=True)
        return (s.abs() ** 2 + 1e-6) ** 0.15 * torch.exp(1j * s.angle())
    s_e, s_r = compressed(est), compressed(ref)
    expected = 0.3 * (s_e - s_r).abs().square().mean() + 0.7 * (s_e.abs() - s_r.abs()).square().mean()
    torch.testing.assert_close(complex_stft_loss(est, ref, n_ffts=(512,)), expected, rtol=1e-4, atol=1e-7)


def test_mel_loss_matches_metric_on_shared_scales() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = 0.1 * torch.randn(2, 1, 8000, generator=g), 0.1 * torch.randn(2, 1, 8000, generator=g)
    ours = mel_loss(a, b, scales=(512, 1024, 2048))
    # The loss floors smoothly (power + 1e-5), the metric with a clamp: equal up to ~1e-3 dB here.
    torch.testing.assert_close(ours, multiscale_mel_distance(a, b).mean(), rtol=0, atol=2e-3)


def test_mel_loss_pushes_near_silent_output_back_up() -> None:
    """A clamp at the -50 dB floor would give zero gradient to an output that fell below it."""
    g = torch.Generator().manual_seed(0)
    ref = 0.1 * torch.randn(1, 1, 8000, generator=g)
    est = (1e-6 * torch.randn(1, 1, 8000, generator=g)).requires_grad_()
    mel_loss(est, ref).backward()
    step = -est.grad                                   # gradient descent direction
    assert (step * est).sum() > 0                      # it grows the output


def test_bad_input(tiny: Codec) -> None:
    with pytest.raises(AudioError, match="NaN"):
        tiny.encode(torch.full((1, 1, 1000), float("nan")))
    with pytest.raises(ValueError, match="too short"):
        tiny.encode(torch.randn(1, 1, 100))
    with pytest.raises(AudioError, match="shape"):
        tiny.encode(torch.randn(1000))
    with pytest.raises(AudioError, match="channel"):
        tiny.encode(torch.randn(1, 2, 1000))
    with pytest.raises(ValueError, match="0..63"):
        tiny.decode(torch.full((1, 4, 5), 64))
    with pytest.raises(ValueError, match=r"\(B, Q, L\)"):
        tiny.decode(torch.zeros(4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="activation"):
        CodecConfig(activation="relu6")
    with pytest.raises(ValueError, match=r"1\.\.4"):                  # more quantizers than the codec has
        tiny.encode(0.1 * torch.randn(1, 1, 1000), num_quantizers=5)
    with pytest.raises(ValueError, match=r"1\.\.4"):
        tiny.decode(torch.zeros(1, 5, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="integers"):
        tiny.decode(torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match="decoder must be one of"):
        CodecConfig(decoder="hifigan")
    with pytest.raises(ValueError, match="cannot be causal"):
        CodecConfig(decoder="istft", causal=True)
    with pytest.raises(ValueError, match="must divide hop_length"):
        CodecConfig(decoder="istft", istft_upsample=3)


def test_silent_input_is_coded_not_refused(tiny: Codec) -> None:
    silent = torch.zeros(1, 1, 1600)                                 # pauses are part of speech
    assert tiny.reconstruct(silent).shape == silent.shape
    assert torch.isfinite(tiny.reconstruct_unquantized(silent)).all()


def test_other_sample_rate_is_resampled(tiny: Codec) -> None:
    codes = tiny.encode(0.1 * torch.randn(1, 1, 8000), sample_rate=8000)   # 1 s at 8 kHz
    assert codes.shape[-1] == 50


def test_random_batch_is_deterministic() -> None:
    clips = _tones(3)
    a = random_batch(clips, 4, 3200, torch.Generator().manual_seed(1))
    b = random_batch(clips, 4, 3200, torch.Generator().manual_seed(1))
    assert a.shape == (4, 1, 3200)
    torch.testing.assert_close(a, b)


def test_random_batch_levels() -> None:
    quiet = [0.05 * torch.sin(torch.linspace(0, 400, 4000))[None] for _ in range(3)]
    loud = [0.9 * torch.sin(torch.linspace(0, 400, 4000))[None]]
    gen = torch.Generator().manual_seed(0)
    peaks = random_batch(quiet, 64, 3200, gen).abs().amax(-1)            # peak mode ignores the recording's level
    assert peaks.min() >= 0.29 and peaks.max() <= 1.0 and peaks.max() > 0.8
    natural = random_batch(quiet, 64, 3200, gen, level="natural").abs().amax(-1)
    db = 20 * torch.log10(natural / 0.05)
    assert db.min() >= -6.01 and db.max() <= 6.01 and db.max() - db.min() > 8   # +-6 dB around the recording
    assert random_batch(loud, 64, 3200, gen, level="natural").abs().max() <= 1.0   # capped: no clipping
    with pytest.raises(ValueError, match="'peak' or 'natural'"):
        random_batch(quiet, 2, 3200, gen, level="loud")


def test_short_training_lowers_reconstruction_loss(tmp_path) -> None:
    torch.manual_seed(0)
    model = Codec(TINY)
    clips = _tones(6)
    before = evaluate(model, clips).mel_distance
    result = fit(model, clips, steps=40, batch_size=4, crop_s=0.2, lr=3e-3, progress=False,
                 checkpoint_dir=str(tmp_path / "run"))
    losses = result.history.values("total")
    assert result.steps == 40 and result.finished and result.stopped_by == "max_steps"
    assert sum(losses[-2:]) / 2 < 0.8 * losses[0], losses
    after = evaluate(model, clips)
    assert after.mel_distance < before - 2.0, (before, after.mel_distance)
    assert (tmp_path / "run" / "last.pt").is_file()
    # Resuming with a larger budget continues from step 40.
    assert fit(model, clips, steps=42, batch_size=4, crop_s=0.2, progress=False,
               checkpoint_dir=str(tmp_path / "run")).steps == 42


def test_augment_voices_speeds_up_and_equalises_deterministically() -> None:
    t = torch.arange(8000) / 16_000
    wav = torch.stack([0.5 * torch.sin(2 * math.pi * f * t)[None] for f in (200.0, 300.0)])    # (2, 1, 8000)
    out = augment_voices(wav, 16_000, 6000, torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 6000) and out.abs().max() <= 1
    assert torch.equal(out, augment_voices(wav, 16_000, 6000, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, augment_voices(wav, 16_000, 6000, torch.Generator().manual_seed(1)))
    # Without EQ at a fixed speed it is the tape trick: the tone moves up by the factor.
    fast = augment_voices(wav, 16_000, 6000, torch.Generator().manual_seed(0), speed=(1.25, 1.25), eq_db=0.0)
    assert torch.allclose(fast[0], change_speed(wav[0], 16_000, 1.25)[0][..., :6000], atol=1e-6)
    peak_hz = torch.fft.rfft(fast[0, 0]).abs().argmax() * 16_000 / 6000
    assert abs(float(peak_hz) - 250.0) < 5.0
    # The EQ changes the level of a tone by at most eq_db.
    eq = augment_voices(wav, 16_000, 6000, torch.Generator().manual_seed(0), speed=(1.0, 1.0), eq_db=8.0)
    gain_db = 20 * torch.log10(eq[:, 0, 2000:].std(-1) / wav[:, 0, 2000:6000].std(-1))
    assert (gain_db.abs() <= 8.1).all() and (gain_db.abs() > 0.01).any(), gain_db


def test_decoder_only_training_keeps_every_code_and_improves_the_decoder() -> None:
    torch.manual_seed(0)
    model = Codec(TINY)
    clips = _tones(6)
    fit(model, clips, steps=10, batch_size=4, crop_s=0.2, lr=3e-3, progress=False)      # a codec with codebooks
    probe = torch.stack([c[..., :3200] for c in clips])
    codes = model.encode(probe)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("decoder.")}
    before = evaluate(model, clips).mel_distance
    fit(model, clips, steps=30, batch_size=4, crop_s=0.2, lr=3e-3, progress=False, decoder_only=True,
        augment=True)
    assert torch.equal(model.encode(probe), codes)                  # token models trained on them stay valid
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())   # EMA buffers too
    assert evaluate(model, clips).mel_distance < before - 0.5
    assert all(p.requires_grad for p in model.parameters())         # nothing stays frozen after fit
    with pytest.raises(AudioError, match="NaN"):                      # ... nor after a run that fails
        fit(model, [torch.full((1, 4000), float("nan"))], steps=2, batch_size=2, crop_s=0.2, progress=False,
            decoder_only=True)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_and_steps(name: str) -> None:
    torch.manual_seed(0)
    model = Codec(CodecConfig.preset(name)).train()
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    losses = codec_loss(model, 0.1 * torch.randn(1, 1, 2560), torch.Generator().manual_seed(0))
    losses.total.backward()
    opt.step()
    assert math.isfinite(float(losses.total.detach()))


@pytest.mark.parametrize("config", [TINY, TINY_ISTFT], ids=["conv", "istft"])
def test_checkpoint_round_trip(tmp_path, config: CodecConfig) -> None:
    torch.manual_seed(0)
    tiny = Codec(config).eval()
    wav = 0.1 * torch.randn(1, 1, 3200)
    save_pretrained(tiny, config, tmp_path / "codec", {"command": "test"})
    loaded = load_pretrained(tmp_path / "codec")
    torch.testing.assert_close(loaded.encode(wav), tiny.encode(wav))
    torch.testing.assert_close(loaded.reconstruct(wav), tiny.reconstruct(wav))
    # A checkpoint of another configuration does not load silently into this one.
    (tmp_path / "codec" / "config.json").write_text((tmp_path / "codec" / "config.json").read_text()
                                                     .replace('"num_quantizers": 4', '"num_quantizers": 5'))
    with pytest.raises(CheckpointError):
        load_pretrained(tmp_path / "codec")


@pytest.mark.parametrize("name, decoder", [("codec-speech", "istft"), ("codec-synthworld", "conv")])
def test_shipped_checkpoints_load_with_their_decoder(name: str, decoder: str) -> None:
    model = load_pretrained(name)              # codec-synthworld's config.json predates the decoder fields
    assert model.config.decoder == decoder
    assert any(k.startswith("decoder.head") for k in model.state_dict()) == (decoder == "istft")
    if decoder == "conv":
        assert model.config.complex_stft_weight == 0.0
    wav = 0.1 * torch.sin(torch.arange(3200) * 0.07)[None, None]
    assert model.reconstruct(wav).shape == wav.shape


def test_profile_presets() -> None:
    from course_lib import profile
    assert CodecConfig.preset(profile("smoke").model_scale) == TINY
    assert CodecConfig.preset(profile("cpu").model_scale).bitrate() <= 6000
    with pytest.raises(ValueError, match="preset"):
        CodecConfig.preset("huge")


def test_stft_discriminator_shapes_and_losses() -> None:
    torch.manual_seed(0)
    disc = MultiScaleSTFTDiscriminator(n_ffts=(512, 256), channels=8)
    real, fake = 0.1 * torch.randn(2, 1, 4000), 0.1 * torch.randn(2, 1, 4000)
    outputs = disc(real)
    assert len(outputs) == 2
    logits, features = outputs[0]
    assert logits.shape[0] == 2 and logits.shape[1] == 1 and len(features) == 5
    adv, feat = disc.generator_losses(real, real)
    assert float(feat.detach()) == 0.0                    # identical audio: identical activations
    adv, feat = disc.generator_losses(fake, real)
    assert float(feat.detach()) > 0 and float(adv.detach()) >= 0
    # Hinge loss by hand for the first scale only.
    one = MultiScaleSTFTDiscriminator(n_ffts=(512,), channels=8)
    (l_real, _), = one(real)
    (l_fake, _), = one(fake)
    expected = torch.relu(1 - l_real).mean() + torch.relu(1 + l_fake).mean()
    torch.testing.assert_close(one.discriminator_loss(fake, real), expected)


def test_discriminator_learns_to_tell_codec_output_from_real() -> None:
    """A few hinge steps on a fixed (real, fake) pair lower the discriminator loss."""
    torch.manual_seed(0)
    disc = MultiScaleSTFTDiscriminator(n_ffts=(512, 256), channels=8)
    opt = torch.optim.Adam(disc.parameters(), lr=3e-3, betas=(0.5, 0.9))
    real = torch.cat(_tones(2, seconds=0.25))[:, None]             # (2, 1, T)
    fake = Codec(TINY).eval()(real).audio.detach()
    first = disc.discriminator_loss(fake, real).item()
    for _ in range(30):
        loss = disc.discriminator_loss(fake, real)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert disc.discriminator_loss(fake, real).item() < 0.5 * first


def test_adversarial_training_runs_and_resumes(tmp_path) -> None:
    torch.manual_seed(0)
    model = Codec(TINY)
    result = fit(model, _tones(4), steps=4, batch_size=2, crop_s=0.2, progress=False, adversarial=True,
                 checkpoint_dir=str(tmp_path / "run"))
    rec = result.history.records[-1]
    assert rec["adversarial"] > 0 and rec["feature"] > 0
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert "discriminator" in state["modules"] and "disc_opt" in state["optimizers"]
    assert fit(model, _tones(4), steps=5, batch_size=2, crop_s=0.2, progress=False, adversarial=True,
               checkpoint_dir=str(tmp_path / "run")).steps == 5


def test_train_cli_resume_export_and_eval_cli_reproduce_the_card(tmp_path, monkeypatch) -> None:
    from course_lib import checkpoint
    from course_lib.recipes import codec as recipe
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "codec-tiny"
    args = ["--data", "synthworld", "--preset", "tiny", "--steps", "3", "--batch-size", "2", "--crop-s", "0.2",
            "--train-size", "8", "--eval-size", "3", "--no-progress", "--level", "natural",
            "--dead-code-threshold", "0.2", "--no-speed-perturb", "--run-dir", "run", "--out", str(out)]
    assert recipe.train_cli(args) == 0
    card = checkpoint.read_card(out)
    assert card["steps"] == 3 and card["eval"]["sets"]["synthworld-test"]["clips"] == 3
    assert "--level natural" in card["command"]
    assert card["stopped_by"] == "max_steps" and card["settings"]["speed_perturb"] == []
    assert load_pretrained(out).config.dead_code_threshold == 0.2   # the override is stored
    weights = (out / "model.safetensors").read_bytes()
    assert recipe.train_cli(args) == 0                       # at max_steps: no training, the same file again
    assert (out / "model.safetensors").read_bytes() == weights and checkpoint.read_card(out)["steps"] == 3
    result = recipe.eval_cli(["--checkpoint", str(out)])
    assert result["clips"] == {"synthworld-test": 3}
    ours, theirs = result["metrics"]["synthworld-test"], card["metrics"]["synthworld-test"]
    assert "pesq_wb" not in ours["autoencoder"]                      # SynthWorld is not speech
    for q, metrics in theirs["codec"].items():
        assert ours["codec"][q]["mel_distance"] == pytest.approx(metrics["mel_distance"], abs=1e-5), q
        assert ours["codec"][q]["usage"] == metrics["usage"], q
    # A decoder-only run from it keeps its codes and names the run it started from on its card.
    tuned = tmp_path / "codec-tiny-decoder"
    tune = [*args[:args.index("--run-dir")], "--run-dir", "run2", "--out", str(tuned), "--init-from", str(out),
            "--decoder-only", "--augment"]
    assert recipe.train_cli(tune) == 0
    card2 = checkpoint.read_card(tuned)
    assert card2["settings"]["decoder_only"] and card2["settings"]["augment"] and card2["init_from_parts"] == "all"
    assert [r["checkpoint"] for r in card2["runs_before"]] == [str(out)]
    assert card2["metrics"]["synthworld-test"]["codec"]["q4"]["usage"] == theirs["codec"]["q4"]["usage"]
    before, after = load_pretrained(out), load_pretrained(tuned)
    assert all(torch.equal(a, b) for a, b in zip(before.encoder.state_dict().values(),
                                                 after.encoder.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(before.decoder.parameters(), after.decoder.parameters()))


def test_evaluation_report_scores_every_system_on_the_same_clips(tiny: Codec) -> None:
    """Codec at 1, Q/4, Q/2, Q, the autoencoder and Opus; a take PESQ refuses is dropped from every row."""
    from course_lib.data import find_fsdd
    from course_lib.recipes import codec as recipe
    if find_fsdd() is None:
        pytest.skip("FSDD not found (../shared/data/fsdd or COURSE_DATA_DIR)")
    clips, ids = recipe.fsdd_takes("test", speakers=["yweweler"], size=50)
    pick = [ids.index("0_yweweler_0.wav"), ids.index("3_yweweler_2.wav"), ids.index("6_yweweler_1.wav")]
    clips, ids = [clips[i] for i in pick], [ids[i] for i in pick]
    assert clips[2].shape[-1] < 4000                                  # 0.16 s: too short for PESQ
    report = recipe.evaluation_report(tiny, clips, ids=ids)
    assert report["clips"] == 3 and report["scored"] == 2 and list(report["skipped"]) == ["6_yweweler_1.wav"]
    assert set(report["codec"]) == {"q1", "q2", "q4"} and set(report["opus"]) == {"6kbps", "8kbps"}
    rows = [*report["codec"].values(), report["autoencoder"], *report["opus"].values()]
    for row in rows:
        assert {"mel_distance", "si_sdr", "pesq_wb", "stoi"} <= set(row)
        assert 1.0 <= row["pesq_wb"] <= 4.65 and row["stoi"] is not None and -0.5 <= row["stoi"] <= 1.0
    assert report["codec"]["q4"]["bitrate"] == tiny.bitrate() and len(report["codec"]["q2"]["usage"]) == 2
    assert report["opus"]["8kbps"]["pesq_wb"] > report["codec"]["q4"]["pesq_wb"]   # an untrained codec is no codec
    kept = [0, 1]                                                      # the autoencoder row, by hand
    mel = [float(multiscale_mel_distance(tiny.reconstruct_unquantized(clips[i][None]), clips[i][None])[0])
           for i in kept]
    assert report["autoencoder"]["mel_distance"] == pytest.approx(sum(mel) / 2, abs=1e-5)
