"""One small training helper for every model of the course.

The model-specific part is a ``step_fn(step)`` that performs one whole optimisation
step (forward, backward, ``optimizer.step()``; a GAN does several) and returns its
named scalar losses. The :class:`Trainer` adds what every training loop needs and
nobody wants to write twice:

- a progress bar (``tqdm.auto``: a widget in Jupyter, text in a terminal);
- a NaN / divergence guard that stops with a message naming the fix;
- atomic checkpoints every few minutes and at the end, and automatic resume;
- a step and a time budget (live notebook cells stop after ``profile().time_budget_s``);
- a loss history that can be plotted.

The loop is plain PyTorch and device-agnostic, and it runs under ``torchrun``: a family's
``fit`` calls :func:`init_distributed`, wraps its model with :func:`distribute` (DDP), gives
every rank its own batches (:func:`rank_generator`), and only rank 0 writes checkpoints and
shows progress. :func:`autocast` is the one switch for mixed precision (``Profile.mixed_precision``).

Every family's ``fit`` returns a :class:`TrainResult`.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from course_lib.plots import plot_loss_history

__all__ = ["TrainConfig", "Trainer", "History", "TrainResult", "TrainingDiverged", "SettingsMismatch", "infinite",
           "optimizer_step", "moving_average", "stop_on_sigterm",
           "autocast", "init_distributed", "distribute", "rank_generator", "is_main_process", "unwrap"]


class TrainingDiverged(RuntimeError):
    """A loss became NaN, infinite or exploded."""


class SettingsMismatch(RuntimeError):
    """A run directory holds a checkpoint made with other settings than the ones asked for."""


@dataclass
class TrainConfig:
    max_steps: int
    time_budget_s: float | None = None        # stop early when exceeded
    checkpoint_dir: str | Path | None = None  # None: no checkpoints, no resume
    checkpoint_every_s: float = 120.0
    log_every: int = 10                       # history resolution in steps
    max_loss: float = 1e6                     # |loss| above this raises TrainingDiverged
    progress: bool = True                     # False: a plain log line every log_interval_s instead of a bar
    log_interval_s: float = 60.0
    settings: Mapping[str, Any] | None = None  # what made this run (preset, lr, ...): resume refuses others


@dataclass
class History:
    """Logged scalars: ``records`` is a list of dicts with ``step``, ``time_s`` and the losses."""

    records: list[dict[str, float]] = field(default_factory=list)

    def keys(self) -> list[str]:
        return sorted({k for r in self.records for k in r} - {"step", "time_s"})

    def values(self, key: str) -> list[float]:
        return [r[key] for r in self.records if key in r]

    def last(self, key: str) -> float:
        vals = self.values(key)
        if not vals:
            raise KeyError(f"No {key!r} in the history; logged keys: {self.keys()}")
        return vals[-1]

    def mean(self, key: str, last_n: int | None = None, first_n: int | None = None) -> float:
        vals = self.values(key)
        vals = vals[:first_n] if first_n else vals
        vals = vals[-last_n:] if last_n else vals
        if not vals:
            raise KeyError(f"No {key!r} in the history; logged keys: {self.keys()}")
        return float(np.mean(vals))

    def plot(self, ax=None, keys: list[str] | None = None, smoothing: float = 0.0, log: bool = False):
        return plot_loss_history(self.records, ax=ax, keys=keys, smoothing=smoothing, log=log)


@dataclass
class TrainResult:
    """What every family's ``fit`` returns.

    ``stopped_by`` is ``"max_steps"`` (finished), ``"time_budget"`` or ``"interrupted"``
    (``last.pt`` in the checkpoint folder resumes it). ``optimizers`` continue training in a notebook.
    """

    model: nn.Module
    history: History
    steps: int
    wall_time_s: float          # training wall time over all resumed runs
    stopped_by: str
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.stopped_by == "max_steps"


def optimizer_step(losses: Any, optimizer: torch.optim.Optimizer, max_norm: float | None = None) -> Any:
    """Backward ``losses.total`` (or ``losses.loss``), clip the gradient norm, step; returns the losses detached.

    ``losses`` is a NamedTuple of scalar tensors whose first field is the total that is optimised.
    """
    optimizer.zero_grad(set_to_none=True)
    losses[0].backward()
    if max_norm is not None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimizer.step()
    return type(losses)(*(x.detach() if torch.is_tensor(x) else x for x in losses))


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int, warmup: int = 0,
                  floor: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then a cosine from the base rate down to ``floor`` times it at
    ``steps`` (nanoGPT's schedule), held there afterwards."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup)) * (
        floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))


def moving_average(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``model``'s weights and buffers (LDM's ``LitEma``); call
    ``.update_parameters(model)`` after each step. ``avg <- d avg + (1 - d) w`` with
    ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so a short run's average does not stay
    at its first weights. It is a module: checkpoint it beside the model (``Trainer(modules=...)``)."""
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)                            # once per step and device, not once per tensor
        d = min(decay, (1.0 + n) / (10.0 + n))
        for a, c in zip(averaged, current):
            a.lerp_(c, 1.0 - d) if a.is_floating_point() else a.copy_(c)   # integer buffers: the latest value
    return torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=update, use_buffers=True)


def infinite(loader: Iterable) -> Iterator:
    """Cycle a DataLoader forever (a new epoch, and a new shuffle, each time it runs out)."""
    while True:
        yielded = False
        for batch in loader:
            yielded = True
            yield batch
        if not yielded:
            raise ValueError("The data loader is empty: check the dataset size and batch_size (drop_last?).")


# ----------------------------------------------------------------------------- devices, precision, processes
def autocast(device: torch.device | str, enabled: bool = True) -> contextlib.AbstractContextManager:
    """Mixed precision for a forward pass: bfloat16 autocast on CUDA (where supported) and CPU.

    bfloat16 keeps float32's range, so no gradient scaler is needed. Disabled, or on a GPU
    without bfloat16 (then the run stays in float32), it is a no-op context.
    """
    kind = torch.device(device).type
    if not enabled or kind not in ("cuda", "cpu") or (kind == "cuda" and not torch.cuda.is_bf16_supported()):
        return contextlib.nullcontext()
    return torch.autocast(kind, dtype=torch.bfloat16)


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Treat SIGTERM (``kill PID``, a scheduler's or ``torchrun``'s stop) like Ctrl-C while the block runs.

    A :class:`Trainer` catches the resulting ``KeyboardInterrupt``, saves ``last.pt`` and returns, so a
    background run stopped with ``kill`` resumes where it was instead of losing the minutes since its
    last checkpoint. Outside the main thread (signals cannot be set there) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def is_main_process() -> bool:
    return not _distributed() or torch.distributed.get_rank() == 0


def init_distributed() -> tuple[int, int]:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1); returns (rank, world size).

    CPU processes use the gloo backend, GPUs nccl (each rank on ``cuda:LOCAL_RANK``). A plain
    ``python`` run returns (0, 1) and changes nothing.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not _distributed():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def distribute(model: nn.Module) -> nn.Module:
    """``DistributedDataParallel(model)`` inside a process group, else ``model`` itself."""
    if not _distributed():
        return model
    device = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    return getattr(model, "module", model)


def rank_generator(generator: torch.Generator | None) -> torch.Generator | None:
    """Each rank draws its own batches: the distributed sampler of crop-based training.

    Rank r's stream is seeded from ``generator`` and r, so two ranks never see the same batch
    and a single process (rank 0) keeps ``generator`` itself.
    """
    if not _distributed() or torch.distributed.get_rank() == 0 or generator is None:
        return generator
    seed = int(torch.randint(2**62, (1,), generator=generator)) + torch.distributed.get_rank()
    return torch.Generator(generator.device).manual_seed(seed)


def _scalars(out: Any) -> dict[str, float]:
    if hasattr(out, "_asdict"):
        out = out._asdict()
    if not isinstance(out, Mapping):
        raise TypeError(f"step_fn must return a NamedTuple or a mapping of named losses, got {type(out).__name__}")
    return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in out.items() if v is not None}


class Trainer:
    """Runs ``step_fn`` for ``config.max_steps`` steps with progress, guards and checkpoints.

    Args:
        modules: named modules whose state is checkpointed (e.g. ``{"generator": G, "critic": D}``).
        optimizers: named optimizers, checkpointed with the modules.
        config: step and time budgets, checkpointing.
        schedulers: named learning-rate schedulers (optional).
        generators: named ``torch.Generator``s whose state is checkpointed, so a resumed run
            continues the same random stream (batches, noise) as an uninterrupted one.
    """

    def __init__(self, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                 config: TrainConfig, schedulers: dict[str, Any] | None = None,
                 generators: dict[str, torch.Generator | None] | None = None):
        self.modules, self.optimizers, self.config = modules, optimizers, config
        self.schedulers = schedulers or {}
        self.generators = {k: g for k, g in (generators or {}).items() if g is not None}
        self.step = 0
        self.history = History()
        self.elapsed_s = 0.0   # training wall time over all sessions, resumes included
        self.stopped_by: str | None = None
        self.checkpoint_path = Path(config.checkpoint_dir) / "last.pt" if config.checkpoint_dir else None
        if self.checkpoint_path is not None and self.checkpoint_path.is_file():
            self.load(self.checkpoint_path)

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "elapsed_s": self.elapsed_s,
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "history": self.history.records,
            "generators": {k: g.get_state() for k, g in self.generators.items()},
            "settings": dict(self.config.settings or {}),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1].tolist(),
                    "python": list(random.getstate()[1])},
        }

    def save(self, path: str | Path | None = None) -> Path:
        """Write a resumable checkpoint atomically (temporary file, then ``os.replace``)."""
        path = Path(path or self.checkpoint_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            torch.save(self.state_dict(), tmp)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    def load(self, path: str | Path) -> None:
        """Restore modules, optimizers, schedulers, step, history and RNG state."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
            raise RuntimeError(f"Cannot resume from {path}: the file is unreadable ({type(e).__name__}: {e}). "
                               f"Delete it to start training from scratch.") from e
        self._check_settings(path, state.get("settings", {}))
        for kind, live in (("modules", self.modules), ("optimizers", self.optimizers), ("schedulers", self.schedulers)):
            if set(state[kind]) != set(live):
                raise RuntimeError(f"Cannot resume from {path}: it holds {kind} {sorted(state[kind])}, this trainer has "
                                   f"{sorted(live)}. Use another checkpoint_dir or delete the file.")
            for k, obj in live.items():
                obj.load_state_dict(state[kind][k])
        self.step, self.elapsed_s = int(state["step"]), float(state.get("elapsed_s", 0.0))
        self.history = History(list(state["history"]))
        for k, g in self.generators.items():
            if k in state.get("generators", {}):
                g.set_state(state["generators"][k])
        torch.set_rng_state(state["rng"]["torch"])
        np_state = np.random.get_state()
        np.random.set_state((np_state[0], np.array(state["rng"]["numpy"], dtype=np.uint32), *np_state[2:]))
        py_state = random.getstate()
        random.setstate((py_state[0], tuple(state["rng"]["python"]), py_state[2]))

    def _check_settings(self, path: Path, saved: Mapping[str, Any]) -> None:
        asked = {k: v for k, v in (self.config.settings or {}).items()}
        changed = {k: (saved.get(k), v) for k, v in asked.items() if k in saved and saved[k] != v}
        if changed:
            diff = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in sorted(changed.items()))
            raise SettingsMismatch(f"{path.parent} holds a run made with other settings ({diff}): resume it with "
                                   f"the same settings, or pass another run directory (--run-dir) to start anew.")

    def result(self, model: nn.Module) -> TrainResult:
        """This run as a :class:`TrainResult` (what every family's ``fit`` returns)."""
        return TrainResult(unwrap(model), self.history, self.step, self.elapsed_s, self.stopped_by or "max_steps",
                           self.optimizers)

    # ----------------------------------------------------------------------------- loop
    def _guard(self, losses: dict[str, float]) -> None:
        for name, value in losses.items():
            if not math.isfinite(value) or abs(value) > self.config.max_loss:
                raise TrainingDiverged(
                    f"Training diverged at step {self.step}: {name} = {value}. Lower the learning rate, check the "
                    f"input data for NaN/silence, or clip gradients; then resume from the last checkpoint "
                    f"({self.checkpoint_path or 'none: set checkpoint_dir'}).")

    def fit(self, step_fn: Callable[[int], Any], callback: Callable[[int, Trainer], None] | None = None,
            callback_every: int = 0) -> History:
        """Run until ``max_steps`` (counting resumed steps) or the time budget; returns the history."""
        cfg = self.config
        main = is_main_process()
        for m in self.modules.values():
            m.train()
        start = last_ckpt = last_log = time.perf_counter()
        elapsed_before = self.elapsed_s
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not (cfg.progress and main),
                   dynamic_ncols=True, leave=True)
        self.stopped_by = "max_steps"
        healthy = False
        try:
            while self.step < cfg.max_steps:
                losses = _scalars(step_fn(self.step))
                self._guard(losses)
                for s in self.schedulers.values():
                    s.step()
                self.step += 1
                now = time.perf_counter()
                self.elapsed_s = elapsed_before + now - start
                if self.step % cfg.log_every == 0 or self.step == 1 or self.step == cfg.max_steps:
                    self.history.records.append({"step": self.step, "time_s": round(self.elapsed_s, 3), **losses})
                    bar.set_postfix({k: f"{v:.4g}" for k, v in list(losses.items())[:4]}, refresh=False)
                bar.update(1)
                if not cfg.progress and main and (now - last_log >= cfg.log_interval_s or self.step == cfg.max_steps):
                    print(f"step {self.step}/{cfg.max_steps}  {self.elapsed_s:.0f} s  "
                          + "  ".join(f"{k} {v:.4g}" for k, v in list(losses.items())[:4]), file=sys.stderr, flush=True)
                    last_log = now
                if callback is not None and callback_every and self.step % callback_every == 0:
                    callback(self.step, self)
                if self.checkpoint_path and main and now - last_ckpt >= cfg.checkpoint_every_s:
                    self.save()
                    last_ckpt = now
                if cfg.time_budget_s is not None and now - start >= cfg.time_budget_s:
                    self.stopped_by = "time_budget"
                    break
        except TrainingDiverged:
            healthy = False   # keep the last good checkpoint: never overwrite it with diverged weights
            raise
        except KeyboardInterrupt:
            self.stopped_by = "interrupted"   # an interrupted cell keeps its progress; fit() again resumes
            healthy = True
        else:
            healthy = True
        finally:
            bar.close()
            for m in self.modules.values():
                m.eval()
            if healthy and self.checkpoint_path and main and self.step > 0:
                self.save()
        return self.history
