"""Classic codecs to hold a neural codec against, each reporting the bitrate it really used.

* :func:`pcm`: uniform ``bits``-bit PCM (``bits * sample_rate`` bits per second).
* :func:`mu_law`: mu-law companding (ITU-T G.711) at ``bits`` bits per sample.
* :func:`downsample`: lower the sample rate, then come back up (band limit, 16-bit PCM).
* :func:`opus`: the Opus codec (RFC 6716) in an Ogg container, written and read by
  ``soundfile`` (libsndfile) entirely in memory. Opus' lowest setting in libsndfile is
  6 kbps; the returned bitrate counts every byte of the Ogg pages that carry audio (page
  headers included) but not the one-off stream headers (``OpusHead``, ``OpusTags``: about
  870 bytes per file, which would add 7 kbps to a 1 s clip and nothing to a stream).

Every function takes a waveform ``(..., T)`` (mono ``(1, T)`` or ``(B, 1, T)``) and returns
``BaselineResult(audio, bitrate)`` with ``audio`` of the input's shape.

Example:
    >>> wav = 0.1 * torch.randn(1, 16000)
    >>> 4000 < opus(wav, 16000, bitrate=6000).bitrate < 8000
    True
"""
from __future__ import annotations

import io
import math
from typing import NamedTuple

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from course_lib.audio import check_audio, mu_law_decode, mu_law_encode, quantize, resample

__all__ = ["BaselineResult", "pcm", "mu_law", "downsample", "opus", "OPUS_MIN_BITRATE", "OPUS_MAX_BITRATE",
           "OPUS_SAMPLE_RATES", "RULER_OPUS_BITRATES"]

OPUS_MIN_BITRATE = 6_000     # libsndfile maps compression_level 1.0 to 6 kbps ...
OPUS_MAX_BITRATE = 256_000   # ... and 0.0 to 256 kbps, linearly in between
OPUS_SAMPLE_RATES = (8000, 12000, 16000, 24000, 48000)
# A ruler that judges decoded tokens also learns its real examples through Opus at these bitrates (bit/s): what it
# learns then is the class or voice, not the absence of codec artifacts (and Opus is part of no course model).
RULER_OPUS_BITRATES = (6000.0, 8000.0, 12000.0)


class BaselineResult(NamedTuple):
    audio: Tensor          # decoded audio, same shape, dtype and device as the input
    bitrate: float         # bits per second actually needed (for Opus: measured from the audio pages)
    header_bits: int = 0   # one-off bits per file not counted in ``bitrate`` (Opus stream headers)


def _ogg_audio_bytes(data: bytes) -> tuple[int, int]:
    """Split an Ogg Opus file into (audio page bytes, header page bytes) by walking its pages (RFC 3533)."""
    audio = header = i = 0
    while i + 27 <= len(data):
        if data[i:i + 4] != b"OggS":
            raise ValueError("not an Ogg stream: page sync 'OggS' missing; was the file written as OGG/OPUS?")
        n_seg = data[i + 26]
        body = sum(data[i + 27:i + 27 + n_seg])
        size = 27 + n_seg + body
        granule = int.from_bytes(data[i + 6:i + 14], "little")
        if granule == 0 and not audio:                             # header pages carry granule 0 (RFC 7845, 3)
            header += size
        else:
            audio += size
        i += size
    return audio, header


def _check(wav: Tensor, sample_rate: int) -> Tensor:
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}.")
    return check_audio(wav, allow_silent=True, name="baseline input")


def pcm(wav: Tensor, sample_rate: int, bits: int) -> BaselineResult:
    """Uniform ``bits``-bit PCM: ``bits * sample_rate`` bits per second per channel."""
    wav = _check(wav, sample_rate)
    return BaselineResult(quantize(wav, bits), float(bits * sample_rate))


def mu_law(wav: Tensor, sample_rate: int, bits: int = 8) -> BaselineResult:
    """Mu-law companding with ``2**bits`` levels (G.711 telephone speech is 8 bits at 8 kHz = 64 kbps)."""
    wav = _check(wav, sample_rate)
    if not 1 <= bits <= 16:
        raise ValueError(f"mu-law bits must lie in 1..16, got {bits}.")
    levels = 2 ** bits
    return BaselineResult(mu_law_decode(mu_law_encode(wav, levels), levels, wav.dtype), float(bits * sample_rate))


def downsample(wav: Tensor, sample_rate: int, target_rate: int, bits: int = 16) -> BaselineResult:
    """Resample to ``target_rate`` (band limit at ``target_rate / 2``), store as ``bits``-bit PCM, resample back."""
    wav = _check(wav, sample_rate)
    if not 0 < target_rate <= sample_rate:
        raise ValueError(f"target_rate must lie in (0, {sample_rate}], got {target_rate}.")
    low = quantize(resample(wav, sample_rate, target_rate), bits)
    back = resample(low, target_rate, sample_rate)[..., : wav.shape[-1]]
    return BaselineResult(back, float(bits * target_rate))


def opus(wav: Tensor, sample_rate: int, bitrate: float = 6000.0) -> BaselineResult:
    """Encode with Opus at about ``bitrate`` bits per second and decode again, in memory.

    Args:
        wav: (1, T), (T,) or (B, 1, T) mono audio; each clip is coded separately.
        sample_rate: one of Opus' rates (8, 12, 16, 24 or 48 kHz); resample others first.
        bitrate: target in bits per second, 6000 .. 256000 (libsndfile's range).

    Returns:
        The decoded audio, the *measured* bitrate (bytes of the Ogg pages that carry audio
        * 8 / duration; Opus' own rate control lands near, often below, the target) and the
        one-off header bits.

    Raises:
        ValueError: a sample rate or bitrate Opus cannot use, or more than one channel.
    """
    wav = _check(wav, sample_rate)
    if sample_rate not in OPUS_SAMPLE_RATES:
        raise ValueError(f"Opus codes only {OPUS_SAMPLE_RATES} Hz, got {sample_rate}; resample first with "
                         f"course_lib.audio.resample(wav, {sample_rate}, 16000).")
    if not OPUS_MIN_BITRATE <= bitrate <= OPUS_MAX_BITRATE:
        raise ValueError(f"Opus bitrate must lie in {OPUS_MIN_BITRATE}..{OPUS_MAX_BITRATE} bits/s "
                         f"(libsndfile's range), got {bitrate:g}.")
    if wav.dim() > 1 and wav.shape[-2] != 1:
        raise ValueError(f"opus() codes mono audio, got {wav.shape[-2]} channels; mix down with "
                         f"course_lib.audio.to_mono(wav).")
    level = (OPUS_MAX_BITRATE - bitrate) / (OPUS_MAX_BITRATE - OPUS_MIN_BITRATE)
    flat = wav.reshape(-1, wav.shape[-1])                           # (B, T)
    decoded, total_bits, header_bits = [], 0, 0
    for row in flat:
        buf = io.BytesIO()
        data = row.detach().cpu().double().clamp(-1, 1).numpy()
        sf.write(buf, data, sample_rate, format="OGG", subtype="OPUS", compression_level=level)
        audio_bytes, header_bytes = _ogg_audio_bytes(buf.getvalue())
        total_bits, header_bits = total_bits + 8 * audio_bytes, header_bits + 8 * header_bytes
        buf.seek(0)
        out, _ = sf.read(buf, dtype="float32")
        out = np.pad(out, (0, max(0, data.shape[0] - out.shape[0])))[: data.shape[0]]
        decoded.append(torch.from_numpy(out))
    audio = torch.stack(decoded).reshape(wav.shape).to(device=wav.device, dtype=wav.dtype)
    duration = flat.shape[0] * flat.shape[1] / sample_rate
    return BaselineResult(audio, total_bits / duration if duration > 0 else math.nan, header_bits)
