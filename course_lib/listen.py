"""Listening widgets: players, grids, A/B(/X) tests and a "turn a knob, listen" explorer.

Built on ipywidgets and IPython.display, so they work in JupyterLab and Colab.
In a plain Python process (pytest, scripts) every function still builds its
widgets without raising and without blocking; nothing is shown.

    >>> play(wav, 16_000)                                   # last line of a cell: a player
    >>> player_grid(batch, labels=names, sample_rate=16_000)
    >>> compare(original, reconstructed, 16_000, abx=True)  # blind A/B/X test
    >>> explorer(lambda freq: sine(freq), {"freq": (100.0, 1000.0, 10.0)}, 16_000)

Waveforms may be tensors or numpy arrays of shape (T,), (1, T) or (C, T).
"""
from __future__ import annotations

import html
import io
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import ipywidgets as widgets
import numpy as np
import soundfile as sf
import torch
from IPython.display import Audio
from matplotlib.figure import Figure

from course_lib.plots import _waveform_ct, fig_to_png, plot_spectrogram, plot_waveform

__all__ = ["wav_bytes", "play", "player", "player_grid", "compare", "explorer", "thumbnail_png",
           "Player", "ABXTest", "ABXResult", "Explorer"]

_HEADROOM = 0.99          # peak after normalize=True (about -0.1 dBFS)


# ----------------------------------------------------------------------------- bytes and players

def _rate(sample_rate: float) -> int:
    if not isinstance(sample_rate, (int, float)) or sample_rate <= 0 or int(sample_rate) != sample_rate:
        raise ValueError(f"sample_rate must be a positive whole number of Hz (e.g. 16000), got {sample_rate!r}.")
    return int(sample_rate)


def _checked(wav: Any) -> np.ndarray:
    """(C, T) float32 array, with a clear error for NaN/Inf."""
    x = _waveform_ct(wav)                                                  # (C, T)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise ValueError(f"The waveform contains {bad} NaN/Inf samples and cannot be played. "
                         f"Find where they appear (often a diverged model or a division by zero), "
                         f"or replace them: torch.nan_to_num(wav).")
    return x


def wav_bytes(wav: Any, sample_rate: float, normalize: bool = True) -> bytes:
    """Encode a waveform as a 16-bit PCM WAV file in memory.

    Args:
        wav: (T,), (1, T) or (C, T), tensor (any device/dtype) or numpy, values in [-1, 1].
        sample_rate: samples per second.
        normalize: scale so the peak is 0.99 (silence stays silent). Without it,
            values outside [-1, 1] are clipped, with a warning.

    Returns:
        The bytes of a .wav file (RIFF header included).

    Raises:
        ValueError: NaN/Inf samples, an empty or wrongly shaped waveform, a bad sample rate.
    """
    sr = _rate(sample_rate)
    x = _checked(wav).astype(np.float64)                                   # (C, T)
    if normalize:
        peak = float(np.abs(x).max())
        if peak > 0:
            x = x * (_HEADROOM / peak)
    elif np.abs(x).max() > 1.0:
        warnings.warn(f"Waveform peak {np.abs(x).max():.3f} exceeds 1.0 and was clipped; "
                      f"pass normalize=True or scale it down.", stacklevel=2)
    # Scale by 2^15 so that reading back (int / 32768, soundfile's convention) is exact up to rounding.
    pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)   # (C, T)
    buf = io.BytesIO()
    sf.write(buf, pcm.T, sr, format="WAV", subtype="PCM_16")              # soundfile wants (T, C)
    return buf.getvalue()


def play(wav: Any, sample_rate: float, normalize: bool = True) -> Audio:
    """An IPython audio player; return it from a cell (or ``display`` it) to listen.

    Args:
        wav: (T,), (1, T) or (C, T).
        sample_rate: samples per second.
        normalize: peak-normalize before encoding (see :func:`wav_bytes`).
    """
    return Audio(data=wav_bytes(wav, sample_rate, normalize=normalize))


def thumbnail_png(wav: Any, sample_rate: float, kind: str = "waveform",
                  size: tuple[float, float] = (3.0, 0.9), dpi: int = 80) -> bytes:
    """A small axis-free waveform or spectrogram picture as PNG bytes.

    Drawn on a standalone Figure (not pyplot), so it never shows up twice in a
    notebook and leaves no open figures behind.
    """
    if kind not in ("waveform", "spectrogram"):
        raise ValueError(f"thumbnail must be 'waveform', 'spectrogram' or None, got {kind!r}.")
    fig = Figure(figsize=size)
    ax = fig.add_axes((0, 0, 1, 1))
    if kind == "waveform":
        plot_waveform(wav, sample_rate, ax=ax)
    else:
        n_fft = 512 if sample_rate <= 24_000 else 1024
        plot_spectrogram(wav, sample_rate, ax=ax, kind="mel", n_fft=n_fft, hop_length=n_fft // 4,
                         n_mels=64, colorbar=False)
    ax.set_axis_off()
    return fig_to_png(fig, dpi=dpi)


class Player(widgets.VBox):
    """A labelled audio player with an optional thumbnail (a ``widgets.VBox``).

    Attributes:
        audio: the ``widgets.Audio``; ``audio.value`` holds the WAV bytes.
        image: the thumbnail ``widgets.Image`` (None without a thumbnail).
        label: the ``widgets.HTML`` caption.
    """

    def __init__(self, wav: Any, sample_rate: float, label: str | None = None,
                 thumbnail: str | None = "waveform") -> None:
        data = wav_bytes(wav, sample_rate)                 # validates before any widget exists
        self.label = widgets.HTML(f"<b>{html.escape(label)}</b>" if label else "")
        self.image = None
        if thumbnail is not None:
            self.image = widgets.Image(value=thumbnail_png(wav, sample_rate, thumbnail), format="png",
                                       layout=widgets.Layout(width="240px", height="72px"))
        self.audio = widgets.Audio(value=data, format="wav", autoplay=False, loop=False,
                                   layout=widgets.Layout(width="240px"))
        children = [w for w in (self.label, self.image, self.audio) if w is not None]
        super().__init__(children=children, layout=widgets.Layout(padding="4px", align_items="flex-start"))
        self.sample_rate = sample_rate
        self.thumbnail = thumbnail

    def set_audio(self, wav: Any, label: str | None = None) -> None:
        """Replace the sound (and thumbnail, and label when given) in place."""
        self.audio.value = wav_bytes(wav, self.sample_rate)
        if self.image is not None:
            self.image.value = thumbnail_png(wav, self.sample_rate, self.thumbnail)
        if label is not None:
            self.label.value = f"<b>{html.escape(label)}</b>"


def player(wav: Any, sample_rate: float, label: str | None = None,
           thumbnail: str | None = "waveform") -> Player:
    """A labelled player: caption, thumbnail ("waveform", "spectrogram" or None), audio.

    Args:
        wav: (T,), (1, T) or (C, T).
        sample_rate: samples per second.
        label: caption above the player.
        thumbnail: picture kind, or None for none.
    """
    return Player(wav, sample_rate, label=label, thumbnail=thumbnail)


def _clip_list(clips: Any) -> list[Any]:
    """A batch tensor (B, C, T) / (B, T) or a list of clips -> list of clips."""
    if isinstance(clips, (torch.Tensor, np.ndarray)):
        if clips.ndim not in (2, 3):
            raise ValueError(f"A batch of clips must be (B, T) or (B, C, T), got {tuple(clips.shape)}; "
                             f"or pass a list of waveforms.")
        return list(clips)
    return list(clips)


def player_grid(clips: Any, labels: Sequence[str] | None = None, sample_rate: float = 16_000,
                thumbnail: str | None = "waveform", columns: int = 4) -> widgets.GridBox:
    """Players laid out in a grid, one per clip.

    Args:
        clips: a list of waveforms, or a batch tensor (B, C, T) / (B, T).
        labels: one caption per clip; "0", "1", ... when None.
        sample_rate: samples per second (same for all clips).
        thumbnail: "waveform", "spectrogram" or None.
        columns: players per row.

    Returns:
        A ``widgets.GridBox`` whose children are the :class:`Player` widgets.
    """
    items = _clip_list(clips)
    if not items:
        raise ValueError("player_grid needs at least one clip.")
    if labels is None:
        labels = [str(i) for i in range(len(items))]
    if len(labels) != len(items):
        raise ValueError(f"Got {len(items)} clips but {len(labels)} labels; pass one label per clip.")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}.")
    players = [Player(w, sample_rate, label=str(lab), thumbnail=thumbnail) for w, lab in zip(items, labels)]
    n_cols = min(columns, len(players))
    return widgets.GridBox(children=players,
                           layout=widgets.Layout(grid_template_columns=f"repeat({n_cols}, 250px)",
                                                 grid_gap="6px"))


# ----------------------------------------------------------------------------- A/B and A/B/X

class ABXResult(NamedTuple):
    """One answer of an A/B/X test."""
    answer: str       # "A" or "B": what the listener said X is
    truth: str        # "A" or "B": what X really was
    correct: bool


def _nearest(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> str:
    """'A' or 'B': which reference x is closer to (mean squared error on the common length)."""
    def mse(u: np.ndarray, v: np.ndarray) -> float:
        n = min(u.shape[-1], v.shape[-1])
        return float(((u.mean(0)[:n] - v.mean(0)[:n]) ** 2).mean())
    return "A" if mse(x, a) <= mse(x, b) else "B"


class ABXTest(widgets.VBox):
    """A/B players and, in A/B/X mode, a blind test (a ``widgets.VBox``).

    Answer with the buttons, or programmatically with ``answer("A")`` or
    ``button_a.click()``. Each answer is appended to ``results``.

    Attributes:
        results: list of :class:`ABXResult`, one per answer.
        truth: "A" or "B", what the current X is (None without X).
        player_a, player_b, player_x: the players (player_x is None without X).
        button_a, button_b: "X is A" / "X is B" buttons; new_x: draws a new X (random mode).
        feedback: ``widgets.HTML`` with the last verdict.
    """

    def __init__(self, a: Any, b: Any, sample_rate: float, labels: tuple[str, str] = ("A", "B"),
                 x: Any = None, reveal: bool = True, abx: bool = False,
                 generator: torch.Generator | None = None, thumbnail: str | None = "waveform") -> None:
        self._a, self._b = _checked(a), _checked(b)                        # (C, T) each
        self.sample_rate = sample_rate
        self.reveal = reveal
        self.generator = generator
        self.results: list[ABXResult] = []
        name_a = "A" if labels[0] == "A" else f"A: {labels[0]}"
        name_b = "B" if labels[1] == "B" else f"B: {labels[1]}"
        self.player_a = Player(a, sample_rate, label=name_a, thumbnail=thumbnail)
        self.player_b = Player(b, sample_rate, label=name_b, thumbnail=thumbnail)
        row = widgets.HBox([self.player_a, self.player_b])
        self.player_x = None
        self.truth: str | None = None
        self.button_a = self.button_b = self.new_x = None
        self.feedback = widgets.HTML("")
        children: list[widgets.Widget] = [row]
        if x is not None or abx:
            self._random_x = x is None
            if x is not None:
                x_arr = _checked(x)
                self.truth = _nearest(x_arr, self._a, self._b)
            else:
                x_arr = self._draw()
            # No thumbnail for X: a picture could give the answer away.
            self.player_x = Player(x_arr, sample_rate, label="X: is it A or B?", thumbnail=None)
            self.button_a = widgets.Button(description="X is A", button_style="info")
            self.button_b = widgets.Button(description="X is B", button_style="info")
            self.button_a.on_click(lambda _btn: self.answer("A"))
            self.button_b.on_click(lambda _btn: self.answer("B"))
            buttons = [self.button_a, self.button_b]
            if self._random_x:
                self.new_x = widgets.Button(description="New X", icon="refresh")
                self.new_x.on_click(lambda _btn: self.next_trial())
                buttons.append(self.new_x)
            children += [self.player_x, widgets.HBox(buttons), self.feedback]
        super().__init__(children=children)

    def _draw(self) -> np.ndarray:
        """Pick X from A or B at random (through ``generator``) and set ``truth``."""
        pick = int(torch.randint(0, 2, (1,), generator=self.generator).item())
        self.truth = "AB"[pick]
        return self._a if pick == 0 else self._b

    def next_trial(self) -> None:
        """Draw a new random X (random mode only) and clear the verdict."""
        if self.player_x is None or not self._random_x:
            raise RuntimeError("next_trial needs a random A/B/X test: compare(a, b, sr, abx=True).")
        self.player_x.set_audio(self._draw())
        self.feedback.value = ""

    def answer(self, choice: str) -> ABXResult:
        """Record that the listener says X is ``choice`` ("A" or "B") and give feedback."""
        if self.truth is None:
            raise RuntimeError("This comparison has no X; build it with x=... or abx=True.")
        choice = choice.upper()
        if choice not in ("A", "B"):
            raise ValueError(f"choice must be 'A' or 'B', got {choice!r}.")
        result = ABXResult(choice, self.truth, choice == self.truth)
        self.results.append(result)
        if self.reveal:
            verdict = "Correct" if result.correct else "Not quite"
            colour = "green" if result.correct else "firebrick"
            self.feedback.value = (f"<span style='color:{colour}'><b>{verdict}:</b> X was {self.truth}.</span> "
                                   f"Score {self.score[0]}/{self.score[1]}.")
        else:
            self.feedback.value = f"Answer recorded ({len(self.results)} so far)."
        return result

    @property
    def score(self) -> tuple[int, int]:
        """(correct answers, answers)."""
        return sum(r.correct for r in self.results), len(self.results)


def compare(a: Any, b: Any, sample_rate: float, labels: tuple[str, str] = ("A", "B"), x: Any = None,
            reveal: bool = True, abx: bool = False, generator: torch.Generator | None = None,
            thumbnail: str | None = "waveform") -> ABXTest:
    """A/B players side by side; with ``x`` or ``abx=True`` also a blind A/B/X test.

    Args:
        a, b: the two waveforms, (T,), (1, T) or (C, T).
        sample_rate: samples per second.
        labels: names shown for A and B.
        x: the unknown clip; the right answer is whichever of A, B it is closer to.
        reveal: after each answer say whether it was right (False: only record it).
        abx: without ``x``, pick X at random from A or B; "New X" draws again.
        generator: randomness for picking X (e.g. ``torch.Generator().manual_seed(0)``).
        thumbnail: thumbnails of A and B ("waveform", "spectrogram" or None).

    Returns:
        An :class:`ABXTest` (a ``widgets.VBox``); its ``results`` list records the answers.
    """
    return ABXTest(a, b, sample_rate, labels=labels, x=x, reveal=reveal, abx=abx,
                   generator=generator, thumbnail=thumbnail)


# ----------------------------------------------------------------------------- explorer

def _control(name: str, spec: Any) -> widgets.ValueWidget:
    """A widget from an ipywidget or an interact-style shorthand."""
    if isinstance(spec, widgets.Widget):
        if not hasattr(spec, "value"):
            raise TypeError(f"Control {name!r} is a {type(spec).__name__}, which has no value; "
                            f"use a slider, dropdown, checkbox or text widget.")
        w = spec
    elif isinstance(spec, bool):
        w = widgets.Checkbox(value=spec)
    elif isinstance(spec, tuple) and len(spec) in (2, 3) and all(isinstance(v, (int, float)) for v in spec):
        lo, hi = spec[0], spec[1]
        if not lo < hi:
            raise ValueError(f"Control {name!r}: (min, max[, step]) needs min < max, got {spec}.")
        if all(isinstance(v, int) for v in spec):
            step = spec[2] if len(spec) == 3 else 1
            w = widgets.IntSlider(min=lo, max=hi, step=step, value=lo + ((hi - lo) // 2 // step) * step)
        else:
            step = spec[2] if len(spec) == 3 else (hi - lo) / 100
            w = widgets.FloatSlider(min=lo, max=hi, step=step, value=(lo + hi) / 2)
    elif isinstance(spec, (list, dict)) and len(spec) > 0:
        w = widgets.Dropdown(options=spec)
    elif isinstance(spec, str):
        w = widgets.Text(value=spec)
    else:
        raise TypeError(f"Control {name!r}: cannot make a widget from {spec!r}. Use an ipywidget, "
                        f"(min, max) or (min, max, step), a list of options, a bool or a string.")
    if not w.description:
        w.description = name
    if hasattr(w, "continuous_update"):
        w.continuous_update = False      # sliders fire on release, not on every tick
    return w


class Explorer(widgets.VBox):
    """Controls, a Generate button, a player and an info line (a ``widgets.VBox``).

    Attributes:
        controls: {parameter name: widget}.
        last: the last waveform ``fn`` returned (None before the first success).
        info: ``widgets.HTML`` with ``fn``'s info string, or the error.
        error: the exception of the last call, or None when it succeeded.
        output: ``widgets.Output`` holding what ``fn`` printed and error tracebacks.
        calls: how many times ``fn`` was called.
    """

    def __init__(self, fn: Callable[..., Any], controls: dict[str, Any], sample_rate: float,
                 thumbnail: str | None = "spectrogram", run_on_start: bool = True, live: bool = True) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable (returning a waveform), got {type(fn).__name__}.")
        _rate(sample_rate)
        self.fn, self.sample_rate, self.thumbnail = fn, sample_rate, thumbnail
        self.controls = {name: _control(name, spec) for name, spec in controls.items()}
        self.last: Any = None
        self.error: BaseException | None = None
        self.calls = 0
        self.button = widgets.Button(description="Generate", button_style="primary", icon="play")
        self.button.on_click(lambda _btn: self.update())
        self.info = widgets.HTML("")
        self.output = widgets.Output()
        self.audio = widgets.Audio(value=b"", format="wav", autoplay=False, loop=False,
                                   layout=widgets.Layout(width="320px"))
        self.image = widgets.Image(value=b"", format="png", layout=widgets.Layout(width="320px", height="96px"))
        self.image.layout.display = "none"            # shown once there is a picture
        if live:
            for w in self.controls.values():
                w.observe(lambda _change: self.update(), names="value")
        super().__init__(children=[widgets.VBox(list(self.controls.values())), self.button,
                                   self.image, self.audio, self.info, self.output])
        if run_on_start:
            self.update()

    @property
    def values(self) -> dict[str, Any]:
        """The current control values, as passed to ``fn``."""
        return {name: w.value for name, w in self.controls.items()}

    def update(self) -> Any:
        """Call ``fn(**values)`` and refresh player, thumbnail and info; errors are shown, not raised.

        Returns:
            The new waveform, or None when ``fn`` (or encoding its result) failed.
        """
        self.calls += 1
        self.button.disabled = True
        self.output.outputs = ()                      # clear without needing a front end
        try:
            # In a kernel `with output` captures what fn prints, but it would also swallow
            # fn's exception (ipywidgets shows it there), so catch it inside and re-raise.
            failure: Exception | None = None
            with self.output:
                try:
                    result = self.fn(**self.values)
                except Exception as err:  # noqa: BLE001
                    failure = err
            if failure is not None:
                raise failure
            wav, note = result if isinstance(result, tuple) and len(result) == 2 else (result, None)
            data = wav_bytes(wav, self.sample_rate)
            png = thumbnail_png(wav, self.sample_rate, self.thumbnail) if self.thumbnail else b""
        except Exception as err:  # noqa: BLE001 - a student's fn may raise anything; show it
            self.error = err
            self.info.value = (f"<span style='color:firebrick'><b>{type(err).__name__}:</b> "
                               f"{html.escape(str(err))}</span> (the previous sound is kept)")
            self.output.append_stderr("".join(traceback.format_exception(type(err), err, err.__traceback__)))
            return None
        finally:
            self.button.disabled = False
        self.error, self.last = None, wav
        self.audio.value = data
        if png:
            self.image.value = png
            self.image.layout.display = None
        n = _waveform_ct(wav).shape[-1]
        detail = f"{n / self.sample_rate:.2f} s" + (f" | {html.escape(str(note))}" if note else "")
        self.info.value = detail
        return wav


def explorer(fn: Callable[..., Any], controls: dict[str, Any], sample_rate: float,
             thumbnail: str | None = "spectrogram", run_on_start: bool = True, live: bool = True) -> Explorer:
    """Turn a knob, regenerate, listen.

    Args:
        fn: called as ``fn(**values)``; returns a waveform, or ``(waveform, info_str)``.
        controls: parameter name -> ipywidget (slider, dropdown, ...) or a shorthand as in
            ``ipywidgets.interact``: ``(min, max)`` / ``(min, max, step)`` (ints give an
            IntSlider, floats a FloatSlider), a list or dict of options (Dropdown), a bool
            (Checkbox), a string (Text). Sliders only fire when released.
        sample_rate: samples per second of what ``fn`` returns.
        thumbnail: "spectrogram", "waveform" or None.
        run_on_start: call ``fn`` once right away.
        live: regenerate whenever a control changes; with False only the Generate
            button does (for slow ``fn``). The button is always there, e.g. to re-draw
            a random sample with the same knobs.

    Returns:
        An :class:`Explorer`; call ``.update()`` to regenerate, read ``.last`` for the waveform.
    """
    return Explorer(fn, controls, sample_rate, thumbnail=thumbnail, run_on_start=run_on_start, live=live)
