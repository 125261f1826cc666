"""Tests for course_lib.nn: causality, receptive fields, padding, and agreement with numpy/scipy."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.nn import (CausalConv1d, ResidualUnit, conv_output_length, measured_receptive_field,
                           receptive_field, same_padding)


def _stack(kernels, strides=None, dilations=None, causal=False, act=True) -> nn.Sequential:
    """A plain conv stack (no padding, or causal padding), with ELU in between."""
    n = len(kernels)
    strides = strides or [1] * n
    dilations = dilations or [1] * n
    layers: list[nn.Module] = []
    for i, (k, s, d) in enumerate(zip(kernels, strides, dilations)):
        conv_cls = CausalConv1d if causal else nn.Conv1d
        layers.append(conv_cls(1 if i == 0 else 4, 4, k, stride=s, dilation=d))
        if act:
            layers.append(nn.ELU())
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------- convolution = filtering

@pytest.mark.parametrize("kernel", [[1.0, -1.0], [0.25, 0.5, 0.25], [0.1, -0.3, 0.7, 0.2, -0.05]])
def test_conv1d_is_flipped_numpy_convolution(kernel):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, generator=g, dtype=torch.float64)
    w = torch.tensor(kernel, dtype=torch.float64)
    # torch computes cross-correlation: y[t] = sum_j w[j] x[t + j]; convolution flips the kernel.
    y_torch = F.conv1d(x.view(1, 1, -1), w.view(1, 1, -1)).flatten().numpy()
    y_np = np.convolve(x.numpy(), w.flip(0).numpy(), mode="valid")
    y_sp = scipy.signal.correlate(x.numpy(), w.numpy(), mode="valid")
    np.testing.assert_allclose(y_torch, y_np, atol=1e-12)
    np.testing.assert_allclose(y_torch, y_sp, atol=1e-12)
    if len(kernel) > 2 and kernel != kernel[::-1]:   # an asymmetric kernel: without the flip it differs
        assert not np.allclose(y_torch, np.convolve(x.numpy(), w.numpy(), mode="valid"))


def test_conv1d_equals_scipy_lfilter_fir():
    """A causal conv with kernel h (flipped into torch's weight) is the FIR filter lfilter(h, 1, x)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, generator=g, dtype=torch.float64)
    h = np.array([0.5, 0.3, -0.2, 0.1])
    conv = CausalConv1d(1, 1, 4, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(h[::-1].copy()).view(1, 1, -1))
        y = conv(x.view(1, 1, -1)).flatten().numpy()
    np.testing.assert_allclose(y, scipy.signal.lfilter(h, [1.0], x.numpy()), atol=1e-12)


# ----------------------------------------------------------------------------- shapes and padding

@pytest.mark.parametrize("k,d", [(3, 1), (3, 4), (7, 3), (4, 2), (5, 1)])
def test_same_padding_keeps_length(k, d):
    conv = nn.Conv1d(2, 3, k, dilation=d, padding=same_padding(k, d))
    assert conv(torch.zeros(2, 2, 101)).shape == (2, 3, 101)


def test_same_padding_rejects_uneven():
    with pytest.raises(ValueError, match="odd kernel_size"):
        same_padding(4, 1)


@pytest.mark.parametrize("k,s,d,t", [(3, 1, 1, 50), (4, 2, 1, 51), (7, 3, 2, 100), (5, 4, 3, 64)])
def test_causal_conv_shapes_and_formula(k, s, d, t):
    conv = CausalConv1d(2, 5, k, stride=s, dilation=d)
    y = conv(torch.zeros(3, 2, t))
    assert y.shape == (3, 5, -(-t // s))                       # ceil(T / stride)
    plain = nn.Conv1d(2, 5, k, stride=s, dilation=d, padding=2)
    assert plain(torch.zeros(1, 2, t)).shape[-1] == conv_output_length(t, k, s, 2, d)


def test_strided_and_transposed_shapes():
    x = torch.zeros(1, 1, 1600)
    down = nn.Conv1d(1, 8, kernel_size=8, stride=4, padding=2)
    up = nn.ConvTranspose1d(8, 1, kernel_size=8, stride=4, padding=2)
    assert down(x).shape == (1, 8, 400)
    assert up(down(x)).shape == (1, 1, 1600)


# ----------------------------------------------------------------------------- causality

@pytest.mark.parametrize("k,d,s", [(2, 1, 1), (3, 4, 1), (7, 9, 1), (4, 1, 2)])
def test_causal_conv_ignores_the_future(k, d, s):
    torch.manual_seed(0)
    conv = CausalConv1d(2, 3, k, stride=s, dilation=d)
    t = (k - 1) * d + 5                                        # far enough from the start to see all taps
    x = torch.randn(1, 2, 2 * t * s, requires_grad=True)
    y = conv(x)
    y[0, :, t].sum().backward()
    grad = x.grad[0].abs().sum(0)                              # (T,)
    t_in = t * s                                               # input time of output sample t
    assert grad[t_in + 1:].eq(0).all(), "the output looked into the future"
    assert grad[t_in] > 0, "the present sample must matter"
    assert grad[: t_in + 1].ne(0).sum() == k                   # exactly k taps in the past


def test_causal_stack_and_residual_unit_are_causal():
    torch.manual_seed(0)
    net = nn.Sequential(CausalConv1d(1, 4, 3), ResidualUnit(4, 3, causal=True), ResidualUnit(4, 9, causal=True))
    x = torch.randn(1, 1, 300)
    y = net(x)
    x2 = x.clone()
    x2[..., 150:] = torch.randn(1, 1, 150)                     # change only the future of t = 149
    torch.testing.assert_close(net(x2)[..., :150], y[..., :150])
    assert not torch.allclose(net(x2)[..., 150:], y[..., 150:])


# ----------------------------------------------------------------------------- receptive field

STACKS = [
    ([3], None, None),
    ([3, 3, 3, 3], None, None),
    ([3, 3, 3, 3, 3], None, [1, 2, 4, 8, 16]),
    ([2] * 6, None, [1, 2, 4, 8, 16, 32]),                      # WaveNet-style k=2
    ([4, 4, 4], [2, 2, 2], None),
    ([7, 8, 8], [1, 4, 4], [1, 1, 1]),
    ([5, 3, 3], [2, 1, 3], [1, 3, 2]),
]


@pytest.mark.parametrize("kernels,strides,dilations", STACKS)
@pytest.mark.parametrize("causal", [False, True])
def test_analytic_receptive_field_equals_measured(kernels, strides, dilations, causal):
    torch.manual_seed(0)
    net = _stack(kernels, strides, dilations, causal=causal)
    expected = receptive_field(kernels, strides, dilations)
    g = torch.Generator().manual_seed(0)
    assert measured_receptive_field(net, 4 * expected + 64, generator=g) == expected


def test_receptive_field_closed_forms():
    assert receptive_field([3] * 10) == 21                       # grows linearly without dilation
    assert receptive_field([3] * 10, dilations=[2 ** i for i in range(10)]) == 2 ** 11 - 1   # exponentially with
    assert receptive_field([2] * 10, dilations=[2 ** i for i in range(10)]) == 2 ** 10       # WaveNet block: 1024
    with pytest.raises(ValueError, match="one entry per layer"):
        receptive_field([3, 3], strides=[1])


def test_residual_units_receptive_field():
    torch.manual_seed(0)
    net = nn.Sequential(*[ResidualUnit(4, d) for d in (1, 3, 9)])
    assert measured_receptive_field(net, 400, in_channels=4) == receptive_field([7, 7, 7], dilations=[1, 3, 9]) == 79


def test_measured_receptive_field_restores_mode_and_rejects_short_input():
    net = nn.Sequential(nn.Conv1d(1, 2, 5), nn.BatchNorm1d(2), nn.Conv1d(2, 1, 5)).train()
    assert measured_receptive_field(net, 64) == 9                # eval mode inside: BatchNorm does not couple time
    assert net.training
    with pytest.raises(ValueError, match="larger length"):
        measured_receptive_field(nn.Conv1d(1, 1, 31, padding=15), 20)


def test_residual_unit_shapes_and_gradients():
    unit = ResidualUnit(8, dilation=3)
    x = torch.randn(2, 8, 100, requires_grad=True)
    y = unit(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in unit.parameters())
