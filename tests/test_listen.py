"""Tests for course_lib.listen, run headless: widgets are built and driven programmatically."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import ipywidgets as widgets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
from IPython.display import Audio  # noqa: E402

from course_lib import listen  # noqa: E402

SR = 16_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sine(freq: float = 440.0, seconds: float = 0.25, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(SR * seconds)) / SR
    return amp * torch.sin(2 * torch.pi * freq * t)                      # (T,)


def read(data: bytes) -> tuple[np.ndarray, int]:
    x, sr = sf.read(io.BytesIO(data), dtype="float64", always_2d=True)   # (T, C)
    return x.T, sr                                                        # (C, T)


# ----------------------------------------------------------------------------- wav_bytes / play

@pytest.mark.parametrize("shape", [(4000,), (1, 4000), (2, 4000)])
def test_wav_bytes_roundtrip(shape):
    wav = (torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 0.999
    data = listen.wav_bytes(wav, SR, normalize=False)
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    back, sr = read(data)
    assert sr == SR and back.shape == (1 if len(shape) == 1 else shape[0], 4000)
    err = np.abs(back - wav.reshape(back.shape).double().numpy()).max()
    assert 0 < err <= 1 / 32768                                            # quantized, but only by rounding
    assert sf.info(io.BytesIO(data)).subtype == "PCM_16"


def test_wav_bytes_normalize_and_inputs():
    wav = sine(amp=0.1)
    back, _ = read(listen.wav_bytes(wav, SR))
    assert np.abs(back).max() == pytest.approx(0.99, abs=1e-4)
    # numpy, (1, T), float64, and (1, 1, T) all give the same file.
    ref = listen.wav_bytes(wav, SR)
    for other in (wav.numpy(), wav[None], wav.double(), wav[None, None]):
        assert listen.wav_bytes(other, SR) == ref
    silence, _ = read(listen.wav_bytes(torch.zeros(100), SR))          # no division by zero
    assert np.all(silence == 0)


def test_wav_bytes_errors():
    bad = sine()
    bad[10] = float("nan")
    with pytest.raises(ValueError, match="nan_to_num"):
        listen.wav_bytes(bad, SR)
    with pytest.raises(ValueError, match="sample_rate"):
        listen.wav_bytes(sine(), 0)
    with pytest.raises(ValueError, match=r"wav\.T"):
        listen.wav_bytes(np.zeros((4000, 2)), SR)
    with pytest.raises(ValueError, match="empty"):
        listen.wav_bytes(torch.zeros(0), SR)
    with pytest.warns(UserWarning, match="clipped"):
        back, _ = read(listen.wav_bytes(3 * sine(), SR, normalize=False))
    assert back.max() <= 1.0 and back.max() > 0.99


def test_play_returns_ipython_audio():
    audio = listen.play(sine(), SR)
    assert isinstance(audio, Audio)
    assert audio.data == listen.wav_bytes(sine(), SR)
    assert "audio" in audio._repr_html_()


# ----------------------------------------------------------------------------- players

@pytest.mark.parametrize("thumbnail", ["waveform", "spectrogram"])
def test_player_has_audio_label_and_png(thumbnail):
    p = listen.player(sine(), SR, label="a <sine>", thumbnail=thumbnail)
    assert isinstance(p, widgets.VBox)
    audios = [c for c in p.children if isinstance(c, widgets.Audio)]
    images = [c for c in p.children if isinstance(c, widgets.Image)]
    assert len(audios) == 1 and len(images) == 1
    assert bytes(audios[0].value) == listen.wav_bytes(sine(), SR)
    assert audios[0].format == "wav" and not audios[0].autoplay and not audios[0].loop
    assert bytes(images[0].value).startswith(PNG_MAGIC)
    assert "a &lt;sine&gt;" in p.label.value                              # escaped HTML
    assert plt.get_fignums() == []                                        # no pyplot figure leaked


def test_player_without_thumbnail_and_thumbnail_png():
    p = listen.player(sine(), SR, thumbnail=None)
    assert p.image is None and not any(isinstance(c, widgets.Image) for c in p.children)
    png_w = listen.thumbnail_png(sine(), SR, "waveform")
    png_s = listen.thumbnail_png(sine(), SR, "spectrogram")
    assert png_w.startswith(PNG_MAGIC) and png_s.startswith(PNG_MAGIC) and png_w != png_s
    for kind in ("waveform", "spectrogram"):                              # a clip shorter than one FFT
        assert listen.thumbnail_png(torch.zeros(100), SR, kind).startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="thumbnail"):
        listen.player(sine(), SR, thumbnail="sonogram")


def test_player_grid():
    batch = torch.randn(5, 1, 2000, generator=torch.Generator().manual_seed(0)) * 0.1   # (B, C, T)
    grid = listen.player_grid(batch, labels=list("abcde"), sample_rate=SR, thumbnail=None, columns=3)
    assert isinstance(grid, widgets.GridBox)
    assert len(grid.children) == 5
    assert "repeat(3" in grid.layout.grid_template_columns
    assert [c.label.value for c in grid.children] == [f"<b>{x}</b>" for x in "abcde"]
    back, _ = read(bytes(grid.children[2].audio.value))
    assert np.argmax(np.abs(back[0])) == np.argmax(np.abs(batch[2, 0].numpy()))
    assert len(listen.player_grid([sine(), sine(880.0)], sample_rate=SR).children) == 2
    with pytest.raises(ValueError, match="label"):
        listen.player_grid(batch, labels=["x"], sample_rate=SR)


# ----------------------------------------------------------------------------- compare / ABX

def test_compare_plain_ab():
    w = listen.compare(sine(), sine(880.0), SR, labels=("low", "high"))
    assert isinstance(w, widgets.VBox)
    assert w.button_a is None and w.player_x is None
    assert w.player_a.label.value == "<b>A: low</b>"
    with pytest.raises(RuntimeError, match="abx=True"):
        w.answer("A")


def test_abx_with_given_x_records_answers():
    a, b = sine(440.0), sine(660.0)
    w = listen.compare(a, b, SR, x=b + 0.001 * torch.randn(len(b)))
    assert w.truth == "B"
    w.button_b.click()                                 # the handlers, as a student's click runs them
    w.button_a.click()
    assert w.results == [listen.ABXResult("B", "B", True), listen.ABXResult("A", "B", False)]
    assert w.score == (1, 2)
    assert "X was B" in w.feedback.value
    assert w.new_x is None                              # a fixed X cannot be redrawn


def test_abx_without_reveal_only_records():
    w = listen.compare(sine(440.0), sine(660.0), SR, x=sine(440.0), reveal=False)
    w.button_a.click()
    assert w.results[-1].correct and "X was" not in w.feedback.value and "1 so far" in w.feedback.value


def test_abx_random_is_reproducible_and_redraws():
    a, b = sine(440.0), sine(660.0)
    truths = []
    for _ in range(2):
        w = listen.compare(a, b, SR, abx=True, generator=torch.Generator().manual_seed(3))
        seq = [w.truth]
        for _ in range(15):
            w.new_x.click()
            seq.append(w.truth)
        truths.append(seq)
    assert truths[0] == truths[1] and set(truths[0]) == {"A", "B"}
    # The X player really plays the drawn clip.
    x, _ = read(bytes(w.player_x.audio.value))
    expected = listen.wav_bytes(a if w.truth == "A" else b, SR)
    assert bytes(w.player_x.audio.value) == expected and x.shape[1] == len(a)
    (w.button_a if w.truth == "A" else w.button_b).click()
    assert w.results[-1].correct


# ----------------------------------------------------------------------------- explorer

def tone(freq: float, amp: float = 0.5) -> torch.Tensor:
    return sine(freq, seconds=0.1, amp=amp)


def test_explorer_calls_fn_with_control_values():
    calls = []

    def fn(freq, amp, shape):
        calls.append((freq, amp, shape))
        return tone(freq, amp), f"{shape} at {freq:.0f} Hz"

    e = listen.explorer(fn, {"freq": (100.0, 900.0, 100.0), "amp": widgets.FloatSlider(value=0.25, min=0, max=1),
                             "shape": ["sine", "square"]}, SR)
    assert isinstance(e, widgets.VBox)
    assert calls == [(500.0, 0.25, "sine")]                                # run_on_start, interact-style midpoint
    assert torch.equal(e.last, tone(500.0, 0.25))
    assert "sine at 500 Hz" in e.info.value
    assert bytes(e.image.value).startswith(PNG_MAGIC)
    assert all(w.continuous_update is False for w in (e.controls["freq"], e.controls["amp"]))
    e.controls["freq"].value = 300.0                                       # a knob turned
    assert calls[-1] == (300.0, 0.25, "sine")
    assert torch.equal(e.last, tone(300.0, 0.25))
    assert bytes(e.audio.value) == listen.wav_bytes(tone(300.0, 0.25), SR)
    e.controls["shape"].value = "square"
    assert calls[-1] == (300.0, 0.25, "square")
    e.button.click()                                                       # Generate: same knobs again
    assert len(calls) == 4 and e.calls == 4


def test_explorer_manual_mode_and_update():
    calls = []
    e = listen.explorer(lambda n: calls.append(n) or tone(100.0 * n), {"n": (1, 9)}, SR,
                        run_on_start=False, live=False, thumbnail=None)
    assert calls == [] and e.last is None
    e.controls["n"].value = 3                                              # not live: no call
    assert calls == []
    out = e.update()
    assert calls == [3] and torch.equal(out, e.last)
    e.controls["n"].value = 4
    e.button.click()
    assert calls == [3, 4]
    assert isinstance(e.controls["n"], widgets.IntSlider)


def test_explorer_shows_errors_instead_of_raising():
    def fn(gain):
        if gain > 1:
            raise ValueError("gain too high, try <= 1")
        return tone(440.0, gain)

    e = listen.explorer(fn, {"gain": widgets.FloatSlider(value=0.5, min=0, max=2)}, SR)
    good = e.last
    e.controls["gain"].value = 1.5                                         # must not raise
    assert isinstance(e.error, ValueError)
    assert "gain too high" in e.info.value and "ValueError" in e.info.value
    assert any("gain too high" in o.get("text", "") for o in e.output.outputs)
    assert e.last is good                                                  # previous sound kept
    assert not e.button.disabled
    e.controls["gain"].value = 0.8                                         # recovers, clears the error
    assert e.error is None and e.output.outputs == () and "ValueError" not in e.info.value
    # A NaN waveform is also reported, not raised.
    e2 = listen.explorer(lambda: torch.full((100,), float("nan")), {}, SR)
    assert "nan_to_num" in e2.info.value and e2.last is None


def test_explorer_rejects_bad_controls():
    with pytest.raises(TypeError, match="shorthand|cannot make"):
        listen.explorer(lambda x: tone(440.0), {"x": 3}, SR)
    with pytest.raises(TypeError, match="no value"):
        listen.explorer(lambda x: tone(440.0), {"x": widgets.Button()}, SR)
    e = listen.explorer(lambda on, name: tone(440.0), {"on": True, "name": "abc"}, SR, run_on_start=False)
    assert isinstance(e.controls["on"], widgets.Checkbox) and isinstance(e.controls["name"], widgets.Text)
    assert e.values == {"on": True, "name": "abc"}
