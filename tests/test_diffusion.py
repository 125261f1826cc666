"""Tests of course_lib.diffusion: schedules, q_sample, DDPM/DDIM steps against diffusers, guidance, SDEdit."""
from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from course_lib.diffusion import (PRESETS, DiffusionConfig, NoiseSchedule, classifier_free_guidance, ddim_step,
                                  ddim_timesteps, ddpm_step, diffusion_loss, draw_t_and_noise, edit, predict_x0,
                                  q_sample, sample, timestep_embedding)

# AudioLDM's scheduler, as diffusers' convert_original_audioldm_to_diffusers.py builds it.
AUDIOLDM_DDIM = dict(beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear", num_train_timesteps=1000,
                     clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def _gaussian_eps(x_t: Tensor, t: Tensor | int, schedule: NoiseSchedule, data_std: float = 0.5) -> Tensor:
    """The exact eps-prediction for data ~ N(0, data_std^2 I): a fixed, t-dependent fake model."""
    a = schedule.alphas_cumprod[t]
    a = a.view(-1, *[1] * (x_t.ndim - 1)) if a.ndim else a
    return (1 - a).sqrt() * x_t / (a * data_std**2 + 1 - a)


@pytest.mark.parametrize("preset, schedule_name", [("audioldm", "scaled_linear"), ("ddpm", "linear")])
def test_schedule_matches_diffusers(preset: str, schedule_name: str) -> None:
    diffusers = pytest.importorskip("diffusers")
    cfg = PRESETS[preset]
    ref = diffusers.DDIMScheduler(beta_start=cfg.beta_start, beta_end=cfg.beta_end, beta_schedule=schedule_name,
                                  num_train_timesteps=cfg.num_train_steps, set_alpha_to_one=False)
    ours = NoiseSchedule(cfg)
    # We accumulate in float64 like the original LDM code, diffusers in float32: ~1e-6 apart.
    torch.testing.assert_close(ours.betas, ref.betas)
    torch.testing.assert_close(ours.alphas_cumprod, ref.alphas_cumprod, rtol=3e-6, atol=1e-7)
    torch.testing.assert_close(ours.final_alpha_cumprod, ref.final_alpha_cumprod)
    assert ours.alphas_cumprod.shape == (1000,)
    assert (ours.alphas_cumprod.diff() < 0).all()
    assert ours.alphas_cumprod[-1] < 1e-3                  # x_T is nearly pure noise


@pytest.mark.parametrize("steps", [1, 10, 25, 50, 200, 333, 999])
def test_ddim_timesteps_match_diffusers(steps: int) -> None:
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDIMScheduler(**AUDIOLDM_DDIM)
    ref.set_timesteps(steps)
    torch.testing.assert_close(ddim_timesteps(1000, steps), ref.timesteps)
    assert ddim_timesteps(1000, 50)[[0, -1]].tolist() == [981, 1]


@pytest.mark.parametrize("eta", [0.0, 1.0, 0.3])
def test_ddim_loop_matches_diffusers(eta: float) -> None:
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDIMScheduler(**AUDIOLDM_DDIM)
    ref.set_timesteps(50)
    schedule = NoiseSchedule()
    g = torch.Generator().manual_seed(0)
    x_ours = x_ref = torch.randn(2, 4, 8, 8, generator=g)                       # (B, C, F', L') latents
    step_ratio = 1000 // 50
    for t in ref.timesteps.tolist():
        z = torch.randn(x_ours.shape, generator=g)                              # shared variance noise
        x_ref = ref.step(_gaussian_eps(x_ref, t, schedule), t, x_ref, eta=eta, variance_noise=z).prev_sample
        x_ours = ddim_step(_gaussian_eps(x_ours, t, schedule), t, t - step_ratio, x_ours, schedule, eta=eta,
                           noise=z)
        torch.testing.assert_close(x_ours, x_ref, rtol=1e-4, atol=1e-5)
    assert t - step_ratio < 0                                                    # the last step used final alpha


def test_ddpm_loop_matches_diffusers() -> None:
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear",
                                  num_train_timesteps=1000, clip_sample=False)   # variance "fixed_small"
    schedule = NoiseSchedule()
    x_ours = x_ref = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(1))
    g_ours, g_ref = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    for t in range(999, -1, -1):
        x_ref = ref.step(_gaussian_eps(x_ref, t, schedule), t, x_ref, generator=g_ref).prev_sample
        x_ours = ddpm_step(_gaussian_eps(x_ours, t, schedule), t, x_ours, schedule, generator=g_ours)
    # eq. 11 (ours) and eq. 7 (diffusers) are the same mean written two ways.
    torch.testing.assert_close(x_ours, x_ref, rtol=1e-4, atol=1e-4)
    assert 0.3 < x_ours.std() < 0.7                                              # landed on N(0, 0.5^2)


def test_q_sample_matches_diffusers_add_noise() -> None:
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear")
    x_0, noise, t = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8), torch.tensor([0, 321, 999])
    torch.testing.assert_close(q_sample(x_0, t, noise, NoiseSchedule()), ref.add_noise(x_0, noise, t))


@pytest.mark.parametrize("t", [0, 100, 500, 999])
def test_q_sample_statistics(t: int) -> None:
    schedule = NoiseSchedule()
    x_0 = torch.tensor([[1.0, -2.0, 0.5]]).expand(200_000, 3)                  # (N, 3), one point repeated
    g = torch.Generator().manual_seed(t)
    x_t = q_sample(x_0, torch.full((x_0.shape[0],), t), torch.randn(x_0.shape, generator=g), schedule)
    alpha_bar = schedule.alphas_cumprod[t]
    torch.testing.assert_close(x_t.mean(0), alpha_bar.sqrt() * x_0[0], atol=0.01, rtol=0)
    torch.testing.assert_close(x_t.var(0), (1 - alpha_bar).expand(3), atol=0.01, rtol=0.02)


def test_q_sample_int_and_tensor_t_agree_and_predict_x0_inverts() -> None:
    schedule = NoiseSchedule()
    x_0, noise = torch.randn(3, 2, 7), torch.randn(3, 2, 7)
    x_t = q_sample(x_0, 400, noise, schedule)
    torch.testing.assert_close(x_t, q_sample(x_0, torch.full((3,), 400), noise, schedule))
    torch.testing.assert_close(x_t, q_sample(x_0, torch.tensor(400), noise, schedule))
    torch.testing.assert_close(predict_x0(noise, 400, x_t, schedule), x_0, rtol=1e-4, atol=1e-5)
    t = torch.tensor([0, 500, 999])                                             # per-example t broadcasts
    x_t = q_sample(x_0, t, noise, schedule)
    for i in range(3):
        torch.testing.assert_close(x_t[i], q_sample(x_0[i:i + 1], int(t[i]), noise[i:i + 1], schedule)[0])


def test_draw_t_and_noise_deterministic() -> None:
    schedule, x_0 = NoiseSchedule(), torch.zeros(64, 2)
    t1, n1 = draw_t_and_noise(x_0, schedule, torch.Generator().manual_seed(0))
    t2, n2 = draw_t_and_noise(x_0, schedule, torch.Generator().manual_seed(0))
    assert t1.shape == (64,) and t1.dtype == torch.long and 0 <= t1.min() and t1.max() < 1000
    assert torch.equal(t1, t2) and torch.equal(n1, n2) and n1.shape == x_0.shape


def test_classifier_free_guidance() -> None:
    u, c = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    torch.testing.assert_close(classifier_free_guidance(u, c, 0.0), u)
    torch.testing.assert_close(classifier_free_guidance(u, c, 1.0), c)
    s1, s2 = classifier_free_guidance(u, c, 2.0), classifier_free_guidance(u, c, 4.0)
    torch.testing.assert_close(s2 - s1, 2.0 * (c - u))                         # linear in s
    torch.testing.assert_close(classifier_free_guidance(u, c, 3.0), 3 * c - 2 * u)


def test_sample_batches_cond_and_uncond_in_one_call() -> None:
    calls = []

    def denoiser(x_t: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        calls.append(x_t.shape[0])
        return 0.1 * x_t + cond.mean(-1, keepdim=True)

    cond, uncond = torch.ones(3, 1, 4), torch.zeros(1, 1, 4)
    out = sample(denoiser, (3, 1, 5), cond, uncond, NoiseSchedule(), steps=4, guidance_scale=2.5,
                 generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 1, 5) and calls == [6] * 4
    calls.clear()
    sample(denoiser, (3, 1, 5), cond, uncond, NoiseSchedule(), steps=4, guidance_scale=1.0)
    assert calls == [3] * 4                                                      # s = 1: no unconditional pass


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_sample_deterministic_under_generator(eta: float) -> None:
    schedule = NoiseSchedule()

    def denoiser(x_t: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        return _gaussian_eps(x_t, t, schedule)

    def run(seed: int) -> Tensor:
        return sample(denoiser, (2, 3, 4), None, None, schedule, steps=10, eta=eta,
                      generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(0), run(0))
    assert not torch.allclose(run(0), run(1))


def test_buffers_move_with_to() -> None:
    schedule = NoiseSchedule().to(torch.float64)
    for name in ("betas", "alphas", "alphas_cumprod", "final_alpha_cumprod"):
        assert getattr(schedule, name).dtype == torch.float64
    assert dict(schedule.named_buffers()).keys() >= {"betas", "alphas_cumprod"}
    assert schedule.state_dict() == {}                                          # config, not checkpoint, defines it
    out = sample(lambda x, t, c: _gaussian_eps(x, t, schedule), (2, 3), None, None, schedule, steps=5)
    assert out.dtype == torch.float64
    x16 = torch.randn(2, 3).half()
    assert q_sample(x16, 10, torch.randn_like(x16), NoiseSchedule()).dtype == torch.float16
    assert ddim_step(x16, 21, 1, x16, NoiseSchedule()).dtype == torch.float16


class _ToyDenoiser(nn.Module):
    """A small MLP eps-model on 2-D points with a sinusoidal embedding of t and a 4-way condition."""

    def __init__(self, width: int = 128) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(200.0), 8)))
        self.net = nn.Sequential(nn.Linear(2 + 16 + 4, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, 2))

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        angles = (t.float() / 1000)[:, None] * self.freqs                        # (B, 8)
        cond = torch.zeros(x_t.shape[0], 4) if cond is None else cond
        return self.net(torch.cat([x_t, angles.sin(), angles.cos(), cond], dim=1))  # (B, 2)


def test_toy_overfit_loss_falls_and_guided_samples_land_on_their_mode() -> None:
    torch.manual_seed(0)                                                         # the model's initialisation
    centres = torch.tensor([[1.5, 1.5], [-1.5, 1.5], [-1.5, -1.5], [1.5, -1.5]])
    schedule, model = NoiseSchedule(), _ToyDenoiser(width=64)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(0)
    uncond = torch.zeros(1, 4)                                                   # "no condition"
    losses = []
    for _ in range(500):
        k = torch.randint(0, 4, (256,), generator=g)
        x_0 = centres[k] + 0.05 * torch.randn(256, 2, generator=g)
        out = diffusion_loss(model, x_0, nn.functional.one_hot(k, 4).float(), schedule, generator=g,
                             uncond=uncond, p_uncond=0.2)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    first, last = sum(losses[:50]) / 50, sum(losses[-100:]) / 100
    assert last < 0.5 * first, (first, last)

    model.eval()
    k = torch.arange(4).repeat(32)                                               # 32 samples per mode
    cond = nn.functional.one_hot(k, 4).float()

    def dist_to_mode(guidance_scale: float) -> Tensor:
        x = sample(model, (128, 2), cond, uncond, schedule, steps=50, guidance_scale=guidance_scale,
                   generator=torch.Generator().manual_seed(1))
        return (x - centres[k]).norm(dim=1)                                      # to the asked-for mode

    guided, plain = dist_to_mode(2.0), dist_to_mode(1.0)
    assert guided.median() < 0.25 and (guided < 0.75).float().mean() > 0.9, guided.median()
    assert plain.median() < 0.4 and (plain < 0.75).float().mean() > 0.9, plain.median()
    assert guided.median() < plain.median()                                     # guidance sharpens


def test_edit_small_strength_keeps_input_and_full_strength_does_not() -> None:
    schedule = NoiseSchedule()
    x_0 = torch.randn(4, 2, 16, generator=torch.Generator().manual_seed(0))

    def oracle(x_t: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:             # knows x_0 exactly
        a = schedule.alphas_cumprod[t].view(-1, 1, 1)
        return (x_t - a.sqrt() * x_0) / (1 - a).sqrt()

    g = torch.Generator().manual_seed(1)
    near = edit(oracle, x_0, 0.02, None, None, schedule, steps=50, generator=g)  # one step from t = 1
    assert (near - x_0).abs().max() < 0.2
    assert (near - x_0).pow(2).mean() < 0.01

    def gaussian(x_t: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:          # knows nothing of x_0
        return _gaussian_eps(x_t, t, schedule, data_std=1.0)

    far = edit(gaussian, x_0, 1.0, None, None, schedule, steps=50, generator=g)
    assert (far - x_0).pow(2).mean() > 0.5
    mid = edit(gaussian, x_0, 0.3, None, None, schedule, steps=50, generator=torch.Generator().manual_seed(2))
    assert (near - x_0).pow(2).mean() < (mid - x_0).pow(2).mean() < (far - x_0).pow(2).mean()


def _zero(x_t: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
    return torch.zeros_like(x_t)


@pytest.mark.parametrize("call, match", [
    (lambda s: sample(_zero, (2, 3), None, None, s, steps=0), "between 1 and the 1000"),
    (lambda s: sample(_zero, (2, 3), None, None, s, steps=1001), "between 1 and the 1000"),
    (lambda s: ddim_timesteps(1000, 1000), "at most 999 steps"),
    (lambda s: sample(_zero, (2, 3), torch.ones(2, 4), torch.zeros(1, 4), s, guidance_scale=-1.0), ">= 0"),
    (lambda s: sample(_zero, (2, 3), torch.ones(2, 4), torch.zeros(1, 4), s, guidance_scale=float("nan")), ">= 0"),
    (lambda s: classifier_free_guidance(torch.ones(2), torch.ones(2), float("nan")), ">= 0"),
    (lambda s: sample(_zero, (2, 3), torch.ones(2, 4), None, s, guidance_scale=2.0), "pass uncond"),
    (lambda s: sample(_zero, (2, 3), torch.ones(2, 4), torch.zeros(1, 5), s, guidance_scale=2.0), "uncond"),
    (lambda s: sample(_zero, (2, 3), torch.ones(3, 4), None, s), "batch size 3"),
    (lambda s: sample(_zero, (2, 3), None, None, s, x_T=torch.zeros(2, 4)), "x_T has shape"),
    (lambda s: sample(lambda x, t, c: x[:, :1], (2, 3), None, None, s), "denoiser's output"),
    (lambda s: edit(_zero, torch.zeros(2, 3), 0.0, None, None, s), r"\(0, 1\]"),
    (lambda s: edit(_zero, torch.zeros(2, 3), 1.5, None, None, s), r"\(0, 1\]"),
    (lambda s: edit(_zero, torch.zeros(2, 3), 0.01, None, None, s, steps=50), "strength >= 0.02"),
    (lambda s: q_sample(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.zeros(2, 4), s), "same shape"),
    (lambda s: q_sample(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long), torch.zeros(2, 3), s), r"shape \(B,\)"),
    (lambda s: q_sample(torch.zeros(2, 3), 1000, torch.zeros(2, 3), s), "outside"),
    (lambda s: ddim_step(torch.zeros(2, 3), 21, 1, torch.zeros(2, 4), s), "same shape"),
    (lambda s: ddim_step(torch.zeros(2, 3), 21, 41, torch.zeros(2, 3), s), "backwards"),
    (lambda s: ddim_step(torch.zeros(2, 3), 21, 1, torch.zeros(2, 3), s, eta=-1.0), "eta"),
    (lambda s: ddpm_step(torch.zeros(2, 3), -1, torch.zeros(2, 3), s), "outside"),
    (lambda s: DiffusionConfig(beta_schedule="cosine"), "scaled_linear"),
    (lambda s: DiffusionConfig(beta_start=0.1, beta_end=0.01), "beta_start <= beta_end"),
])
def test_clear_errors(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(NoiseSchedule())


def test_timestep_embedding():
    emb = timestep_embedding(torch.tensor([0, 1, 999]), 16)
    assert emb.shape == (3, 16)
    torch.testing.assert_close(emb[0], torch.cat([torch.ones(8), torch.zeros(8)]))   # cos 0 = 1, sin 0 = 0
