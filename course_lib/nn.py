"""Small shared building blocks for the course's 1D convolutional models.

Everything here is used by more than one model (WaveGAN, the codec, Jukebox's VQ-VAE)
and by notebook 01, which measures each claim:

- :class:`CausalConv1d`: a Conv1d padded on the left only, so ``y[t]`` depends on ``x[:t+1]``.
- :func:`same_padding`: the symmetric padding that keeps the length of a stride-1 conv.
- :func:`receptive_field`: the analytic receptive field of a conv stack.
- :func:`measured_receptive_field`: the same number, measured with gradients.
- :class:`ResidualUnit`: the dilated residual unit of SEANet / SoundStream / EnCodec.

Shapes follow the package legend: B batch, C channels, T samples.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CausalConv1d", "same_padding", "conv_output_length", "receptive_field",
           "measured_receptive_field", "ResidualUnit"]


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


class ResidualUnit(nn.Module):
    """SEANet's residual unit (SoundStream, EnCodec, DAC): ELU, dilated conv k=7, ELU, conv k=1, skip.

    Dilations 1, 3, 9 in three consecutive units grow the receptive field to
    ``1 + 6 * (1 + 3 + 9) = 79`` samples at no extra cost per layer.

    Shapes: ``(B, C, T) -> (B, C, T)``.
    """

    def __init__(self, channels: int, dilation: int = 1, kernel_size: int = 7, causal: bool = False):
        super().__init__()
        if causal:
            conv = CausalConv1d(channels, channels, kernel_size, dilation=dilation)
        else:
            conv = nn.Conv1d(channels, channels, kernel_size, dilation=dilation,
                             padding=same_padding(kernel_size, dilation))
        self.block = nn.Sequential(nn.ELU(), conv, nn.ELU(), nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)                                      # (B, C, T)
