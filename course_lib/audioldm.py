"""AudioLDM: latent diffusion over mel spectrograms, trained on audio alone, steered by text through CLAP.

Liu, Chen, Yuan, Mei, Liu, Mandic, Wang, Plumbley 2023, "AudioLDM: Text-to-Audio Generation with Latent
Diffusion Models". The mel front end :class:`~course_lib.vocoder.LogMel` turns a clip ``(B, 1, T)`` into
``(B, 1, F, L)``; the KL-VAE :class:`MelVAE` compresses it 4x in frequency and time into
``(B, 8, F/4, L/4)`` latents, scaled to unit std (:func:`measure_scale`); the :class:`UNet` predicts the
noise of a latent from the timestep and a CLAP embedding (FiLM); the HiFi-GAN
:class:`~course_lib.vocoder.Vocoder` makes sound of the decoded mel. CLAP (:mod:`course_lib.clap`) is
trained beforehand and frozen: the UNet learns from **audio** embeddings of clips, no captions
(the paper's central idea), and at inference a prompt's **text** embedding takes their place. Schedules, the loss,
DDIM, guidance and SDEdit are :mod:`course_lib.diffusion`'s.

Example:
    >>> from dataclasses import replace
    >>> from course_lib.clap import Clap, ClapConfig
    >>> clap = Clap(replace(ClapConfig.preset("tiny"), text_towers=("scratch",)))
    >>> model = AudioLDM(AudioLDMConfig.preset("tiny"), clap).eval()
    >>> model.generate(["a kick drum"], seconds=0.5, steps=5).shape      # untrained: noise
    torch.Size([1, 1, 8000])

Training, in order: :func:`fit_vae` on mels, :func:`measure_scale`, :func:`fit_unet` on latents and
CLAP audio embeddings; :func:`course_lib.vocoder.fit_vocoder` on waveforms, independently.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import checkpoint, diffusion
from course_lib.clap import Clap, check_texts, neighbour_mean
from course_lib.clap import load_pretrained as load_clap
from course_lib.nn import (DiagonalGaussian, ResBlock2d, SelfAttention2d, downsample2d, group_norm, pad_to_multiple,
                           patch_discriminator, upsample2d)
from course_lib.train import TrainConfig, Trainer, TrainResult, moving_average, optimizer_step
from course_lib.vocoder import PRESETS as VOCODER_PRESETS
from course_lib.vocoder import LogMel, Vocoder, VocoderConfig, griffin_lim
from course_lib.vocoder import load_pretrained as load_vocoder

__all__ = ["AudioLDMConfig", "PRESETS", "DiagonalGaussian", "VAEOutput", "MelVAE", "measure_scale", "UNet",
           "AudioLDM", "VAELosses", "vae_loss", "fit_vae", "UNetLosses", "fit_unet",
           "PARTS", "save_pretrained", "load_pretrained", "MAX_PROMPT_CHARS", "MAX_GUIDANCE", "DECODERS", "PRIORS"]

MAX_PROMPT_CHARS = 300   # longer prompts are refused rather than cut silently by CLAP's tokenizer
MAX_GUIDANCE = 20.0      # AudioLDM uses 2.5; far beyond ~10 samples only saturate
DECODERS = ("vocoder", "griffin_lim")
PRIORS = ("retrieval", "shift", "text")   # how a prompt becomes the UNet's condition: AudioLDM.condition


@dataclass(frozen=True)
class AudioLDMConfig:
    """Sizes of the VAE and the UNet; the mel front end and the latent width are AudioLDM's."""

    sample_rate: int = 16_000
    n_fft: int = 1024
    hop_length: int = 160                           # 100 mel frames per second
    n_mels: int = 64                                # F
    # KL-VAE (AudioLDM: ch 128, ch_mult (1, 2, 4), 2 res blocks, z_channels 8)
    vae_channels: int = 16
    vae_channel_mult: tuple[int, ...] = (1, 2, 4)   # len - 1 downsamplings by 2: 4x in F and L
    vae_res_blocks: int = 1
    vae_attention: bool = True                      # self-attention in the middle block
    latent_dim: int = 8                             # latent channels, AudioLDM's embed_dim
    kl_weight: float = 1e-4                         # on the per-element mean KL (see vae_loss)
    adversarial_weight: float = 0.5                 # LDM's disc_weight; only with fit_vae(adversarial=True)
    # UNet (AudioLDM: 128 channels, mult (1, 2, 3, 5), 2 res blocks, attention at 3 levels)
    unet_channels: int = 32
    unet_channel_mult: tuple[int, ...] = (1, 2, 2)
    unet_res_blocks: int = 1
    unet_attention: bool = True                     # one self-attention, in the middle block
    unet_heads: int = 4
    cond_dim: int = 128                             # D, the CLAP embedding width
    p_uncond: float = 0.1                           # condition dropout for classifier-free guidance
    # Parts built elsewhere
    diffusion: str = "audioldm"                     # a course_lib.diffusion.PRESETS name
    vocoder: str = "small"                          # a course_lib.vocoder.PRESETS name (fresh models)
    clap: str = "clap-synthworld"                   # the CLAP that load_pretrained pairs with the UNet
    max_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not self.vae_channel_mult or not self.unet_channel_mult or self.n_mels % self.downsample:
            raise ValueError(f"need at least one VAE and UNet level, and n_mels={self.n_mels} divisible by the "
                             f"VAE's downsampling {self.downsample}.")
        if self.diffusion not in diffusion.PRESETS or self.vocoder not in VOCODER_PRESETS:
            raise ValueError(f"diffusion={self.diffusion!r} must be one of {sorted(diffusion.PRESETS)} and "
                             f"vocoder={self.vocoder!r} one of {sorted(VOCODER_PRESETS)}.")
        if self.unet_channels % self.unet_heads:
            raise ValueError(f"unet_channels={self.unet_channels} must be divisible by unet_heads={self.unet_heads}.")

    @property
    def downsample(self) -> int:
        """The VAE's compression factor in frequency and in time (4 with three levels)."""
        return 2 ** (len(self.vae_channel_mult) - 1)

    @staticmethod
    def preset(name: str) -> AudioLDMConfig:
        """``tiny`` (tests), ``small`` (cpu), ``medium`` (its VAE, a wider UNet): D = 128; ``base`` (gpu): D = 256."""
        return checkpoint.preset(PRESETS, name, "AudioLDM")


PRESETS: dict[str, AudioLDMConfig] = {
    "tiny": AudioLDMConfig(vae_channels=8, vae_attention=False, unet_channels=16, unet_channel_mult=(1, 2),
                           unet_attention=False, unet_heads=2, vocoder="tiny"),
    "small": AudioLDMConfig(), "medium": AudioLDMConfig(unet_channels=48),
    "base": AudioLDMConfig(vae_channels=32, vae_res_blocks=2, unet_channels=64, unet_channel_mult=(1, 2, 3),
                           unet_res_blocks=2, unet_heads=8, cond_dim=256, vocoder="base"),
}


# ----------------------------------------------------------------------------- the VAE
class VAEOutput(NamedTuple):
    reconstruction: Tensor       # (B, 1, F, L) normalised log-mel
    posterior: DiagonalGaussian


class MelVAE(nn.Module):
    """AudioLDM's ``AutoencoderKL`` at course size: normalised log-mel ``(B, 1, F, L)`` <-> ``(B, 8, F/4, L/4)``.

    Encoder (``variational_autoencoder/modules.py``, ``Encoder``): a conv, per level ResBlocks and a
    stride-2 conv (not after the last), a middle block (ResBlock, attention, ResBlock), GroupNorm,
    SiLU and a conv to mean and log-variance (LDM's 1x1 ``quant_conv`` folded in). The decoder
    mirrors it with nearest-neighbour upsampling; no skips: all the decoder gets passes the latent.
    """

    def __init__(self, config: AudioLDMConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or AudioLDMConfig()
        widths = [cfg.vae_channels * m for m in cfg.vae_channel_mult]
        c = widths[0]
        enc: list[nn.Module] = [nn.Conv2d(1, c, 3, padding=1)]
        for level, width in enumerate(widths):
            for _ in range(cfg.vae_res_blocks):
                enc.append(ResBlock2d(c, width))
                c = width
            if level < len(widths) - 1:
                enc.append(downsample2d(c))
        middle = lambda: [ResBlock2d(c, c), SelfAttention2d(c) if cfg.vae_attention else nn.Identity(), ResBlock2d(c, c)]
        enc += [*middle(), group_norm(c), nn.SiLU(), nn.Conv2d(c, 2 * cfg.latent_dim, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(cfg.latent_dim, c, 3, padding=1), *middle()]
        for level, width in reversed(list(enumerate(widths))):
            for _ in range(cfg.vae_res_blocks + 1):
                dec.append(ResBlock2d(c, width))
                c = width
            if level > 0:
                dec.append(upsample2d(c))
        dec += [group_norm(c), nn.SiLU(), nn.Conv2d(c, 1, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        # 1 / std of the latents of the training data, set by measure_scale (LDM's scale_by_std).
        self.register_buffer("scale_factor", torch.tensor(1.0))

    def encode(self, mel: Tensor) -> DiagonalGaussian:
        """Normalised log-mel ``(B, 1, F, L)`` -> q(z | x) over ``(B, D, F/4, ceil(L/4))`` (L padded with silence)."""
        cfg = self.config
        if mel.ndim != 4 or mel.shape[1] != 1 or mel.shape[2] != cfg.n_mels:
            raise ValueError(f"MelVAE expects a normalised log-mel (B, 1, {cfg.n_mels}, L), got shape "
                             f"{tuple(mel.shape)}; make one with LogMel()(wav) for wav (B, 1, T) at 16 kHz.")
        mean, logvar = self.encoder(pad_to_multiple(mel, cfg.downsample, LogMel.silence)).chunk(2, dim=1)  # (B, D, F', L')
        return DiagonalGaussian(mean, logvar.clamp(-30.0, 20.0))

    def decode(self, z: Tensor) -> Tensor:
        """Latent ``(B, D, F', L')`` (unscaled) -> normalised log-mel ``(B, 1, 4F', 4L')``."""
        return self.decoder(z)

    def forward(self, mel: Tensor, generator: torch.Generator | None = None) -> VAEOutput:
        """Encode, sample the posterior, decode; the reconstruction is cut to the input's ``L``."""
        posterior = self.encode(mel)
        return VAEOutput(self.decode(posterior.sample(generator))[..., : mel.shape[-1]], posterior)


@torch.no_grad()
def measure_scale(vae: MelVAE, mels: Tensor, batch_size: int = 64, generator: torch.Generator | None = None) -> float:
    """Set ``vae.scale_factor`` to 1 / std of posterior samples of ``mels`` ``(N, 1, F, L)``; returns it.

    LDM's ``scale_by_std`` (Rombach et al. 2022, section 4.3.2): the noise schedule assumes data of
    about unit variance, so the latents are rescaled once, on training data. The samples use a
    fixed seed by default, so that measuring twice gives the same factor.
    """
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    was_training = vae.training
    vae.eval()
    z = torch.cat([vae.encode(mels[i:i + batch_size].to(vae.scale_factor.device)).sample(generator)
                   for i in range(0, len(mels), batch_size)])
    vae.train(was_training)
    vae.scale_factor.fill_(1.0 / float(z.float().std()))
    return float(vae.scale_factor)


# ----------------------------------------------------------------------------- the UNet
class UNet(nn.Module):
    """openaimodel's ``UNetModel`` at course size, conditioned on a CLAP embedding by FiLM.

    ``forward(x_t (B, 8, F', L'), t (B,), cond (B, D)) -> eps`` of ``x_t``'s shape. The timestep
    embedding and ``film_embed(cond)`` are concatenated (AudioLDM's ``extra_film_use_concat``) into one
    ``emb`` that sets every ResBlock's scale and shift. Levels of ResBlocks with stride-2 convs between
    them, a middle block with self-attention at the lowest resolution, a mirrored decoder fed the
    encoder's activations (the U's skips). Inputs are padded to a multiple of ``2 ** (levels - 1)``.

    The buffer ``uncond`` ``(D,)`` is "no condition" for classifier-free guidance. AudioLDM uses CLAP's
    text embedding of the empty caption; the course CLAP refuses empty captions, so the default is the
    zero vector, the centre of the sphere of unit embeddings, as far from every caption as any other.
    ``fit_unet(uncond=...)`` stores another with the weights. The buffers ``text_shift`` ``(D,)`` and ``audio_bank``
    ``(N, D)`` (training clips' CLAP audio embeddings) serve :meth:`AudioLDM.condition`; empty until a recipe fills them.
    """

    def __init__(self, config: AudioLDMConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or AudioLDMConfig()
        c0, mult, emb = cfg.unet_channels, cfg.unet_channel_mult, 4 * cfg.unet_channels
        self.time_embed = nn.Sequential(nn.Linear(c0, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.film_embed = nn.Linear(cfg.cond_dim, emb)                          # AudioLDM's film_emb
        self.register_buffer("uncond", torch.zeros(cfg.cond_dim))
        self.register_buffer("text_shift", torch.zeros(cfg.cond_dim))
        self.register_buffer("audio_bank", torch.zeros(0, cfg.cond_dim))
        self.register_load_state_dict_pre_hook(UNet._take_bank)
        self.input_conv = nn.Conv2d(cfg.latent_dim, c0, 3, padding=1)
        self.down, skips, c = nn.ModuleList(), [c0], c0
        for level, m in enumerate(mult):
            for _ in range(cfg.unet_res_blocks):
                self.down.append(ResBlock2d(c, c0 * m, 2 * emb))
                c = c0 * m
                skips.append(c)
            if level < len(mult) - 1:
                self.down.append(downsample2d(c))
                skips.append(c)
        attention = SelfAttention2d(c, cfg.unet_heads) if cfg.unet_attention else nn.Identity()
        self.middle = nn.ModuleList([ResBlock2d(c, c, 2 * emb), attention, ResBlock2d(c, c, 2 * emb)])
        self.up = nn.ModuleList()
        for level, m in reversed(list(enumerate(mult))):
            for _ in range(cfg.unet_res_blocks + 1):
                self.up.append(ResBlock2d(c + skips.pop(), c0 * m, 2 * emb))
                c = c0 * m
            if level > 0:
                self.up.append(upsample2d(c))
        self.out = nn.Sequential(group_norm(c), nn.SiLU(), nn.Conv2d(c, cfg.latent_dim, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)                                     # zero_module: eps starts at 0
        nn.init.zeros_(self.out[-1].bias)

    @staticmethod
    def _take_bank(module: UNet, state: dict, prefix: str, *_) -> None:
        """Loading: the stored bank's size, whatever this one's; checkpoints from before the buffers get empty ones."""
        state.setdefault(f"{prefix}text_shift", torch.zeros_like(module.text_shift))
        bank = state.setdefault(f"{prefix}audio_bank", module.audio_bank[:0])
        module.audio_bank = module.audio_bank.new_empty(bank.shape)           # the stored size, this module's dtype

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        cfg = self.config
        if cond is None or cond.shape != (x_t.shape[0], cfg.cond_dim):
            raise ValueError(f"The UNet needs cond of shape (B, D) = ({x_t.shape[0]}, {cfg.cond_dim}), got "
                             f"{None if cond is None else tuple(cond.shape)}: pass CLAP embeddings of the CLAP it "
                             f"was trained with ({cfg.clap!r}), or unet.uncond.expand(B, -1) for no condition.")
        emb = torch.cat([self.time_embed(diffusion.timestep_embedding(t, cfg.unet_channels)),
                         self.film_embed(cond)], dim=-1)                        # (B, 8 C0)
        run = lambda block, h: block(h, emb) if isinstance(block, ResBlock2d) else block(h)
        h = self.input_conv(pad_to_multiple(x_t, 2 ** (len(cfg.unet_channel_mult) - 1)))
        hs = [h]
        for block in self.down:
            h = run(block, h)
            hs.append(h)
        for block in self.middle:
            h = run(block, h)
        for block in self.up:
            h = run(block, torch.cat([h, hs.pop()], dim=1) if isinstance(block, ResBlock2d) else h)
        return self.out(h)[..., : x_t.shape[-2], : x_t.shape[-1]]              # (B, 8, F', L')


# ----------------------------------------------------------------------------- the whole model
def _check_prompts(prompts: Sequence[str]) -> list[str]:
    """CLAP's checks (a list, not empty, no empty strings) plus a length limit."""
    prompts = check_texts(prompts)
    for i, p in enumerate(prompts):
        if len(p) > MAX_PROMPT_CHARS:
            raise ValueError(f"prompts[{i}] has {len(p)} characters; CLAP reads short captions, keep it under "
                             f"{MAX_PROMPT_CHARS} (e.g. 'a slow piano melody in a minor key').")
    return prompts


def _check_sampling(steps: int, guidance_scale: float, schedule: diffusion.NoiseSchedule) -> None:
    most = schedule.num_train_steps - schedule.config.steps_offset
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= most:
        raise ValueError(f"steps={steps!r} must be an int in [1, {most}]; 50 DDIM steps is a good choice "
                         f"(AudioLDM uses 200).")
    if not (isinstance(guidance_scale, (int, float)) and 0 <= guidance_scale <= MAX_GUIDANCE):
        raise ValueError(f"guidance_scale={guidance_scale!r} must lie in [0, {MAX_GUIDANCE:g}]: 0 ignores the "
                         f"prompt, 1 is plain conditioning, AudioLDM uses 2.5.")


class AudioLDM(nn.Module):
    """Text to audio: CLAP text embedding -> DDIM with guidance in the VAE's latent space -> mel -> vocoder.

    Args:
        config: sizes of the VAE and UNet.
        clap: the frozen CLAP whose audio embeddings trained the UNet (kept in eval mode).
        vae, unet, vocoder: trained parts; fresh ones are built from ``config`` when None.
    """

    def __init__(self, config: AudioLDMConfig, clap: Clap, vae: MelVAE | None = None, unet: UNet | None = None,
                 vocoder: Vocoder | None = None) -> None:
        super().__init__()
        self.config = cfg = config
        self.mel = LogMel(cfg.sample_rate, cfg.n_fft, cfg.hop_length, cfg.n_mels)
        self.vae = vae if vae is not None else MelVAE(cfg)
        self.unet = unet if unet is not None else UNet(cfg)
        self.vocoder = vocoder if vocoder is not None else Vocoder(VocoderConfig.preset(cfg.vocoder))
        self.schedule = diffusion.NoiseSchedule(diffusion.PRESETS[cfg.diffusion])
        self.clap = clap.eval().requires_grad_(False)
        voc, want = self.vocoder.config, (cfg.sample_rate, cfg.hop_length, cfg.n_mels)
        if (voc.sample_rate, voc.hop_length, voc.n_mels) != want:
            raise ValueError(f"The vocoder makes {voc.sample_rate} Hz from {voc.n_mels} mels at hop {voc.hop_length}; "
                             f"AudioLDM needs (sample rate, hop, mels) = {want}: use a VocoderConfig with those.")
        if clap.config.embed_dim != self.unet.config.cond_dim or clap.sample_rate != cfg.sample_rate:
            raise ValueError(f"This CLAP embeds into D={clap.config.embed_dim} at {clap.sample_rate} Hz, but the UNet "
                             f"is conditioned on D={self.unet.config.cond_dim} at {cfg.sample_rate} Hz: use the CLAP "
                             f"the UNet was trained with ({self.unet.config.clap!r}), or a preset with "
                             f"cond_dim={clap.config.embed_dim}.")

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def train(self, mode: bool = True) -> AudioLDM:
        super().train(mode)
        self.clap.eval()                                                        # frozen, BatchNorm included
        return self

    @torch.no_grad()
    def decode(self, z: Tensor, decoder: str = "vocoder", generator: torch.Generator | None = None) -> Tensor:
        """Scaled latents ``(B, 8, F', L')`` -> waveforms ``(B, 1, 4 L' * hop)``: VAE decoder, then ``decoder``.

        ``decoder`` is ``"vocoder"`` (the HiFi-GAN, AudioLDM's choice) or ``"griffin_lim"`` (the baseline:
        32 iterations of phase estimation from the same mel, its initial phase drawn with ``generator``).
        """
        if decoder not in DECODERS:
            raise ValueError(f"decoder={decoder!r}; use one of {DECODERS}.")
        mel = self.vae.decode(z / self.vae.scale_factor)
        if decoder == "griffin_lim":
            cfg = self.config
            return griffin_lim(mel, cfg.sample_rate, cfg.n_fft, cfg.hop_length, generator=generator)
        return self.vocoder(mel)

    @torch.no_grad()
    def condition(self, prompts: Sequence[str], prior: str | None = None, k: int = 16) -> Tensor:
        """The UNet's conditions ``(B, D)`` for prompts, from their CLAP text embeddings by one of :data:`PRIORS`:
        ``"retrieval"``, the normalised mean of the ``k`` audio embeddings of training clips in ``unet.audio_bank``
        most similar to the text (kNN-Diffusion, Sheynin et al. 2023), conditions like those in training;
        ``"shift"``, the text embedding plus ``unet.text_shift`` (centre of the training audio embeddings minus that
        of text embeddings, Liang et al. 2022) on the unit sphere; ``"text"``, as it is, as in the paper.
        ``None``: ``"retrieval"`` when the UNet stores a bank, else ``"shift"`` (with no shift stored: ``"text"``)."""
        text, bank = self.clap.embed_text(_check_prompts(prompts)), self.unet.audio_bank
        prior = prior or ("retrieval" if len(bank) else "shift")
        if prior not in PRIORS:
            raise ValueError(f"prior={prior!r} must be one of {PRIORS} (or None for the stored default).")
        if prior == "retrieval" and not len(bank):
            raise ValueError("prior='retrieval' needs unet.audio_bank, which this UNet lacks: fill it with CLAP audio "
                             "embeddings of training clips (recipes.audioldm.clap_embeddings), or use prior='shift'.")
        if prior == "retrieval":
            return neighbour_mean(text, bank, k)
        return F.normalize(text + self.unet.text_shift, dim=-1) if prior == "shift" else text

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], seconds: float = 1.0, steps: int = 50, guidance_scale: float = 2.5,
                 generator: torch.Generator | None = None, candidates: int = 1, eta: float = 0.0,
                 decoder: str = "vocoder", prior: str | None = None) -> Tensor:
        """Audio ``(B, 1, T)`` for ``B`` prompts, ``T = round(seconds * 16000)``.

        Args:
            prompts: captions; :meth:`condition` turns them into the UNet's conditions.
            steps: DDIM steps; guidance_scale: classifier-free guidance ``s`` (0: unconditional).
            generator: all randomness (the initial noise, and each step's noise when ``eta > 0``).
            candidates: samples per prompt; the one whose CLAP audio embedding is closest to the
                prompt's text embedding is returned (AudioLDM's ``text_to_audio``: ``n_candidate_gen_per_text``).
            decoder: ``"vocoder"`` or ``"griffin_lim"`` (:meth:`decode`); prior: :meth:`condition`'s.
        """
        if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
            raise ValueError(f"candidates={candidates!r} must be an int >= 1 (samples per prompt to re-rank).")
        cond = self.condition(prompts, prior)                                    # (B, D)
        wav = self.sample(cond.repeat_interleave(candidates, dim=0), seconds, steps, guidance_scale, generator,
                          eta, decoder)                                          # (B k, 1, T)
        if candidates > 1:
            audio = self.clap.embed_audio(wav).view(len(prompts), candidates, -1)   # (B, k, D)
            text = self.clap.embed_text(prompts)                                 # CLAP's own, unshifted
            best = (audio * text[:, None]).sum(-1).argmax(dim=1)                 # (B,) by cosine similarity
            wav = wav.view(len(prompts), candidates, 1, -1)[torch.arange(len(prompts)), best]
        return wav

    @torch.no_grad()
    def sample(self, cond: Tensor, seconds: float = 1.0, steps: int = 50, guidance_scale: float = 2.5,
               generator: torch.Generator | None = None, eta: float = 0.0, decoder: str = "vocoder") -> Tensor:
        """Audio ``(B, 1, T)`` from conditions ``cond`` ``(B, D)`` in CLAP's space: what :meth:`generate` runs on
        its prompts' text embeddings. CLAP **audio** embeddings of real clips condition it as in training."""
        _check_sampling(steps, guidance_scale, self.schedule)
        if cond.ndim != 2 or cond.shape[1] != self.config.cond_dim:
            raise ValueError(f"cond must be (B, {self.config.cond_dim}) CLAP embeddings, got {tuple(cond.shape)}: "
                             f"use model.clap.embed_text(prompts) or model.clap.embed_audio(wav).")
        if not (isinstance(seconds, (int, float)) and 0 < seconds <= self.config.max_seconds):
            raise ValueError(f"seconds={seconds!r} must lie in (0, {self.config.max_seconds:g}]; generate longer "
                             f"audio in pieces, or raise AudioLDMConfig.max_seconds.")
        num_samples, ds = max(1, round(seconds * self.sample_rate)), self.config.downsample
        frames = math.ceil(num_samples / self.config.hop_length / ds)            # latent frames L'
        shape = (len(cond), self.config.latent_dim, self.config.n_mels // ds, frames)
        z = diffusion.sample(self.unet, shape, cond, self.unet.uncond[None], self.schedule, steps=steps,
                             guidance_scale=guidance_scale, eta=eta, generator=generator)
        return self.decode(z, decoder, generator)[..., :num_samples]

    @torch.no_grad()
    def edit(self, wav: Tensor, prompt: str | Sequence[str], strength: float = 0.5, steps: int = 50,
             guidance_scale: float = 2.5, generator: torch.Generator | None = None, sample_rate: int | None = None,
             eta: float = 0.0) -> Tensor:
        """Style transfer by SDEdit (Meng et al. 2022): noise a clip's latent part-way, denoise it towards ``prompt``.

        Args:
            wav: ``(B, 1, T)`` clips at 16 kHz; ``sample_rate``, when given, is checked against it.
            prompt: one prompt for all clips, or one per clip.
            strength: in (0, 1]; small keeps the clip, 1 ignores it (:func:`course_lib.diffusion.edit`).

        Returns:
            ``(B, 1, T)``.
        """
        mel = self.mel(wav, sample_rate)                                         # checks shape and rate
        prompts = _check_prompts([prompt] * len(wav) if isinstance(prompt, str) else prompt)
        if len(prompts) != len(wav):
            raise ValueError(f"{len(prompts)} prompts for {len(wav)} clips: pass one prompt, or one per clip.")
        _check_sampling(steps, guidance_scale, self.schedule)
        z_0 = self.vae.encode(mel).mean * self.vae.scale_factor                  # (B, 8, F', L')
        z = diffusion.edit(self.unet, z_0, strength, self.condition(prompts), self.unet.uncond[None],
                           self.schedule, steps=steps, guidance_scale=guidance_scale, eta=eta, generator=generator)
        out = self.decode(z)
        return F.pad(out, (0, max(0, wav.shape[-1] - out.shape[-1])))[..., : wav.shape[-1]]


PARTS = ("vae", "unet", "vocoder")


def save_pretrained(model: AudioLDM, directory: str | Path, card: dict | None = None,
                    cards: dict[str, dict] | None = None, dtype: torch.dtype | None = None) -> list[Path]:
    """Three course checkpoints ``DIR-vae``, ``DIR-unet`` (with ``uncond``), ``DIR-vocoder``.

    Separate, as Jukebox's and AudioLM's parts, so a student can retrain one part (e.g. the vocoder)
    and keep the others. CLAP is not copied: ``config.clap`` names it. ``cards`` gives a part its own
    card (e.g. the one its training stage wrote); the others get ``card``. ``dtype``: as
    :func:`course_lib.checkpoint.save_pretrained`.
    """
    parts = {"vae": model.vae, "unet": model.unet, "vocoder": model.vocoder}
    return [checkpoint.save_pretrained(part, part.config, f"{directory}-{name}",
                                       card={**(cards or {}).get(name, card or {}), "part": name}, dtype=dtype)
            for name, part in parts.items()]


def load_pretrained(name: str | Path = "audioldm-synthworld", clap: Clap | None = None) -> AudioLDM:
    """The parts ``NAME-vae``, ``NAME-unet``, ``NAME-vocoder`` (folders, or shipped names); CLAP from ``config.clap``."""
    vae = checkpoint.load_pretrained(f"{name}-vae", MelVAE, AudioLDMConfig)
    unet = checkpoint.load_pretrained(f"{name}-unet", UNet, AudioLDMConfig)
    clap = clap if clap is not None else load_clap(unet.config.clap)
    return AudioLDM(unet.config, clap, vae, unet, load_vocoder(f"{name}-vocoder")).eval()


# ----------------------------------------------------------------------------- training
class VAELosses(NamedTuple):
    total: Tensor           # reconstruction + kl_weight * kl (+ adversarial_weight * adversarial)
    reconstruction: Tensor  # L1 between normalised log-mels
    kl: Tensor              # mean KL per latent element
    adversarial: Tensor     # generator-side hinge loss (0 without a discriminator)
    discriminator: Tensor   # the discriminator's hinge loss (0 without one)


def vae_loss(vae: MelVAE, mel: Tensor, generator: torch.Generator | None = None,
             discriminator: nn.Module | None = None) -> tuple[VAELosses, Tensor]:
    """Losses of a batch ``(B, 1, F, L)`` and the reconstruction.

    LDM's ``LPIPSWithDiscriminator`` sums its terms over pixels with ``kl_weight = 1e-6``; the course
    averages both over elements, where 1e-4 is a similarly weak pull towards N(0, I): the
    reconstruction shapes the latent, :func:`measure_scale` fixes its scale.
    """
    cfg = vae.config
    out = vae(mel, generator)
    rec, kl, zero = (out.reconstruction - mel).abs().mean(), out.posterior.kl().mean(), mel.new_zeros(())
    adv = -discriminator(out.reconstruction).mean() if discriminator is not None else zero
    total = rec + cfg.kl_weight * kl + cfg.adversarial_weight * adv
    return VAELosses(total, rec, kl, adv, zero), out.reconstruction


def _trainer(modules: dict, optimizers: dict, generator: torch.Generator, steps: int, **kw) -> Trainer:
    return Trainer(modules, optimizers, TrainConfig(max_steps=steps, **kw), generators={"batches": generator})


def fit_vae(vae: MelVAE, mels: Tensor, *, steps: int, time_budget_s: float | None = None,
            generator: torch.Generator | None = None, checkpoint_dir: str | Path | None = None,
            batch_size: int = 16, crop_frames: int = 64, lr: float = 5e-4, adversarial: bool = False,
            settings: dict | None = None, progress: bool = True, log_every: int = 10) -> TrainResult:
    """Train ``vae`` on random time crops of normalised log-mels ``(N, 1, F, L)``; resumable via ``checkpoint_dir``.

    Adam with LDM's autoencoder betas (0.5, 0.9), gradients clipped at 1. ``adversarial`` adds a
    PatchGAN on the mels with hinge losses, as AudioLDM's VAE has; off by default: on a CPU budget
    the L1 term does most of the work and the GAN doubles the step time.
    """
    cfg = vae.config
    if mels.ndim != 4 or mels.shape[1:3] != (1, cfg.n_mels):
        raise ValueError(f"mels must be (N, 1, {cfg.n_mels}, L) normalised log-mels, got {tuple(mels.shape)}.")
    crop = min(crop_frames, mels.shape[-1]) // cfg.downsample * cfg.downsample
    if steps < 1 or batch_size < 1 or crop < cfg.downsample:
        raise ValueError(f"need steps >= 1, batch_size >= 1 and at least {cfg.downsample} mel frames per crop.")
    device = vae.scale_factor.device
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(vae.parameters(), lr=lr, betas=(0.5, 0.9))
    modules, optimizers = {"vae": vae}, {"vae": opt}
    disc = patch_discriminator().to(device) if adversarial else None
    if disc is not None:
        modules["discriminator"] = disc
        optimizers["discriminator"] = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.9))
    trainer = _trainer(modules, optimizers, generator, steps, time_budget_s=time_budget_s, settings=settings,
                       checkpoint_dir=checkpoint_dir, log_every=log_every, progress=progress)

    def step_fn(step: int) -> VAELosses:
        idx = torch.randint(0, len(mels), (batch_size,), generator=generator).tolist()
        starts = torch.randint(0, mels.shape[-1] - crop + 1, (batch_size,), generator=generator).tolist()
        mel = torch.stack([mels[i, ..., s:s + crop] for i, s in zip(idx, starts)]).to(device)  # (B, 1, F, crop)
        losses, rec = vae_loss(vae, mel, generator, disc)
        losses = optimizer_step(losses, opt, max_norm=1.0)
        if disc is None:
            return losses
        d_loss = F.relu(1 - disc(mel)).mean() + F.relu(1 + disc(rec.detach())).mean()   # hinge
        optimizers["discriminator"].zero_grad(set_to_none=True)
        d_loss.backward()
        optimizers["discriminator"].step()
        return losses._replace(discriminator=d_loss.detach())

    trainer.fit(step_fn)
    return trainer.result(vae.eval())


class UNetLosses(NamedTuple):
    loss: Tensor   # ||eps - eps_theta(z_t, t, c)||^2, eq. 14 of Ho et al. 2020


def fit_unet(vae: MelVAE, unet: UNet, mels: Tensor, clap_audio_embeddings: Tensor, *, steps: int,
             time_budget_s: float | None = None, generator: torch.Generator | None = None,
             checkpoint_dir: str | Path | None = None, batch_size: int = 16, lr: float = 2e-4,
             uncond: Tensor | None = None, ema_decay: float = 0.999, settings: dict | None = None,
             progress: bool = True, log_every: int = 10) -> TrainResult:
    """Train the denoiser on latents of ``mels`` ``(N, 1, F, L)`` conditioned on CLAP **audio** embeddings ``(N, D)``.

    No captions (the paper's central idea): at inference a text embedding from the same CLAP space takes the audio
    embedding's place. Each step samples the frozen VAE's posterior, scales it by ``vae.scale_factor``
    (measured first if still 1, as LDM's ``scale_by_std`` does on its first batch) and takes
    :func:`course_lib.diffusion.diffusion_loss`, the condition replaced by ``unet.uncond`` for
    ``p_uncond`` (10%) of the examples. AdamW, gradients clipped at 1. As in LDM (``use_ema``), ``unet`` ends
    with a moving average of its weights; the checkpoint keeps both, so a resumed run goes on exactly.

    Args:
        uncond: ``(D,)`` "no condition" to store in ``unet.uncond`` (default: keep it; zeros when new).
        ema_decay: the average's decay per step (:func:`course_lib.train.moving_average`); 0: none.
    """
    cfg, emb = unet.config, clap_audio_embeddings
    if emb.ndim != 2 or emb.shape[1] != cfg.cond_dim or len(emb) != len(mels):
        raise ValueError(f"clap_audio_embeddings must be (N, {cfg.cond_dim}) with N = {len(mels)}, one per mel; got "
                         f"{tuple(emb.shape)}. Embed the clips with the CLAP {cfg.clap!r} (embed_dim {cfg.cond_dim}).")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}.")
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay={ema_decay!r} must lie in [0, 1): e.g. 0.999, or 0 for no moving average.")
    device = unet.uncond.device
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    if uncond is not None:
        unet.uncond.copy_(uncond.reshape(cfg.cond_dim))
    if float(vae.scale_factor) == 1.0:
        measure_scale(vae, mels)
    vae.eval()
    with torch.no_grad():                                                        # the VAE is frozen: encode once
        posts = [vae.encode(mels[i:i + 64].to(vae.scale_factor.device)) for i in range(0, len(mels), 64)]
    mean = torch.cat([p.mean for p in posts]).to(device)                         # (N, 8, F', L')
    logvar = torch.cat([p.logvar for p in posts]).to(device)
    scale, emb = vae.scale_factor.to(device), emb.to(device)
    schedule = diffusion.NoiseSchedule(diffusion.PRESETS[cfg.diffusion]).to(device)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.01)
    modules = {"unet": unet}
    if ema_decay:
        modules["ema"] = moving_average(unet, ema_decay)
    trainer = _trainer(modules, {"unet": opt}, generator, steps, time_budget_s=time_budget_s,
                       settings=settings, checkpoint_dir=checkpoint_dir, log_every=log_every, progress=progress)

    def step_fn(step: int) -> UNetLosses:
        idx = torch.randint(0, len(mean), (batch_size,), generator=generator).to(device)
        z_0 = DiagonalGaussian(mean[idx], logvar[idx]).sample(generator) * scale     # (B, 8, F', L')
        out = diffusion.diffusion_loss(unet, z_0, emb[idx], schedule, generator, uncond=unet.uncond[None],
                                       p_uncond=cfg.p_uncond)
        losses = optimizer_step(UNetLosses(out.loss), opt, max_norm=1.0)
        if ema_decay:
            modules["ema"].update_parameters(unet)
        return losses

    trainer.fit(step_fn)
    if ema_decay and trainer.step > 0:
        unet.load_state_dict(modules["ema"].module.state_dict())               # the averaged weights are the model
    return trainer.result(unet.eval())
