"""Tests for course_lib.spectral: agreement with torch/librosa/torchaudio and with the values of the course's
former hand-written implementation, Griffin-Lim, the MR-STFT loss."""
from __future__ import annotations

import math

import librosa
import numpy as np
import pytest
import torch
import torchaudio.functional as AF

from course_lib.audio import AudioError
from course_lib.spectral import (MelSpectrogram, MultiResolutionSTFTLoss, amplitude_to_db, griffin_lim,
                                 log_mel_spectrogram, magnitude_spectrogram, mel_spectrogram, mel_to_audio,
                                 spectral_convergence, stft)

SR = 16000


def _noise(*shape: int, seed: int = 0) -> torch.Tensor:
    return 0.3 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _sine(freq: float = 440.0, seconds: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(SR * seconds)) / SR
    return 0.5 * torch.sin(2 * math.pi * freq * t)  # (T,)


@pytest.mark.parametrize("shape", [(4000,), (2, 4000), (3, 2, 4000)])
def test_stft_keeps_leading_dims_and_matches_torch(shape):
    wav = _noise(*shape)
    spec = stft(wav, n_fft=512, hop_length=128)
    assert spec.is_complex() and spec.shape == (*shape[:-1], 257, 1 + 4000 // 128)
    ref = torch.stft(wav.reshape(-1, 4000), 512, 128, window=torch.hann_window(512), return_complex=True)
    torch.testing.assert_close(spec.reshape(-1, *spec.shape[-2:]), ref)


@pytest.mark.parametrize("n_fft, hop, win", [(1024, 256, None), (512, 160, 400)])
def test_stft_matches_librosa(n_fft, hop, win):
    wav = _noise(5000)
    ours = stft(wav, n_fft, hop, win).numpy()
    theirs = librosa.stft(wav.numpy(), n_fft=n_fft, hop_length=hop, win_length=win, pad_mode="reflect")
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)


def test_stft_errors():
    with pytest.raises(AudioError, match="too short"):
        stft(torch.zeros(100), n_fft=1024)
    with pytest.raises(AudioError, match="too short"):
        stft(torch.zeros(1000), n_fft=1024, center=False)
    with pytest.raises(AudioError, match=r"\.float\(\)"):
        stft(torch.zeros(4000, dtype=torch.int16))


@pytest.mark.parametrize("power", [1.0, 2.0])
@pytest.mark.parametrize("n_fft, hop, n_mels, f_min, f_max", [(1024, 256, 80, 0.0, None), (512, 128, 64, 50.0, 7000.0)])
def test_mel_matches_librosa(power, n_fft, hop, n_mels, f_min, f_max):
    wav = _noise(2, 8000)
    ours = mel_spectrogram(wav, SR, n_fft, hop, n_mels, f_min, f_max, power=power)
    theirs = librosa.feature.melspectrogram(y=wav.numpy(), sr=SR, n_fft=n_fft, hop_length=hop, n_mels=n_mels,
                                            fmin=f_min, fmax=f_max, power=power, center=True, pad_mode="reflect")
    assert ours.shape == theirs.shape == (2, n_mels, 1 + 8000 // hop)
    torch.testing.assert_close(ours, torch.from_numpy(theirs), rtol=1e-4, atol=1e-5 * float(np.abs(theirs).max()))


def test_mel_module_equals_functional_and_moves_buffer():
    module = MelSpectrogram(SR, n_fft=512, hop_length=128, n_mels=40, power=2.0)
    assert "filterbank" in dict(module.named_buffers())
    assert not module.state_dict()  # nothing stored: checkpoints holding it (CLAP) keep their keys
    wav = _noise(2, 1, 4000)
    out = module(wav)
    assert out.shape == (2, 1, 40, 32)
    torch.testing.assert_close(out, mel_spectrogram(wav, SR, 512, 128, 40, power=2.0))
    module64 = module.to(torch.float64)
    assert module64.filterbank.dtype == torch.float64
    torch.testing.assert_close(module64(wav.double()).float(), out, rtol=1e-4, atol=1e-5)


def test_log_mel_and_db():
    wav = _noise(4000)
    log_mel = log_mel_spectrogram(wav, SR, n_fft=512, hop_length=128, n_mels=40)
    torch.testing.assert_close(log_mel, torch.log(mel_spectrogram(wav, SR, 512, 128, 40).clamp_min(1e-5)))
    power = magnitude_spectrogram(wav, 512, 128, power=2.0)
    np.testing.assert_allclose(amplitude_to_db(power, power=True).numpy(),
                               librosa.power_to_db(power.numpy(), ref=1.0, top_db=80.0), atol=1e-3)
    mag = power.sqrt()
    np.testing.assert_allclose(amplitude_to_db(mag, power=False, top_db=None).numpy(),
                               librosa.amplitude_to_db(mag.numpy(), ref=1.0, top_db=None), atol=1e-3)


# ----------------------------------------------------------------------------- same numbers as before torchaudio

# Values computed with the course's own implementation before it moved to torchaudio calls (course_lib/spectral.py
# at commit 6e6aab1), in float64 so the tolerance can be tight. They pin the conventions that torchaudio's defaults
# do not share: reflect padding, Slaney mel scale and norm, a dB floor per (F, L) map, Griffin-Lim's seeded phase.
_PINNED = {
    "stft": [(-0.5178335712283355 - 2.5396351688300456e-15j), (-0.3642787657636575 - 26.17560592036675j),
             (-0.6324477424858248 - 32.20950119734299j)],
    "stft_edge": [(0.004943658014451093 - 7.37257477290143e-18j), (0.011836396850167128 - 0.009864626964989487j)],
    "mel": [0.009977587671067179, 0.20903062622591734, 0.010672207821603264],
    "mel_band": [5.058187173617385e-06, 1.4976290084924102e-06, 1.8224504273098417e-06],
    "db": [29.8403402537163, 10.396997030155795, -10.237915900935642, -29.602399129339435,
           29.8403402537163, 5.124647752113384, -10.237915900935642, -37.64712730151598],
    "griffin_lim": [0.6292611786511165, 0.35142235089823803, -0.6083775914484745],
    "mel_to_audio": [0.6205728538355157, 0.252174723890535, 0.32404438244736855],
    "mrstft": [0.00020987403233410003],
}


def _pinned_output(name: str) -> torch.Tensor:
    t = torch.arange(2048, dtype=torch.float64) / SR
    g = torch.Generator().manual_seed(0)
    x = 0.5 * torch.sin(2 * math.pi * 1000 * t) + 0.1 * torch.randn(2048, generator=g, dtype=torch.float64)
    x = torch.stack([x, 0.01 * x.flip(-1)])  # (2, T): the second clip is 40 dB quieter
    mag = magnitude_spectrogram(x, 256, 64)  # (2, F, L)
    seeded = {"generator": torch.Generator().manual_seed(0), "n_iter": 4}
    if name == "stft":
        return stft(x, 256, 64)[0, 16, [0, 1, 16]]  # 1 kHz bin; frames 0 and 1 lie in the reflected padding
    if name == "stft_edge":
        return stft(x, 256, 64, win_length=200)[1, 100, [0, 32]]
    if name == "mel":
        return mel_spectrogram(x, SR, 256, 64, n_mels=16)[0, [2, 5, 9], 10]
    if name == "mel_band":
        return mel_spectrogram(x, SR, 256, 64, n_mels=16, f_min=300.0, f_max=5000.0, power=2.0)[1, [0, 7, 15], 3]
    if name == "db":  # with one floor for both clips (torchaudio's default for (C, F, L)) the quiet clip would differ
        db = torch.stack([amplitude_to_db(mag, top_db=20.0), amplitude_to_db(mag**2, power=True)])  # (2, 2, F, L)
        return db[..., [16, 100], 5].flatten()
    if name == "griffin_lim":
        return griffin_lim(mag[0], 256, 64, length=2048, **seeded)[[100, 1000, 2000]]
    if name == "mel_to_audio":
        return mel_to_audio(mel_spectrogram(x[0], SR, 256, 64, n_mels=40), SR, 256, 64, **seeded)[[100, 1000, 1900]]
    if name == "mrstft":
        loss_fn = MultiResolutionSTFTLoss((128, 256), (32, 64), (128, 200))
        return loss_fn(x[None, :1] + 0.01 * x[None, 1:], x[None, :1]).reshape(1)
    raise KeyError(name)


@pytest.mark.parametrize("name", list(_PINNED))
def test_same_numbers_as_the_former_implementation(name):
    out = _pinned_output(name)
    torch.testing.assert_close(out, torch.tensor(_PINNED[name], dtype=out.dtype), rtol=1e-7, atol=1e-12)


# ----------------------------------------------------------------------------- Griffin-Lim


def test_griffin_lim_matches_torchaudio_from_zero_phase():
    mag = stft(_noise(4000), 512, 128).abs()
    ours = griffin_lim(mag, 512, 128, n_iter=8, momentum=0.99, rand_init=False)
    theirs = AF.griffinlim(mag, torch.hann_window(512), 512, 128, 512, power=1.0, n_iter=8, momentum=0.99,
                           length=None, rand_init=False)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_griffin_lim_reconstructs_a_sine_deterministically():
    wav = _sine(440.0)
    mag = stft(wav, 512, 128).abs()  # (F, L)

    def run(n_iter: int, seed: int) -> torch.Tensor:
        return griffin_lim(mag, 512, 128, n_iter=n_iter, generator=torch.Generator().manual_seed(seed),
                           length=wav.shape[-1])

    def sc(out: torch.Tensor) -> float:
        return spectral_convergence(stft(out, 512, 128).abs(), mag).item()

    out = run(32, 0)
    assert out.shape == wav.shape
    assert torch.equal(out, run(32, 0)) and not torch.equal(out, run(32, 1))
    # Random phase alone is far off (about 0.65); the iterations bring the magnitude back.
    # Measured for seeds 0-4 at 32 iterations: 0.06-0.14 (edges and random start limit it).
    assert sc(run(0, 0)) > 0.5
    assert sc(run(8, 0)) > sc(out)
    assert sc(out) < 0.15


def test_griffin_lim_batched_shapes():
    mag = stft(_noise(2, 1, 3000), 256, 64).abs()
    assert griffin_lim(mag, 256, 64, n_iter=2).shape == (2, 1, 64 * (mag.shape[-1] - 1))


def test_mel_to_audio_recovers_the_mel():
    wav = _sine(440.0) + _sine(1250.0)
    mel = mel_spectrogram(wav, SR, n_fft=512, hop_length=128, n_mels=80)
    out = mel_to_audio(mel, SR, n_fft=512, hop_length=128, n_iter=32, generator=torch.Generator().manual_seed(0),
                       length=wav.shape[-1])
    assert out.shape == wav.shape
    mel_out = mel_spectrogram(out, SR, n_fft=512, hop_length=128, n_mels=80)
    assert spectral_convergence(mel_out, mel) < 0.2


# ----------------------------------------------------------------------------- MR-STFT loss


def test_mrstft_loss_zero_for_identical_and_grows_with_noise():
    loss_fn = MultiResolutionSTFTLoss()
    ref = _sine(300.0, seconds=0.5).reshape(1, 1, -1).repeat(2, 1, 1) + 0.01 * _noise(2, 1, 8000, seed=1)
    assert loss_fn(ref, ref).item() == 0.0
    losses = [loss_fn(ref + level * _noise(2, 1, 8000, seed=2), ref).item() for level in (0.01, 0.1, 1.0)]
    assert losses[0] < losses[1] < losses[2], losses


def test_mrstft_loss_gradient_flows_and_decreases():
    loss_fn = MultiResolutionSTFTLoss(fft_sizes=(256, 512), hop_sizes=(64, 128), win_lengths=(256, 400))
    ref = (_sine(500.0, seconds=0.25) + 0.05 * _noise(4000, seed=3) / 0.3).reshape(1, 1, -1)
    est = _noise(1, 1, 4000, seed=4).requires_grad_(True)
    opt = torch.optim.Adam([est], lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn(est, ref)
        loss.backward()
        assert est.grad is not None and torch.isfinite(est.grad).all() and est.grad.abs().sum() > 0
        losses.append(loss.item())
        opt.step()
    assert losses[-1] < 0.8 * losses[0], losses  # measured: 2.98 -> 1.95


def test_mrstft_loss_shape_mismatch():
    with pytest.raises(AudioError, match=r"est\[\.\.\., :ref\.shape\[-1\]\]"):
        MultiResolutionSTFTLoss()(torch.zeros(1, 1, 4000), torch.zeros(1, 1, 4100))


def test_outputs_follow_input_dtype():
    wav = _noise(2, 4000).double()
    assert stft(wav, 512, 128).dtype == torch.complex128
    assert mel_spectrogram(wav, SR, 512, 128, 40).dtype == torch.float64
    mag = stft(wav, 512, 128).abs()
    assert griffin_lim(mag, 512, 128, n_iter=1, generator=torch.Generator().manual_seed(0)).dtype == torch.float64
    assert MultiResolutionSTFTLoss()(wav[None], wav[None]).dtype == torch.float64
