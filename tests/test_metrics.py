"""Tests for course_lib.metrics: values checked against closed forms and known constructions."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from course_lib import metrics
from course_lib.audio import AudioError, resample
from course_lib.data import find_fsdd
from course_lib.metrics import (frechet_distance, gaussian_stats, inception_score, log_spectral_distance,
                                multiscale_mel_distance, pesq_wb, si_sdr, snr, stoi)

pesq = pytest.importorskip("pesq")   # wideband PESQ builds C code; without it these tests cannot run

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


# ----------------------------------------------------------------------------- refusing silence, emptiness, NaN


@pytest.mark.parametrize("fn", [si_sdr, snr])
def test_silent_reference_is_refused(fn):
    ref, est = torch.zeros(2, 1, 4000), _speechlike(2)[..., :4000]
    ref[0] = est[0]  # clip 0 is fine, clip 1 is silent: the message names it
    with pytest.raises(AudioError, match=r"ref.* is silent in clip 1.*keep = ref.abs\(\).amax\(-1\) > 1e-8"):
        fn(est, ref)


def test_si_sdr_refuses_silent_or_constant_estimate_and_constant_reference():
    ref = _speechlike(1)
    # Before: a silent estimate scored 0 dB, better than any estimate with noise below 0 dB SNR.
    with pytest.raises(AudioError, match="est .*silent.*0/0.*snr"):
        si_sdr(torch.zeros_like(ref), ref)
    with pytest.raises(AudioError, match="est .*silent"):
        si_sdr(torch.full_like(ref, 0.3), ref)   # a constant is silent once the mean is removed
    with pytest.raises(AudioError, match="ref .*silent"):
        si_sdr(ref, torch.full_like(ref, 0.3))


def test_si_sdr_refuses_one_silent_channel_and_names_it():
    ref = _speechlike(1).repeat(1, 2, 1)  # (1, 2, T)
    ref[:, 1] = 0
    with pytest.raises(AudioError, match="clip 0, channel 1"):
        si_sdr(ref.clone(), ref)


def test_snr_allows_a_silent_estimate_and_one_silent_channel():
    ref = _speechlike(2)
    torch.testing.assert_close(snr(torch.zeros_like(ref), ref), torch.zeros(2))  # the error is the whole signal
    est = _add_noise_at_snr(ref, 10.0)
    silent = torch.zeros_like(ref)
    # (2, 2, T) with a silent right channel: SNR pools the channels, so the left one decides.
    torch.testing.assert_close(snr(torch.cat([est, silent], 1), torch.cat([ref, silent], 1)), torch.full((2,), 10.0),
                               atol=0.5, rtol=0)


@pytest.mark.parametrize("fn", [si_sdr, snr, multiscale_mel_distance, log_spectral_distance, pesq_wb, stoi])
def test_empty_and_nan_inputs_are_refused(fn):
    kw = {"sample_rate": SR} if fn in (pesq_wb, stoi) else {}
    with pytest.raises(AudioError, match="empty.*nothing to measure"):
        fn(torch.zeros(1, 1, 0), torch.zeros(1, 1, 0), **kw)
    ref = _speechlike(1, seconds=1.0)
    est = ref.clone()
    est[0, 0, 100] = float("nan")
    with pytest.raises(AudioError, match=r"est contains 1 NaN or inf.*torch.nan_to_num\(est\)"):
        fn(est, ref, **kw)


@pytest.mark.parametrize("fn", [multiscale_mel_distance, log_spectral_distance])
def test_spectral_distances_keep_silence_meaningful(fn):
    ref = _speechlike(1)
    silence = torch.zeros_like(ref)
    assert float(fn(silence, silence)) == 0.0      # identical
    assert float(fn(silence, ref)) > 10            # far from speech: not a flattering number


def test_mel_distance_too_short_states_the_minimum():
    with pytest.raises(AudioError, match="at least 1025 samples at 16000 Hz"):
        multiscale_mel_distance(torch.randn(1, 1000), torch.randn(1, 1000))


def test_inception_score_refuses_nan_and_empty():
    with pytest.raises(ValueError, match="NaN"):
        inception_score(torch.full((4, 3), float("nan")))
    with pytest.raises(ValueError, match="non-empty"):
        inception_score(torch.zeros(0, 3))


# ----------------------------------------------------------------------------- PESQ and STOI


def _noisy(ref: torch.Tensor, snr_db: float, seed: int = 0) -> torch.Tensor:
    noise = torch.randn(ref.shape, generator=torch.Generator().manual_seed(seed))
    return ref + noise * ref.norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True) * 10 ** (-snr_db / 20)


def test_pesq_and_stoi_of_identical_signals_are_the_maximum():
    ref = _speechlike(2, seconds=1.0)  # (2, 1, T)
    torch.testing.assert_close(pesq_wb(ref, ref, SR), torch.full((2,), 4.644), atol=0.01, rtol=0)
    torch.testing.assert_close(stoi(ref, ref, SR), torch.ones(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(stoi(ref, ref, SR, extended=True), torch.ones(2), atol=1e-4, rtol=0)


def test_pesq_and_stoi_of_noise_against_speech_are_at_the_floor():
    ref = _speechlike(2, seconds=1.0)
    noise = 0.1 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(2))
    assert (pesq_wb(noise, ref, SR) < 1.2).all()                   # measured 1.02
    assert (stoi(noise, ref, SR) < 0.35).all()                     # measured 0.19 and 0.24
    assert (stoi(noise, ref, SR, extended=True).abs() < 0.1).all()  # measured -0.01 and -0.03


@pytest.mark.parametrize("shape", [(16000,), (1, 16000), (3, 1, 16000)])
def test_pesq_and_stoi_shapes_and_batch_equals_one_by_one(shape):
    ref = _speechlike(3, seconds=1.0).reshape(-1, 16000)[: math.prod(shape[:-1])].reshape(shape)
    est = _noisy(ref, 20.0)
    for fn in (pesq_wb, stoi):
        out = fn(est, ref, SR)
        assert out.shape == (math.prod(shape[:-1]),) and out.dtype == torch.float32
        if len(shape) == 3:
            torch.testing.assert_close(out, torch.cat([fn(est[b], ref[b], SR) for b in range(3)]))


def test_pesq_and_stoi_fall_with_noise_on_real_speech():
    root = find_fsdd()
    if root is None:
        pytest.skip("FSDD not found (set COURSE_DATA_DIR or put it in ../shared/data/fsdd)")
    wav, sr = sf.read(root / "recordings" / "3_jackson_0.wav", dtype="float32")  # 8 kHz, 0.49 s
    ref = resample(torch.from_numpy(wav)[None, None], sr, SR)  # (1, 1, T) at 16 kHz
    snrs = (40, 30, 20, 10, 0)
    est = torch.cat([_noisy(ref, db) for db in snrs])  # (5, 1, T): one batch, one SNR per clip
    ref = ref.expand_as(est)
    p, s, es = pesq_wb(est, ref, SR).tolist(), stoi(est, ref, SR).tolist(), stoi(est, ref, SR, extended=True).tolist()
    for scores in (p, s, es):
        assert all(a > b for a, b in zip(scores, scores[1:])), scores
    assert p[0] > 2.5 and p[-1] < 1.5, p      # measured 3.12 at 40 dB, 1.02 at 0 dB
    assert s[0] > 0.95 and s[-1] < 0.7, s     # measured 1.00 and 0.55


def test_pesq_needs_16_khz_and_names_the_resample():
    x = _speechlike(1, seconds=1.0)
    with pytest.raises(AudioError, match=r"16 kHz only, got 8000 Hz.*course_lib.audio.resample\(wav, 8000, 16000\)"):
        pesq_wb(x, x, 8000)


@pytest.mark.parametrize("fn, minimum", [(pesq_wb, 4000), (stoi, 6554)])
def test_too_short_clips_state_the_minimum(fn, minimum):
    x = _speechlike(1, seconds=1.0)
    fn(x[..., :minimum], x[..., :minimum], SR)  # exactly the minimum works
    with pytest.raises(AudioError, match=f"at least {minimum} samples"):
        fn(x[..., : minimum - 1], x[..., : minimum - 1], SR)


def test_stoi_refuses_too_little_speech_after_removing_silence():
    x = _speechlike(1, seconds=1.0)
    x[..., 4000:] = 0  # 0.25 s of sound in a 1 s clip: pystoi would return 1e-5 with a warning
    with pytest.raises(AudioError, match="less than 30 frames.*Score longer clips"):
        stoi(x, x, SR)


@pytest.mark.parametrize("fn", [pesq_wb, stoi])
def test_pesq_and_stoi_refuse_different_lengths_stereo_and_silent_reference(fn):
    x = _speechlike(2, seconds=1.0)  # (2, 1, T)
    with pytest.raises(AudioError, match=r"same shape.*est\[..., :n\]"):
        fn(x[..., :-10], x, SR)
    with pytest.raises(AudioError, match="mono.*to_mono"):
        fn(x[:, 0], x[:, 0], SR)  # (2, T): stereo or a batch? refused
    with pytest.raises(AudioError, match="to_mono"):
        fn(x.reshape(1, 2, -1), x.reshape(1, 2, -1), SR)
    silent = x.clone()
    silent[1] = 0
    with pytest.raises(AudioError, match="ref is silent in clip 1.*Leave silent clips out"):
        fn(x, silent, SR)


def test_silent_estimate_pesq_refuses_and_stoi_scores_zero():
    x = _speechlike(1, seconds=1.0)
    with pytest.raises(AudioError, match="est is silent.*count it as one"):
        pesq_wb(torch.zeros_like(x), x, SR)  # the C code would fail with a NaN
    assert float(stoi(torch.zeros_like(x), x, SR)) == 0.0


@pytest.mark.parametrize("error", [pesq.NoUtterancesError(b"No utterances detected"),
                                   ValueError("cannot convert float NaN to integer")])
def test_pesq_c_errors_are_re_raised_clearly(monkeypatch, error):
    def failing(*args, **kwargs):
        raise error
    monkeypatch.setattr(pesq, "pesq", failing)
    x = _speechlike(1, seconds=1.0)
    with pytest.raises(AudioError, match="clip 0") as info:
        pesq_wb(x, x, SR)
    assert "b'" not in str(info.value) and info.value.__cause__ is error
    if isinstance(error, pesq.NoUtterancesError):
        assert "no utterance" in str(info.value) and "leave it out" in str(info.value)


def test_missing_pesq_package_names_the_install_and_leaves_the_rest(monkeypatch):
    monkeypatch.setitem(sys.modules, "pesq", None)   # as if not installed: import raises ImportError
    x = _speechlike(1, seconds=1.0)
    with pytest.raises(ImportError, match=r"pesq_wb needs the package `pesq`.*pip install pesq.*every other measure"):
        pesq_wb(x, x, SR)
    assert float(stoi(x, x, SR)) > 0.99


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
