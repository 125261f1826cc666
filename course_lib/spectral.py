"""Spectral views of audio: STFT, mel spectrograms, Griffin-Lim and multi-resolution STFT losses.

The transforms are torchaudio's (``torchaudio.functional.spectrogram``, ``inverse_spectrogram``,
``melscale_fbanks``, ``amplitude_to_DB``); this module fixes the course's conventions once, so
numbers are comparable across notebooks, and adds what torchaudio lacks (a seeded Griffin-Lim,
the multi-resolution STFT loss).

All functions take waveforms with time last, ``(T,)``, ``(C, T)`` or ``(B, C, T)``,
and keep the leading dimensions: a ``(B, C, T)`` batch gives ``(B, C, F, L)``
spectrograms (F frequency or mel bins, L frames).

Conventions:

* periodic Hann window of ``win_length`` (default ``n_fft``), created on the input's device and dtype;
* ``center=True`` pads ``n_fft // 2`` samples on both sides by *reflection* (torch's default;
  librosa >= 0.10 pads with zeros by default, pass ``pad_mode="reflect"`` to compare);
  so ``L = 1 + T // hop_length``;
* mel filters are Slaney-normalised on the Slaney mel scale, i.e. librosa's defaults
  (torchaudio's defaults are ``norm=None, mel_scale="htk"``);
* decibels are floored ``top_db`` below the peak of each ``(F, L)`` map, as librosa does per clip.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torchaudio.functional as AF
from torch import Tensor, nn

from course_lib.audio import AudioError

__all__ = ["stft", "istft", "magnitude_spectrogram", "mel_filterbank", "MelSpectrogram", "mel_spectrogram",
           "log_mel_spectrogram", "amplitude_to_db", "griffin_lim", "mel_to_audio", "spectral_convergence",
           "MultiResolutionSTFTLoss", "complex_stft_loss", "spectral_loss", "log_magnitude_loss"]


def _window(win_length: int, like: Tensor) -> Tensor:
    dtype = like.real.dtype if like.is_complex() else like.dtype
    return torch.hann_window(win_length, device=like.device, dtype=dtype)


def _spectrogram(wav: Tensor, n_fft: int, hop_length: int, win_length: int | None, center: bool,
                 power: float | None) -> Tensor:
    """``torchaudio.functional.spectrogram`` with input checks: ``(..., T) -> (..., F, L)``, complex if no power."""
    if not torch.is_tensor(wav) or not wav.is_floating_point():
        raise AudioError(f"stft expects a float waveform tensor, got "
                         f"{getattr(wav, 'dtype', type(wav).__name__)}; convert with wav.float().")
    if wav.ndim == 0:
        raise AudioError("stft expects a waveform with time last, (T,), (C, T) or (B, C, T); got a scalar.")
    need = n_fft // 2 + 1 if center else n_fft  # reflection padding needs more samples than it pads
    if wav.shape[-1] < need:
        raise AudioError(f"Signal too short for the STFT: {wav.shape[-1]} samples, but n_fft={n_fft} with "
                         f"center={center} needs at least {need}. Use a smaller n_fft or a longer (padded) signal.")
    win_length = win_length or n_fft
    return AF.spectrogram(wav, pad=0, window=_window(win_length, wav), n_fft=n_fft, hop_length=hop_length,
                          win_length=win_length, power=power, normalized=False, center=center, pad_mode="reflect")


def stft(wav: Tensor, n_fft: int = 1024, hop_length: int = 256, win_length: int | None = None,
         center: bool = True) -> Tensor:
    """Complex short-time Fourier transform with a Hann window.

    Args:
        wav: ``(..., T)`` float waveform, e.g. ``(T,)``, ``(C, T)`` or ``(B, C, T)``.
        n_fft: FFT size; gives ``F = n_fft // 2 + 1`` frequency bins.
        hop_length: samples between frames.
        win_length: window length (default ``n_fft``); zero-padded to ``n_fft``.
        center: reflect-pad ``n_fft // 2`` on both sides so frame ``l`` is centred on sample ``l * hop``.

    Returns:
        ``(..., F, L)`` complex tensor.
    """
    return _spectrogram(wav, n_fft, hop_length, win_length, center, power=None)


def istft(spec: Tensor, n_fft: int = 1024, hop_length: int = 256, win_length: int | None = None,
          center: bool = True, length: int | None = None) -> Tensor:
    """Inverse of :func:`stft` (overlap-add): ``(..., F, L)`` complex -> ``(..., T)``."""
    win_length = win_length or n_fft
    return AF.inverse_spectrogram(spec, length, pad=0, window=_window(win_length, spec), n_fft=n_fft,
                                  hop_length=hop_length, win_length=win_length, normalized=False, center=center)


def magnitude_spectrogram(wav: Tensor, n_fft: int = 1024, hop_length: int = 256, win_length: int | None = None,
                          center: bool = True, power: float = 1.0) -> Tensor:
    """``|STFT|**power``: ``(..., T) -> (..., F, L)`` with ``F = n_fft // 2 + 1`` (power 2 gives energy)."""
    return _spectrogram(wav, n_fft, hop_length, win_length, center, power=power)


# ----------------------------------------------------------------------------- mel


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int = 80, f_min: float = 0.0,
                   f_max: float | None = None) -> Tensor:
    """Slaney-style mel filterbank (librosa's default), shape ``(n_fft // 2 + 1, n_mels)``, float32 on CPU."""
    f_max = float(sample_rate) / 2 if f_max is None else float(f_max)
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"Need 0 <= f_min < f_max <= sample_rate / 2 = {sample_rate / 2}, "
                         f"got f_min={f_min}, f_max={f_max}.")
    return AF.melscale_fbanks(n_fft // 2 + 1, f_min=float(f_min), f_max=f_max, n_mels=n_mels,
                              sample_rate=int(sample_rate), norm="slaney", mel_scale="slaney")


@lru_cache(maxsize=32)
def _cached_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float | None,
                       device: torch.device, dtype: torch.dtype) -> Tensor:
    return mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max).to(device=device, dtype=dtype)


def _apply_filterbank(spec: Tensor, fb: Tensor) -> Tensor:
    # spec (..., F_lin, L), fb (F_lin, F) -> (..., F, L); the product of torchaudio.transforms.MelScale
    return torch.matmul(spec.transpose(-1, -2), fb).transpose(-1, -2)


class MelSpectrogram(nn.Module):
    """Mel spectrogram as a module; the filterbank is a buffer, so ``.to(device)`` moves it.

    Not ``torchaudio.transforms.MelSpectrogram``: that one stores its window and filterbank in
    the state dict, which would change the keys of the shipped checkpoints (CLAP) that hold this one.

    ``forward``: ``(..., T)`` waveform -> ``(..., F, L)`` with ``F = n_mels``.
    """

    def __init__(self, sample_rate: int = 16000, n_fft: int = 1024, hop_length: int = 256, n_mels: int = 80,
                 f_min: float = 0.0, f_max: float | None = None, power: float = 1.0) -> None:
        super().__init__()
        self.sample_rate, self.n_fft, self.hop_length = sample_rate, n_fft, hop_length
        self.n_mels, self.f_min, self.f_max, self.power = n_mels, f_min, f_max, power
        self.register_buffer("filterbank", mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max),
                             persistent=False)  # (F_lin, F); rebuilt from the arguments, not stored

    def forward(self, wav: Tensor) -> Tensor:
        spec = magnitude_spectrogram(wav, self.n_fft, self.hop_length, power=self.power)  # (..., F_lin, L)
        return _apply_filterbank(spec, self.filterbank.to(spec.dtype))

    def extra_repr(self) -> str:
        return (f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, hop_length={self.hop_length}, "
                f"n_mels={self.n_mels}, f_min={self.f_min}, f_max={self.f_max}, power={self.power}")


def mel_spectrogram(wav: Tensor, sample_rate: int, n_fft: int = 1024, hop_length: int = 256, n_mels: int = 80,
                    f_min: float = 0.0, f_max: float | None = None, power: float = 1.0) -> Tensor:
    """Functional mel spectrogram (filterbanks cached per parameters and device).

    Args:
        wav: ``(..., T)`` float waveform.
        sample_rate: rate of ``wav`` in Hz.
        n_fft, hop_length: STFT parameters (see :func:`stft`).
        n_mels: number of mel bands ``F``.
        f_min, f_max: band edges in Hz (``f_max`` defaults to ``sample_rate / 2``).
        power: 1 for magnitude, 2 for energy.

    Returns:
        ``(..., F, L)``; equal to ``librosa.feature.melspectrogram(..., pad_mode="reflect")``.
    """
    spec = magnitude_spectrogram(wav, n_fft, hop_length, power=power)  # (..., F_lin, L)
    fb = _cached_filterbank(int(sample_rate), int(n_fft), int(n_mels), float(f_min),
                            None if f_max is None else float(f_max), spec.device, spec.dtype)
    return _apply_filterbank(spec, fb)


def log_mel_spectrogram(wav: Tensor, sample_rate: int, n_fft: int = 1024, hop_length: int = 256, n_mels: int = 80,
                        f_min: float = 0.0, f_max: float | None = None, power: float = 1.0,
                        eps: float = 1e-5) -> Tensor:
    """``log(clamp(mel, eps))``, the log-compressed mel used by vocoders and AudioLDM's VAE: ``(..., F, L)``."""
    mel = mel_spectrogram(wav, sample_rate, n_fft, hop_length, n_mels, f_min, f_max, power)
    return torch.log(mel.clamp_min(eps))


def amplitude_to_db(x: Tensor, power: bool = False, top_db: float | None = 80.0) -> Tensor:
    """Decibels of a spectrogram, relative to 1.0, floored ``top_db`` below each clip's peak.

    Args:
        x: ``(..., F, L)`` non-negative spectrogram.
        power: True if ``x`` is energy (``|X|**2``: ``10 log10``), False if magnitude (``20 log10``).
        top_db: keep at most this range below the maximum of each ``(F, L)`` map; None keeps all.

    Returns:
        ``(..., F, L)`` in dB; matches ``librosa.power_to_db`` / ``librosa.amplitude_to_db`` with ``ref=1.0``.
    """
    multiplier, amin = (10.0, 1e-10) if power else (20.0, 1e-5)
    # torchaudio shares one floor among the channels of a (C, F, L) input; one map per batch item keeps ours per map.
    maps = x.reshape(-1, 1, *x.shape[-2:])  # (N, 1, F, L)
    return AF.amplitude_to_DB(maps, multiplier, amin, db_multiplier=0.0, top_db=top_db).reshape(x.shape)


# ----------------------------------------------------------------------------- phase reconstruction


def griffin_lim(magnitude: Tensor, n_fft: int, hop_length: int, n_iter: int = 32, momentum: float = 0.99,
                generator: torch.Generator | None = None, win_length: int | None = None, length: int | None = None,
                rand_init: bool = True) -> Tensor:
    """Recover a waveform from an STFT magnitude (fast Griffin-Lim).

    Griffin & Lim (1984) alternate between the set of spectrograms with the given
    magnitude and the set of consistent spectrograms (STFTs of a signal); Perraudin
    et al. (2013) add momentum. The loop is ``torchaudio.functional.griffinlim``'s
    (the tests check that they agree), written out because torchaudio draws the random
    initial phase from the global RNG, where the course takes it from ``generator``.

    Args:
        magnitude: ``(..., F, L)`` non-negative ``|STFT|`` with ``F = n_fft // 2 + 1``.
        n_fft, hop_length, win_length: the STFT that produced ``magnitude`` (see :func:`stft`).
        n_iter: number of projections.
        momentum: fast Griffin-Lim's alpha in [0, 1); 0 gives the original algorithm.
        generator: source of the random initial phase.
        length: output length in samples (default ``(L - 1) * hop_length``).
        rand_init: False starts from zero phase (deterministic; torchaudio's ``rand_init=False``).

    Returns:
        ``(..., T)`` waveform.
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
    if magnitude.shape[-2] != n_fft // 2 + 1:
        raise ValueError(f"magnitude has {magnitude.shape[-2]} frequency bins but n_fft={n_fft} gives "
                         f"{n_fft // 2 + 1}; pass the n_fft that produced it.")
    mag = magnitude  # (..., F, L)
    if rand_init:
        gen_device = generator.device if generator is not None else mag.device
        phase = torch.rand(mag.shape, generator=generator, device=gen_device, dtype=mag.dtype).to(mag.device)
        angles = torch.polar(torch.ones_like(mag), 2 * math.pi * phase)
    else:
        angles = torch.ones_like(mag, dtype=torch.complex128 if mag.dtype == torch.float64 else torch.complex64)
    kw = {"n_fft": n_fft, "hop_length": hop_length, "win_length": win_length}
    tprev = torch.zeros_like(angles)
    for _ in range(n_iter):
        rebuilt = stft(istft(mag * angles, length=length, **kw), **kw)  # project onto consistent spectrograms
        angles = rebuilt - (momentum / (1 + momentum)) * tprev  # momentum step, as torchaudio/librosa
        angles = angles / (angles.abs() + 1e-16)  # keep only the phase
        tprev = rebuilt
    return istft(mag * angles, length=length, **kw)  # (..., T)


@lru_cache(maxsize=16)
def _cached_inverse_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float | None,
                               device: torch.device, dtype: torch.dtype) -> Tensor:
    # torchaudio.transforms.InverseMelScale solves the same least-squares problem with torch.linalg.lstsq on
    # every call, in the input's precision; the pseudo-inverse is computed once, in float64, and cached.
    fb = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max).double()  # (F_lin, F)
    return torch.linalg.pinv(fb.T).to(device=device, dtype=dtype)  # (F_lin, F)


def mel_to_audio(mel: Tensor, sample_rate: int, n_fft: int = 1024, hop_length: int = 256, n_iter: int = 32,
                 f_min: float = 0.0, f_max: float | None = None, power: float = 1.0, momentum: float = 0.99,
                 generator: torch.Generator | None = None, length: int | None = None) -> Tensor:
    """Invert a mel spectrogram: least-squares linear spectrogram, then Griffin-Lim.

    The mel filterbank ``M`` (F x F_lin) loses information, so the linear magnitude is
    the minimum-norm least-squares solution ``pinv(M) @ mel``, clamped at zero.

    Args:
        mel: ``(..., F, L)`` mel spectrogram made with the same parameters (``n_mels = F``).
        power: the power ``mel`` was made with (1 magnitude, 2 energy).

    Returns:
        ``(..., T)`` waveform.
    """
    inv = _cached_inverse_filterbank(int(sample_rate), int(n_fft), mel.shape[-2], float(f_min),
                                     None if f_max is None else float(f_max), mel.device, mel.dtype)
    spec = torch.matmul(inv, mel).clamp_min(0.0)  # (..., F_lin, L)
    if power != 1.0:
        spec = spec.pow(1.0 / power)
    return griffin_lim(spec, n_fft, hop_length, n_iter=n_iter, momentum=momentum, generator=generator,
                       length=length)


# ----------------------------------------------------------------------------- losses


def spectral_convergence(est_mag: Tensor, ref_mag: Tensor) -> Tensor:
    """``|| |S_ref| - |S_est| ||_F / || |S_ref| ||_F`` over the whole tensor (0 is a perfect match)."""
    return torch.linalg.vector_norm(ref_mag - est_mag) / torch.linalg.vector_norm(ref_mag).clamp_min(1e-12)


class MultiResolutionSTFTLoss(nn.Module):
    """Multi-resolution STFT loss of Parallel WaveGAN (Yamamoto et al., ICASSP 2020, Sec. 2.3).

    For each resolution m (FFT size, hop, window):

    * spectral convergence ``L_sc = || |S| - |S_hat| ||_F / || |S| ||_F``,
    * log magnitude ``L_mag = (1/N) || log|S| - log|S_hat| ||_1`` (N = number of bins),

    and the loss is ``(1/M) sum_m (L_sc^(m) + L_mag^(m))``. Several resolutions stop
    the generator from fitting one time-frequency trade-off while ignoring the others.
    Magnitudes are floored at ``sqrt(1e-7)`` so logs and gradients stay finite.
    """

    def __init__(self, fft_sizes: tuple[int, ...] = (512, 1024, 2048), hop_sizes: tuple[int, ...] = (128, 256, 512),
                 win_lengths: tuple[int, ...] = (512, 1024, 2048)) -> None:
        super().__init__()
        if not len(fft_sizes) == len(hop_sizes) == len(win_lengths):
            raise ValueError("fft_sizes, hop_sizes and win_lengths must have the same length, got "
                             f"{len(fft_sizes)}, {len(hop_sizes)}, {len(win_lengths)}.")
        self.resolutions = list(zip(fft_sizes, hop_sizes, win_lengths))

    @staticmethod
    def _magnitude(wav: Tensor, n_fft: int, hop: int, win: int) -> Tensor:
        spec = stft(wav, n_fft, hop, win)
        # floor the energy, not |S|: sqrt's gradient at 0 is infinite
        return (spec.real.square() + spec.imag.square()).clamp_min(1e-7).sqrt()  # (N, F, L)

    def forward(self, est: Tensor, ref: Tensor) -> Tensor:
        """Args: ``est``, ``ref``: ``(B, C, T)`` (any shape with time last, equal). Returns a scalar."""
        if est.shape != ref.shape:
            raise AudioError(f"MultiResolutionSTFTLoss needs equal shapes, got est {tuple(est.shape)} and ref "
                             f"{tuple(ref.shape)}; crop both to the shorter length, e.g. est[..., :ref.shape[-1]].")
        est, ref = est.reshape(-1, est.shape[-1]), ref.reshape(-1, ref.shape[-1])  # (B*C, T)
        total = est.new_zeros(())
        for n_fft, hop, win in self.resolutions:
            s_est, s_ref = self._magnitude(est, n_fft, hop, win), self._magnitude(ref, n_fft, hop, win)
            l_sc = spectral_convergence(s_est, s_ref)
            l_mag = (torch.log(s_ref) - torch.log(s_est)).abs().mean()
            total = total + l_sc + l_mag
        return total / len(self.resolutions)


def complex_stft_loss(est: Tensor, ref: Tensor, n_ffts: tuple[int, ...] = (256, 512, 1024), c: float = 0.3,
                      alpha: float = 0.3) -> Tensor:
    """Compressed complex spectral loss (Braun & Tashev 2021, "A consolidated view of loss functions for
    supervised deep learning-based speech enhancement", arXiv:2009.12286), averaged over STFT sizes (hop n/4).

    With ``S^c = |S|^c e^{i angle S}`` (magnitudes compressed by ``c``, phase kept):
    ``alpha * mean|S_est^c - S_ref^c|^2 + (1 - alpha) * mean(|S_est|^c - |S_ref|^c)^2``, with the
    paper's ``c = alpha = 0.3``. The complex term constrains phase, which mel and log-magnitude
    losses cannot see; the compression keeps quiet bins from vanishing under loud ones.
    """
    total = est.new_zeros((), dtype=torch.float32)
    for n_fft in n_ffts:
        s_e, s_r = stft(est.float(), n_fft, n_fft // 4), stft(ref.float(), n_fft, n_fft // 4)
        p_e, p_r = s_e.abs().square() + 1e-6, s_r.abs().square() + 1e-6   # smooth floor: finite gradients at 0
        m_e, m_r = p_e ** (c / 2), p_r ** (c / 2)                          # |S|^c
        complex_term = (s_e * (m_e / p_e.sqrt()) - s_r * (m_r / p_r.sqrt())).abs().square().mean()
        total = total + alpha * complex_term + (1 - alpha) * (m_e - m_r).square().mean()
    return total / len(n_ffts)


def spectral_loss(est: Tensor, ref: Tensor, resolutions=((2048, 240, 1200), (1024, 120, 600), (512, 50, 240))) -> Tensor:
    """Jukebox's ``multispectral_loss`` (Dhariwal et al. 2020): mean over STFT resolutions of
    ``|| |S(x)| - |S(x_hat)| ||_2``.

    The paper divides by the loudness of the target; here each clip's norm is divided by that of its
    reference spectrum, so the term is O(1) for any level. The waveform L2 loss alone favours
    muffled reconstructions; this term keeps the high frequencies.
    """
    total = est.new_zeros(())
    for n_fft, hop, win in resolutions:
        s_ref = stft(ref, n_fft, hop, win).abs().flatten(1)                             # (B, F * L)
        diff = stft(est, n_fft, hop, win).abs().flatten(1) - s_ref
        total = total + (diff.norm(dim=1) / s_ref.norm(dim=1).clamp_min(1e-5)).mean()
    return total / len(resolutions)


def log_magnitude_loss(est: Tensor, ref: Tensor,
                       resolutions=((2048, 240, 1200), (1024, 120, 600), (512, 50, 240)), floor: float = 1e-5) -> Tensor:
    """Mean ``| log |S(x)| - log |S(x_hat)| |`` over the resolutions of :func:`spectral_loss`.

    Not in the paper: the second half of Parallel WaveGAN's multi-resolution STFT loss (Yamamoto et
    al. 2020), whose first half is :func:`spectral_loss`. The relative L2 of linear magnitudes is set
    by the loud bins, so a course-sized VQ-VAE learns to leave a broadband hiss in the quiet ones
    (between notes, above the harmonics); on a log scale that hiss costs as much as a wrong note.
    ``floor`` (-100 dB of full scale) keeps digital silence from dominating.
    """
    total = est.new_zeros(())
    for n_fft, hop, win in resolutions:
        s_ref = stft(ref, n_fft, hop, win).abs().clamp_min(floor).log()
        total = total + (stft(est, n_fft, hop, win).abs().clamp_min(floor).log() - s_ref).abs().mean()
    return total / len(resolutions)
