"""AudioLM's token layout (:mod:`course_lib.audiolm`): both kinds of tokens of a clip, aligned, and the
frame-major flattening of RVQ levels into one vocabulary that the acoustic stages model.

Shapes: B batch, T samples, N semantic tokens (25 Hz), L codec frames (50 Hz), Q levels, K codes per level.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import codec as codec_lib
from course_lib.audio import check_audio

__all__ = ["AudioTokens", "dedup", "semantic_span", "flatten_codes", "unflatten_codes", "extract_tokens"]


class AudioTokens(NamedTuple):
    """Both kinds of tokens of the same audio, aligned: ``L = frames_per_semantic * N``."""

    semantic: Tensor   # (B, N) int64 at 25 Hz, duplicates kept
    coarse: Tensor     # (B, Q', L) int64 codes of the first Q' RVQ levels
    fine: Tensor       # (B, Q - Q', L) int64 codes of the other levels


def dedup(tokens: Tensor) -> Tensor:
    """(N,) ids -> (N',) with consecutive repeats removed: [5, 5, 7, 7, 7, 5] -> [5, 7, 5]."""
    if tokens.dim() != 1:
        raise ValueError(f"dedup takes one sequence (N,), got shape {tuple(tokens.shape)}; loop over the batch.")
    return torch.unique_consecutive(tokens)


def semantic_span(start: int, stop: int, frames_per_semantic: int) -> tuple[int, int]:
    """The semantic tokens [s0, s1) covering codec frames [start, stop): frame l lies in token l // r."""
    return start // frames_per_semantic, -(-stop // frames_per_semantic)


def _check_codes(codes: Tensor, codebook_size: int, name: str) -> None:
    if not isinstance(codes, Tensor) or codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of codes, got {getattr(codes, 'dtype', type(codes))}.")
    if codes.numel() and (codes.min() < 0 or codes.max() >= codebook_size):
        raise ValueError(f"{name} holds ids in [{int(codes.min())}, {int(codes.max())}], outside this model's vocabulary "
                         f"[0, {codebook_size}): were they made by another tokenizer? Check config.codec/config.hubert.")


def flatten_codes(codes: Tensor, codebook_size: int) -> Tensor:
    """(B, Q, L) codes -> (B, L * Q) ids, frame-major, level q offset by q * K (AudioLM Fig. 2).

    Frame l's levels come one after the other: ``ids[:, l * Q + q] = codes[:, q, l] + q * K``.
    """
    if codes.dim() != 3:
        raise ValueError(f"codes must have shape (B, Q, L), got {tuple(codes.shape)}.")
    _check_codes(codes, codebook_size, "codes")
    offsets = torch.arange(codes.shape[1], device=codes.device)[:, None] * codebook_size     # (Q, 1)
    return (codes.long() + offsets).transpose(1, 2).flatten(1)                               # (B, L * Q)


def unflatten_codes(ids: Tensor, num_quantizers: int, codebook_size: int) -> Tensor:
    """The inverse of :func:`flatten_codes`: (B, L * Q) ids -> (B, Q, L) codes."""
    if ids.dim() != 2 or ids.shape[1] % num_quantizers:
        raise ValueError(f"ids must be (B, L * Q) with Q={num_quantizers}, got {tuple(ids.shape)}.")
    codes = ids.unflatten(1, (-1, num_quantizers)).transpose(1, 2)                          # (B, Q, L)
    codes = codes - torch.arange(num_quantizers, device=ids.device)[:, None] * codebook_size
    if codes.numel() and (codes.min() < 0 or codes.max() >= codebook_size):
        raise ValueError("ids do not follow the frame-major layout: an id lies outside its level's range "
                         "[q * K, (q + 1) * K).")
    return codes


def extract_tokens(wav: Tensor, semantic_model: nn.Module, codec: codec_lib.Codec, num_coarse: int,
                   sample_rate: int | None = None) -> AudioTokens:
    """(B, 1, T) audio -> :class:`AudioTokens`, cut to whole semantic tokens (640 samples at 16 kHz).

    Raises:
        AudioError: wrong shape or sample rate, NaN, silence, or shorter than one semantic token.
    """
    hop = round(codec.hop_length * codec.frame_rate / semantic_model.semantic_rate)       # samples per token
    wav = check_audio(wav, sample_rate=sample_rate, expected_sample_rate=codec.sample_rate, ndim=3, channels=1,
                      min_samples=hop, name="AudioLM input")
    wav = wav[..., : wav.shape[-1] // hop * hop]
    semantic = semantic_model.semantic_tokens(wav)                                           # (B, N)
    codes = codec.encode(wav)                                                                # (B, Q, r * N)
    return AudioTokens(semantic, codes[:, :num_coarse], codes[:, num_coarse:])


def _pad(rows: list[Tensor], value: int, length: int | None = None, what: str = "") -> Tensor:
    """Rows (..., n_i) -> (B, ..., length or max n_i), right-padded with ``value``."""
    n = max(r.shape[-1] for r in rows)
    if length is not None and n > length:
        raise ValueError(f"{what}: {n} tokens do not fit the {length} positions of this stage; give a shorter span "
                         f"or build the stages with a larger context.")
    return torch.stack([F.pad(r.long(), (0, (length or n) - r.shape[-1]), value=value) for r in rows])
