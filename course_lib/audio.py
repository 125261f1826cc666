"""Audio as data: reading, writing, resampling and checking waveforms.

Every waveform in the course is a float tensor in [-1, 1] with time last:
``(T,)`` for a bare signal, ``(C, T)`` for one clip, ``(B, C, T)`` for a batch.

* :func:`load` / :func:`save` read and write files with ``soundfile``; ``save`` is
  atomic (a temporary file in the same folder, then ``os.replace``), so an
  interrupted notebook never leaves half a WAV behind.
* :func:`resample` wraps ``torchaudio.functional.resample``.
* :func:`check_audio` is the one validator every model runs on its inputs: it
  fails early with a message that names the problem *and* the fix, and is the one
  place where dtypes are handled (NumPy and float64/float16/bfloat16 in, float32 out).
* :func:`mu_law_encode`, :func:`mu_law_decode` and :func:`quantize` are the
  classic ways of turning samples into integers (notebook 00, codec baselines);
  :func:`mu_law_compress` / :func:`mu_law_expand` are the companding curve alone,
  without the integers (WaveGAN can train on companded waveforms).
"""
from __future__ import annotations

import os
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import Tensor

__all__ = [
    "AudioError",
    "load",
    "save",
    "resample",
    "change_speed",
    "to_mono",
    "normalize",
    "check_audio",
    "to_int16",
    "mu_law_compress",
    "mu_law_expand",
    "mu_law_encode",
    "mu_law_decode",
    "quantize",
]

SILENCE_THRESHOLD = 1e-8  # |x| below this everywhere counts as silent


class AudioError(ValueError):
    """Bad audio: wrong shape, dtype, sample rate, NaN/inf, silent, too short or unreadable."""


# ----------------------------------------------------------------------------- I/O


def load(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[Tensor, int]:
    """Read an audio file as a float32 tensor.

    Args:
        path: any format ``soundfile`` reads (WAV, FLAC, OGG, MP3, AIFF, ...).
        sample_rate: resample to this rate if given and different from the file's.

    Returns:
        ``(wav, sr)``: ``wav`` of shape ``(C, T)``, float32 in [-1, 1]; ``sr`` the
        rate of ``wav`` (``sample_rate`` if given, else the file's).

    Raises:
        FileNotFoundError: the file does not exist.
        AudioError: the file is not readable audio, or is a WAV cut short (libsndfile would read it silently).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"Audio file not found: {str(path)!r} (absolute: {str(path.absolute())!r}). "
            f"Check the path and the current folder ({os.getcwd()!r}), or create the file first "
            f"(e.g. with course_lib.audio.save)."
        )
    if path.is_dir():
        raise AudioError(f"{str(path)!r} is a folder, not an audio file. Pass the path of a file inside it.")
    _check_wav_complete(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (T, C)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioError(
            f"{str(path)!r} is not a readable audio file ({err}). It may be truncated or corrupted: "
            f"re-download or re-create it."
        ) from err
    wav = torch.from_numpy(np.ascontiguousarray(data.T))  # (C, T)
    if sample_rate is not None and sample_rate != sr:
        wav = resample(wav, sr, sample_rate)
        sr = sample_rate
    return wav, int(sr)


def _check_wav_complete(path: Path) -> None:
    """AudioError if a WAV file (by magic bytes)'s ``data`` chunk runs past its end; unset sizes (0, 2**32-1) pass."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return
        endian = "<" if head[:4] == b"RIFF" else ">"
        block_align = 0
        while True:
            chunk = fh.read(8)
            if len(chunk) < 8:
                return  # no data chunk: leave the verdict to soundfile
            chunk_id, chunk_size = chunk[:4], struct.unpack(endian + "I", chunk[4:])[0]
            if chunk_id == b"data":
                break
            body = fh.read(min(chunk_size, 16)) if chunk_id == b"fmt " else b""
            if len(body) >= 14:
                block_align = struct.unpack(endian + "H", body[12:14])[0]  # nBlockAlign: bytes per frame
            fh.seek(chunk_size + (chunk_size & 1) - len(body), os.SEEK_CUR)
        have = size - fh.tell()
    if chunk_size in (0, 0xFFFFFFFF) or have >= chunk_size:
        return
    unit, div = ("frames", block_align) if block_align else ("bytes", 1)
    raise AudioError(f"{str(path)!r} is truncated: its WAV header declares {chunk_size // div} {unit} but the file "
                     f"holds only {have // div} ({100 * have / chunk_size:.0f}%); the download or copy was probably "
                     f"interrupted. Re-download or re-create it (e.g. with course_lib.audio.save).")


def _format_for(path: Path) -> str:
    fmt = path.suffix.lstrip(".").upper()
    aliases = {"AIF": "AIFF", "OGA": "OGG", "OPUS": "OGG"}
    fmt = aliases.get(fmt, fmt)
    if fmt not in sf.available_formats():
        raise AudioError(
            f"Cannot infer an audio format from the suffix of {str(path)!r}. "
            f"Use one of: {', '.join('.' + f.lower() for f in ('wav', 'flac', 'ogg', 'mp3', 'aiff'))} "
            f"(soundfile also knows {sorted(sf.available_formats())})."
        )
    return fmt


def save(
    path: str | os.PathLike,
    wav: Tensor | np.ndarray,
    sample_rate: int,
    subtype: str | None = "PCM_16",
) -> Path:
    """Write a waveform to disk, atomically.

    The data go to a temporary file in the destination folder, which replaces
    ``path`` only once it is complete; on any failure the temporary file is
    removed and ``path`` is left as it was.

    Args:
        path: destination; the format comes from the suffix (``.wav``, ``.flac``, ``.ogg``, ...).
            Missing parent folders are created.
        wav: ``(C, T)`` or ``(T,)`` float tensor or array in [-1, 1].
        sample_rate: samples per second.
        subtype: soundfile subtype (``"PCM_16"``, ``"PCM_24"``, ``"FLOAT"``, ...); ``None`` means the
            format's default. Integer subtypes clip the signal to [-1, 1] first.

    Returns:
        The destination path.

    Raises:
        AudioError: wrong number of dimensions, NaN/inf samples, unknown suffix or subtype.
    """
    path = Path(path)
    if isinstance(wav, Tensor):
        wav = wav.detach().cpu()
        wav = (wav.double() if wav.is_floating_point() else wav).numpy()
    data = np.asarray(wav)
    if data.ndim not in (1, 2):
        raise AudioError(
            f"save expects a waveform of shape (C, T) or (T,), got shape {tuple(data.shape)}. "
            f"For a batch (B, C, T), save one clip at a time: save(path, wav[i], sr)."
        )
    if not np.issubdtype(data.dtype, np.floating):
        raise AudioError(
            f"save expects float samples in [-1, 1], got dtype {data.dtype}. "
            f"Convert int16 with wav / 32768 first."
        )
    if not np.isfinite(data).all():
        raise AudioError(f"Refusing to save {str(path)!r}: the waveform contains NaN or inf samples. "
                         f"Find where they come from (e.g. torch.isfinite(wav).all()) before saving.")
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AudioError(f"sample_rate must be a positive int, got {sample_rate!r}.")
    fmt = _format_for(path)
    if subtype is not None and not sf.check_format(fmt, subtype):
        raise AudioError(
            f"Subtype {subtype!r} is not available for {fmt} files. "
            f"Choose one of {sorted(sf.available_subtypes(fmt))}, or subtype=None for the default."
        )
    dtype = np.float64 if subtype == "DOUBLE" else np.float32
    data = np.ascontiguousarray(data.T if data.ndim == 2 else data, dtype=dtype)  # (T, C) or (T,)
    if subtype not in ("FLOAT", "DOUBLE"):
        data = np.clip(data, -1.0, 1.0)  # integer and lossy formats wrap around instead of clipping

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        sf.write(tmp, data, int(sample_rate), subtype=subtype, format=fmt)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


# ----------------------------------------------------------------------------- basic ops


def resample(wav: Tensor, orig_sr: int, new_sr: int) -> Tensor:
    """Change the sample rate (band-limited sinc interpolation, torchaudio).

    Args:
        wav: ``(..., T)`` float tensor, time last.
        orig_sr: current rate in Hz.
        new_sr: target rate in Hz.

    Returns:
        ``(..., ceil(T * new_sr / orig_sr))``; ``wav`` itself when the rates are equal.
    """
    for name, value in (("orig_sr", orig_sr), ("new_sr", new_sr)):
        if int(value) != value or value <= 0:
            raise AudioError(f"{name} must be a positive whole number of Hz, got {value!r}.")
    if not torch.is_tensor(wav) or not wav.is_floating_point():
        raise AudioError("resample expects a float tensor; convert with torch.as_tensor(wav).float().")
    if orig_sr == new_sr:
        return wav
    return AF.resample(wav, int(orig_sr), int(new_sr))


def change_speed(wav: Tensor, sample_rate: int, factor: float) -> tuple[Tensor, float]:
    """``wav`` played ``factor`` times as fast, pitch and formants moving with it (a tape sped up).

    Resamples to ``sample_rate / factor`` rounded to 100 Hz and plays the result at ``sample_rate``.

    Returns:
        The clip ``(..., about T / factor)`` and the factor actually applied, ``sample_rate / new_rate``.
    """
    if not factor > 0:
        raise AudioError(f"factor must be positive (1.1 plays 10% faster), got {factor!r}.")
    new_sr = int(round(sample_rate / factor / 100) * 100)
    return resample(wav, sample_rate, new_sr), sample_rate / new_sr


def to_mono(wav: Tensor) -> Tensor:
    """Average the channels: ``(C, T) -> (1, T)`` and ``(B, C, T) -> (B, 1, T)``.

    A bare ``(T,)`` signal is already mono and comes back as ``(1, T)``.
    """
    if wav.ndim == 1:
        return wav.unsqueeze(0)
    return wav.mean(dim=-2, keepdim=True)


def normalize(wav: Tensor, peak: float = 0.95) -> Tensor:
    """Scale each clip so that its largest ``|sample|`` equals ``peak``.

    A clip is the whole tensor for ``(T,)`` and ``(C, T)`` (channels keep their
    balance) and each ``wav[b]`` for ``(B, C, T)``. Silent clips come back unchanged.
    """
    if wav.ndim <= 2:
        current = wav.abs().amax()
    else:
        current = wav.abs().amax(dim=(-2, -1), keepdim=True)  # (B, 1, 1)
    scale = torch.where(current > SILENCE_THRESHOLD, peak / current.clamp_min(SILENCE_THRESHOLD),
                        torch.ones_like(current))
    return wav * scale


def _expected_shape(ndim: int, channels: int | None) -> str:
    c = str(channels) if channels is not None else "C"
    return {1: "(T,)", 2: f"({c}, T)", 3: f"(B, {c}, T)"}.get(ndim, f"{ndim} dims with time last")


def check_audio(
    wav: Tensor | np.ndarray,
    *,
    sample_rate: int | None = None,
    expected_sample_rate: int | None = None,
    ndim: int | None = None,
    channels: int | None = None,
    min_samples: int = 1,
    allow_silent: bool = False,
    name: str = "audio",
) -> Tensor:
    """Validate a waveform before a model sees it; fail early with the fix in the message.

    The one place where input dtypes are handled, so use the result: ``wav = check_audio(wav, ...)``.
    NumPy arrays are copied into tensors; float64/float16/bfloat16 become float32; integers are refused.

    Args:
        wav: the waveform, a tensor or NumPy array.
        sample_rate: the rate ``wav`` is at, if known.
        expected_sample_rate: the rate the caller needs; checked only when ``sample_rate`` is given.
        ndim: required number of dimensions (3 for ``(B, C, T)``).
        channels: required size of dim ``-2`` (1 for mono).
        min_samples: required length of the last (time) dimension.
        allow_silent: accept all-zero input (e.g. padding batches).
        name: how the message refers to ``wav`` (e.g. ``"codec input"``).

    Returns:
        ``wav`` as a float32 tensor on its device (``wav`` itself when it already was one).

    Raises:
        AudioError: naming the problem and the fix.

    Warns:
        UserWarning: the peak ``|sample|`` exceeds 1.0 (suggests :func:`normalize`).
    """
    if isinstance(wav, np.ndarray):
        try:  # a native-order, contiguous, writable copy (torch refuses big-endian and warns on read-only)
            wav = torch.from_numpy(np.array(wav, dtype=wav.dtype.newbyteorder("="), order="C"))
        except TypeError as err:
            raise AudioError(f"{name} is a NumPy array of dtype {wav.dtype}, which torch cannot hold; "
                             f"convert it with torch.from_numpy(x.astype(np.float32)).") from err
    if not torch.is_tensor(wav):
        raise AudioError(f"{name} must be a torch.Tensor, got {type(wav).__name__}. "
                         f"Convert with torch.as_tensor(x, dtype=torch.float32).")
    if not wav.is_floating_point():
        hint = {torch.int16: "divide int16 samples by 32768: wav.float() / 32768",
                torch.int32: "divide 32-bit PCM by 2**31: wav.float() / 2**31 (by 32768 if it holds int16 values)",
                }.get(wav.dtype, "convert with wav.float() (and scale integers into [-1, 1], e.g. int16 / 32768)")
        raise AudioError(f"{name} must be a float tensor with samples in [-1, 1], got dtype {wav.dtype}; {hint}.")
    if wav.dtype != torch.float32:
        wav = wav.float()  # float64 / float16 / bfloat16: the models' weights and mel filters are float32
    if ndim is not None and wav.ndim != ndim:
        hint = ("add the missing dimensions, e.g. wav.reshape(1, 1, -1) or wav.unsqueeze(0)" if wav.ndim < ndim
                else "remove dimensions, e.g. wav.squeeze(0), or process one item at a time")
        raise AudioError(f"{name} must have shape {_expected_shape(ndim, channels)}, got shape "
                         f"{tuple(wav.shape)} ({wav.ndim} dims); {hint}.")
    if channels is not None:
        got = wav.shape[-2] if wav.ndim >= 2 else 1
        if got != channels:
            if channels == 1:
                fix = "mix it down with course_lib.audio.to_mono(wav)"
            else:
                fix = f"a mono clip becomes {channels} channels with wav.repeat_interleave({channels}, dim=-2)"
            want = "be mono (1 channel" if channels == 1 else f"have {channels} channels ("
            want += " in dim -2)" if channels == 1 else "dim -2)"
            raise AudioError(f"{name} must {want} but has {got} channel(s) "
                             f"(shape {tuple(wav.shape)}); {fix}.")
    if sample_rate is not None and expected_sample_rate is not None and sample_rate != expected_sample_rate:
        raise AudioError(
            f"{name} is at {sample_rate} Hz but {expected_sample_rate} Hz is expected; resample it with "
            f"course_lib.audio.resample(wav, {sample_rate}, {expected_sample_rate})."
        )
    if not bool(torch.isfinite(wav).all()):
        bad = int((~torch.isfinite(wav)).sum())
        raise AudioError(f"{name} contains {bad} NaN or inf sample(s); find their source (a division by zero, "
                         f"an exploding model) or replace them with torch.nan_to_num(wav).")
    length = wav.shape[-1] if wav.ndim else 0
    if length < min_samples:
        secs = f" ({min_samples / sample_rate:.3f} s at {sample_rate} Hz)" if sample_rate else ""
        raise AudioError(f"{name} is too short: {length} samples, need at least {min_samples}{secs}. "
                         f"Use a longer clip or pad it with torch.nn.functional.pad(wav, (0, n)).")
    if not allow_silent and bool((wav.abs() < SILENCE_THRESHOLD).all()):
        raise AudioError(f"{name} is silent (every |sample| < {SILENCE_THRESHOLD:g}). Check that the clip "
                         f"was loaded or generated correctly, or pass allow_silent=True if silence is intended.")
    peak = float(wav.abs().amax()) if wav.numel() else 0.0
    if peak > 1.0:
        warnings.warn(f"{name} peaks at {peak:.4g}, outside [-1, 1] (it would clip when saved or played); "
                      f"scale it with course_lib.audio.normalize(wav).", UserWarning, stacklevel=2)
    return wav


# ----------------------------------------------------------------------------- integers


def to_int16(wav: Tensor) -> Tensor:
    """Float in [-1, 1] to int16 PCM exactly as ``save(..., subtype="PCM_16")`` stores it (x * 32768, clipped)."""
    return (wav.clamp(-1.0, 1.0) * 32768.0).round().clamp(-32768, 32767).to(torch.int16)


def mu_law_compress(wav: Tensor, mu: float = 255.0) -> Tensor:
    """Mu-law companding ``F(x) = sign(x) ln(1 + mu |x|) / ln(1 + mu)`` (ITU-T G.711), no quantization.

    A log-like loudness curve: a quiet sample at -60 dBFS (``|x| = 0.001``) becomes 0.04, so
    errors in quiet passages count almost as much as in loud ones. Differentiable; ``(...)`` in
    [-1, 1] (values outside are clipped) to ``(...)`` in [-1, 1].
    """
    mu_t = torch.tensor(float(mu), dtype=wav.dtype, device=wav.device)
    x = wav.clamp(-1.0, 1.0)
    return torch.sign(x) * torch.log1p(mu_t * x.abs()) / torch.log1p(mu_t)


def mu_law_expand(y: Tensor, mu: float = 255.0) -> Tensor:
    """Inverse of :func:`mu_law_compress`: ``F^-1(y) = sign(y) ((1 + mu)^|y| - 1) / mu``."""
    mu_t = torch.tensor(float(mu), dtype=y.dtype, device=y.device)
    return torch.sign(y) * torch.expm1(y.abs() * torch.log1p(mu_t)) / mu_t


def mu_law_encode(wav: Tensor, quantization_channels: int = 256) -> Tensor:
    """Mu-law companding then uniform quantization (ITU-T G.711; WaveNet's 8-bit output).

    ``F(x) = sign(x) ln(1 + mu |x|) / ln(1 + mu)`` with ``mu = quantization_channels - 1``
    (:func:`mu_law_compress`), then ``[-1, 1]`` is mapped to the integers ``0 .. mu``. Matches
    ``torchaudio.functional.mu_law_encoding``.

    Args:
        wav: ``(...)`` float tensor in [-1, 1] (values outside are clipped).
        quantization_channels: number of levels.

    Returns:
        ``(...)`` int64 codes in ``[0, quantization_channels)``.
    """
    mu = quantization_channels - 1.0
    return ((mu_law_compress(wav, mu) + 1) / 2 * mu + 0.5).to(torch.int64)


def mu_law_decode(codes: Tensor, quantization_channels: int = 256, dtype: torch.dtype = torch.float32) -> Tensor:
    """Inverse of :func:`mu_law_encode`: integer codes back to float samples in [-1, 1]."""
    mu = quantization_channels - 1.0
    return mu_law_expand(codes.to(dtype) / mu * 2 - 1, mu)


def quantize(wav: Tensor, bits: int) -> Tensor:
    """Uniform mid-rise quantization to ``2**bits`` levels, as a ``bits``-bit PCM converter would.

    The step is ``2 / 2**bits``; each sample becomes the centre of its step, so the
    levels are ``±step/2, ±3 step/2, ...`` (no exact zero: "mid-rise"). The error is at
    most ``step / 2`` and, for busy signals, gives an SNR of about ``6.02 * bits`` dB.

    Args:
        wav: ``(...)`` float tensor; values outside [-1, 1] are clipped.
        bits: 1 to 24.

    Returns:
        Tensor of the same shape and dtype holding the quantized values.
    """
    if not 1 <= int(bits) <= 24 or int(bits) != bits:
        raise AudioError(f"bits must be a whole number from 1 to 24, got {bits!r}.")
    levels = 2 ** int(bits)
    step = 2.0 / levels
    index = torch.floor(wav.clamp(-1.0, 1.0) / step).clamp(-levels // 2, levels // 2 - 1)
    return (index + 0.5) * step
