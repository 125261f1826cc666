"""Tests for course_lib.plots: what is drawn, where, and on which scale."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torchaudio  # noqa: E402

from course_lib import plots  # noqa: E402

SR = 16_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def sine(freq: float, seconds: float = 0.5, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(SR * seconds)) / SR
    return amp * torch.sin(2 * torch.pi * freq * t)                      # (T,)


# ----------------------------------------------------------------------------- waveform

@pytest.mark.parametrize("shape", [(8000,), (1, 8000), (2, 8000), (1, 2, 8000)])
def test_waveform_lines_and_duration(shape):
    wav = torch.rand(shape) * 2 - 1
    ax = plots.plot_waveform(wav, SR, title="w")
    n_ch = 2 if len(shape) > 1 and shape[-2] == 2 else 1
    assert len(ax.lines) == n_ch
    assert ax.get_xlim() == pytest.approx((0.0, 8000 / SR))
    assert ax.get_title() == "w"


def test_waveform_envelope_keeps_extremes():
    wav = torch.zeros(100_000)
    wav[12_345], wav[77_777] = 0.9, -0.7                 # two clicks must survive the decimation
    ax = plots.plot_waveform(wav, SR)
    y = ax.lines[0].get_ydata()
    assert len(y) <= plots._MAX_WAVE_POINTS
    assert y.max() == pytest.approx(0.9) and y.min() == pytest.approx(-0.7)
    x_click = ax.lines[0].get_xdata()[np.argmax(y)]
    assert abs(x_click - 12_345 / SR) < 100_000 / SR / (plots._MAX_WAVE_POINTS // 2)


def test_waveform_zoom_shows_samples():
    wav = sine(440.0)
    ax = plots.plot_waveform(wav, SR, zoom=(0.1, 0.105))
    assert ax.get_xlim() == pytest.approx((0.1, 0.105))
    line = ax.lines[0]
    assert line.get_marker() == "."                       # few samples -> each one visible
    x = line.get_xdata()
    assert x.min() <= 0.1 and x.max() >= 0.105
    np.testing.assert_allclose(line.get_ydata(), wav.numpy()[np.round(x * SR).astype(int)], atol=1e-6)


def test_waveform_into_given_axes_and_bad_shapes():
    fig, ax = plt.subplots()
    assert plots.plot_waveform(np.zeros(100), SR, ax=ax) is ax
    with pytest.raises(ValueError, match=r"wav\.T"):
        plots.plot_waveform(np.zeros((1000, 2)), SR)
    with pytest.raises(ValueError, match="wav\\[0\\]"):
        plots.plot_waveform(np.zeros((3, 2, 100)), SR)
    with pytest.raises(ValueError, match="zoom"):
        plots.plot_waveform(np.zeros(100), SR, zoom=(0.5, 0.1))


# ----------------------------------------------------------------------------- spectrogram

def test_mel_scale_matches_librosa():
    librosa = pytest.importorskip("librosa")
    f = np.array([0.0, 200.0, 999.0, 1000.0, 2500.0, 8000.0])
    np.testing.assert_allclose(plots.hz_to_mel(f), librosa.hz_to_mel(f), rtol=1e-9)
    np.testing.assert_allclose(plots.mel_to_hz(plots.hz_to_mel(f)), f, rtol=1e-9, atol=1e-9)


def test_plotted_mel_matches_torchaudio():
    x = torch.randn(SR // 2, generator=torch.Generator().manual_seed(0))
    ref = torchaudio.transforms.MelSpectrogram(SR, n_fft=512, hop_length=128, n_mels=64,
                                               norm="slaney", mel_scale="slaney")(x)
    torch.testing.assert_close(plots._mel_power(x, SR, 512, 128, 64), ref, rtol=1e-4, atol=1e-4)


def test_linear_spectrogram_axes_and_peak():
    wav = sine(1000.0)
    ax = plots.plot_spectrogram(wav, SR, kind="linear", n_fft=512, hop_length=128, colorbar=False)
    assert len(ax.images) == 1
    img = ax.images[0]
    assert ax.get_xlim() == pytest.approx((0.0, 0.5))                  # duration
    assert ax.get_ylim() == pytest.approx((0.0, SR / 2))
    data = np.asarray(img.get_array())                                   # (F, L) in dB
    assert data.shape == (257, 1 + len(wav) // 128)
    peak_bin = int(np.argmax(data[:, data.shape[1] // 2]))
    assert peak_bin * SR / 512 == pytest.approx(1000.0, abs=SR / 512)
    vmin, vmax = img.get_clim()
    assert vmax == pytest.approx(data.max()) and vmax - vmin == pytest.approx(80.0)


def test_mel_spectrogram_axes_in_hz():
    wav = sine(2000.0)
    ax = plots.plot_spectrogram(wav, SR, kind="mel", n_mels=80, db_range=60)
    assert len(ax.images) == 1
    assert ax.get_ylim() == pytest.approx((0.0, float(plots.hz_to_mel(SR / 2))))
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert "1k" in labels and "8k" in labels
    data = np.asarray(ax.images[0].get_array())
    assert data.shape[0] == 80
    # The 2 kHz tone must sit on the row whose mel centre is nearest 2 kHz.
    row = int(np.argmax(data[:, data.shape[1] // 2]))
    y0, y1 = ax.images[0].get_extent()[2:]
    centre_hz = plots.mel_to_hz(y0 + (row + 0.5) * (y1 - y0) / 80)
    assert centre_hz == pytest.approx(2000.0, rel=0.08)
    assert len(ax.figure.axes) == 2                                       # the colour bar


def test_precomputed_spectrogram_scales():
    mag = torch.rand(64, 40) + 1e-3
    expected = 20 * np.log10(mag.double().numpy())
    ax = plots.plot_spectrogram(mag, SR, hop_length=256, colorbar=False)      # auto: magnitude
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), expected, rtol=1e-6)
    assert ax.get_xlim()[1] == pytest.approx(39.5 * 256 / SR)
    ax = plots.plot_spectrogram(mag ** 2, SR, scale="power", colorbar=False)
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), expected, atol=1e-4)
    db = -torch.rand(64, 40) * 50                                         # already in dB: shown as is
    ax = plots.plot_spectrogram(db, SR, colorbar=False)
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), db.double().numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="scale='db'"):
        plots.plot_spectrogram(db, SR, scale="power")


def test_precomputed_spectral_mel_matches_waveform_path():
    spectral = pytest.importorskip("course_lib.spectral")
    wav = sine(700.0)
    mel = spectral.mel_spectrogram(wav, SR, n_fft=1024, hop_length=256, n_mels=80, power=2.0)   # (F, L)
    a = np.asarray(plots.plot_spectrogram(mel, SR, scale="power", colorbar=False).images[0].get_array())
    b = np.asarray(plots.plot_spectrogram(wav, SR, colorbar=False).images[0].get_array())
    peak = a.max()
    np.testing.assert_allclose(np.maximum(a, peak - 80), np.maximum(b, peak - 80), atol=0.01)


def test_spectrogram_rejects_nan_and_bad_kind():
    with pytest.raises(ValueError, match="nan_to_num"):
        plots.plot_spectrogram(torch.full((1000,), float("nan")), SR)
    with pytest.raises(ValueError, match="kind"):
        plots.plot_spectrogram(torch.zeros(1000), SR, kind="log")


def test_compare_spectrograms_shares_scale():
    wavs = [sine(500.0), sine(500.0, amp=0.05), torch.zeros(4000)]
    fig = plots.compare_spectrograms(wavs, ["loud", "quiet", "silence"], SR)
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["loud", "quiet", "silence"]
    clims = {ax.images[0].get_clim() for ax in panels}
    assert len(clims) == 1                                               # one dB scale for all
    assert len(fig.axes) == 4                                            # + colour bar
    # 20x quieter is 26 dB lower on the shared scale.
    peak = [np.asarray(ax.images[0].get_array()).max() for ax in panels[:2]]
    assert peak[0] - peak[1] == pytest.approx(20 * np.log10(10), abs=0.5)
    with pytest.raises(ValueError, match="label"):
        plots.compare_spectrograms(wavs, ["a"], SR)


# ----------------------------------------------------------------------------- tokens

def test_plot_tokens_grid():
    codes = torch.randint(0, 50, (4, 30), generator=torch.Generator().manual_seed(0))
    ax = plots.plot_tokens(codes, codebook_size=64)
    assert len(ax.images) == 1
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), codes.numpy())
    assert ax.images[0].get_clim() == (-0.5, 63.5)
    assert ax.get_ylabel() == "quantizer" and ax.get_xlabel() == "frame"
    assert len(ax.texts) == 4 * 30                                       # small grids print the ids
    ax = plots.plot_tokens(torch.arange(300) % 7)                         # (L,) -> one row
    assert np.asarray(ax.images[0].get_array()).shape == (1, 300)
    assert len(ax.texts) == 0


@pytest.mark.parametrize("codes, msg", [(torch.tensor([[0, -1]]), ">= 0"), (torch.tensor([[0.5, 1.0]]), "integer"),
                                        (torch.tensor([[3, 9]]), "codebook_size")])
def test_plot_tokens_rejects_bad_codes(codes, msg):
    with pytest.raises(ValueError, match=msg):
        plots.plot_tokens(codes, codebook_size=8)


def test_categorical_cmap_distinct():
    cmap = plots._categorical_cmap(1024)
    colours = np.asarray(cmap.colors)
    assert cmap.N == 1024 and len({tuple(c) for c in colours}) == 1024
    # Neighbouring ids must not look alike.
    assert np.abs(np.diff(colours[:, :3], axis=0)).sum(1).min() > 0.1


# ----------------------------------------------------------------------------- loss history

def test_loss_history_records():
    history = [{"step": s, "time_s": 0.1 * s, "loss": 1.0 / (s + 1)} for s in range(0, 100, 10)]
    for rec in history[::3]:
        rec["eval_loss"] = 2.0
    ax = plots.plot_loss_history(history, log=True)
    assert [line.get_label() for line in ax.lines] == ["loss", "eval_loss"]  # time_s skipped
    np.testing.assert_allclose(ax.lines[0].get_xdata(), np.arange(0, 100, 10))
    np.testing.assert_allclose(ax.lines[1].get_xdata(), [0, 30, 60, 90])
    assert ax.get_yscale() == "log"


def test_loss_history_dict_and_smoothing():
    rng = np.random.default_rng(0)
    loss = list(1.0 + rng.normal(0, 0.1, 200))
    ax = plots.plot_loss_history({"loss": loss, "const": [3.0] * 200}, keys=["loss", "const"], smoothing=0.9)
    assert len(ax.lines) == 2
    np.testing.assert_allclose(ax.lines[1].get_ydata(), 3.0)            # bias-corrected EMA of a constant
    y = ax.lines[0].get_ydata()
    s, expected = 0.0, []
    for i, v in enumerate(loss):
        s = 0.9 * s + 0.1 * v
        expected.append(s / (1 - 0.9 ** (i + 1)))
    np.testing.assert_allclose(y, expected)
    assert np.std(y[50:]) < np.std(loss[50:]) / 2
    with pytest.raises(KeyError, match="available"):
        plots.plot_loss_history({"loss": loss}, keys=["nope"])
    with pytest.raises(ValueError, match="smoothing"):
        plots.plot_loss_history({"loss": loss}, smoothing=1.0)


# ----------------------------------------------------------------------------- export

def test_fig_to_png():
    ax = plots.plot_waveform(sine(220.0), SR)
    png = plots.fig_to_png(ax.figure, dpi=50)
    assert png.startswith(PNG_MAGIC) and len(png) > 500
    num = ax.figure.number
    assert plots.fig_to_png(ax, close=True).startswith(PNG_MAGIC)        # an Axes works too
    assert num not in plt.get_fignums()
