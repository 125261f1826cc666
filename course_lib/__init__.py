"""course_lib: the library behind the course "Audio Generation with Foundation Models".

Shape legend, used in every docstring and shape comment of the package:

    B batch            C channels          T samples (time)
    L frames           D latent width      Q quantizers
    K codebook size    N tokens            F mel / frequency bins

Waveforms are always float tensors of shape ``(B, C, T)`` (or ``(C, T)`` for a
single clip) with values in [-1, 1].

Three functions are imported by every notebook:

    >>> from course_lib import get_device, seed_everything, profile
    >>> seed_everything(0)
    >>> device = get_device()
    >>> cfg = profile()          # sized for smoke (CI), cpu (laptop) or gpu (Colab)
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, replace

import numpy as np
import torch

from course_lib._version import __version__
__all__ = ["get_device", "seed_everything", "profile", "show_setup", "Profile", "PROFILES", "__version__"]


def get_device(prefer: str | None = None) -> torch.device:
    """The device a notebook should use: ``prefer`` if given, else CUDA, else MPS, else CPU.

    ``COURSE_DEVICE`` in the environment overrides the automatic choice.
    """
    choice = prefer or os.environ.get("COURSE_DEVICE") or "auto"
    if choice != "auto":
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices) in one place; returns a seeded CPU generator.

    The library itself never calls this: library functions take a ``generator``
    argument instead. Notebooks and scripts call it once at the top.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class Profile:
    """How big everything is: data, models, steps and time budgets.

    Every notebook sizes itself from these fields, so the same notebook runs in CI
    (``smoke``), on a 2-core laptop (``cpu``) and on a Colab GPU (``gpu``).
    """

    name: str
    device: str                # "cpu" or "cuda"; where the notebook's models live
    train_examples: int        # size of a training set built for a notebook
    eval_examples: int         # size of an evaluation set
    batch_size: int
    max_steps: int             # cap on optimisation steps of one live training cell
    time_budget_s: float       # cap on wall time of one live training cell
    model_scale: str           # "tiny" | "small" | "base": model modules map it to config presets
    mixed_precision: bool      # autocast on CUDA
    num_workers: int           # DataLoader workers

    @property
    def is_smoke(self) -> bool:
        return self.name == "smoke"


PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", "cpu", train_examples=64, eval_examples=32, batch_size=16,
                     max_steps=30, time_budget_s=60.0, model_scale="tiny",
                     mixed_precision=False, num_workers=0),
    "cpu": Profile("cpu", "cpu", train_examples=1024, eval_examples=256, batch_size=32,
                   max_steps=600, time_budget_s=180.0, model_scale="small",
                   mixed_precision=False, num_workers=0),
    "gpu": Profile("gpu", "cuda", train_examples=8192, eval_examples=1024, batch_size=64,
                   max_steps=5000, time_budget_s=480.0, model_scale="base",
                   mixed_precision=True, num_workers=2),
}


def profile(name: str | None = None) -> Profile:
    """The active profile: ``name``, else ``$COURSE_PROFILE``, else ``gpu`` with CUDA, else ``cpu``.

    ``$COURSE_TIME_BUDGET_S``, when set, replaces the profile's ``time_budget_s`` (the wall-time cap of one
    live training cell) and keeps everything else: data, model sizes, device.

    Raises:
        ValueError: for an unknown profile name (the message lists the valid ones), or a
            ``COURSE_TIME_BUDGET_S`` that is not a positive number of seconds.
    """
    chosen = name or os.environ.get("COURSE_PROFILE") or ("gpu" if torch.cuda.is_available() else "cpu")
    chosen = chosen.strip().lower()
    if chosen not in PROFILES:
        raise ValueError(
            f"Unknown course profile {chosen!r}. Use one of {sorted(PROFILES)}, "
            f"e.g. `export COURSE_PROFILE=cpu` (or unset it to choose automatically)."
        )
    prof = PROFILES[chosen]
    if prof.device == "cuda" and not torch.cuda.is_available():
        # The gpu profile asked for on a machine without CUDA: keep the sizes, run on CPU.
        prof = replace(prof, device="cpu", mixed_precision=False)
    budget = os.environ.get("COURSE_TIME_BUDGET_S", "").strip()
    if budget:
        # Another wall-time cap for live training cells, everything else of the profile kept (max_steps too).
        prof = replace(prof, time_budget_s=_seconds(budget, "COURSE_TIME_BUDGET_S"))
    return prof


def _seconds(text: str, variable: str) -> float:
    """A positive, finite number of seconds read from an environment variable."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (0 < value < float("inf")):
        raise ValueError(
            f"{variable} must be a positive number of seconds, got {text!r}. "
            f"Fix: e.g. `export {variable}=60`, or unset it to keep the profile's own budget."
        )
    return value


def show_setup() -> str:
    """One line a notebook's set-up cell prints: versions, device, profile and the data sources found."""
    prof = profile()
    found = {k: v for k, v in sources_found().items() if v}
    line = (f"course_lib {__version__} | torch {torch.__version__} | device {get_device()} | "
            f"profile {prof.name} ({prof.model_scale} models, {prof.time_budget_s:g} s per training cell) | "
            f"data: {', '.join(f'{k}={v}' for k, v in found.items())}")
    print(line)
    return line


# At the end: the data package needs nothing from this file, and show_setup needs it.
from course_lib.data import sources_found  # noqa: E402
