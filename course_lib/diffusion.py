"""Denoising diffusion: noise schedules, q_sample, the eps-loss, DDPM and DDIM steps, guidance.

The course's one diffusion module, written like a diffusers scheduler: one algorithm per
function, each line tied to its equation. AudioLDM (Liu et al. 2023) runs it over the latent
of a mel VAE; the toy tests run it over 2-D points. Papers and notation:

* Ho et al. 2020, "Denoising Diffusion Probabilistic Models" (DDPM): x_0 data, x_t noised,
  beta_t, alpha_t = 1 - beta_t, alpha_bar_t = prod_{s<=t} alpha_s, eps ~ N(0, I).
* Song et al. 2021, "Denoising Diffusion Implicit Models" (DDIM). Their alpha_t is our
  alpha_bar_t; every comment here uses alpha_bar.
* Ho & Salimans 2022, "Classifier-Free Diffusion Guidance".
* Meng et al. 2022, "SDEdit": edit by noising an input part-way and denoising it again.

Timesteps are 0-based code indices t = 0 .. T-1 (the paper's t = 1 .. T), as in diffusers.
A denoiser is any callable ``denoiser(x_t, t, cond) -> eps`` with ``x_t`` of any shape
``(B, ...)``, ``t`` a ``(B,)`` int64 tensor and ``cond`` a ``(B, ...)`` tensor or None.

Example:
    >>> schedule = NoiseSchedule()                        # AudioLDM's schedule, T = 1000
    >>> denoiser = lambda x_t, t, cond: torch.zeros_like(x_t)   # stands in for AudioLDM's UNet
    >>> sample(denoiser, (2, 8, 16, 64), None, None, schedule, steps=10).shape
    torch.Size([2, 8, 16, 64])
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DiffusionConfig", "PRESETS", "NoiseSchedule", "draw_t_and_noise", "q_sample", "DiffusionLoss",
    "diffusion_loss", "predict_x0", "ddpm_step", "ddim_timesteps", "ddim_step",
    "classifier_free_guidance", "sample", "edit", "timestep_embedding",
]

Denoiser = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]


@dataclass(frozen=True)
class DiffusionConfig:
    """A forward process: T steps of betas from ``beta_start`` to ``beta_end``.

    The defaults are AudioLDM's: the original code's "linear" schedule is linear in
    sqrt(beta), which diffusers calls "scaled_linear". ``set_alpha_to_one=False`` (the
    setting of AudioLDM and Stable Diffusion) makes the last DDIM step land on alpha_bar_0
    instead of 1; see :func:`ddim_step`.
    """
    num_train_steps: int = 1000          # T
    beta_start: float = 0.0015
    beta_end: float = 0.0195
    beta_schedule: str = "scaled_linear"  # "scaled_linear" or "linear"
    set_alpha_to_one: bool = False
    steps_offset: int = 1                 # added to the DDIM timesteps, as in diffusers

    def __post_init__(self) -> None:
        if self.beta_schedule not in ("scaled_linear", "linear"):
            raise ValueError(f"beta_schedule={self.beta_schedule!r}; use 'scaled_linear' or 'linear'.")
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {self.beta_start} and {self.beta_end}.")
        if self.num_train_steps < 2:
            raise ValueError(f"num_train_steps={self.num_train_steps}; use at least 2 (AudioLDM: 1000).")


PRESETS = {
    "audioldm": DiffusionConfig(),
    "ddpm": DiffusionConfig(beta_start=1e-4, beta_end=0.02, beta_schedule="linear"),  # Ho et al., section 4
}


class NoiseSchedule(nn.Module):
    """betas, alphas and alpha_bar as buffers, so ``.to(device)`` and ``.to(dtype)`` move them.

    The buffers are computed in float64 (like the original LDM code) and stored in float32.
    They are not persistent: the config, not the checkpoint, defines the schedule.
    """

    def __init__(self, config: DiffusionConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DiffusionConfig()
        n, b0, b1 = config.num_train_steps, config.beta_start, config.beta_end
        if config.beta_schedule == "scaled_linear":
            betas = torch.linspace(b0**0.5, b1**0.5, n, dtype=torch.float64) ** 2
        else:
            betas = torch.linspace(b0, b1, n, dtype=torch.float64)
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)                      # alpha_bar_t
        final = torch.tensor(1.0, dtype=torch.float64) if config.set_alpha_to_one else alphas_cumprod[0]
        for name, value in [("betas", betas), ("alphas", alphas), ("alphas_cumprod", alphas_cumprod),
                            ("final_alpha_cumprod", final)]:
            self.register_buffer(name, value.float(), persistent=False)

    @property
    def num_train_steps(self) -> int:
        return self.config.num_train_steps

    def extra_repr(self) -> str:
        return repr(self.config)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding of timesteps ``(B,)`` -> ``(B, dim)`` (openaimodel's ``timestep_embedding``)."""
    freqs = torch.exp(-math.log(max_period) * torch.arange(dim // 2, device=t.device) / (dim // 2))
    args = t.float()[:, None] * freqs[None]                                      # (B, dim / 2)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _check_t(t: int, schedule: NoiseSchedule) -> None:
    if not 0 <= t < schedule.num_train_steps:
        raise ValueError(f"timestep t={t} is outside [0, {schedule.num_train_steps - 1}] of this schedule.")


def _check_same_shape(a: Tensor, b: Tensor, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}.")


def _randn(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """N(0, I) on ``like``'s device and dtype, drawn on the generator's device (as diffusers does)."""
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def draw_t_and_noise(x_0: Tensor, schedule: NoiseSchedule,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Draw t ~ U{0, ..., T-1} per example and eps ~ N(0, I) (Algorithm 1 of Ho et al. 2020).

    Returns:
        ``t`` of shape ``(B,)`` int64 and ``noise`` shaped like ``x_0``, both on ``x_0.device``.
    """
    device = generator.device if generator is not None else x_0.device
    t = torch.randint(0, schedule.num_train_steps, (x_0.shape[0],), generator=generator, device=device)
    return t.to(x_0.device), _randn(tuple(x_0.shape), x_0, generator)


def q_sample(x_0: Tensor, t: Tensor | int, noise: Tensor, schedule: NoiseSchedule) -> Tensor:
    """Noise clean data to step t in closed form, eq. 4 of Ho et al. 2020.

    Args:
        x_0: clean data ``(B, ...)``; noise: eps, shaped like ``x_0``.
        t: ``(B,)`` int64 timesteps (one per example) or one int for the whole batch.

    Returns:
        x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, shaped and typed like ``x_0``.
    """
    _check_same_shape(x_0, noise, "x_0 and noise")
    if isinstance(t, int) or t.ndim == 0:
        t = int(t)
        _check_t(t, schedule)
        alpha_bar = schedule.alphas_cumprod[t]                                  # ()
    else:
        if t.shape != x_0.shape[:1]:
            raise ValueError(f"t must have shape (B,) = {tuple(x_0.shape[:1])}, got {tuple(t.shape)}.")
        if t.min() < 0 or t.max() >= schedule.num_train_steps:
            raise ValueError(f"timesteps must lie in [0, {schedule.num_train_steps - 1}].")
        alpha_bar = schedule.alphas_cumprod[t.to(schedule.alphas_cumprod.device)]
        alpha_bar = alpha_bar.to(x_0.device).view(-1, *[1] * (x_0.ndim - 1))  # (B, 1, ..., 1)
    # sqrt in the schedule's precision, then follow x_0's dtype (fp16 stays fp16).
    return (alpha_bar.sqrt().to(x_0.dtype) * x_0
            + (1 - alpha_bar).sqrt().to(x_0.dtype) * noise)                     # eq. 4 of Ho et al. 2020


class DiffusionLoss(NamedTuple):
    """Result of :func:`diffusion_loss`."""

    loss: Tensor   # () mean ||eps - eps_theta(x_t, t)||^2
    t: Tensor      # (B,) int64 timesteps drawn
    noise: Tensor  # like x_0, eps drawn
    eps: Tensor    # like x_0, the denoiser's prediction eps_theta


def diffusion_loss(denoiser: Denoiser, x_0: Tensor, cond: Tensor | None, schedule: NoiseSchedule,
                   generator: torch.Generator | None = None, uncond: Tensor | None = None,
                   p_uncond: float = 0.0) -> DiffusionLoss:
    """The simple eps-prediction objective, eq. 14 of Ho et al. 2020 (Algorithm 1).

    For classifier-free guidance the same network must also learn the unconditional eps:
    with probability ``p_uncond`` an example's ``cond`` is replaced by ``uncond`` (Ho &
    Salimans 2022, Algorithm 1; AudioLDM uses 0.1).

    Args:
        x_0: clean data ``(B, ...)`` (AudioLDM: VAE latents ``(B, C, F', L')``).
        cond: ``(B, ...)`` conditioning, or None for an unconditional model.
        generator: for t, eps and the condition dropout.
        uncond: the "no condition" ``(1, ...)`` or ``(B, ...)``, e.g. the embedding of an empty caption.
    """
    if p_uncond > 0 and (cond is None or uncond is None):
        raise ValueError("p_uncond > 0 needs both cond and uncond (e.g. the embedding of an empty caption).")
    t, noise = draw_t_and_noise(x_0, schedule, generator)
    if p_uncond > 0:
        uncond = _expand_uncond(uncond, cond)
        device = generator.device if generator is not None else x_0.device
        drop = (torch.rand(cond.shape[0], generator=generator, device=device) < p_uncond).to(cond.device)
        cond = torch.where(drop.view(-1, *[1] * (cond.ndim - 1)), uncond, cond)
    eps = denoiser(q_sample(x_0, t, noise, schedule), t, cond)
    _check_same_shape(eps, x_0, "the denoiser's output and x_0")
    return DiffusionLoss(F.mse_loss(eps, noise), t, noise, eps)                # eq. 14 of Ho et al. 2020


def predict_x0(eps: Tensor, t: int, x_t: Tensor, schedule: NoiseSchedule) -> Tensor:
    """x_0 from x_t and the predicted eps, eq. 4 of Ho et al. solved for x_0 (eq. 9 of Song et al.)."""
    _check_t(t, schedule)
    alpha_bar = schedule.alphas_cumprod[t]
    return (x_t - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()


def ddpm_step(eps: Tensor, t: int, x_t: Tensor, schedule: NoiseSchedule,
              generator: torch.Generator | None = None, noise: Tensor | None = None) -> Tensor:
    """One ancestral sampling step x_t -> x_{t-1}, eq. 11 of Ho et al. 2020 (Algorithm 2).

    The variance is the posterior's beta_tilde_t (eq. 7), diffusers' "fixed_small". It equals
    ``diffusers.DDPMScheduler(clip_sample=False).step`` over the full chain t = T-1, ..., 0.

    Args:
        eps: predicted noise ``(B, ...)``; t: the current step in [0, T-1]; x_t: ``(B, ...)``.
        generator: for z ~ N(0, I); noise: z given directly instead.

    Returns:
        x_{t-1}, shaped like ``x_t``; the mean alone at t = 0.
    """
    _check_t(t, schedule)
    _check_same_shape(eps, x_t, "eps and x_t")
    beta, alpha, alpha_bar = schedule.betas[t], schedule.alphas[t], schedule.alphas_cumprod[t]
    mean = (x_t - beta / (1 - alpha_bar).sqrt() * eps) / alpha.sqrt()           # eq. 11 of Ho et al. 2020
    if t == 0:
        return mean
    alpha_bar_prev = schedule.alphas_cumprod[t - 1]
    beta_tilde = (1 - alpha_bar_prev) / (1 - alpha_bar) * beta                  # eq. 7 of Ho et al. 2020
    z = _randn(tuple(x_t.shape), x_t, generator) if noise is None else noise
    return mean + beta_tilde.sqrt() * z                                          # sigma_t z, Algorithm 2


def ddim_timesteps(num_train_steps: int, num_inference_steps: int, steps_offset: int = 1) -> Tensor:
    """The DDIM timesteps, descending, as diffusers' ``set_timesteps`` with ``timestep_spacing="leading"``.

    ``t_i = i * (T // steps) + steps_offset`` for i = steps-1, ..., 0: 50 steps of T = 1000
    give 981, 961, ..., 1 (the "uniform" grid of the original LDM/AudioLDM code).

    Returns:
        ``(num_inference_steps,)`` int64.
    """
    if not 1 <= num_inference_steps <= num_train_steps:
        raise ValueError(f"steps={num_inference_steps} must be between 1 and the {num_train_steps} training "
                         f"steps; the original AudioLDM uses 200, 50 is a good fast choice.")
    step_ratio = num_train_steps // num_inference_steps
    timesteps = torch.arange(num_inference_steps).flip(0) * step_ratio + steps_offset
    if timesteps[0] >= num_train_steps:   # e.g. 1000 steps of 1000 with offset 1 (diffusers would fail too)
        raise ValueError(f"steps={num_inference_steps} with steps_offset={steps_offset} would need timestep "
                         f"{int(timesteps[0])}; use at most {num_train_steps - steps_offset} steps.")
    return timesteps


def ddim_step(eps: Tensor, t: int, t_prev: int, x_t: Tensor, schedule: NoiseSchedule, eta: float = 0.0,
              generator: torch.Generator | None = None, noise: Tensor | None = None) -> Tensor:
    """One DDIM step x_t -> x_{t_prev}, eq. 12 of Song et al. 2021.

    ``t_prev < 0`` (the last step) uses ``schedule.final_alpha_cumprod``: alpha_bar_0 with
    AudioLDM's ``set_alpha_to_one=False`` (as the original LDM sampler and diffusers do), 1.0
    otherwise. Equals ``diffusers.DDIMScheduler(clip_sample=False).step(...).prev_sample``.

    Args:
        eps: predicted noise ``(B, ...)``; x_t: the current sample ``(B, ...)``.
        t: the current timestep; t_prev: the next one (``t - T // steps`` in a loop), may be < 0.
        eta: 0 gives deterministic DDIM, 1 the DDPM-like variance (eq. 16).
        generator: for the noise when ``eta > 0``; noise: that noise given directly instead.

    Returns:
        x_{t_prev}, shaped like ``x_t``.
    """
    _check_t(t, schedule)
    _check_same_shape(eps, x_t, "eps and x_t")
    if not t_prev < t:
        raise ValueError(f"t_prev={t_prev} must be smaller than t={t}: sampling runs backwards in time.")
    if not eta >= 0:
        raise ValueError(f"eta={eta} must be >= 0 (0: deterministic DDIM, 1: DDPM-like).")
    alpha_bar = schedule.alphas_cumprod[t]
    alpha_bar_prev = schedule.alphas_cumprod[t_prev] if t_prev >= 0 else schedule.final_alpha_cumprod
    x_0 = predict_x0(eps, t, x_t, schedule)                                     # eq. 12, "predicted x_0"
    sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar)
                   * (1 - alpha_bar / alpha_bar_prev)).sqrt()                   # eq. 16 of Song et al. 2021
    direction = (1 - alpha_bar_prev - sigma**2).sqrt() * eps                    # eq. 12, "direction pointing to x_t"
    x_prev = alpha_bar_prev.sqrt() * x_0 + direction                            # eq. 12 of Song et al. 2021
    if eta > 0:
        z = _randn(tuple(x_t.shape), x_t, generator) if noise is None else noise
        x_prev = x_prev + sigma * z                                             # eq. 12, "random noise"
    return x_prev


def _check_guidance(guidance_scale: float) -> None:
    if not (math.isfinite(guidance_scale) and guidance_scale >= 0):
        raise ValueError(f"guidance_scale={guidance_scale} must be a finite number >= 0 "
                         f"(1: no guidance; AudioLDM uses 2.5).")


def classifier_free_guidance(eps_uncond: Tensor, eps_cond: Tensor, guidance_scale: float) -> Tensor:
    """eps_uncond + s (eps_cond - eps_uncond), Ho & Salimans 2022 (eq. 6 with s = 1 + w).

    s = 0 gives the unconditional model, s = 1 the conditional one, s > 1 pushes further
    towards the condition (sharper, less varied samples).
    """
    _check_guidance(guidance_scale)
    _check_same_shape(eps_uncond, eps_cond, "eps_uncond and eps_cond")
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def _expand_uncond(uncond: Tensor, cond: Tensor) -> Tensor:
    """uncond ``(1, ...)`` or ``(B, ...)`` -> ``(B, ...)`` like cond."""
    if uncond.shape[1:] != cond.shape[1:] or uncond.shape[0] not in (1, cond.shape[0]):
        raise ValueError(f"uncond {tuple(uncond.shape)} must have cond's shape {tuple(cond.shape)} "
                         f"or batch size 1.")
    return uncond.expand_as(cond)


def _guided_eps(denoiser: Denoiser, x_t: Tensor, t: int, cond: Tensor | None, uncond: Tensor | None,
                guidance_scale: float) -> Tensor:
    """eps at step t, with the conditional and unconditional passes batched in one call."""
    t_batch = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)   # (B,)
    if guidance_scale == 1.0 or uncond is None:
        eps = denoiser(x_t, t_batch, cond)
    else:
        both = torch.cat([_expand_uncond(uncond, cond), cond])                       # (2B, ...)
        eps_uncond, eps_cond = denoiser(torch.cat([x_t, x_t]), t_batch.repeat(2), both).chunk(2)
        eps = classifier_free_guidance(eps_uncond, eps_cond, guidance_scale)
    _check_same_shape(eps, x_t, "the denoiser's output and x_t")
    return eps


@torch.no_grad()
def sample(denoiser: Denoiser, shape: tuple[int, ...], cond: Tensor | None, uncond: Tensor | None,
           schedule: NoiseSchedule, steps: int = 50, guidance_scale: float = 1.0, eta: float = 0.0,
           generator: torch.Generator | None = None, x_T: Tensor | None = None, t_start: int = 0) -> Tensor:
    """DDIM sampling with classifier-free guidance, from noise (or from ``x_T``) to data.

    Args:
        denoiser: ``denoiser(x_t, t, cond) -> eps``.
        shape: ``(B, ...)`` of the samples (AudioLDM: ``(B, C, F', L')`` latents).
        cond: ``(B, ...)`` conditioning or None; uncond: ``(1, ...)`` or ``(B, ...)`` "no condition".
        schedule: the forward process; fresh noise takes its device and dtype (move it with ``.to``).
        steps: DDIM steps (timesteps from :func:`ddim_timesteps`).
        guidance_scale: s of :func:`classifier_free_guidance`; 1 disables guidance (one pass).
        generator: for x_T and, when ``eta > 0``, every step's noise.
        x_T: the starting sample at timestep ``timesteps[t_start]`` instead of fresh noise.
        t_start: how many of the ``steps`` timesteps to skip (diffusers' img2img ``t_start``).
    """
    _check_guidance(guidance_scale)
    if guidance_scale != 1.0 and (cond is None or uncond is None):
        raise ValueError("guidance_scale != 1 needs both cond and uncond; pass uncond (e.g. the embedding of "
                         "an empty caption) or guidance_scale=1.0.")
    if cond is not None and cond.shape[0] != shape[0]:
        raise ValueError(f"cond has batch size {cond.shape[0]} but shape asks for {shape[0]} samples.")
    timesteps = ddim_timesteps(schedule.num_train_steps, steps, schedule.config.steps_offset)
    if not 0 <= t_start < steps:
        raise ValueError(f"t_start={t_start} must lie in [0, {steps - 1}] for steps={steps}.")
    if x_T is not None and tuple(x_T.shape) != tuple(shape):
        raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape is {tuple(shape)}.")
    x = _randn(tuple(shape), schedule.alphas_cumprod, generator) if x_T is None else x_T
    step_ratio = schedule.num_train_steps // steps
    for t in timesteps[t_start:].tolist():
        eps = _guided_eps(denoiser, x, t, cond, uncond, guidance_scale)
        x = ddim_step(eps, t, t - step_ratio, x, schedule, eta=eta, generator=generator)
    return x


@torch.no_grad()
def edit(denoiser: Denoiser, x_0: Tensor, strength: float, cond: Tensor | None, uncond: Tensor | None,
         schedule: NoiseSchedule, steps: int = 50, guidance_scale: float = 1.0, eta: float = 0.0,
         generator: torch.Generator | None = None) -> Tensor:
    """SDEdit (Meng et al. 2022): noise ``x_0`` part-way with :func:`q_sample`, then denoise.

    Like diffusers' img2img, the last ``int(steps * strength)`` DDIM timesteps are run: strength 1
    starts from (almost) pure noise, a small strength keeps most of the input.

    Args:
        x_0: the input to edit ``(B, ...)`` (AudioLDM: the latent of the input audio).
        strength: in (0, 1], the fraction of the noise schedule to go back; the rest as in :func:`sample`.
    """
    if not 0 < strength <= 1:
        raise ValueError(f"strength={strength} must lie in (0, 1]: near 0 keeps the input, 1 ignores it.")
    num_run = min(int(steps * strength), steps)
    if num_run == 0:
        raise ValueError(f"strength={strength} with steps={steps} runs no denoising step; use strength >= "
                         f"{1 / steps:g} or more steps.")
    t_start = steps - num_run
    t = int(ddim_timesteps(schedule.num_train_steps, steps, schedule.config.steps_offset)[t_start])
    x_t = q_sample(x_0, t, _randn(tuple(x_0.shape), x_0, generator), schedule)
    return sample(denoiser, tuple(x_0.shape), cond, uncond, schedule, steps=steps, guidance_scale=guidance_scale,
                  eta=eta, generator=generator, x_T=x_t, t_start=t_start)
