"""A MUSHRA-style listening test in a notebook, and what to do with its scores.

MUSHRA (ITU-R BS.1534-3, *Method for the subjective assessment of intermediate quality level of
audio systems*) plays an open **reference**, then the same excerpt through every system under test
in a random order with blind labels, among them a **hidden reference** (the reference again) and a
**low anchor** (the reference low-passed at 3.5 kHz for full-band audio; ``anchor_hz`` scales it to material of
a narrower band). The listener rates each on a 0-100 slider.
The hidden reference checks the listener (it should get about 100), the anchor fixes the bottom of
the scale, so that scores from different people and tests can be compared.

    >>> test = mushra(reference, {"codec 6 kbps": y1, "Opus 6 kbps": y2}, 16_000, trial="take 3",
    ...               path="listening_scores.json")
    >>> test                                   # last line of a cell: players, sliders and a save button
    >>> scores = load_scores("listening_scores.json")     # {trial: {system: score}}
    >>> mean_scores(scores)                               # {system: (mean, 95% half-width, n)}

Headless (pytest, scripts) the widget is built and does nothing; ``set_score`` and ``save`` do what
the sliders and the button do, so the whole path is testable without a browser.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
import torchaudio.functional as AF
from scipy import stats

from course_lib.checkpoint import atomic_write
from course_lib.listen import Player, _checked

__all__ = ["HIDDEN_REFERENCE", "ANCHOR", "ANCHOR_HZ", "low_anchor", "Mushra", "mushra", "load_scores", "mean_scores",
           "screen_listener", "rank_agreement"]

HIDDEN_REFERENCE = "hidden reference"
ANCHOR = "anchor (low-pass)"
ANCHOR_HZ = 3500.0           # BS.1534-3's low anchor, for full-band audio


def low_anchor(wav: Any, sample_rate: float, anchor_hz: float = ANCHOR_HZ) -> np.ndarray:
    """The reference low-passed at ``anchor_hz`` (eight cascaded biquads: a steep, recognisably dull copy).

    BS.1534-3's 3.5 kHz suits full-band audio; material that stops at 4 kHz keeps nearly all of itself below
    3.5 kHz, so pass a cutoff scaled to its band (e.g. half of it)."""
    if not 0 < anchor_hz < sample_rate / 2:
        raise ValueError(f"anchor_hz must lie between 0 and the Nyquist frequency {sample_rate / 2:g} Hz, got "
                         f"{anchor_hz}; BS.1534-3 uses {ANCHOR_HZ:g} for full-band audio, about half of a narrower "
                         f"material's band otherwise.")
    x = torch.from_numpy(_checked(wav).astype(np.float32))
    for _ in range(8):
        x = AF.lowpass_biquad(x, int(sample_rate), anchor_hz)
    return x.numpy()


class Mushra(widgets.VBox):
    """One MUSHRA trial: the open reference, then the conditions in a blind random order (a ``widgets.VBox``).

    Attributes:
        order: the systems in the order they are shown (labels "A", "B", ... in that order).
        sliders: ``{system: widgets.IntSlider}`` (0-100, start at 50).
        save_button, status: the button that writes the scores and its message.
    """

    def __init__(self, reference: Any, systems: Mapping[str, Any], sample_rate: float, trial: str,
                 path: str | Path = "listening_scores.json", anchor: bool = True, seed: int = 0,
                 anchor_hz: float = ANCHOR_HZ) -> None:
        if not systems:
            raise ValueError("mushra needs at least one system to rate, e.g. {'codec': decoded_wav}.")
        clash = {HIDDEN_REFERENCE, ANCHOR} & set(systems)
        if clash:
            raise ValueError(f"System names {sorted(clash)} are reserved for the test's own conditions; rename them.")
        ref = _checked(reference)
        conditions = {name: _checked(wav) for name, wav in systems.items()}
        for name, wav in conditions.items():
            if wav.shape[-1] != ref.shape[-1]:
                raise ValueError(f"System {name!r} has {wav.shape[-1]} samples, the reference {ref.shape[-1]}: "
                                 f"trim or pad every condition to the reference's length.")
        conditions[HIDDEN_REFERENCE] = ref
        if anchor:
            conditions[ANCHOR] = low_anchor(ref, sample_rate, anchor_hz)
        perm = torch.randperm(len(conditions), generator=torch.Generator().manual_seed(seed)).tolist()
        names = list(conditions)
        self.order = [names[i] for i in perm]
        self.trial, self.path, self.sample_rate = str(trial), Path(path), sample_rate
        self.sliders: dict[str, widgets.IntSlider] = {}
        rows: list[widgets.Widget] = []
        for k, name in enumerate(self.order):
            label = chr(ord("A") + k)
            self.sliders[name] = widgets.IntSlider(value=50, min=0, max=100, step=1, description=label,
                                                   continuous_update=False,
                                                   layout=widgets.Layout(width="420px"))
            rows.append(widgets.HBox([Player(conditions[name], sample_rate, label=label, thumbnail=None),
                                      self.sliders[name]]))
        self.save_button = widgets.Button(description="Save my scores", button_style="success", icon="save")
        self.save_button.on_click(lambda _btn: self.save())
        self.status = widgets.HTML("")
        scale = ("<small>100-80 excellent · 80-60 good · 60-40 fair · 40-20 poor · 20-0 bad. "
                 "One condition is the reference itself: give it 100 when you find it.</small>")
        super().__init__(children=[widgets.HTML(f"<b>Trial {trial}</b>"),
                                   Player(ref, sample_rate, label="Reference (open)", thumbnail=None),
                                   widgets.HTML(scale), *rows, widgets.HBox([self.save_button, self.status])])

    @property
    def scores(self) -> dict[str, int]:
        """The sliders' current values by system name."""
        return {name: int(s.value) for name, s in self.sliders.items()}

    def set_score(self, system: str, score: float) -> None:
        """Set one slider, by system name or blind label ("A", "B", ...), as a listener would."""
        if system not in self.sliders and len(system) == 1 and 0 <= ord(system.upper()) - ord("A") < len(self.order):
            system = self.order[ord(system.upper()) - ord("A")]
        if system not in self.sliders:
            raise KeyError(f"No condition {system!r} in this trial; choose one of {self.order} or a label A-"
                           f"{chr(ord('A') + len(self.order) - 1)}.")
        if not 0 <= score <= 100:
            raise ValueError(f"MUSHRA scores lie in 0..100, got {score}.")
        self.sliders[system].value = round(score)

    def save(self) -> Path:
        """Merge this trial's scores into the JSON file (atomically) and say so under the button."""
        data = load_scores(self.path) if self.path.exists() else {}
        data[self.trial] = self.scores
        atomic_write(self.path, json.dumps({"format": "mushra-scores/1", "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                            "trials": data}, indent=1) + "\n")
        self.status.value = f"Saved trial {self.trial!r} to {self.path} ({len(data)} trial(s) in the file)."
        return self.path


def mushra(reference: Any, systems: Mapping[str, Any], sample_rate: float, trial: str,
           path: str | Path = "listening_scores.json", anchor: bool = True, seed: int = 0,
           anchor_hz: float = ANCHOR_HZ) -> Mushra:
    """A MUSHRA trial widget; see :class:`Mushra`. ``seed`` fixes the blind order (use a new one per trial);
    ``anchor_hz``: :func:`low_anchor`'s cutoff."""
    return Mushra(reference, systems, sample_rate, trial, path=path, anchor=anchor, seed=seed, anchor_hz=anchor_hz)


def load_scores(path: str | Path) -> dict[str, dict[str, int]]:
    """``{trial: {system: score}}`` from a file written by :meth:`Mushra.save`; a clear error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No listening scores at {path}: rate a trial and press 'Save my scores' first.")
    try:
        raw = json.loads(path.read_text())
        trials = raw["trials"]
        return {str(t): {str(s): int(v) for s, v in sc.items()} for t, sc in trials.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path} is not a MUSHRA score file written by course_lib.listening_test "
                         f"({type(err).__name__}: {err}); delete it and rate again.") from None


def mean_scores(scores: Mapping[str, Mapping[str, float]]) -> dict[str, tuple[float, float, int]]:
    """``{system: (mean, half-width of the 95% confidence interval, trials)}`` (Student's t, as BS.1534 asks)."""
    by_system: dict[str, list[float]] = {}
    for trial in scores.values():
        for system, value in trial.items():
            by_system.setdefault(system, []).append(float(value))
    out = {}
    for system, values in by_system.items():
        n = len(values)
        half = float(stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        out[system] = (float(np.mean(values)), half, n)
    return out


def screen_listener(scores: Mapping[str, Mapping[str, float]], threshold: float = 90.0,
                    max_fraction: float = 0.15) -> bool:
    """BS.1534-3's post-screening: keep a listener who rated the hidden reference below ``threshold`` in at most
    ``max_fraction`` of the trials."""
    refs = [t[HIDDEN_REFERENCE] for t in scores.values() if HIDDEN_REFERENCE in t]
    if not refs:
        raise ValueError("No trial holds a hidden-reference score; were the scores written by Mushra.save?")
    return sum(r < threshold for r in refs) / len(refs) <= max_fraction


def rank_agreement(listener: Mapping[str, float], metric: Mapping[str, float],
                   higher_is_better: bool = True) -> float:
    """Spearman's rank correlation between listener means and a metric over the systems both rated
    (+1: the metric orders the systems as the listener does)."""
    common = [s for s in listener if s in metric]
    if len(common) < 3:
        raise ValueError(f"Rank agreement needs at least 3 systems scored by both, got {common}.")
    sign = 1.0 if higher_is_better else -1.0
    rho = stats.spearmanr([listener[s] for s in common], [sign * metric[s] for s in common]).statistic
    return float(rho)
