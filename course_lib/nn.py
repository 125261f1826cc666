"""Small shared building blocks for the course's 1D convolutional models.

Everything here is used by more than one model (WaveGAN, the codec, Jukebox's VQ-VAE)
and by notebook 01, which measures each claim:

- :class:`CausalConv1d`: a Conv1d padded on the left only, so ``y[t]`` depends on ``x[:t+1]``.
- :func:`same_padding`: the symmetric padding that keeps the length of a stride-1 conv.
- :func:`receptive_field`: the analytic receptive field of a conv stack.
- :func:`measured_receptive_field`: the same number, measured with gradients.
- :class:`PaddedConv1d`, :class:`PaddedConvTranspose1d`: convs that map ``T -> T / s`` and
  ``L -> L * s`` exactly, causal or centred.
- :class:`ResidualUnit`: the dilated residual unit of SEANet / SoundStream / EnCodec (activation=).
- :class:`MultiScaleSTFTDiscriminator`: EnCodec's adversary over complex STFTs.
- :class:`ResBlock2d` (with FiLM), :class:`SelfAttention2d` and 2-D up/downsampling: AudioLDM's mel VAE and UNet;
  :class:`DiagonalGaussian`, the VAE's posterior.
- :class:`ConvNeXtBlock`, :class:`ISTFTDecoder`: Vocos' frame-rate decoder (the codec's ``speech`` preset, the
  ``istft`` vocoder).

Shapes follow the package legend: B batch, C channels, T samples.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.spectral import istft

__all__ = ["CausalConv1d", "same_padding", "conv_output_length", "receptive_field",
           "measured_receptive_field", "PaddedConv1d", "PaddedConvTranspose1d", "ResidualUnit",
           "STFTDiscriminator", "MultiScaleSTFTDiscriminator", "group_norm", "downsample2d", "upsample2d",
           "pad_to_multiple", "patch_discriminator", "ResBlock2d", "SelfAttention2d", "DiagonalGaussian",
           "ConvNeXtBlock", "ISTFTDecoder"]


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding on each side that keeps ``T`` unchanged for a stride-1 conv.

    The conv spans ``(kernel_size - 1) * dilation + 1`` samples, so it needs
    ``(kernel_size - 1) * dilation`` samples of padding in total, half on each side.

    Raises:
        ValueError: when that total is odd (an even kernel with odd dilation), because
            symmetric padding cannot keep the length; use an odd kernel, or pad
            asymmetrically with ``F.pad`` (or use :class:`CausalConv1d`).
    """
    if kernel_size < 1 or dilation < 1:
        raise ValueError(f"kernel_size and dilation must be >= 1, got {kernel_size} and {dilation}.")
    total = (kernel_size - 1) * dilation
    if total % 2:
        raise ValueError(f"kernel_size={kernel_size}, dilation={dilation} needs {total} samples of padding, which "
                         f"cannot be split evenly: use an odd kernel_size, or pad asymmetrically with F.pad.")
    return total // 2


def conv_output_length(length: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length of ``nn.Conv1d``: ``floor((T + 2p - d(k-1) - 1) / s) + 1`` (PyTorch docs)."""
    return (length + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


class CausalConv1d(nn.Conv1d):
    """A Conv1d that never looks ahead: left padding of ``(kernel_size - 1) * dilation``.

    ``y[t]`` depends only on ``x[:t+1]`` (WaveNet's causal convolution), which an
    autoregressive model needs to be trained in parallel and a streaming codec needs to
    run with no look-ahead. With stride 1 the output has the input's length.

    Shapes: ``(B, C_in, T) -> (B, C_out, ceil(T / stride))``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0,
                         dilation=dilation, groups=groups, bias=bias)
        self.causal_padding = (kernel_size - 1) * dilation

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (self.causal_padding, 0)))  # (B, C_out, T') zeros stand for the past


def receptive_field(kernel_sizes: Sequence[int], strides: Sequence[int] | None = None,
                    dilations: Sequence[int] | None = None) -> int:
    """Receptive field (in input samples) of one output sample of a stack of convs.

    Layer ``i`` widens the field by ``(k_i - 1) * d_i`` of *its* input samples, and one of
    those is ``s_0 * ... * s_{i-1}`` samples of the network's input:

        ``RF = 1 + sum_i (k_i - 1) * d_i * prod_{j<i} s_j``

    Args:
        kernel_sizes: kernel size per layer, first layer first.
        strides: stride per layer (default 1).
        dilations: dilation per layer (default 1).
    """
    n = len(kernel_sizes)
    strides = [1] * n if strides is None else list(strides)
    dilations = [1] * n if dilations is None else list(dilations)
    if not (len(strides) == len(dilations) == n):
        raise ValueError(f"kernel_sizes, strides and dilations need one entry per layer, got lengths "
                         f"{n}, {len(strides)}, {len(dilations)}.")
    field, jump = 1, 1
    for k, s, d in zip(kernel_sizes, strides, dilations):
        field += (k - 1) * d * jump
        jump *= s
    return field


def _first_conv_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
            return m.in_channels
    raise ValueError("No Conv1d in the model: pass in_channels= to measured_receptive_field.")


def measured_receptive_field(model: nn.Module, length: int, in_channels: int | None = None,
                             generator: torch.Generator | None = None) -> int:
    """Measure the receptive field: which inputs get a gradient from one output sample.

    Feeds random noise ``(1, C_in, length)``, back-propagates from the middle output
    sample (all channels summed) and returns the span between the first and the last
    input sample with a nonzero gradient. The model runs in eval mode (BatchNorm in
    training mode would couple all time steps); its mode is restored afterwards.

    Args:
        model: maps ``(1, C_in, T)`` to ``(1, C_out, T')``.
        length: input length T; must be longer than the receptive field.
        in_channels: C_in; taken from the first Conv1d when None.
        generator: randomness of the probe noise.

    Raises:
        ValueError: when the span reaches the edge of the input (increase ``length``).
    """
    c_in = in_channels or _first_conv_channels(model)
    param = next(model.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)
    was_training = model.training
    model.eval()
    try:
        x = torch.randn(1, c_in, length, generator=generator).to(device, dtype).requires_grad_(True)
        y = model(x)                                                   # (1, C_out, T')
        y[0, :, y.shape[-1] // 2].sum().backward()
    finally:
        model.train(was_training)
    hit = (x.grad[0] != 0).any(0).nonzero().flatten()                  # input positions that matter
    if hit.numel() == 0:
        raise ValueError("No input sample reaches the output (dead activations?); try another generator seed.")
    first, last = int(hit[0]), int(hit[-1])
    if first == 0 or last == length - 1:
        raise ValueError(f"The receptive field reaches the edge of the {length}-sample input, so it is cut off: "
                         f"call measured_receptive_field with a larger length (e.g. {4 * length}).")
    return last - first + 1


class PaddedConv1d(nn.Module):
    """Conv1d that maps ``T -> T / stride`` (T a multiple of stride); ``causal`` pads only the past.

    The padding is ``(kernel_size - 1) * dilation - (stride - 1)`` samples in total: all of it on
    the left when causal, else split in two (the right side gets the odd sample). Unlike
    :func:`same_padding` this works for even kernels and strided convs, which the codec needs.

    Shapes: ``(B, C_in, T) -> (B, C_out, T / stride)``.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 causal: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel_size, stride=stride, dilation=dilation)
        total = (kernel_size - 1) * dilation - (stride - 1)
        self.pad = (total, 0) if causal else (total // 2, total - total // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, self.pad))                           # (B, C_out, T / stride)


class PaddedConvTranspose1d(nn.Module):
    """Transposed conv with kernel ``2 * stride``: ``L -> L * stride``; ``causal`` trims only the future.

    A kernel of twice the stride overlaps every output sample by exactly two kernel taps, the
    smallest overlap that avoids the gaps of kernel = stride (notebook 01 hears the difference).
    """

    def __init__(self, c_in: int, c_out: int, stride: int, causal: bool = False) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(c_in, c_out, 2 * stride, stride=stride)
        self.trim = (0, stride) if causal else (stride // 2, stride - stride // 2)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)                                               # (B, C_out, (L + 1) * stride)
        return y[..., self.trim[0]: y.shape[-1] - self.trim[1]]       # (B, C_out, L * stride)


class ResidualUnit(nn.Module):
    """SEANet's residual unit (SoundStream Fig. 3, EnCodec, DAC): act, dilated conv, act, conv k=1, skip.

    Dilations 1, 3, 9 in three consecutive units grow the receptive field to
    ``1 + 6 * (1 + 3 + 9) = 79`` samples at no extra cost per layer.

    Args:
        channels: C, kept.
        dilation: of the kernel-``kernel_size`` conv.
        causal: pad only the past (streaming).
        activation: a module factory; SEANet uses ``nn.ELU``, the course's codec ``nn.SiLU`` (faster on CPU).

    Shapes: ``(B, C, T) -> (B, C, T)``.
    """

    def __init__(self, channels: int, dilation: int = 1, kernel_size: int = 7, causal: bool = False,
                 activation: Callable[[], nn.Module] = nn.ELU):
        super().__init__()
        self.block = nn.Sequential(activation(), PaddedConv1d(channels, channels, kernel_size, dilation=dilation,
                                                              causal=causal),
                                   activation(), PaddedConv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)                                      # (B, C, T)


# ----------------------------------------------------------------------------- discriminators
class STFTDiscriminator(nn.Module):
    """One scale of EnCodec's MS-STFT discriminator (Défossez et al. 2022): a 2D conv net over the complex STFT.

    Input: (B, 1, T) audio -> STFT (B, F, L) -> real and imaginary parts as 2 channels (B, 2, F, L).
    Kernels span 9 frequency bins by 3 frames, stride 2 along frequency, dilation 1, 2, 4 along time.
    Returns the logits (B, 1, F', L) and every hidden activation (for feature matching).
    """

    def __init__(self, n_fft: int, channels: int = 32, num_layers: int = 3) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        layers = [nn.Conv2d(2, channels, (9, 3), padding=(4, 1))]
        for i in range(num_layers):
            d = 2 ** i
            layers.append(nn.Conv2d(channels, channels, (9, 3), stride=(2, 1), dilation=(1, d), padding=(4, d)))
        layers.append(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1)))
        self.layers = nn.ModuleList(layers)
        self.out = nn.Conv2d(channels, 1, (3, 3), padding=(1, 1))

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:
        spec = torch.stft(wav.reshape(-1, wav.shape[-1]), self.n_fft, self.n_fft // 4, window=self.window,
                          return_complex=True)                      # (B, F, L)
        x = torch.stack([spec.real, spec.imag], dim=1)              # (B, 2, F, L)
        features = []
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2)
            features.append(x)
        return self.out(x), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """STFT discriminators at several window sizes, with SoundStream's hinge and feature losses.

    Example:
        >>> disc = MultiScaleSTFTDiscriminator()
        >>> d_loss = disc.discriminator_loss(fake.detach(), real)   # train the critic
        >>> adv, feat = disc.generator_losses(fake, real)           # train the generator
    """

    def __init__(self, n_ffts: tuple[int, ...] = (2048, 1024, 512), channels: int = 32) -> None:
        super().__init__()
        self.scales = nn.ModuleList(STFTDiscriminator(n, channels) for n in n_ffts)

    def forward(self, wav: Tensor) -> list[tuple[Tensor, list[Tensor]]]:
        return [d(wav) for d in self.scales]

    def discriminator_loss(self, fake: Tensor, real: Tensor) -> Tensor:
        """Hinge loss: mean over scales of ``relu(1 - D(real)) + relu(1 + D(fake))``."""
        total = real.new_zeros(())
        for (l_real, _), (l_fake, _) in zip(self(real), self(fake)):
            total = total + F.relu(1 - l_real).mean() + F.relu(1 + l_fake).mean()
        return total / len(self.scales)

    def generator_losses(self, fake: Tensor, real: Tensor) -> tuple[Tensor, Tensor]:
        """(adversarial, feature matching): ``relu(1 - D(fake))`` and the L1 distance of hidden
        activations relative to their size on real audio (EnCodec), both averaged over scales."""
        adv, feat, n_feat = fake.new_zeros(()), fake.new_zeros(()), 0
        with torch.no_grad():
            real_out = self(real)
        for (l_fake, f_fake), (_, f_real) in zip(self(fake), real_out):
            adv = adv + F.relu(1 - l_fake).mean()
            for a, b in zip(f_fake, f_real):
                feat = feat + (a - b).abs().mean() / b.abs().mean().clamp_min(1e-8)
                n_feat += 1
        return adv / len(self.scales), feat / max(n_feat, 1)


# ----------------------------------------------------------------------------- 2-D blocks (AudioLDM's VAE and UNet)
def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups (LDM's ``Normalize``), so course widths below 32 work too."""
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-6)


def downsample2d(channels: int) -> nn.Module:
    return nn.Conv2d(channels, channels, 3, stride=2, padding=1)                # (B, C, H, W) -> (B, C, H/2, W/2)


def upsample2d(channels: int) -> nn.Module:
    return nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(channels, channels, 3, padding=1))


def patch_discriminator(channels: int = 32) -> nn.Sequential:
    """pix2pix's PatchGAN (taming's ``NLayerDiscriminator``, 2 layers): real or fake per patch of a mel
    ``(B, 1, F, L)`` -> ``(B, 1, F/4 - 1, L/4 - 1)`` logits (AudioLDM's VAE discriminator, course-sized)."""
    c = channels
    return nn.Sequential(nn.Conv2d(1, c, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False),
                         nn.BatchNorm2d(2 * c), nn.LeakyReLU(0.2), nn.Conv2d(2 * c, 1, 4, 1, 1))


def pad_to_multiple(x: Tensor, multiple: int, value: float = 0.0) -> Tensor:
    """Pad the last two dims of ``(B, C, H, W)`` at the end up to multiples of ``multiple``."""
    return F.pad(x, (0, -x.shape[-1] % multiple, 0, -x.shape[-2] % multiple), value=value)


class ResBlock2d(nn.Module):
    """GroupNorm, SiLU, conv, GroupNorm, (FiLM), SiLU, conv, plus a skip: ``(B, C_in, H, W) -> (B, C_out, H, W)``.

    Without ``emb_dim`` the VAE's ``ResnetBlock``; with it openaimodel's ``ResBlock`` with
    ``use_scale_shift_norm``: the embedding (timestep and CLAP) sets a scale and a shift per channel,
    ``h = norm(h) * (1 + scale) + shift`` (FiLM, Perez et al. 2018), and the last conv starts at zero
    (``zero_module``), so a fresh block is the identity.
    """

    def __init__(self, c_in: int, c_out: int, emb_dim: int = 0) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(group_norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * c_out)) if emb_dim else None
        self.norm = group_norm(c_out)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        if emb_dim:
            nn.init.zeros_(self.out_layers[-1].weight)
            nn.init.zeros_(self.out_layers[-1].bias)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        h = self.norm(self.in_layers(x))                                        # (B, C_out, H, W)
        if self.emb_layers is not None:
            scale, shift = self.emb_layers(emb)[..., None, None].chunk(2, dim=1)  # (B, C_out, 1, 1) each
            h = h * (1 + scale) + shift                                         # FiLM
        return self.skip(x) + self.out_layers(h)


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the ``H * W`` positions (openaimodel's ``AttentionBlock``), residual."""

    def __init__(self, channels: int, heads: int = 1) -> None:
        super().__init__()
        self.heads, self.norm = heads, group_norm(channels)
        self.qkv, self.proj = nn.Conv2d(channels, 3 * channels, 1), nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(1)                               # (B, nh, HW, hs) each
        y = F.scaled_dot_product_attention(q, k, v)                             # (B, nh, HW, hs)
        return x + self.proj(y.transpose(-1, -2).reshape(b, c, h, w))


class DiagonalGaussian(NamedTuple):
    """The posterior q(z | x) (AudioLDM's ``distributions.py``, ``DiagonalGaussianDistribution``)."""

    mean: Tensor     # (B, D, F', L')
    logvar: Tensor   # (B, D, F', L'), clamped to [-30, 20] as in LDM

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """z = mean + std * eps, the reparameterisation trick (Kingma & Welling 2014)."""
        device = generator.device if generator is not None else self.mean.device
        eps = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + (0.5 * self.logvar).exp() * eps.to(self.mean.device)

    def kl(self) -> Tensor:
        """KL(q || N(0, I)) per example, averaged over elements as AudioLDM's ``kl()``: ``(B,)``."""
        return 0.5 * (self.mean**2 + self.logvar.exp() - 1.0 - self.logvar).mean(dim=(1, 2, 3))


# ----------------------------------------------------------------------------- Vocos: frames, not samples
class ConvNeXtBlock(nn.Module):
    """ConvNeXt block (Liu et al. 2022) in 1D, as Vocos uses it: depthwise conv (k=7), LayerNorm,
    pointwise MLP with GELU, layer scale, skip. Shapes: ``(B, C, L) -> (B, C, L)``."""

    def __init__(self, dim: int, intermediate: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1, self.pwconv2 = nn.Linear(dim, intermediate), nn.Linear(intermediate, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(self.dwconv(x).transpose(1, 2))                # (B, L, C)
        h = self.gamma * self.pwconv2(F.gelu(self.pwconv1(h)))
        return x + h.transpose(1, 2)                                 # (B, C, L)


class ISTFTDecoder(nn.Module):
    """Vocos (Siuzdak 2023, "Closing the gap between time-domain and Fourier-based neural vocoders",
    arXiv:2306.00814): latents -> STFT frames -> samples by ``istft``. Shapes: ``(B, D, L) -> (B, 1, L * hop)``.

    Instead of building every sample with transposed convs, Vocos stays at the frame rate: an
    embedding (a conv, or a transposed conv giving ``upsample`` STFT frames per latent frame),
    ConvNeXt blocks and a linear head give each frame ``n_fft / 2 + 1`` log-magnitudes ``m`` and
    phases ``p``; ``S = exp(m) (cos p + i sin p)`` (cos and sin wrap the angle: no unwrapping) is
    overlap-added with a Hann window of ``n_fft = 4 * hop`` (75% overlap), hop = ``hop_length / upsample``.
    ``dim``, ``layers``: ConvNeXt width and depth (its MLP is ``3 * dim`` wide, as in Vocos).
    """

    def __init__(self, latent_dim: int, hop_length: int, dim: int = 128, layers: int = 8, upsample: int = 1) -> None:
        super().__init__()
        self.hop = hop_length // upsample
        self.n_fft = 4 * self.hop
        self.embed = (PaddedConv1d(latent_dim, dim, 7) if upsample == 1 else
                      PaddedConvTranspose1d(latent_dim, dim, upsample))
        self.norm = nn.LayerNorm(dim)
        self.blocks = nn.Sequential(*(ConvNeXtBlock(dim, 3 * dim, 1.0 / layers) for _ in range(layers)))
        self.final_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, self.n_fft + 2)                  # log-magnitude and phase of n_fft/2 + 1 bins

    def spectrum(self, z_q: Tensor) -> Tensor:
        """Latents (B, D, L) -> complex STFT frames (B, n_fft / 2 + 1, L * upsample)."""
        x = self.embed(z_q)                                          # (B, dim, L')
        x = self.blocks(self.norm(x.transpose(1, 2)).transpose(1, 2))
        h = self.head(self.final_norm(x.transpose(1, 2))).float()   # (B, L', n_fft + 2); the FFT stays in float32
        log_mag, phase = h.transpose(1, 2).chunk(2, dim=1)          # (B, F, L') each
        mag = log_mag.clamp(max=math.log(100.0)).exp()              # Vocos clips |S| at 1e2: no overflow early on
        return torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))

    def forward(self, z_q: Tensor) -> Tensor:
        spec = self.spectrum(z_q)                                    # (B, F, L')
        with torch.autocast(z_q.device.type, enabled=False):
            wav = istft(spec, self.n_fft, self.hop, length=spec.shape[-1] * self.hop)   # (B, T), frame l at l * hop
        return wav[:, None].to(z_q.dtype)                            # (B, 1, T)
