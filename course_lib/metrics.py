"""Objective metrics used across the course.

Waveform metrics take ``est`` and ``ref`` of equal shape ``(B, C, T)`` or ``(B, T)``
(a bare ``(T,)`` counts as one example) and return one value per example, ``(B,)``:

* :func:`si_sdr`, :func:`snr` - sample-level fidelity in dB (higher is better);
* :func:`multiscale_mel_distance`, :func:`log_spectral_distance` - spectral distances
  in dB (lower is better; blind to phase, closer to what we hear);
* :func:`pesq_wb`, :func:`stoi` - predicted speech quality (MOS 1.0-4.64) and
  intelligibility (0-1) for mono speech, thin wrappers of the ``pesq`` and ``pystoi``
  packages that take ``(T,)``, ``(1, T)`` or ``(B, 1, T)``.

All of them refuse input that would give a misleading number (empty, NaN or inf, and
silence where the metric is undefined for it) with an :class:`~course_lib.audio.AudioError`
that names the fix.

Distribution metrics compare sets of embeddings: :func:`frechet_distance` (FAD when the
features are audio embeddings) and :func:`inception_score`.
"""
from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from course_lib.audio import SILENCE_THRESHOLD, AudioError
from course_lib.spectral import mel_spectrogram, stft

__all__ = [
    "si_sdr",
    "snr",
    "multiscale_mel_distance",
    "log_spectral_distance",
    "pesq_wb",
    "stoi",
    "GaussianStats",
    "gaussian_stats",
    "frechet_distance",
    "frechet_distance_from_stats",
    "inception_score",
]


def _pair(est: Tensor, ref: Tensor, what: str) -> tuple[Tensor, Tensor]:
    """Check equal shapes and bring both to ``(B, C, T)``."""
    if not (torch.is_tensor(est) and torch.is_tensor(ref)):
        raise AudioError(f"{what} expects torch tensors; convert with torch.as_tensor(x, dtype=torch.float32).")
    if est.shape != ref.shape:
        raise AudioError(
            f"{what} needs est and ref of the same shape, got est {tuple(est.shape)} and ref {tuple(ref.shape)}. "
            f"Crop both to the shorter one first, e.g. n = min(est.shape[-1], ref.shape[-1]); "
            f"est, ref = est[..., :n], ref[..., :n]."
        )
    if not (est.is_floating_point() and ref.is_floating_point()):
        raise AudioError(f"{what} expects float waveforms, got {est.dtype} and {ref.dtype}; use .float().")
    if est.numel() == 0:
        raise AudioError(f"{what} got empty est and ref of shape {tuple(est.shape)}: there is nothing to measure. "
                         f"Check that the clips were loaded or generated, and not cropped to nothing.")
    for name, x in (("est", est), ("ref", ref)):
        if not bool(torch.isfinite(x).all()):
            raise AudioError(f"{what}: {name} contains {int((~torch.isfinite(x)).sum())} NaN or inf sample(s); find "
                             f"their source (a division by zero, an exploding model) or use torch.nan_to_num({name}).")
    if est.ndim == 1:
        est, ref = est[None, None], ref[None, None]
    elif est.ndim == 2:
        est, ref = est[:, None], ref[:, None]
    elif est.ndim != 3:
        raise AudioError(f"{what} expects (B, C, T), (B, T) or (T,), got shape {tuple(est.shape)}.")
    return est, ref


def _refuse_silence(x: Tensor, what: str, name: str, why: str) -> None:
    """Raise if any clip (and channel) of ``x (B, C, T)`` is silent: every ``|sample| < SILENCE_THRESHOLD``."""
    silent = (x.abs() < SILENCE_THRESHOLD).all(-1)  # (B, C)
    if bool(silent.any()):
        b, c = (int(i) for i in silent.nonzero()[0])
        where = f"clip {b}" + (f", channel {c}" if x.shape[1] > 1 else "")
        raise AudioError(f"{what}: {name} is silent in {where} (every |sample| < {SILENCE_THRESHOLD:g}); {why}")


_SILENT_REF = ("there is no signal to measure against. Check that the clip was loaded or generated correctly, "
               "or leave silent clips out, e.g. keep = ref.abs().amax(-1) > 1e-8.")


def si_sdr(est: Tensor, ref: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al., ICASSP 2019, eqs. 5-6).

    Both signals are made zero-mean, ``est`` is projected onto ``ref``:
    ``target = <est, ref> / ||ref||^2 * ref``, ``noise = est - target`` and
    ``SI-SDR = 10 log10(||target||^2 / ||noise||^2)``. Rescaling ``est`` does not change it.
    Computed per channel in float64, then averaged over channels.

    Args:
        est, ref: ``(B, C, T)`` or ``(B, T)``, same shape.

    Returns:
        ``(B,)`` in dB, dtype of ``est``.

    Raises:
        AudioError: empty or NaN input, or a silent (or constant) ``ref`` or ``est`` in any clip
            and channel: SI-SDR is 0/0 there, which the ``eps`` guard would turn into a
            flattering 0 dB (better than a noisy estimate).
    """
    e, r = _pair(est, ref, "si_sdr")
    e, r = e.double(), r.double()
    e = e - e.mean(dim=-1, keepdim=True)
    r = r - r.mean(dim=-1, keepdim=True)
    _refuse_silence(r, "si_sdr", "ref (minus its mean)", _SILENT_REF)
    _refuse_silence(e, "si_sdr", "est (minus its mean)",
                    "it has no part along ref, so SI-SDR is 0/0 (undefined). A silent output is a failure of the "
                    "system under test: count it as one, or use snr, which gives 0 dB for silence.")
    alpha = (e * r).sum(-1, keepdim=True) / (r.square().sum(-1, keepdim=True) + eps)  # (B, C, 1)
    target = alpha * r
    noise = e - target
    ratio = (target.square().sum(-1) + eps) / (noise.square().sum(-1) + eps)  # (B, C)
    return (10 * torch.log10(ratio)).mean(-1).to(est.dtype)


def snr(est: Tensor, ref: Tensor, eps: float = 1e-8) -> Tensor:
    """Signal-to-noise ratio ``10 log10(||ref||^2 / ||est - ref||^2)`` in dB over all channels: ``(B,)``.

    A silent ``est`` is allowed (0 dB: the error is the whole signal); a silent ``ref`` raises
    AudioError (there is no signal), as do empty and NaN input.
    """
    e, r = _pair(est, ref, "snr")
    _refuse_silence(r.flatten(1)[:, None], "snr", "ref", _SILENT_REF)  # silent only if every channel is
    e, r = e.double().flatten(1), r.double().flatten(1)  # (B, C*T)
    ratio = (r.square().sum(-1) + eps) / ((e - r).square().sum(-1) + eps)
    return (10 * torch.log10(ratio)).to(est.dtype)


def _scaled_n_fft(base: int, sample_rate: int) -> int:
    return 2 ** round(math.log2(base * sample_rate / 16000))


def multiscale_mel_distance(est: Tensor, ref: Tensor, sample_rate: int = 16000) -> Tensor:
    """Multi-scale mel distance in dB: the course's main "how close does it sound" number.

    Definition (fixed; every notebook and codec comparison uses exactly this):

    1. Three scales with ``n_fft`` in (512, 1024, 2048) at 16 kHz; at other rates each is
       multiplied by ``sample_rate / 16000`` and rounded to the nearest power of two, so
       the windows keep their duration (32, 64, 128 ms). ``hop_length = n_fft // 4``.
    2. Power mel spectrograms with 64 Slaney mel bands from 0 Hz to ``sample_rate / 2``
       (:func:`course_lib.spectral.mel_spectrogram`, Hann window, reflect-centred frames).
    3. Per scale: ``mean over (F, L) of |10 log10(max(mel_est, 1e-5)) - 10 log10(max(mel_ref, 1e-5))|``.
       The 1e-5 floor (-50 dB) keeps near-silent bins from dominating.
    4. Average over the three scales, and over channels.

    Lower is better; 0 means identical mel spectrograms. It ignores phase. As a guide,
    on speech a well-made 6 kbps codec lands around 3-4 dB (measured: Opus at 6.6 kbps,
    libsndfile ``compression_level=1.0``, gives 2.8 dB on 17 s of FSDD digits upsampled
    from 8 to 16 kHz; 1.6 dB at 11.8 kbps), while white noise compared with speech gives
    well over 10 dB (16-26 dB). Compare numbers only at the same sample rate and on the
    same clips.

    Args:
        est, ref: ``(B, C, T)`` or ``(B, T)`` waveforms of the same shape,
            at least ``n_fft // 2 + 1`` samples of the largest scale (1025 at 16 kHz).
        sample_rate: rate of both signals.

    Returns:
        ``(B,)`` in dB.

    Silence is allowed: it sits on the floor, so silent vs silent is 0 and speech vs silence is large.

    Raises:
        AudioError: if the shapes differ (crop with ``est[..., :ref.shape[-1]]``), the clips are
            shorter than the largest scale needs, or contain NaN.
    """
    e, r = _pair(est, ref, "multiscale_mel_distance")
    need = _scaled_n_fft(2048, sample_rate) // 2 + 1
    if e.shape[-1] < need:
        raise AudioError(f"multiscale_mel_distance needs at least {need} samples at {sample_rate} Hz "
                         f"({1000 * need / sample_rate:.0f} ms, for its largest scale), got {e.shape[-1]}. Score "
                         f"longer clips, or pad both: torch.nn.functional.pad(x, (0, {need} - x.shape[-1])).")
    floor = 1e-5
    dists = []
    for base in (512, 1024, 2048):
        n_fft = _scaled_n_fft(base, sample_rate)
        kw = dict(sample_rate=sample_rate, n_fft=n_fft, hop_length=n_fft // 4, n_mels=64, power=2.0)
        mel_e = mel_spectrogram(e, **kw)  # (B, C, F, L)
        mel_r = mel_spectrogram(r, **kw)
        diff = 10 * torch.log10(mel_e.clamp_min(floor)) - 10 * torch.log10(mel_r.clamp_min(floor))
        dists.append(diff.abs().mean(dim=(-3, -2, -1)))  # (B,)
    return torch.stack(dists).mean(0)


def log_spectral_distance(est: Tensor, ref: Tensor, n_fft: int = 1024, hop_length: int = 256,
                          eps: float = 1e-10) -> Tensor:
    """Log-spectral distance in dB.

    Per frame ``l``: ``sqrt(mean_f (10 log10 P_ref[f, l] - 10 log10 P_est[f, l])^2)`` with
    ``P = |STFT|^2`` floored at ``eps``; then the mean over frames (and channels).

    Args:
        est, ref: ``(B, C, T)`` or ``(B, T)``, same shape.

    Returns:
        ``(B,)`` in dB (0 for identical signals). Silence is allowed (it sits on the ``eps`` floor).
    """
    e, r = _pair(est, ref, "log_spectral_distance")
    p_e = stft(e, n_fft, hop_length).abs().square().clamp_min(eps)  # (B, C, F, L)
    p_r = stft(r, n_fft, hop_length).abs().square().clamp_min(eps)
    per_frame = (10 * torch.log10(p_r) - 10 * torch.log10(p_e)).square().mean(dim=-2).sqrt()  # (B, C, L)
    return per_frame.mean(dim=(-2, -1))


# ----------------------------------------------------------------------------- speech: PESQ and STOI


def _speech_pair(est: Tensor, ref: Tensor, sample_rate: int, what: str,
                 min_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate mono clips ``(T,)``, ``(1, T)`` or ``(B, 1, T)``; return float64 arrays ``(B, T)``."""
    e, r = _pair(est, ref, what)  # (B, C, T); types, equal shapes, empty and NaN checked
    if (est.ndim == 2 and est.shape[0] != 1) or e.shape[1] != 1:
        raise AudioError(f"{what} scores mono speech: pass (T,), (1, T) or a batch (B, 1, T), got shape "
                         f"{tuple(est.shape)}. Mix down with course_lib.audio.to_mono(wav), or for a batch of "
                         f"(B, T) clips use wav[:, None].")
    if e.shape[-1] < min_samples:
        raise AudioError(f"{what} needs clips of at least {min_samples} samples ({min_samples / sample_rate:.2f} s at "
                         f"{sample_rate} Hz), got {e.shape[-1]}. Score longer clips (a few seconds of speech is "
                         f"typical), or concatenate several short clips of the same system into one.")
    _refuse_silence(r, what, "ref", "PESQ and STOI measure how much of the speech in ref survives in est, and "
                    "there is none. Leave silent clips out, e.g. keep = ref.abs().amax(-1) > 1e-8.")
    return e[:, 0].detach().cpu().double().numpy(), r[:, 0].detach().cpu().double().numpy()


def _message(err: Exception) -> str:  # the pesq package's C errors carry bytes
    text = err.args[0] if err.args else ""
    return text.decode(errors="replace") if isinstance(text, bytes) else str(text)


def _pesq_package():
    """The ``pesq`` package, imported on first use: it compiles C code when installed, so everything else runs
    without it."""
    try:
        import pesq
    except ImportError as err:
        raise ImportError(f"pesq_wb needs the package `pesq` (the ITU reference code of wideband PESQ), which is not "
                          f"installed here ({err}). Install it with `pip install pesq` (it builds C code, so a C "
                          f"compiler is needed), or leave PESQ out: every other measure works without it.") from err
    return pesq


def pesq_wb(est: Tensor, ref: Tensor, sample_rate: int) -> Tensor:
    """Wideband PESQ (ITU-T P.862.2) of each clip: predicted listening quality as a MOS.

    Runs the ITU reference C code through the ``pesq`` package (``mode="wb"``), which
    level- and time-aligns ``est`` to ``ref`` before comparing loudness spectra. The scale
    runs from about 1.02 (the floor: white noise against speech) to 4.64 (identical).
    Wideband means 16 kHz: upsampled 8 kHz material (FSDD) has nothing above 4 kHz, so
    compare numbers only on the same clips. Not differentiable; the clips are scored one by
    one on the CPU.

    Args:
        est: the signal under test, ``(T,)``, ``(1, T)`` or ``(B, 1, T)``.
        ref: the clean speech, same shape.
        sample_rate: must be 16000 (resample with :func:`course_lib.audio.resample`).

    Returns:
        ``(B,)`` float32 tensor on ``est``'s device, one score per clip (``(1,)`` for a single clip).

    Raises:
        AudioError: a rate other than 16 kHz; clips shorter than 0.25 s (4000 samples); different
            shapes; empty or NaN input; a silent ``ref`` or ``est``; no utterance found in ``ref``.
        ImportError: the ``pesq`` package is not installed (the message says how to install it).
    """
    pesq = _pesq_package()
    if sample_rate != 16000:
        raise AudioError(f"pesq_wb (wideband PESQ, ITU-T P.862.2) is defined at 16 kHz only, got {sample_rate} Hz. "
                         f"Resample both signals first: course_lib.audio.resample(wav, {sample_rate}, 16000).")
    e, r = _speech_pair(est, ref, 16000, "pesq_wb", 4000)  # (B, T); the C code refuses under 1/4 s
    scores = []
    for b in range(len(r)):
        if np.abs(e[b]).max() < SILENCE_THRESHOLD:  # the C code fails on it with a NaN
            raise AudioError(f"pesq_wb: est is silent in clip {b} (every |sample| < {SILENCE_THRESHOLD:g}); PESQ "
                             f"cannot align silence to speech. A silent output is a failure of the system under test: "
                             f"count it as one rather than as a score.")
        try:
            scores.append(pesq.pesq(16000, r[b], e[b], "wb"))
        except pesq.NoUtterancesError as err:
            raise AudioError(f"pesq_wb: PESQ found no utterance (speech) in ref of clip {b} ({_message(err)}). ref "
                             f"must hold speech, not near-silence or noise, and not be far quieter than est (the pesq "
                             f"package scales both by their joint peak): check the clip, or leave it out.") from err
        except (pesq.PesqError, ValueError) as err:
            raise AudioError(f"pesq_wb: the PESQ code failed on clip {b} ({type(err).__name__}: {_message(err)}). "
                             f"Check that ref is speech and est a processed version of it, at 16 kHz.") from err
    return torch.tensor(scores, dtype=torch.float32, device=est.device)  # float32: a half dtype would round 4.64


def stoi(est: Tensor, ref: Tensor, sample_rate: int, extended: bool = False) -> Tensor:
    """Short-time objective intelligibility of each clip (Taal et al., IEEE TASLP 2011), via ``pystoi``.

    Both signals are resampled to 10 kHz, frames more than 40 dB below the loudest frame of
    ``ref`` are dropped, and the envelopes of 15 one-third-octave bands are correlated over
    384 ms windows (``est`` clipped at -15 dB SDR first), then averaged. About 1 for identical
    speech, 0.1-0.25 for white noise against speech, 0 for a silent ``est``. With
    ``extended=True`` it is ESTOI (Jensen & Taal 2016), which also handles modulated noise;
    its noise floor is near 0. Any sample rate works; not differentiable.

    Args:
        est: the signal under test, ``(T,)``, ``(1, T)`` or ``(B, 1, T)``.
        ref: the clean speech, same shape.
        sample_rate: rate of both signals in Hz.
        extended: compute ESTOI instead of STOI.

    Returns:
        ``(B,)`` float32 tensor on ``est``'s device, one score per clip (``(1,)`` for a single clip).

    Raises:
        AudioError: clips with less than 0.41 s of speech (pystoi would return a meaningless 1e-5);
            different shapes; empty or NaN input; a silent ``ref``.
    """
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise AudioError(f"stoi: sample_rate must be a positive whole number of Hz, got {sample_rate!r}.")
    # pystoi needs 30 frames (256 samples, hop 128) at 10 kHz: more than 4096 samples once resampled (measured).
    e, r = _speech_pair(est, ref, sample_rate, "stoi", 4096 * int(sample_rate) // 10000 + 1)  # (B, T)
    from pystoi import stoi as _stoi  # here, not at the top: it imports scipy.signal, which takes seconds
    scores = []
    for b in range(len(r)):
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="Not enough STFT frames", category=RuntimeWarning)
            try:
                scores.append(_stoi(r[b], e[b], int(sample_rate), extended=extended))
            except RuntimeWarning as err:
                raise AudioError(f"stoi: ref of clip {b} has less than 30 frames (0.41 s) of speech once its silent "
                                 f"frames (40 dB below its loudest) are removed. Score longer clips, or concatenate "
                                 f"several short clips of the same system into one.") from err
    return torch.tensor(scores, dtype=torch.float32, device=est.device)


# ----------------------------------------------------------------------------- distributions


class GaussianStats(NamedTuple):
    mu: np.ndarray     # (D,) float64
    sigma: np.ndarray  # (D, D) float64


def _features(feats: Tensor | np.ndarray, name: str) -> np.ndarray:
    if torch.is_tensor(feats):
        feats = feats.detach().cpu().double().numpy()
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must be a (N, D) matrix of N >= 2 embeddings, got shape {x.shape}. "
                         f"Stack per-clip embeddings with torch.cat / np.stack.")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf values; check the embedding model's input.")
    return x


def gaussian_stats(feats: Tensor | np.ndarray) -> GaussianStats:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` of ``feats (N, D)``, in float64."""
    x = _features(feats, "feats")
    return GaussianStats(x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False)))


def frechet_distance_from_stats(a: GaussianStats, b: GaussianStats, eps: float = 1e-6) -> float:
    """``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` (Frechet distance of two Gaussians)."""
    if a.mu.shape != b.mu.shape:
        raise ValueError(f"Feature sizes differ: {a.mu.shape[0]} vs {b.mu.shape[0]}; use the same embedding model.")
    diff = a.mu - b.mu
    covmean = scipy.linalg.sqrtm(a.sigma @ b.sigma)
    if not np.isfinite(covmean).all():
        # Singular product (e.g. fewer examples than dimensions): regularise, as pytorch-fid does.
        offset = np.eye(a.sigma.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((a.sigma + offset) @ (b.sigma + offset))
    covmean = np.real(covmean)  # tiny imaginary parts are numerical noise
    value = diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * np.trace(covmean)
    return float(max(value, 0.0))  # rounding can give -1e-12 for identical sets


def frechet_distance(feats_a: Tensor | np.ndarray, feats_b: Tensor | np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two sets of embeddings (FID; FAD for audio).

    Heusel et al. (2017): ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``, computed in
    float64 with ``scipy.linalg.sqrtm``; imaginary parts of the square root are dropped,
    and ``eps * I`` is added to both covariances if the product is singular.

    Args:
        feats_a: ``(N, D)`` embeddings of one set (e.g. real clips).
        feats_b: ``(M, D)`` embeddings of the other (e.g. generated clips).

    Returns:
        A float >= 0 (0 for identical sets). It is biased upward for small N: compare
        numbers only at equal set sizes.
    """
    return frechet_distance_from_stats(gaussian_stats(feats_a), gaussian_stats(feats_b), eps)


def inception_score(probs: Tensor | np.ndarray, splits: int = 1, eps: float = 1e-12) -> float:
    """Inception score ``exp(E_x KL(p(y|x) || p(y)))`` (Salimans et al. 2016).

    High when each example is classified confidently (sharp ``p(y|x)``) and the classes
    are used evenly (flat ``p(y)``); it ranges from 1 to K.

    Args:
        probs: ``(N, K)`` class probabilities (rows sum to 1; apply softmax to logits first).
        splits: compute the score on this many equal chunks and return the mean.

    Returns:
        The score as a float.
    """
    p = probs.detach().cpu().double().numpy() if torch.is_tensor(probs) else np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.size == 0:
        raise ValueError(f"probs must be a non-empty (N, K) matrix, got shape {p.shape}.")
    if not np.isfinite(p).all():
        raise ValueError("probs contains NaN or inf values; check the classifier's input and logits.")
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("probs must be probabilities (non-negative rows summing to 1); "
                         "pass logits through torch.softmax(logits, dim=-1) first.")
    if not 1 <= splits <= p.shape[0]:
        raise ValueError(f"splits must be between 1 and N={p.shape[0]}, got {splits}.")
    scores = []
    for chunk in np.array_split(p, splits):
        p_y = chunk.mean(axis=0, keepdims=True)  # (1, K) marginal
        kl = (chunk * (np.log(chunk + eps) - np.log(p_y + eps))).sum(axis=1)  # (N,)
        scores.append(math.exp(kl.mean()))
    return float(np.mean(scores))
