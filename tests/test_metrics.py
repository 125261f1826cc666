"""Tests for course_lib.metrics: values checked against closed forms and known constructions."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from course_lib.audio import AudioError
from course_lib.metrics import (frechet_distance, gaussian_stats, inception_score, log_spectral_distance,
                                multiscale_mel_distance, si_sdr, snr)

SR = 16000


def _speechlike(batch: int = 2, seconds: float = 0.5, seed: int = 0) -> torch.Tensor:
    """Harmonic tone with a syllable-rate envelope, (B, 1, T): enough structure for spectral metrics."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(SR * seconds)) / SR
    f0 = 120 + 80 * torch.rand(batch, 1, 1, generator=g)
    harmonics = sum(torch.sin(2 * math.pi * k * f0 * t) / k for k in range(1, 12))
    envelope = 0.5 * (1 - torch.cos(2 * math.pi * 4 * t)) + 0.05
    return 0.2 * harmonics * envelope  # (B, 1, T)


def _add_noise_at_snr(ref: torch.Tensor, snr_db: float, seed: int = 1) -> torch.Tensor:
    noise = torch.randn(ref.shape, generator=torch.Generator().manual_seed(seed))
    noise = noise - noise.mean(-1, keepdim=True)
    # Remove the part of the noise along ref so that SI-SDR and SNR both equal snr_db exactly.
    r = ref - ref.mean(-1, keepdim=True)
    noise = noise - (noise * r).sum(-1, keepdim=True) / r.square().sum(-1, keepdim=True) * r
    scale = (r.square().sum(-1, keepdim=True) / noise.square().sum(-1, keepdim=True) / 10 ** (snr_db / 10)).sqrt()
    return ref + scale * noise


# ----------------------------------------------------------------------------- SI-SDR / SNR


@pytest.mark.parametrize("shape", [(3, 1, 4000), (3, 4000), (2, 2, 4000)])
def test_si_sdr_scaled_copy_is_very_high(shape):
    ref = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    out = si_sdr(0.37 * ref, ref)
    assert out.shape == (shape[0],)
    assert (out > 80).all(), out


@pytest.mark.parametrize("target_db", [-5.0, 0.0, 10.0, 20.0])
def test_si_sdr_and_snr_at_known_level(target_db):
    ref = _speechlike(3)
    est = _add_noise_at_snr(ref, target_db)
    torch.testing.assert_close(si_sdr(est, ref), torch.full((3,), target_db), atol=0.5, rtol=0)
    torch.testing.assert_close(snr(est, ref), torch.full((3,), target_db), atol=0.5, rtol=0)


def test_si_sdr_is_scale_invariant_but_snr_is_not():
    ref = _speechlike(2)
    est = _add_noise_at_snr(ref, 10.0)
    torch.testing.assert_close(si_sdr(3 * est, ref), si_sdr(est, ref), atol=1e-4, rtol=0)
    assert (snr(3 * est, ref) < 0).all()  # 3x too loud: the error is twice the signal


def test_si_sdr_matches_textbook_formula():
    gen = torch.Generator().manual_seed(5)
    ref, est = torch.randn(1, 1000, generator=gen), torch.randn(1, 1000, generator=gen)
    r, e = (ref - ref.mean()).double(), (est - est.mean()).double()
    target = (e @ r.T) / (r @ r.T) * r
    expected = 10 * torch.log10(target.square().sum() / (e - target).square().sum())
    torch.testing.assert_close(si_sdr(est, ref).double(), expected.reshape(1), atol=1e-4, rtol=0)


def test_shape_mismatch_names_both_shapes_and_the_crop():
    with pytest.raises(AudioError) as info:
        multiscale_mel_distance(torch.zeros(1, 1, 4000), torch.zeros(1, 1, 4100))
    message = str(info.value)
    assert "(1, 1, 4000)" in message and "(1, 1, 4100)" in message and "est[..., :n]" in message


# ----------------------------------------------------------------------------- spectral distances


def test_mel_distance_zero_for_identical_and_grows_with_noise():
    ref = _speechlike(2)
    assert multiscale_mel_distance(ref, ref).shape == (2,)
    assert torch.equal(multiscale_mel_distance(ref, ref), torch.zeros(2))
    dists = [multiscale_mel_distance(_add_noise_at_snr(ref, db), ref).mean().item() for db in (30, 10, 0)]
    assert 0 < dists[0] < dists[1] < dists[2], dists


def test_mel_distance_white_noise_vs_speechlike_is_large():
    ref = _speechlike(2)
    noise = 0.1 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(2))
    assert (multiscale_mel_distance(noise, ref) > 10).all()


@pytest.mark.parametrize("sample_rate", [8000, 24000, 44100])
def test_mel_distance_other_sample_rates(sample_rate):
    ref = torch.randn(1, 1, sample_rate // 2, generator=torch.Generator().manual_seed(0)) * 0.1
    d = multiscale_mel_distance(ref + 0.01 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(1)),
                                ref, sample_rate=sample_rate)
    assert d.shape == (1,) and 0 < d.item() < 5


def test_lsd_zero_for_identical_and_grows_with_noise():
    ref = _speechlike(2)
    assert torch.equal(log_spectral_distance(ref, ref), torch.zeros(2))
    lsds = [log_spectral_distance(_add_noise_at_snr(ref, db), ref).mean().item() for db in (30, 10, 0)]
    assert 0 < lsds[0] < lsds[1] < lsds[2], lsds


def test_lsd_of_a_gain_is_the_gain_in_db():
    ref = 0.1 * torch.randn(1, 1, 8000, generator=torch.Generator().manual_seed(3))  # every bin above the floor
    # Doubling the amplitude raises every bin by 20 log10(2) = 6.02 dB, so LSD = 6.02 exactly.
    torch.testing.assert_close(log_spectral_distance(2 * ref, ref), torch.tensor([20 * math.log10(2)]),
                               atol=1e-3, rtol=0)


# ----------------------------------------------------------------------------- distributions


def test_frechet_identical_sets_is_zero():
    feats = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("shift", [0.5, 2.0])
def test_frechet_shifted_set_is_squared_mean_difference(shift):
    feats = np.random.default_rng(0).normal(size=(400, 8))
    delta = np.full(8, shift)
    assert frechet_distance(feats, feats + delta) == pytest.approx(float(delta @ delta), rel=1e-6)


def test_frechet_scaled_set_matches_closed_form():
    # b = 2a: Sigma_b = 4 Sigma_a and sqrt(Sigma_a Sigma_b) = 2 Sigma_a, so FD = |mu_a|^2 + Tr(Sigma_a).
    feats = np.random.default_rng(1).normal(loc=0.3, size=(500, 6)) @ np.diag([1.0, 2.0, 0.5, 1.0, 3.0, 1.0])
    mu, sigma = gaussian_stats(feats)
    assert frechet_distance(feats, 2 * feats) == pytest.approx(float(mu @ mu + np.trace(sigma)), rel=1e-6)


def test_frechet_singular_covariance_is_finite():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 32, generator=gen), torch.randn(5, 32, generator=gen)  # N < D: singular
    value = frechet_distance(a, b)
    assert math.isfinite(value) and value > 0


def test_gaussian_stats_matches_numpy():
    feats = np.random.default_rng(2).normal(size=(50, 4))
    mu, sigma = gaussian_stats(torch.from_numpy(feats))
    np.testing.assert_allclose(mu, feats.mean(0))
    np.testing.assert_allclose(sigma, np.cov(feats.T))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        gaussian_stats(np.zeros(4))


def test_inception_score_extremes():
    k = 5
    assert inception_score(torch.full((20, k), 1 / k)) == pytest.approx(1.0)  # no confidence
    one_hot = torch.eye(k).repeat(4, 1)  # confident and evenly spread
    assert inception_score(one_hot) == pytest.approx(k, rel=1e-6)
    assert inception_score(one_hot, splits=4) == pytest.approx(k, rel=1e-6)
    assert inception_score(torch.eye(k)[[0] * 20]) == pytest.approx(1.0)  # always the same class
    with pytest.raises(ValueError, match="softmax"):
        inception_score(torch.randn(10, k))
