"""Tests for course_lib.audio: I/O round trips, atomic writes, validation messages, integer codes."""
from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from course_lib.audio import (AudioError, change_speed, check_audio, load, mu_law_decode, mu_law_encode, normalize, quantize,
                              resample, save, to_int16, to_mono)


def _sine(freq: float = 440.0, sr: int = 16000, seconds: float = 0.25, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(sr * seconds)) / sr
    return amp * torch.sin(2 * math.pi * freq * t)  # (T,)


# ----------------------------------------------------------------------------- load / save


@pytest.mark.parametrize("channels", [1, 2])
def test_save_load_pcm16_roundtrip_is_bit_exact(tmp_path, channels):
    gen = torch.Generator().manual_seed(0)
    ints = torch.randint(-32768, 32768, (channels, 4000), generator=gen)
    wav = ints.float() / 32768  # exactly representable in PCM_16
    path = save(tmp_path / "a.wav", wav, 16000)
    back, sr = load(path)
    assert sr == 16000 and back.dtype == torch.float32 and back.shape == (channels, 4000)
    assert torch.equal(back, wav)
    assert torch.equal(to_int16(back), ints.to(torch.int16))


def test_save_accepts_1d_numpy_and_creates_parents(tmp_path):
    wav = _sine().numpy()
    path = tmp_path / "deep" / "er" / "b.flac"
    save(path, wav, 16000)
    back, sr = load(path)
    assert back.shape == (1, wav.shape[0]) and sr == 16000
    np.testing.assert_allclose(back[0].numpy(), wav, atol=1 / 32768)


def test_save_clips_integer_subtypes_but_not_float(tmp_path):
    wav = torch.tensor([[0.0, 1.5, -2.0, 0.25]])
    save(tmp_path / "i.wav", wav, 8000, subtype="ULAW")  # wraps around without our clipping
    back, _ = load(tmp_path / "i.wav")
    assert back[0, 1] > 0.9 and back[0, 2] < -0.9
    save(tmp_path / "f.wav", wav, 8000, subtype="FLOAT")
    back, _ = load(tmp_path / "f.wav")
    assert torch.equal(back, wav)


def test_load_resamples(tmp_path):
    save(tmp_path / "c.wav", _sine(sr=8000, seconds=0.5), 8000)
    wav, sr = load(tmp_path / "c.wav", sample_rate=16000)
    assert sr == 16000 and wav.shape == (1, 8000)


def test_load_missing_file_names_path_and_fix(tmp_path):
    missing = tmp_path / "nope.wav"
    with pytest.raises(FileNotFoundError, match="nope.wav") as info:
        load(missing)
    assert "Check the path" in str(info.value)


def test_load_corrupt_file(tmp_path):
    bad = tmp_path / "x.wav"
    bad.write_bytes(b"this is not a RIFF header at all" * 10)
    with pytest.raises(AudioError, match="not a readable audio file") as info:
        load(bad)
    assert "x.wav" in str(info.value) and "re-download or re-create" in str(info.value)


@pytest.mark.parametrize("subtype, channels", [("PCM_16", 1), ("PCM_24", 2), ("FLOAT", 2)])
def test_load_refuses_a_truncated_wav(tmp_path, subtype, channels):
    # FLOAT WAVs carry fact/PEAK chunks before the data chunk, so the chunk walk is exercised too.
    path = save(tmp_path / "cut.wav", torch.full((channels, 8000), 0.25), 16000, subtype=subtype)
    whole = path.read_bytes()
    assert load(path)[0].shape == (channels, 8000)  # the intact file still loads
    path.write_bytes(whole[: len(whole) // 2])      # an interrupted download: soundfile would read 4000-odd frames
    with pytest.raises(AudioError, match="truncated") as info:
        load(path)
    message = str(info.value)
    assert "cut.wav" in message and "declares 8000 frames" in message and "Re-download or re-create" in message


def test_load_accepts_wav_with_trailing_chunk_and_unset_data_size(tmp_path):
    path = save(tmp_path / "ok.wav", torch.full((1, 100), 0.25), 16000)
    whole = path.read_bytes() + b"LIST\x04\x00\x00\x00INFO"  # metadata after the data chunk
    path.write_bytes(whole)
    assert load(path)[0].shape == (1, 100)
    i = whole.index(b"data") + 4                                   # size left unset by a streaming writer
    path.write_bytes(whole[:i] + b"\xff\xff\xff\xff" + whole[i + 4:-12])
    assert load(path)[0].shape == (1, 100)


@pytest.mark.parametrize("bad, match", [
    (torch.tensor([[0.1, float("nan"), 0.2]]), "NaN or inf"),
    (torch.tensor([[0.1, float("inf"), 0.2]]), "NaN or inf"),
    (torch.zeros(2, 1, 100), r"\(C, T\) or \(T,\)"),
])
def test_failed_save_leaves_nothing_behind(tmp_path, bad, match):
    target = tmp_path / "out.wav"
    target.write_bytes(b"old")  # an existing file must survive a failed save untouched
    with pytest.raises(AudioError, match=match):
        save(target, bad, 16000)
    assert sorted(os.listdir(tmp_path)) == ["out.wav"] and target.read_bytes() == b"old"


def test_failed_write_removes_temp_file(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        with open(args[0], "wb") as fh:  # half a file, then a crash
            fh.write(b"RIFF")
        raise OSError("disk full")

    monkeypatch.setattr(sf, "write", boom)
    with pytest.raises(OSError, match="disk full"):
        save(tmp_path / "out.wav", _sine(), 16000)
    assert os.listdir(tmp_path) == []


def test_save_rejects_unknown_suffix(tmp_path):
    with pytest.raises(AudioError, match="suffix"):
        save(tmp_path / "a.xyz", _sine(), 16000)
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- basic ops


@pytest.mark.parametrize("orig, new, length", [(16000, 8000, 16000), (8000, 16000, 4001), (44100, 16000, 44100),
                                               (16000, 22050, 1234), (16000, 16000, 777)])
def test_resample_length(orig, new, length):
    wav = torch.randn(2, 3, length, generator=torch.Generator().manual_seed(0))
    out = resample(wav, orig, new)
    g = math.gcd(orig, new)
    assert out.shape == (2, 3, math.ceil(length * (new // g) / (orig // g)))
    if orig == new:
        assert out is wav


def test_resample_keeps_a_sine():
    out = resample(_sine(440, sr=16000, seconds=1.0), 16000, 8000)
    torch.testing.assert_close(out[200:-200], _sine(440, sr=8000, seconds=1.0)[200:-200], atol=2e-3, rtol=0)


def test_change_speed_moves_pitch_and_length_together():
    out, applied = change_speed(_sine(400, seconds=1.0), 16000, 1.25)     # resampled to 12,800 Hz
    assert applied == 1.25 and out.shape == (12800,)
    spectrum = torch.fft.rfft(out * torch.hann_window(len(out)))
    assert abs(float(spectrum.abs().argmax()) * 16000 / len(out) - 500) < 2    # 400 Hz played 1.25x as fast
    _, applied = change_speed(_sine(), 16000, 1.1)                          # 14,545 Hz rounds to 14,500
    assert applied == 16000 / 14500
    with pytest.raises(AudioError, match="factor must be positive"):
        change_speed(_sine(), 16000, 0.0)


def test_to_mono_shapes_and_values():
    wav = torch.stack([torch.ones(10), 3 * torch.ones(10)])  # (2, T)
    assert torch.equal(to_mono(wav), 2 * torch.ones(1, 10))
    assert to_mono(torch.randn(4, 2, 10)).shape == (4, 1, 10)
    assert to_mono(torch.randn(10)).shape == (1, 10)


def test_normalize_per_clip_and_silence():
    batch = torch.stack([0.1 * torch.randn(2, 100), torch.zeros(2, 100)])  # (B=2, C=2, T)
    out = normalize(batch, peak=0.5)
    assert math.isclose(out[0].abs().max().item(), 0.5, rel_tol=1e-6)
    assert torch.equal(out[1], batch[1])
    ratio = out[0] / batch[0]
    assert torch.allclose(ratio, ratio.flatten()[0])  # one gain per clip: channel balance kept
    assert math.isclose(normalize(torch.tensor([0.1, -0.2])).abs().max().item(), 0.95, rel_tol=1e-6)


# ----------------------------------------------------------------------------- check_audio


def test_check_audio_accepts_and_converts_numpy():
    out = check_audio(np.full((1, 1, 100), 0.1, dtype=np.float32), ndim=3, channels=1)
    assert torch.is_tensor(out) and out.shape == (1, 1, 100)


@pytest.mark.parametrize("wav, kwargs, fragments", [
    (torch.zeros(1, 1, 10, dtype=torch.int16) + 5, {}, ["int16", "32768"]),
    (torch.ones(1, 1, 10, dtype=torch.int64), {}, [".float()"]),
    (torch.full((100,), 0.1), {"ndim": 3, "channels": 1}, ["(B, 1, T)", "unsqueeze"]),
    (torch.full((1, 2, 100), 0.1), {"ndim": 3, "channels": 1}, ["mono", "has 2 channel", "course_lib.audio.to_mono"]),
    (torch.full((1, 1, 100), 0.1), {"sample_rate": 44100, "expected_sample_rate": 16000},
     ["44100 Hz", "course_lib.audio.resample(wav, 44100, 16000)"]),
    (torch.tensor([[[0.1, float("nan")]]]), {}, ["NaN", "nan_to_num"]),
    (torch.zeros(1, 1, 100), {}, ["silent", "allow_silent=True"]),
    (torch.full((1, 1, 10), 0.1), {"min_samples": 100, "sample_rate": 16000}, ["too short", "pad"]),
    ([0.1, 0.2], {}, ["torch.Tensor", "torch.as_tensor"]),
])
def test_check_audio_messages_name_the_fix(wav, kwargs, fragments):
    with pytest.raises(AudioError) as info:
        check_audio(wav, name="codec input", **kwargs)
    message = str(info.value)
    assert "codec input" in message or isinstance(wav, list)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_check_audio_casts_float_dtypes_to_float32(dtype):
    wav = torch.full((2, 1, 64), 0.25, dtype=dtype)
    out = check_audio(wav, ndim=3, channels=1)
    assert out.dtype == torch.float32 and out.shape == wav.shape and torch.equal(out, wav.float())
    same = torch.full((2, 1, 64), 0.25)
    assert check_audio(same) is same  # float32 tensors come back untouched


@pytest.mark.parametrize("array", [
    np.full((1, 1, 64), 0.25),                                          # float64
    np.full((1, 1, 64), 0.25, dtype=">f4"),                             # big-endian (torch refuses these)
    np.broadcast_to(np.float32(0.25), (1, 1, 64)),                      # read-only, not contiguous
])
def test_check_audio_converts_any_float_numpy_array(array):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "non-writable array" warning from torch
        out = check_audio(array, ndim=3, channels=1)
    assert torch.is_tensor(out) and out.dtype == torch.float32 and torch.equal(out, torch.full((1, 1, 64), 0.25))


@pytest.mark.parametrize("wav, fragments", [
    (np.full((1, 1, 10), 5, dtype=np.int16), ["int16", "32768"]),
    (torch.full((1, 1, 10), 5, dtype=torch.int32), ["int32", "2**31", "32768"]),
    (np.array([[[None, "a"]]], dtype=object), ["dtype object", "astype(np.float32)"]),
])
def test_check_audio_refuses_integers_and_odd_arrays(wav, fragments):
    with pytest.raises(AudioError) as info:
        check_audio(wav, name="codec input")
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


@pytest.mark.parametrize("bad", [float("-inf"), float("nan")])
def test_check_audio_refuses_non_finite_float64(bad):
    with pytest.raises(AudioError, match="NaN or inf"):
        check_audio(torch.tensor([[[0.1, bad]]], dtype=torch.float64))


def test_check_audio_warns_when_the_peak_exceeds_one():
    with pytest.warns(UserWarning, match=r"peaks at 100\b.*course_lib\.audio\.normalize"):
        out = check_audio(torch.tensor([[[0.1, -100.0, 3.0]]]), name="codec input")
    assert out.abs().max() == 100  # warned, not changed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_audio(torch.tensor([[[0.5, -1.0, 1.0]]]))  # full scale is fine


def test_check_audio_allows_silence_when_asked():
    wav = torch.zeros(1, 1, 50)
    assert check_audio(wav, allow_silent=True, ndim=3, channels=1, min_samples=50) is wav


# ----------------------------------------------------------------------------- integer codes


@pytest.mark.parametrize("channels", [16, 256])
def test_mu_law_matches_torchaudio(channels):
    x = torch.linspace(-1, 1, 4001)
    codes = mu_law_encode(x, channels)
    assert codes.dtype == torch.int64 and codes.min() == 0 and codes.max() == channels - 1
    assert torch.equal(codes, AF.mu_law_encoding(x, channels))
    torch.testing.assert_close(mu_law_decode(codes, channels), AF.mu_law_decoding(codes, channels))


def test_mu_law_roundtrip_error_small_near_zero():
    x = torch.linspace(-0.05, 0.05, 101)
    err = (mu_law_decode(mu_law_encode(x)) - x).abs()
    assert err.max() < 2e-3  # fine steps near zero: that is the point of companding


@pytest.mark.parametrize("bits", [1, 4, 8, 12])
def test_quantize_levels_and_snr(bits):
    x = torch.rand(20000, generator=torch.Generator().manual_seed(1)) * 2 - 1
    q = quantize(x, bits)
    step = 2 / 2**bits
    assert q.unique().numel() <= 2**bits
    assert (q - x).abs().max() <= step / 2 + 1e-6
    assert not (q == 0).any()  # mid-rise: no zero level
    snr_db = 10 * torch.log10(x.square().mean() / (q - x).square().mean())
    assert abs(snr_db.item() - 6.02 * bits) < 0.3  # uniform signal: SNR = 6.02 bits dB


def test_quantize_rejects_bad_bits():
    with pytest.raises(AudioError, match="bits"):
        quantize(torch.zeros(3), 0)
