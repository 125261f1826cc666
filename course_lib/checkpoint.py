"""Course checkpoints: ``config.json`` + ``model.safetensors`` + ``card.json``.

A checkpoint is a folder. Nothing in it is unpickled: weights are safetensors and the
config is JSON, so loading a checkpoint can never run foreign code (DESIGN.md,
"Pretrained weights"). The card records how the weights were made (command, commit,
data, seed, steps, wall time, metrics) and the sha256 of the weights, which is checked
on every load.

    save_pretrained(model, config, "runs/codec", card={"command": ..., "metrics": {...}})
    model = load_pretrained("codec-speech", Codec, CodecConfig)   # assets/checkpoints/codec-speech
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import typing
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = [
    "CheckpointError", "save_pretrained", "load_pretrained", "read_card", "resolve",
    "checkpoint_root", "git_commit", "sha256_file", "atomic_write", "round_trip_",
]

M = TypeVar("M", bound=nn.Module)
FILES = ("config.json", "model.safetensors", "card.json")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupted, or belongs to another model."""


def checkpoint_root() -> Path:
    """``assets/checkpoints`` of this repository (``$COURSE_CHECKPOINTS`` overrides)."""
    env = os.environ.get("COURSE_CHECKPOINTS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "assets" / "checkpoints"


def git_commit() -> str:
    """Short hash of the repository's HEAD, or ``"unknown"`` outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[1], timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` (text or bytes) to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o644)   # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_pretrained(model: nn.Module, config: Any, directory: str | Path, card: dict | None = None,
                    dtype: torch.dtype | None = None) -> Path:
    """Save ``model`` and its frozen dataclass ``config`` as a checkpoint folder, atomically.

    The folder is written under a temporary name and renamed at the end, so an
    interrupted save never leaves a half-written checkpoint behind; an existing
    checkpoint at ``directory`` is replaced only once the new one is complete.

    Args:
        model: the module whose ``state_dict`` is saved.
        config: a dataclass instance that rebuilds the model (``type(model)(config)``).
        directory: target folder.
        card: provenance and metrics (command, commit, data, seed, steps, wall_time_s, metrics).
        dtype: store floating-point tensors in this dtype (``torch.float16`` halves the file);
            :func:`load_pretrained` casts them back to the model's dtype. Compute a card's
            metrics after :func:`round_trip_` so that they describe the stored weights.

    Returns:
        The checkpoint folder.
    """
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"config must be a dataclass instance, got {type(config).__name__}")
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        tmp.chmod(0o755)   # mkdtemp makes 0700; a checkpoint is for everyone to read
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        save_file(state, str(tmp / "model.safetensors"))
        arch = type(model).__name__
        (tmp / "config.json").write_text(json.dumps(
            {"architecture": arch, "config": dataclasses.asdict(config)}, indent=2) + "\n")
        from course_lib import __version__
        full_card = {"name": directory.name, "architecture": arch, "course_lib_version": __version__,
                     "parameters": sum(v.numel() for v in state.values()), **(card or {}),
                     "sha256": sha256_file(tmp / "model.safetensors")}
        (tmp / "card.json").write_text(json.dumps(full_card, indent=2, default=str) + "\n")
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def resolve(name_or_path: str | Path) -> Path:
    """A checkpoint folder from a path or a shipped name under ``assets/checkpoints``."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    shipped = checkpoint_root() / str(name_or_path)
    if shipped.is_dir():
        return shipped
    available = sorted(p.name for p in checkpoint_root().glob("*") if p.is_dir()) if checkpoint_root().is_dir() else []
    raise CheckpointError(
        f"No checkpoint {str(name_or_path)!r}: it is neither a folder nor a shipped checkpoint in "
        f"{checkpoint_root()}. Shipped: {available or 'none'}. Train one with `course-lib train MODEL --out DIR` "
        f"and pass DIR, or use one of the shipped names.")


def read_card(name_or_path: str | Path) -> dict:
    """The card (provenance and metrics) of a checkpoint."""
    folder = resolve(name_or_path)
    return _read_json(folder / "card.json")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file {path} is missing. A checkpoint folder needs {', '.join(FILES)}; "
                              f"re-create it with `course-lib train` or restore it with `git checkout -- {path.parent}`.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); the checkpoint is corrupted. "
                              f"Restore it with `git checkout -- {path.parent}` or re-train.") from e


def _config_from_dict(config_cls: type, values: dict, source: Path) -> Any:
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown, missing = set(values) - set(fields), {n for n, f in fields.items()
                                                   if n not in values and f.default is dataclasses.MISSING
                                                   and f.default_factory is dataclasses.MISSING}
    if unknown or missing:
        raise CheckpointError(
            f"{source} does not match {config_cls.__name__}: unknown fields {sorted(unknown) or '-'}, "
            f"missing fields {sorted(missing) or '-'}. The checkpoint was made by another version or another model; "
            f"re-train it with this version of course_lib.")
    hints = typing.get_type_hints(config_cls)
    kwargs = {}
    for name, value in values.items():
        # JSON has no tuples: restore them where the dataclass declares a tuple.
        if isinstance(value, list) and "tuple" in str(hints.get(name, "")):
            value = tuple(value)
        kwargs[name] = value
    return config_cls(**kwargs)


@torch.no_grad()
def round_trip_(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Round every floating-point parameter and buffer of ``model`` through ``dtype``, in place.

    After this, ``save_pretrained(model, ..., dtype=dtype)`` stores the weights exactly, so
    metrics computed now are the metrics of the checkpoint as loaded.
    """
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            t.copy_(t.to(dtype))
    return model


def load_pretrained(name_or_path: str | Path, model_cls: type[M], config_cls: type) -> M:
    """Rebuild ``model_cls(config)`` from a checkpoint and load its weights (eval mode, CPU).

    Raises:
        CheckpointError: missing or corrupted files, checksum mismatch, a checkpoint of
            another architecture, or weights of another size. The message names the fix.
    """
    folder = resolve(name_or_path)
    meta = _read_json(folder / "config.json")
    card = _read_json(folder / "card.json")
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing. Restore it (`git checkout -- {folder}`) or re-train.")
    arch = meta.get("architecture")
    if arch != model_cls.__name__:
        raise CheckpointError(
            f"{folder} holds a {arch} checkpoint, not a {model_cls.__name__}. Load it with the module that "
            f"made it (e.g. course_lib.<model>.load_pretrained) or pick a {model_cls.__name__} checkpoint.")
    expected = card.get("sha256")
    if expected and sha256_file(weights) != expected:
        raise CheckpointError(
            f"{weights} is corrupted: its sha256 does not match card.json. Restore it with "
            f"`git checkout -- {folder}` (or `git lfs pull`), or re-train with `course-lib train`.")
    config = _config_from_dict(config_cls, meta.get("config", {}), folder / "config.json")
    model = model_cls(config)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights} cannot be read as safetensors ({e}); restore or re-train it.") from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"The weights in {folder} do not fit {model_cls.__name__}({config}): {str(e).splitlines()[0]} "
            f"The checkpoint was made with another size or version; re-train it with this course_lib.") from e
    return model.eval()
