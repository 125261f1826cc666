"""Tests of course_lib.baselines: classic codecs and the bitrates they report."""
from __future__ import annotations

import math

import pytest
import torch

from course_lib import baselines
from course_lib.metrics import multiscale_mel_distance, snr


def _speechlike(seconds: float = 1.0, sr: int = 16_000) -> torch.Tensor:
    """(1, T) a gliding harmonic tone with a syllable envelope."""
    t = torch.arange(int(seconds * sr)) / sr
    f0 = 120 + 40 * torch.sin(2 * math.pi * 1.5 * t)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / sr
    x = sum(torch.sin(k * phase) / k for k in range(1, 12))
    return (0.3 * x * torch.sin(math.pi * 3 * t).abs())[None]


def test_pcm_bitrate_and_error() -> None:
    x = _speechlike()
    res = baselines.pcm(x, 16_000, 8)
    assert res.bitrate == 128_000
    assert (res.audio - x).abs().max() <= 1 / 256 + 1e-6      # half a step of 2 / 2**8
    assert float(snr(baselines.pcm(x, 16_000, 12).audio, x)) > float(snr(res.audio, x)) + 20


def test_mu_law_beats_linear_pcm_on_quiet_audio() -> None:
    quiet = 0.02 * _speechlike()
    mu, lin = baselines.mu_law(quiet, 16_000, 8), baselines.pcm(quiet, 16_000, 8)
    assert mu.bitrate == lin.bitrate == 128_000
    assert float(snr(mu.audio, quiet)) > float(snr(lin.audio, quiet)) + 6


def test_downsample_keeps_shape_and_loses_highs() -> None:
    x = _speechlike()
    res = baselines.downsample(x, 16_000, 4000)
    assert res.audio.shape == x.shape and res.bitrate == 16 * 4000
    spec = torch.fft.rfft(res.audio[0]).abs()
    assert spec[2200:].max() < 0.01 * spec.max()             # nothing above 2.2 kHz (bin = 1 Hz)


@pytest.mark.parametrize("kbps", [6, 16])
def test_opus_round_trip(kbps: int) -> None:
    x = _speechlike(2.0)
    res = baselines.opus(x, 16_000, kbps * 1000)
    assert res.audio.shape == x.shape and res.audio.dtype == x.dtype
    assert 0.6 * kbps * 1000 < res.bitrate < 1.3 * kbps * 1000, res.bitrate
    assert res.header_bits > 0
    assert float(multiscale_mel_distance(res.audio[None], x[None])[0]) < 6.0
    # Opus keeps the timing: the decoded signal lines up with the input (no pre-skip offset).
    lags = [float((res.audio[0, 2000 + k: 30000 + k] * x[0, 2000:30000]).sum()) for k in range(-50, 51)]
    assert abs(max(range(101), key=lags.__getitem__) - 50) <= 2   # samples


def test_opus_more_bits_sound_closer() -> None:
    x = _speechlike(2.0)
    low = multiscale_mel_distance(baselines.opus(x, 16_000, 6000).audio[None], x[None])
    high = multiscale_mel_distance(baselines.opus(x, 16_000, 32_000).audio[None], x[None])
    assert float(high) < float(low)


def test_opus_batch_and_bad_input() -> None:
    x = torch.cat([_speechlike(0.5)[None], 0.5 * _speechlike(0.5)[None]])    # (2, 1, T)
    assert baselines.opus(x, 16_000).audio.shape == x.shape
    with pytest.raises(ValueError, match="resample"):
        baselines.opus(x, 22_050)
    with pytest.raises(ValueError, match="6000"):
        baselines.opus(x, 16_000, bitrate=3000)
    with pytest.raises(ValueError, match="mono"):
        baselines.opus(torch.randn(2, 8000) * 0.1, 16_000)
    with pytest.raises(ValueError, match="NaN"):
        baselines.pcm(torch.full((1, 100), float("nan")), 16_000, 8)
