"""Tests of course_lib.audioldm and course_lib.vocoder: mel front end, KL-VAE, FiLM UNet, HiFi-GAN vocoder,
guided sampling, SDEdit, training loops that learn, checkpoints and bad input. Tiny presets throughout."""
from __future__ import annotations

import copy
import math
from dataclasses import fields, replace

import pytest
import torch

from course_lib import checkpoint
from course_lib.audio import AudioError
from course_lib.audioldm import (PRESETS, PRIORS, AudioLDM, AudioLDMConfig, DiagonalGaussian, MelVAE, UNet, fit_unet,
                                 fit_vae, load_pretrained, measure_scale, save_pretrained)
from course_lib.clap import Clap, ClapConfig
from course_lib.data import captions
from course_lib.recipes import audioldm as recipe
from course_lib.vocoder import load_pretrained as load_vocoder
from course_lib.vocoder import (MEL_MEAN, MEL_STD, LogMel, Vocoder, VocoderConfig, VocoderDiscriminator, fit_vocoder,
                                griffin_lim)

TINY = AudioLDMConfig.preset("tiny")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _clap(embed_dim: int = TINY.cond_dim) -> Clap:
    torch.manual_seed(0)
    return Clap(replace(ClapConfig.preset("tiny"), text_towers=("scratch",), embed_dim=embed_dim))


def _perturb(module: torch.nn.Module, seed: int = 0, size: float = 0.1) -> torch.nn.Module:
    """Wake a fresh UNet: its zero-initialised last convs make every output 0 whatever the condition."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(size * torch.randn(p.shape, generator=g))
    return module


@pytest.fixture(scope="module")
def model() -> AudioLDM:
    torch.manual_seed(0)
    m = AudioLDM(TINY, _clap()).eval()
    _perturb(m.unet)
    _perturb(m.vocoder, size=0.3)      # HiFi-GAN's N(0, 0.01) init makes nearly the same sound of any mel
    return m


def _tones(n: int, seconds: float = 0.32, sr: int = 16_000) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    return torch.stack([(0.4 * torch.sin(2 * math.pi * (200 + 150 * i) * t) * torch.exp(-3 * t))[None]
                        for i in range(n)])                                    # (N, 1, T)


# ----------------------------------------------------------------------------- mel front end and vocoder
def test_mel_front_end_is_audioldms():
    torchaudio = pytest.importorskip("torchaudio")
    wav = _tones(2, 1.0)
    mel = LogMel()(wav, sample_rate=16_000)
    assert mel.shape == (2, 1, 64, 100)                                         # (B, 1, F, L), L = T // 160
    ref = torchaudio.transforms.MelSpectrogram(16_000, n_fft=1024, hop_length=160, n_mels=64, power=1.0,
                                               norm="slaney", mel_scale="slaney")(wav)[..., :100]
    torch.testing.assert_close(mel, (ref.clamp_min(1e-5).log() - MEL_MEAN) / MEL_STD, rtol=1e-4, atol=1e-4)
    silent = LogMel()(torch.zeros(1, 1, 1600))
    torch.testing.assert_close(silent, torch.full_like(silent, LogMel.silence))   # the fixed normalisation
    with pytest.raises(AudioError, match="resample"):
        LogMel()(torch.zeros(1, 1, 44_100), sample_rate=44_100)
    with pytest.raises(AudioError, match="shape"):
        LogMel()(torch.zeros(1, 16_000))


@pytest.mark.parametrize("frames", [1, 7, 100])
def test_vocoder_output_is_frames_times_hop(frames):
    voc = Vocoder(VocoderConfig.preset("tiny")).eval()
    assert voc.hop_length == 160 == 5 * 4 * 4 * 2
    mel = torch.randn(2, 1, 64, frames)
    assert voc(mel).shape == (2, 1, frames * 160)
    assert voc(mel[:, 0]).shape == (2, 1, frames * 160)                         # (B, F, L) too
    if frames * 160 > 512:                                                      # Griffin-Lim's STFT needs n_fft / 2
        assert griffin_lim(mel, n_iter=2, generator=torch.Generator().manual_seed(0)).shape == (2, 1, frames * 160)
    with pytest.raises(ValueError, match="64"):
        voc(torch.randn(2, 1, 80, frames))


@pytest.mark.parametrize("frames", [1, 7, 100])
def test_istft_vocoder_output_is_frames_times_hop(frames):
    voc = Vocoder(VocoderConfig.preset("tiny-istft")).eval()
    assert voc.istft.hop == 160 and voc.istft.n_fft == 640                      # one STFT frame per mel frame
    assert voc(torch.randn(2, 1, 64, frames)).shape == (2, 1, frames * 160)
    with pytest.raises(ValueError, match="generator"):
        VocoderConfig(generator="wavenet")


def test_istft_vocoder_learns_phase_from_the_complex_loss():
    clips = _tones(2, 0.2)
    torch.manual_seed(0)                                                        # its initial weights
    voc = Vocoder(VocoderConfig.preset("tiny-istft"))
    result = fit_vocoder(voc, clips, steps=60, batch_size=2, crop_s=0.1, lr=2e-3, adversarial=False,
                         generator=torch.Generator().manual_seed(0), progress=False, log_every=1)
    total, mel = result.history.values("total"), result.history.values("mel")
    assert sum(total[-5:]) / 5 < 0.7 * sum(total[:5]) / 5, total               # the complex term is in the total
    assert sum(mel[-5:]) / 5 < 0.7 * sum(mel[:5]) / 5, mel


def test_vocoder_sizes_fit_a_cpu():
    small = Vocoder(VocoderConfig.preset("small"))
    assert 0.5e6 < sum(p.numel() for p in small.parameters()) < 1.5e6          # HiFi-GAN V2 size
    disc = VocoderDiscriminator(VocoderConfig.preset("tiny"))
    outs = disc(torch.randn(2, 1, 1600))
    assert len(outs) == 2 + 1                                                   # 2 periods + 1 STFT scale
    assert all(len(features) > 0 for _, features in outs)


def test_vocoder_overfits_and_adversarial_step_runs(tmp_path):
    clips = _tones(2, 0.2)
    voc = Vocoder(VocoderConfig.preset("tiny"))
    result = fit_vocoder(voc, clips, steps=40, batch_size=2, crop_s=0.1, lr=2e-3, adversarial=False,
                         generator=torch.Generator().manual_seed(0), progress=False, log_every=1)
    mel = result.history.values("mel")
    assert sum(mel[-5:]) / 5 < 0.7 * sum(mel[:5]) / 5, mel
    adv = fit_vocoder(Vocoder(VocoderConfig.preset("tiny")), clips, steps=2, batch_size=2, crop_s=0.1,
                      adversarial_start=1, checkpoint_dir=tmp_path, progress=False, log_every=1)
    d = adv.history.values("discriminator")
    assert d[0] == 0.0 and d[1] > 0.0                                           # the GAN joins at step 1
    assert (tmp_path / "last.pt").is_file()


# ----------------------------------------------------------------------------- VAE
@pytest.mark.parametrize("frames", [100, 98])
def test_vae_compresses_4x_into_8_channels(frames):
    vae = MelVAE(TINY).eval()
    mel = torch.randn(2, 1, 64, frames)
    post = vae.encode(mel)
    assert post.mean.shape == post.logvar.shape == (2, 8, 16, math.ceil(frames / 4))
    assert vae.decode(post.mean).shape == (2, 1, 64, 4 * math.ceil(frames / 4))
    assert vae(mel).reconstruction.shape == mel.shape
    with pytest.raises(ValueError, match="LogMel"):
        vae.encode(torch.randn(2, 64, frames))


def test_kl_is_zero_for_the_prior_and_positive_otherwise():
    zeros = torch.zeros(2, 8, 4, 5)
    torch.testing.assert_close(DiagonalGaussian(zeros, zeros).kl(), torch.zeros(2))
    assert (DiagonalGaussian(zeros + 0.5, zeros).kl() > 0).all()
    assert (DiagonalGaussian(zeros, zeros - 1).kl() > 0).all()
    torch.testing.assert_close(DiagonalGaussian(zeros + 1, zeros).kl(), torch.full((2,), 0.5))   # mu^2 / 2


def test_measure_scale_makes_latents_unit_std():
    vae = MelVAE(TINY).eval()
    mels = 3 * torch.randn(8, 1, 64, 32)
    scale = measure_scale(vae, mels)
    assert float(vae.scale_factor) == scale != 1.0
    z = vae.encode(mels).sample(torch.Generator().manual_seed(0)) * scale
    assert abs(float(z.detach().std()) - 1.0) < 1e-4
    assert measure_scale(vae, mels) == scale                                    # a fixed seed: measured twice, same


def test_vae_overfits():
    mels = LogMel()(_tones(4))
    result = fit_vae(MelVAE(TINY), mels, steps=40, batch_size=4, crop_frames=32, lr=3e-3,
                     generator=torch.Generator().manual_seed(0), progress=False, log_every=1)
    rec = result.history.values("reconstruction")
    assert sum(rec[-5:]) / 5 < 0.6 * sum(rec[:5]) / 5, rec


# ----------------------------------------------------------------------------- UNet
@pytest.mark.parametrize("length", [25, 13, 1])
def test_unet_output_shape_equals_input(length):
    unet = _perturb(UNet(TINY)).eval()
    x = torch.randn(2, 8, 16, length)
    assert unet(x, torch.tensor([0, 999]), torch.randn(2, TINY.cond_dim)).shape == x.shape


def test_fresh_unet_predicts_zero_noise():
    unet = UNet(TINY).eval()                                                     # openaimodel's zero_module
    assert unet(torch.randn(2, 8, 16, 5), torch.tensor([3, 700]), torch.randn(2, TINY.cond_dim)).abs().max() == 0


def test_film_conditioning_changes_eps():
    unet = _perturb(UNet(TINY)).eval()
    x, t = torch.randn(2, 8, 16, 8), torch.tensor([500, 500])
    c1, c2 = torch.randn(2, TINY.cond_dim), torch.randn(2, TINY.cond_dim)
    e1 = unet(x, t, c1)
    torch.testing.assert_close(unet(x, t, c1), e1)                              # deterministic
    assert (unet(x, t, c2) - e1).abs().mean() > 1e-3                            # another condition, another eps
    assert (unet(x, torch.tensor([10, 10]), c1) - e1).abs().mean() > 1e-3       # the timestep matters too
    # FiLM acts on every ResBlock: a zero film projection makes the output ignore cond.
    torch.nn.init.zeros_(unet.film_embed.weight)
    torch.testing.assert_close(unet(x, t, c1), unet(x, t, c2))


def test_denoiser_overfits_a_few_conditioned_latents():
    torch.manual_seed(0)
    vae, unet = MelVAE(TINY).eval(), UNet(TINY)
    mels = LogMel()(_tones(4))                                                   # (4, 1, 64, 32)
    emb = torch.nn.functional.normalize(torch.randn(4, TINY.cond_dim), dim=-1)             # stand-in CLAP audio embeddings
    result = fit_unet(vae, unet, mels, emb, steps=60, batch_size=8, lr=3e-3,
                      generator=torch.Generator().manual_seed(0), progress=False, log_every=1)
    loss = result.history.values("loss")
    assert result.finished and len(loss) == 60
    assert sum(loss[-15:]) / 15 < 0.6 * sum(loss[:5]) / 5, loss
    assert float(vae.scale_factor) != 1.0                                       # measured on the way in


def test_fit_unet_sets_uncond_and_resumes(tmp_path):
    vae, unet = MelVAE(TINY), UNet(TINY)
    mels, emb = LogMel()(_tones(2)), torch.randn(2, TINY.cond_dim)
    uncond = torch.full((TINY.cond_dim,), 0.5)
    fit_unet(vae, unet, mels, emb, steps=2, batch_size=2, uncond=uncond, checkpoint_dir=tmp_path, progress=False)
    torch.testing.assert_close(unet.uncond, uncond)
    again = fit_unet(vae, UNet(TINY), mels, emb, steps=3, batch_size=2, checkpoint_dir=tmp_path, progress=False)
    assert again.steps == 3
    torch.testing.assert_close(again.model.uncond, uncond)                      # restored with the weights


def test_fit_unet_returns_the_moving_average_of_its_weights(tmp_path):
    vae, mels, emb = MelVAE(TINY), LogMel()(_tones(2)), torch.randn(2, TINY.cond_dim)

    def run(decay: float, folder: str):
        torch.manual_seed(0)
        unet = UNet(TINY)
        fit_unet(vae, unet, mels, emb, steps=4, batch_size=2, lr=1e-2, ema_decay=decay, progress=False,
                 generator=torch.Generator().manual_seed(0), checkpoint_dir=tmp_path / folder)
        return unet, torch.load(tmp_path / folder / "last.pt", weights_only=True)["modules"]

    raw, plain = run(0.0, "plain")
    averaged, both = run(0.999, "ema")
    assert set(plain) == {"unet"} and set(both) == {"unet", "ema"}
    for k, v in plain["unet"].items():                                      # the same training, weight for weight
        torch.testing.assert_close(both["unet"][k], v)
        torch.testing.assert_close(raw.state_dict()[k], v)
        torch.testing.assert_close(averaged.state_dict()[k], both["ema"][f"module.{k}"])   # ends as the average
    assert any(not torch.equal(averaged.state_dict()[k], v) for k, v in plain["unet"].items() if v.is_floating_point())
    with pytest.raises(ValueError, match="ema_decay"):
        fit_unet(vae, UNet(TINY), mels, emb, steps=1, ema_decay=1.0)


# ----------------------------------------------------------------------------- sampling
def test_generate_is_deterministic_under_a_generator(model):
    g = lambda seed: torch.Generator().manual_seed(seed)
    a = model.generate(["a kick drum", "rain"], seconds=0.3, steps=4, generator=g(0))
    assert a.shape == (2, 1, 4800) and torch.isfinite(a).all()
    torch.testing.assert_close(model.generate(["a kick drum", "rain"], seconds=0.3, steps=4, generator=g(0)), a)
    assert not torch.equal(model.generate(["a kick drum", "rain"], seconds=0.3, steps=4, generator=g(1)), a)
    assert model.sample_rate == 16_000


def test_guidance_uses_the_unconditional_embedding(model):
    kw = dict(seconds=0.2, steps=3)
    run = lambda **extra: model.generate(["a bell"], generator=torch.Generator().manual_seed(0), **kw, **extra)
    guided, plain = run(guidance_scale=2.5), run(guidance_scale=1.0)
    saved = model.unet.uncond.clone()
    try:
        model.unet.uncond.fill_(0.3)
        assert not torch.equal(run(guidance_scale=2.5), guided)                 # s != 1 runs the uncond pass
        torch.testing.assert_close(run(guidance_scale=1.0), plain)              # s = 1 never reads it
    finally:
        model.unet.uncond.copy_(saved)
    # s = 0 is the unconditional model: the prompt no longer matters.
    torch.testing.assert_close(run(guidance_scale=0.0),
                               model.generate(["a siren"], generator=torch.Generator().manual_seed(0), **kw,
                                              guidance_scale=0.0))


def test_sample_takes_any_clap_embedding_as_generate_takes_text(model):
    g = lambda: torch.Generator().manual_seed(3)
    text = model.clap.embed_text(["a bell", "rain"])
    torch.testing.assert_close(model.sample(text, 0.2, 3, 2.5, g()),
                               model.generate(["a bell", "rain"], 0.2, 3, 2.5, generator=g()))
    audio = model.clap.embed_audio(torch.randn(2, 1, 3200) * 0.1)               # the training-time condition
    assert model.sample(audio, 0.2, 2, generator=g()).shape == (2, 1, 3200)
    with pytest.raises(ValueError, match=r"\(B, 128\) CLAP embeddings"):
        model.sample(text[0], 0.2, 2)


def test_condition_priors_retrieve_shift_or_keep_the_text(model):
    prompts, g = ["a bell", "rain"], lambda: torch.Generator().manual_seed(3)
    text = model.clap.embed_text(prompts)
    torch.testing.assert_close(model.condition(prompts), text)                  # nothing stored: CLAP's own
    other = AudioLDM(TINY, model.clap, model.vae, copy.deepcopy(model.unet), model.vocoder).eval()
    shift = torch.randn(TINY.cond_dim, generator=torch.Generator().manual_seed(0))
    other.unet.text_shift.copy_(shift)
    shifted = (text + shift) / (text + shift).norm(dim=-1, keepdim=True)
    torch.testing.assert_close(other.condition(prompts), shifted)               # a shift, no bank: "shift"
    with pytest.raises(ValueError, match="audio_bank"):
        other.condition(prompts, "retrieval")
    bank = torch.nn.functional.normalize(torch.randn(40, TINY.cond_dim, generator=torch.Generator().manual_seed(1)),
                                         dim=-1)
    other.unet.audio_bank = bank
    near = [sorted(range(40), key=lambda j: -float(text[i] @ bank[j]))[:16] for i in range(2)]   # by hand
    mean = torch.stack([bank[n].mean(0) for n in near])
    retrieved = mean / mean.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(other.condition(prompts), retrieved)             # a bank: "retrieval"
    torch.testing.assert_close(other.condition(prompts, "retrieval", k=1), bank[[n[0] for n in near]])
    torch.testing.assert_close(other.condition(prompts, "shift"), shifted)
    torch.testing.assert_close(other.condition(prompts, "text"), text)
    for prior, c in (("retrieval", retrieved), ("shift", shifted), ("text", text)):   # generate samples condition()
        torch.testing.assert_close(other.generate(prompts, 0.2, 3, generator=g(), prior=prior),
                                   other.sample(c, 0.2, 3, generator=g()))
    with pytest.raises(ValueError, match="must be one of"):
        other.condition(prompts, "clip")
    with pytest.raises(ValueError, match="k=0"):
        other.condition(prompts, "retrieval", k=0)


def test_unet_loads_older_checkpoints_and_any_bank_size():
    state = UNet(TINY).state_dict()
    del state["text_shift"], state["audio_bank"]                                # saved before both existed
    unet = UNet(TINY)
    unet.text_shift.fill_(1.0)
    unet.audio_bank = torch.ones(3, TINY.cond_dim)
    unet.load_state_dict(state)
    assert not unet.text_shift.any() and unet.audio_bank.shape == (0, TINY.cond_dim)
    state["audio_bank"] = torch.randn(7, TINY.cond_dim).half()                  # as shipped: fp16 files
    unet.load_state_dict(state)
    torch.testing.assert_close(unet.audio_bank, state["audio_bank"].float())    # in the module's own dtype
    assert "audio_bank" in dict(unet.named_buffers())                           # saved with the weights


def test_modality_gap_shift_is_the_difference_of_the_centres(model):
    classes = ["kick", "snare"]
    audio = torch.nn.functional.normalize(torch.randn(6, TINY.cond_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    text = model.clap.embed_text([p for c in classes for p in captions.prompts(c, "train")])
    torch.testing.assert_close(recipe.modality_gap_shift(model.clap, audio, classes), audio.mean(0) - text.mean(0))
    assert not set(captions.prompts("kick", "heldout")) & set(captions.prompts("kick", "train"))   # rulers' wordings


def test_candidates_are_reranked_by_clap(model):
    out = model.generate(["a", "b"], seconds=0.2, steps=2, candidates=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 3200)


def test_edit_keeps_the_length(model):
    wav = _tones(2, 0.25)
    kw = dict(strength=0.5, steps=6, generator=torch.Generator().manual_seed(0))
    out = model.edit(wav, "a snare", **kw)
    assert out.shape == wav.shape
    kw["generator"] = torch.Generator().manual_seed(0)
    torch.testing.assert_close(model.edit(wav, ["a snare", "a snare"], sample_rate=16_000, **kw), out)


# ----------------------------------------------------------------------------- checkpoints and presets
def test_checkpoint_round_trip(tmp_path, model):
    model.vae.scale_factor.fill_(0.7)
    model.unet.uncond.fill_(0.1)
    folder = tmp_path / "audioldm-tiny"
    paths = save_pretrained(model, folder, card={"command": "test"})
    assert {p.name for p in paths} == {"audioldm-tiny-vae", "audioldm-tiny-unet", "audioldm-tiny-vocoder"}
    loaded = load_pretrained(folder, clap=model.clap)
    for part in ("vae", "unet", "vocoder"):
        mine, theirs = getattr(model, part).state_dict(), getattr(loaded, part).state_dict()
        assert mine.keys() == theirs.keys()
        for k in mine:
            torch.testing.assert_close(theirs[k], mine[k])
    assert float(loaded.vae.scale_factor) == pytest.approx(0.7) and float(loaded.unet.uncond[0]) == pytest.approx(0.1)
    g = lambda: torch.Generator().manual_seed(3)
    torch.testing.assert_close(loaded.generate(["x"], seconds=0.1, steps=2, generator=g()),
                               model.generate(["x"], seconds=0.1, steps=2, generator=g()))
    with pytest.raises(checkpoint.CheckpointError, match="nothing-here-vae"):
        load_pretrained(tmp_path / "nothing-here", clap=model.clap)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_and_steps(name):
    cfg = AudioLDMConfig.preset(name)
    vae, unet = MelVAE(cfg), UNet(cfg)
    mels, emb = torch.randn(2, 1, 64, 16), torch.randn(2, cfg.cond_dim)
    assert fit_vae(vae, mels, steps=1, batch_size=1, crop_frames=16, progress=False).steps == 1
    assert fit_unet(vae, unet, mels, emb, steps=1, batch_size=1, progress=False).steps == 1
    voc = Vocoder(VocoderConfig.preset(cfg.vocoder))
    assert voc(torch.randn(1, 1, 64, 2)).shape == (1, 1, 320)
    if name == "small":                                                          # shipped: a few MB per part
        for part in (vae, unet, voc):
            assert sum(p.numel() for p in part.parameters()) * 4 < 6e6
    with pytest.raises(ValueError, match="preset"):
        AudioLDMConfig.preset("huge")


def test_medium_is_small_with_a_wider_unet_and_trains_on_the_small_vae():
    small, medium = AudioLDMConfig.preset("small"), AudioLDMConfig.preset("medium")
    differ = {f.name for f in fields(small) if getattr(small, f.name) != getattr(medium, f.name)}
    assert differ == {"unet_channels"} and medium.unet_channels > small.unet_channels
    assert recipe.unet_config(small, small) == small                  # the shipped UNet's config, unchanged
    # --preset medium --vae <small VAE>: the UNet's sizes from the preset, the rest from the VAE it denoises for
    tiny_vae = AudioLDMConfig.preset("tiny")
    cfg = recipe.unet_config(medium, tiny_vae)
    assert cfg.unet_channels == medium.unet_channels and cfg.unet_attention == medium.unet_attention
    assert (cfg.vae_channels, cfg.vocoder) == (tiny_vae.vae_channels, tiny_vae.vocoder)
    unet = UNet(medium)
    assert sum(p.numel() for p in unet.parameters()) * 2 < 6.5e6                # shipped in fp16: a few MB


# ----------------------------------------------------------------------------- bad input
def test_bad_prompts(model):
    with pytest.raises(ValueError, match="empty"):
        model.generate([])
    with pytest.raises(ValueError, match="empty"):
        model.generate(["  "])
    with pytest.raises(TypeError, match="wrap it"):
        model.generate("a dog barks")
    with pytest.raises(ValueError, match="characters"):
        model.generate(["a dog barks " * 50])


@pytest.mark.parametrize("kw, match", [
    (dict(guidance_scale=-1.0), "guidance_scale"), (dict(guidance_scale=25.0), "guidance_scale"),
    (dict(guidance_scale=float("nan")), "guidance_scale"), (dict(steps=0), "steps"), (dict(steps=1000), "steps"),
    (dict(steps=2.5), "steps"), (dict(seconds=0.0), "seconds"), (dict(seconds=1e4), "seconds"),
    (dict(candidates=0), "candidates")])
def test_bad_sampling_arguments(model, kw, match):
    with pytest.raises(ValueError, match=match):
        model.generate(["a dog"], **kw)


def test_mismatched_clap_and_bad_edit_input(model):
    with pytest.raises(ValueError, match="cond_dim=32"):
        AudioLDM(TINY, _clap(embed_dim=32))
    with pytest.raises(ValueError, match="CLAP"):
        model.unet(torch.randn(1, 8, 16, 4), torch.tensor([1]), torch.randn(1, 32))
    with pytest.raises(AudioError, match="resample"):
        model.edit(torch.zeros(1, 1, 22_050), "a dog", sample_rate=22_050)
    with pytest.raises(ValueError, match="one per clip"):
        model.edit(torch.zeros(2, 1, 1600), ["a", "b", "c"])
    with pytest.raises(ValueError, match="strength"):
        model.edit(torch.zeros(1, 1, 1600), "a", strength=1.5)
    with pytest.raises(ValueError, match=r"\(N, 128\)"):
        fit_unet(model.vae, model.unet, torch.randn(2, 1, 64, 8), torch.randn(3, TINY.cond_dim), steps=1)


# ----------------------------------------------------------------------------- the recipe
def test_recipe_trains_three_stages_and_eval_reproduces_the_card(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(recipe, "CLASSIFIER_STEPS", 5)                          # the ruler's quality is not tested here
    base = ["--preset", "tiny", "--steps", "2", "--train-size", "8", "--eval-size", "34", "--no-progress",
            "--threads", "1"]
    assert recipe.train_cli(["--stage", "vae", *base]) == 0
    assert recipe.train_cli(["--stage", "vocoder", *base]) == 0
    assert recipe.train_cli(["--stage", "vocoder", *base, "--vocoder-preset", "tiny-istft", "--run-dir", "runs/v2"]) == 0
    istft_card = checkpoint.read_card("runs/v2/checkpoint")
    assert istft_card["settings"]["vocoder_preset"] == "tiny-istft" and istft_card["adversarial_start"] == 2
    assert load_vocoder("runs/v2/checkpoint").config.generator == "istft"      # no discriminator steps by default
    # The discriminators join a trained vocoder: it starts from its weights and its card keeps the first run.
    with pytest.raises(SystemExit, match="same preset"):
        recipe.train_cli(["--stage", "vocoder", *base, "--init-from", "runs/v2/checkpoint", "--run-dir", "runs/v4"])
    assert recipe.train_cli(["--stage", "vocoder", *base, "--vocoder-preset", "tiny-istft", "--init-from",
                             "runs/v2/checkpoint", "--adversarial-start", "0", "--run-dir", "runs/v3"]) == 0
    gan_card = checkpoint.read_card("runs/v3/checkpoint")
    assert gan_card["adversarial_start"] == 0 and gan_card["init_from"] == "runs/v2/checkpoint"
    assert [r["checkpoint"] for r in gan_card["runs_before"]] == ["runs/v2/checkpoint"]
    assert gan_card["metrics"] != istft_card["metrics"]                          # it trained on
    with pytest.raises(SystemExit, match="--vae and --vocoder"):
        recipe.train_cli(["--stage", "unet", *base])
    parts = ["--vae", "runs/audioldm-synthworld/vae/checkpoint", "--vocoder", "runs/audioldm-synthworld/vocoder/checkpoint"]
    assert recipe.train_cli(["--stage", "unet", *base, *parts, "--per-class", "1", "--gen-steps", "2"]) == 0
    out = tmp_path / "runs/audioldm-synthworld/unet/checkpoint"
    model = load_pretrained(out)                                                 # the whole model, three parts
    assert checkpoint.read_card(f"{out}-vae")["stage"] == "vae"                  # each part keeps its own card
    card = checkpoint.read_card(f"{out}-unet")
    metrics = card["metrics"]
    assert set(metrics["validation_accuracy_by_guidance"]) == {str(s) for s in recipe.GUIDANCE_SCALES}
    assert metrics["frechet_noise_vs_test"] > 0 and -1 <= metrics["clap_score"] <= 1
    assert metrics["prior"] == "retrieval" and set(metrics["test_accuracy_by_prior"]) == set(PRIORS)
    assert metrics["test_accuracy_by_prior"]["retrieval"] == metrics["test_accuracy"]
    assert model.unet.text_shift.abs().sum() > 0 and model.unet.audio_bank.shape == (8, TINY.cond_dim)
    again = recipe.eval_cli(["--checkpoint", str(out), "--threads", "1"])
    assert again["unet"] == metrics                                             # the card, recomputed
    assert model.generate(["a kick drum"], seconds=0.2, steps=2).shape == (1, 1, 3200)
    # A UNet trained on from that model's UNet: its card keeps the first run.
    assert recipe.train_cli(["--stage", "unet", *base, *parts, "--per-class", "0", "--init-from", str(out),
                             "--run-dir", "runs/u2", "--ema-decay", "0"]) == 0
    more = checkpoint.read_card("runs/u2/checkpoint-unet")
    assert more["init_from"] == str(out) and [r["checkpoint"] for r in more["runs_before"]] == [f"{out}-unet"]
    assert more["settings"]["ema_decay"] == 0.0 and card["settings"]["ema_decay"] == 0.999
    # --preset sizes the UNet; the rest of its config comes from the VAE it denoises for (tiny here).
    assert recipe.train_cli(["--stage", "unet", *base, "--preset", "medium", *parts, "--per-class", "0",
                             "--run-dir", "runs/u4"]) == 0
    wide = load_pretrained("runs/u4/checkpoint")
    assert wide.unet.config == recipe.unet_config(AudioLDMConfig.preset("medium"), model.vae.config)
    assert wide.unet.config.unet_channels == 48 and wide.unet.config.vae_channels == TINY.vae_channels
    with pytest.raises(SystemExit, match="--stage vocoder or --stage unet"):
        recipe.train_cli(["--stage", "vae", *base, "--init-from", str(out), "--run-dir", "runs/u3"])


def test_griffin_lim_decoder_is_the_baseline_of_the_same_latent(model):
    g = lambda: torch.Generator().manual_seed(4)
    wav = model.generate(["a kick drum"], seconds=0.2, steps=2, generator=g(), decoder="griffin_lim")
    z = torch.randn(1, TINY.latent_dim, TINY.n_mels // TINY.downsample, 5, generator=g())
    mel = model.vae.decode(z / model.vae.scale_factor)
    torch.testing.assert_close(model.decode(z, "griffin_lim", g()), griffin_lim(mel, generator=g()))
    assert wav.shape == (1, 1, 3200)
    with pytest.raises(ValueError, match="decoder"):
        model.decode(z, "wavenet")
