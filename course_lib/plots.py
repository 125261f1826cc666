"""Plots for the course: waveforms, spectrograms, token grids and loss curves.

Every function draws into ``ax`` when one is given and otherwise opens a new
pyplot figure (so a notebook cell shows it inline). They return the Axes, or the
Figure for multi-panel plots, and never call ``plt.show()``.

    >>> ax = plot_waveform(wav, 16_000, zoom=(0.10, 0.11))      # 10 ms, samples visible
    >>> ax = plot_spectrogram(wav, 16_000, kind="mel")
    >>> png = fig_to_png(ax.figure)                               # bytes, for slides / widgets

Shape legend (see ``course_lib``): C channels, T samples, L frames, F mel or
frequency bins, Q quantizers, K codebook size.
"""
from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap, hsv_to_rgb
from matplotlib.figure import Figure

from course_lib.spectral import mel_spectrogram

__all__ = [
    "plot_waveform", "plot_spectrogram", "plot_tokens", "plot_loss_history",
    "compare_spectrograms", "fig_to_png", "spectrogram_db", "SpectrogramDB",
    "hz_to_mel", "mel_to_hz",
]

_MAX_WAVE_POINTS = 4000    # above this many samples a waveform is drawn as a min/max envelope
_SAMPLE_MARKERS = 200      # at or below this many visible samples each sample gets a dot
_NOT_LOSSES = {"step", "time_s", "time", "wall_s", "epoch", "lr"}   # skipped when keys=None


# ----------------------------------------------------------------------------- input helpers

def _to_numpy(x: Any, what: str) -> np.ndarray:
    """A float or int numpy array from a tensor, array or nested list (detached, on CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_complex():
            return x.numpy()
        return x.numpy() if not x.is_floating_point() else x.float().numpy()
    try:
        return np.asarray(x)
    except Exception as err:  # noqa: BLE001 - reported with a fix below
        raise TypeError(f"{what} must be a torch.Tensor or numpy array, got {type(x).__name__}.") from err


def _waveform_ct(wav: Any) -> np.ndarray:
    """Validate a waveform and return it as a float32 array of shape (C, T)."""
    x = _to_numpy(wav, "wav").astype(np.float32, copy=False)
    while x.ndim > 2 and x.shape[0] == 1:       # (1, C, T) -> (C, T)
        x = x[0]
    if x.ndim == 1:
        x = x[None]                             # (T,) -> (1, T)
    if x.ndim != 2:
        raise ValueError(f"Expected a waveform of shape (T,), (1, T) or (C, T), got {tuple(x.shape)}. "
                         f"For a batch (B, C, T) pass one clip, e.g. wav[0].")
    if x.shape[0] > 16 and x.shape[1] <= 16:
        raise ValueError(f"Got shape {tuple(x.shape)}, which looks like (T, C). "
                         f"Waveforms are (C, T): pass wav.T.")
    if x.shape[1] == 0:
        raise ValueError("The waveform is empty (T = 0); nothing to plot.")
    return x


def _check_rate(sample_rate: float) -> float:
    if not (isinstance(sample_rate, (int, float)) and sample_rate > 0):
        raise ValueError(f"sample_rate must be a positive number (e.g. 16000), got {sample_rate!r}.")
    return float(sample_rate)


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    _, ax = plt.subplots(figsize=figsize, constrained_layout=True)
    return ax


# ----------------------------------------------------------------------------- waveform

def _envelope(t: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Shrink a long signal to ``max_points`` points that keep its min/max envelope."""
    n_buckets = max_points // 2
    per = math.ceil(len(y) / n_buckets)
    pad = per * n_buckets - len(y)
    yb = np.pad(y, (0, pad), mode="edge").reshape(n_buckets, per)
    tb = np.pad(t, (0, pad), mode="edge").reshape(n_buckets, per)
    y_env = np.stack([yb.min(1), yb.max(1)], axis=1).reshape(-1)     # min, max, min, max, ...
    t_env = np.stack([tb[:, 0], tb[:, -1]], axis=1).reshape(-1)
    return t_env, y_env


def plot_waveform(wav: Any, sample_rate: float, ax: Axes | None = None, title: str | None = None,
                  zoom: tuple[float, float] | None = None) -> Axes:
    """Draw a waveform against time in seconds, one line per channel.

    Long signals are drawn as a min/max envelope (looks identical, draws fast);
    when a zoom window shows at most 200 samples, each sample gets a dot, which
    makes sampling visible.

    Args:
        wav: waveform (T,), (1, T) or (C, T), tensor or numpy.
        sample_rate: samples per second.
        ax: Axes to draw into; a new figure when None.
        title: Axes title.
        zoom: (start_s, end_s) window in seconds; the x-limits become exactly this.

    Returns:
        The Axes; its x-limits are (0, T / sample_rate) without zoom.
    """
    x = _waveform_ct(wav)                                   # (C, T)
    sr = _check_rate(sample_rate)
    n_ch, n = x.shape
    duration = n / sr
    i0, i1, xlim = 0, n, (0.0, duration)
    if zoom is not None:
        t0, t1 = float(zoom[0]), float(zoom[1])
        if not 0 <= t0 < t1:
            raise ValueError(f"zoom must be (start_s, end_s) with 0 <= start < end, got {zoom!r}.")
        i0, i1 = min(n, int(math.floor(t0 * sr))), min(n, int(math.ceil(t1 * sr)) + 1)
        xlim = (t0, t1)
    ax = _new_axes(ax, (8, 2.5))
    t = np.arange(i0, i1) / sr
    for c in range(n_ch):
        y = x[c, i0:i1]
        marker = "." if 0 < len(y) <= _SAMPLE_MARKERS else None
        if len(y) > _MAX_WAVE_POINTS:
            tt, y = _envelope(t, y, _MAX_WAVE_POINTS)
        else:
            tt = t
        ax.plot(tt, y, lw=0.8, marker=marker, ms=3, label=f"channel {c}" if n_ch > 1 else None)
    peak = float(np.abs(x[:, i0:i1]).max()) if i1 > i0 else 0.0
    lim = 1.1 * peak if peak > 0 else 1.0
    ax.set_xlim(*xlim)
    ax.set_ylim(-lim, lim)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("amplitude")
    ax.grid(alpha=0.3)
    if n_ch > 1:
        ax.legend(loc="upper right", fontsize="small")
    if title:
        ax.set_title(title)
    return ax


# ----------------------------------------------------------------------------- spectrograms

_F_SP = 200.0 / 3                  # Slaney: Hz per mel below 1 kHz
_MIN_LOG_MEL = 15.0                 # mel value of 1 kHz
_LOG_STEP = np.log(6.4) / 27.0      # log-Hz per mel above 1 kHz


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """Slaney mel scale (librosa's default, used by ``course_lib.spectral``): linear below 1 kHz, log above."""
    f = np.asarray(f, dtype=np.float64)
    return np.where(f < 1000.0, f / _F_SP, _MIN_LOG_MEL + np.log(np.maximum(f, 1e-10) / 1000.0) / _LOG_STEP)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(m, dtype=np.float64)
    return np.where(m < _MIN_LOG_MEL, m * _F_SP, 1000.0 * np.exp(_LOG_STEP * (m - _MIN_LOG_MEL)))


class SpectrogramDB(NamedTuple):
    """A spectrogram in decibels, ready to draw."""
    db: np.ndarray                 # (F, L) float, dB (or the input's own log units)
    kind: str                      # "mel" or "linear"
    sample_rate: float
    hop_length: int
    duration_s: float | None       # T / sample_rate when computed from a waveform


def _linear_power(x: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """|STFT|^2 of x (T,) -> (n_fft // 2 + 1, L), hann window, centred frames."""
    window = torch.hann_window(n_fft, dtype=x.dtype, device=x.device)
    spec = torch.stft(x, n_fft=n_fft, hop_length=hop_length, window=window, center=True,
                      return_complex=True)
    return spec.abs() ** 2


def _mel_power(x: torch.Tensor, sample_rate: float, n_fft: int, hop_length: int, n_mels: int) -> torch.Tensor:
    """Mel power spectrogram (F, L) of x (T,) (:func:`course_lib.spectral.mel_spectrogram`)."""
    mel = mel_spectrogram(x[None], sample_rate=int(sample_rate), n_fft=n_fft, hop_length=hop_length,
                          n_mels=n_mels, power=2.0)
    while mel.ndim > 2 and mel.shape[0] == 1:
        mel = mel[0]
    return mel


def _power_to_db(p: np.ndarray) -> np.ndarray:
    return 10.0 * np.log10(np.maximum(p, 1e-10))


def spectrogram_db(wav_or_spec: Any, sample_rate: float, kind: str = "mel", n_fft: int = 1024,
                   hop_length: int = 256, n_mels: int = 80, scale: str = "auto") -> SpectrogramDB:
    """Compute (or take) a spectrogram and express it in dB.

    Input rules: a 1-D array, an array with at most 2 rows, or (1, C, T) is a
    waveform (channels are averaged); a 2-D array with more than 2 rows is a
    precomputed (F, L) spectrogram. A precomputed spectrogram with negative values
    is taken as already logarithmic and shown as is; otherwise as a magnitude, like
    the defaults of ``course_lib.spectral`` (``power=1``). Pass ``scale="power"`` for
    energy spectrograms (torchaudio's default ``power=2``).

    Args:
        wav_or_spec: waveform (T,), (C, T) or spectrogram (F, L) (complex allowed).
        sample_rate: samples per second of the audio.
        kind: "mel" or "linear".
        n_fft, hop_length, n_mels: STFT and mel settings (for a precomputed
            spectrogram only ``hop_length`` matters: it sets the time axis).
        scale: what a precomputed spectrogram holds: "auto", "magnitude", "power" or "db"
            (dB or any log scale, shown as is). Ignored for waveforms.

    Returns:
        SpectrogramDB with ``db`` of shape (F, L).
    """
    if scale not in ("auto", "magnitude", "power", "db"):
        raise ValueError(f"scale must be 'auto', 'magnitude', 'power' or 'db', got {scale!r}.")
    if kind not in ("mel", "linear"):
        raise ValueError(f"kind must be 'mel' or 'linear', got {kind!r}.")
    sr = _check_rate(sample_rate)
    arr = _to_numpy(wav_or_spec, "wav_or_spec")
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    is_wave = arr.ndim == 1 or (arr.ndim == 2 and arr.shape[0] <= 2)
    if is_wave:
        x = torch.from_numpy(_waveform_ct(arr).mean(0))                 # (T,)
        if not torch.isfinite(x).all():
            raise ValueError("The waveform contains NaN or Inf; check the model output "
                             "(e.g. torch.nan_to_num(wav)) before plotting.")
        n = x.shape[-1]
        if n <= n_fft // 2:                                            # centred STFT reflect-pads n_fft // 2
            x = torch.nn.functional.pad(x, (0, n_fft // 2 + 1 - n))
        if kind == "mel":
            power = _mel_power(x, sr, n_fft, hop_length, n_mels)
        else:
            power = _linear_power(x, n_fft, hop_length)
        p = power.detach().cpu().double().numpy()
        db = p if (p < 0).any() else _power_to_db(p)                    # spectral may return log-mel
        return SpectrogramDB(db, kind, sr, hop_length, n / sr)
    if arr.ndim != 2:
        raise ValueError(f"Expected a waveform (T,)/(C, T) or a spectrogram (F, L), got {tuple(arr.shape)}.")
    if np.iscomplexobj(arr):                                   # a raw STFT
        db = _power_to_db(np.abs(arr).astype(np.float64) ** 2)
    else:
        s = arr.astype(np.float64)
        if scale == "auto":
            scale = "db" if (s < 0).any() else "magnitude"
        if scale != "db" and (s < 0).any():
            raise ValueError(f"A {scale} spectrogram cannot be negative; pass scale='db' for log values.")
        db = s if scale == "db" else _power_to_db(s ** 2 if scale == "magnitude" else s)
    return SpectrogramDB(db, kind, sr, hop_length, None)


def _draw_spec(ax: Axes, spec: SpectrogramDB, db_range: float, vmax: float | None,
               colorbar: bool, cmap: str) -> Any:
    """imshow a SpectrogramDB with its time axis in seconds and frequency axis in Hz."""
    n_f, n_l = spec.db.shape
    hop_s = spec.hop_length / spec.sample_rate
    x0, x1 = -0.5 * hop_s, (n_l - 0.5) * hop_s          # frame l is centred at l * hop
    nyq = spec.sample_rate / 2
    top = float(np.nanmax(spec.db)) if vmax is None else vmax
    if spec.kind == "mel":
        y0, y1 = float(hz_to_mel(0.0)), float(hz_to_mel(nyq))
    else:
        y0, y1 = 0.0, nyq
    im = ax.imshow(spec.db, origin="lower", aspect="auto", interpolation="nearest", cmap=cmap,
                   extent=(x0, x1, y0, y1), vmin=top - db_range, vmax=top)
    ax.set_xlim(max(x0, 0.0), spec.duration_s if spec.duration_s is not None else x1)
    ax.set_ylim(y0, y1)
    if spec.kind == "mel":      # y data are mels; label the ticks in Hz
        hz = [f for f in (0, 250, 500, 1000, 2000, 4000, 8000, 16000) if f <= nyq]
        ax.set_yticks(hz_to_mel(hz), [f"{f / 1000:g}k" if f >= 1000 else str(f) for f in hz])
        ax.set_ylabel("frequency (Hz, mel scale)")
    else:
        ax.set_ylabel("frequency (Hz)")
    ax.set_xlabel("time (s)")
    if colorbar:
        ax.figure.colorbar(im, ax=ax, format="%+.0f dB", pad=0.01)
    return im


def plot_spectrogram(wav_or_spec: Any, sample_rate: float, ax: Axes | None = None, kind: str = "mel",
                     n_fft: int = 1024, hop_length: int = 256, n_mels: int = 80, title: str | None = None,
                     db_range: float = 80.0, colorbar: bool = True, vmax: float | None = None,
                     cmap: str = "magma", scale: str = "auto") -> Axes:
    """Draw a (mel or linear) spectrogram in dB, time in seconds, frequency in Hz.

    Args:
        wav_or_spec: waveform (T,), (1, T), (C, T) or precomputed spectrogram (F, L);
            see :func:`spectrogram_db` for how the two are told apart.
        sample_rate: samples per second.
        ax: Axes to draw into; a new figure when None.
        kind: "mel" (y axis mel-spaced, ticks in Hz) or "linear".
        n_fft, hop_length, n_mels: STFT and mel settings.
        title: Axes title.
        db_range: colours span [vmax - db_range, vmax] dB.
        colorbar: add a dB colour bar.
        vmax: top of the colour scale in dB; the spectrogram's maximum when None.
        cmap: matplotlib colormap name.
        scale: what a precomputed spectrogram holds ("auto", "magnitude", "power", "db");
            see :func:`spectrogram_db`.

    Returns:
        The Axes, with one image (``ax.images[0]``).
    """
    spec = spectrogram_db(wav_or_spec, sample_rate, kind, n_fft, hop_length, n_mels, scale)
    ax = _new_axes(ax, (8, 3))
    _draw_spec(ax, spec, db_range, vmax, colorbar, cmap)
    if title:
        ax.set_title(title)
    return ax


def compare_spectrograms(wavs: Sequence[Any], labels: Sequence[str], sample_rate: float,
                         kind: str = "mel", n_fft: int = 1024, hop_length: int = 256, n_mels: int = 80,
                         db_range: float = 80.0) -> Figure:
    """Spectrograms side by side on one shared dB scale, so colours compare across panels.

    Args:
        wavs: waveforms (or spectrograms), one per panel.
        labels: one title per panel.
        sample_rate: samples per second (same for all).

    Returns:
        The Figure (one Axes per clip, plus one colour bar).
    """
    if len(wavs) == 0 or len(wavs) != len(labels):
        raise ValueError(f"Need one label per clip and at least one clip; got {len(wavs)} clips "
                         f"and {len(labels)} labels.")
    specs = [spectrogram_db(w, sample_rate, kind, n_fft, hop_length, n_mels) for w in wavs]
    top = max(float(np.nanmax(s.db)) for s in specs)
    fig, axes = plt.subplots(1, len(specs), figsize=(3.6 * len(specs) + 1, 3), sharey=True,
                             squeeze=False, constrained_layout=True)
    im = None
    for ax, spec, label in zip(axes[0], specs, labels):
        im = _draw_spec(ax, spec, db_range, top, colorbar=False, cmap="magma")
        ax.set_title(label)
    for ax in axes[0, 1:]:
        ax.set_ylabel("")
    fig.colorbar(im, ax=axes[0].tolist(), format="%+.0f dB", pad=0.01)
    return fig


# ----------------------------------------------------------------------------- tokens

def _categorical_cmap(k: int) -> ListedColormap:
    """K distinct colours in which neighbouring ids look unrelated (ids are categories, not amounts)."""
    if k <= 10:
        return ListedColormap(plt.get_cmap("tab10").colors[:k])
    if k <= 20:
        return ListedColormap(plt.get_cmap("tab20").colors[:k])
    i = np.arange(k)
    hue = (i * 0.6180339887) % 1.0                    # golden-ratio steps around the colour wheel
    sat = 0.55 + 0.45 * ((i * 0.7548776662) % 1.0)    # low-discrepancy saturation and value
    val = 0.65 + 0.35 * ((i * 0.5698402910) % 1.0)
    return ListedColormap(hsv_to_rgb(np.stack([hue, sat, val], axis=1)))


def plot_tokens(codes: Any, ax: Axes | None = None, title: str | None = None,
                codebook_size: int | None = None) -> Axes:
    """Draw discrete tokens as a coloured grid: quantizer on y (q0 on top), frame on x.

    Each token id has its own colour, so repeated tokens and patterns across
    frames stand out. Small grids (at most 256 cells) also print the ids.

    Args:
        codes: integer codes (Q, L) or (L,) (a leading batch of 1 is dropped).
        ax: Axes to draw into; a new figure when None.
        title: Axes title.
        codebook_size: K; the largest id + 1 when None.

    Returns:
        The Axes, with one image.
    """
    c = _to_numpy(codes, "codes")
    while c.ndim > 2 and c.shape[0] == 1:
        c = c[0]
    if c.ndim == 1:
        c = c[None]
    if c.ndim != 2 or c.size == 0:
        raise ValueError(f"codes must be (Q, L) or (L,), got shape {tuple(c.shape)}; "
                         f"for a batch (B, Q, L) pass codes[0].")
    if not np.issubdtype(c.dtype, np.integer):
        if not np.all(np.isfinite(c)) or not np.all(c == np.round(c)):
            raise ValueError("codes must be integer token ids; got non-integer values (pass codes.long()).")
        c = c.astype(np.int64)
    if c.min() < 0:
        raise ValueError(f"Token ids must be >= 0, found {int(c.min())}.")
    k = int(codebook_size) if codebook_size is not None else int(c.max()) + 1
    if c.max() >= k:
        raise ValueError(f"Found token id {int(c.max())} >= codebook_size={k}; pass the right codebook_size.")
    n_q, n_l = c.shape
    ax = _new_axes(ax, (min(12.0, 2 + 0.15 * n_l), 0.5 + 0.35 * n_q))
    ax.imshow(c, aspect="auto", interpolation="nearest", cmap=_categorical_cmap(k),
              vmin=-0.5, vmax=k - 0.5)
    if n_q <= 16:
        ax.set_yticks(range(n_q))
    if n_q * n_l <= 256:
        for (q, l), v in np.ndenumerate(c):
            ax.text(l, q, str(v), ha="center", va="center", fontsize=7, color="black")
    ax.set_xlabel("frame")
    ax.set_ylabel("quantizer")
    ax.set_title(title if title else f"tokens (Q={n_q}, L={n_l}, K={k})")
    return ax


# ----------------------------------------------------------------------------- training curves

def _history_series(history: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{key: (steps, values)} from a list of per-step records or a dict of lists."""
    if hasattr(history, "records"):                      # course_lib.train.History
        history = history.records
    series: dict[str, tuple[list[float], list[float]]] = {}
    if isinstance(history, Mapping):
        steps = history.get("step")
        for key, vals in history.items():
            vals = [float(v) for v in vals]
            xs = [float(s) for s in steps] if steps is not None and len(steps) == len(vals) else range(len(vals))
            series[key] = (list(xs), vals)
    elif isinstance(history, Sequence):
        for i, rec in enumerate(history):
            if hasattr(rec, "_asdict"):
                rec = rec._asdict()
            elif dataclasses.is_dataclass(rec):
                rec = dataclasses.asdict(rec)
            if not isinstance(rec, Mapping):
                raise TypeError(f"history[{i}] is a {type(rec).__name__}; expected a dict like "
                                f"{{'step': 10, 'loss': 0.5}}.")
            step = float(rec.get("step", i))
            for key, v in rec.items():
                if isinstance(v, (int, float)) or (isinstance(v, torch.Tensor) and v.numel() == 1):
                    xs, ys = series.setdefault(key, ([], []))
                    xs.append(step)
                    ys.append(float(v))
    else:
        raise TypeError(f"history must be a list of dicts or a dict of lists, got {type(history).__name__}.")
    return {k: (np.asarray(x, dtype=float), np.asarray(y, dtype=float)) for k, (x, y) in series.items()}


def _ema(y: np.ndarray, smoothing: float) -> np.ndarray:
    """Bias-corrected exponential moving average (as in TensorBoard); NaNs are skipped."""
    out, s, n = np.empty_like(y), 0.0, 0
    for i, v in enumerate(y):
        if np.isfinite(v):
            s, n = smoothing * s + (1 - smoothing) * v, n + 1
        out[i] = s / (1 - smoothing ** n) if n else np.nan
    return out


def plot_loss_history(history: Any, ax: Axes | None = None, keys: Sequence[str] | None = None,
                      smoothing: float = 0.0, log: bool = False) -> Axes:
    """Plot training curves, one line per key, against the step.

    Args:
        history: list of per-step dicts with a "step" key (``Trainer.history.records``)
            or a dict of lists (x is ``history["step"]`` when present, else the index).
            Records may hold different keys (e.g. an eval loss every 100 steps).
        ax: Axes to draw into; a new figure when None.
        keys: which keys to plot; every numeric key except step/time/lr when None.
        smoothing: EMA factor in [0, 1); 0 plots the raw values, 0.9 smooths strongly.
        log: logarithmic y axis.

    Returns:
        The Axes, with one line per key.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1) (0 = off, 0.9 = strong), got {smoothing}.")
    series = _history_series(history)
    if keys is None:
        keys = [k for k in series if k not in _NOT_LOSSES]
    missing = [k for k in keys if k not in series]
    if missing:
        raise KeyError(f"No {missing} in the history; available keys: {sorted(series)}.")
    ax = _new_axes(ax, (7, 3))
    for key in keys:
        x, y = series[key]
        ax.plot(x, _ema(y, smoothing) if smoothing > 0 else y, lw=1.2, label=key)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss" if len(keys) != 1 else keys[0])
    ax.grid(alpha=0.3)
    if len(keys) > 1:
        ax.legend(fontsize="small")
    return ax


# ----------------------------------------------------------------------------- export

def fig_to_png(fig: Figure | Axes, dpi: int = 80, close: bool = False) -> bytes:
    """Render a Figure (or an Axes' figure) to PNG bytes.

    Args:
        fig: the Figure (an Axes is accepted and its figure used).
        dpi: resolution.
        close: also close it in pyplot, so notebooks do not show it a second time.
    """
    if isinstance(fig, Axes):
        fig = fig.figure
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    if close:
        plt.close(fig)
    return buf.getvalue()
