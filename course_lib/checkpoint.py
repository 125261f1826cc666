"""Course checkpoints: ``config.json`` + ``model.safetensors`` + ``card.json``.

A checkpoint is a folder. Nothing in it is unpickled: weights are safetensors and the config is
JSON, so loading a checkpoint can never run foreign code (DESIGN.md, "Pretrained weights"). The
card records how the weights were made (command, commit, data, seed, steps, wall time, metrics)
and ``"sha256": {"config.json": "<hex>", "model.safetensors": "<hex>"}``. Both checksums are
required and checked on every load (an edited config, e.g. another sample rate, would otherwise
load silently), then each config field is checked against the type its dataclass declares.

A shipped checkpoint is named by one folder name under :func:`checkpoint_root` (no ``/``, ``..``
or leading ``.``); anything else is a path to a folder holding ``config.json``.

Saves swap the new folder in under an exclusive ``flock`` on the parent folder; loads hold a
shared one while they resolve and read, so a reader sees the old or the new checkpoint, never a
gap or a mix. The lock is on the directory itself (no lock file); without ``flock`` (Windows)
loads run unlocked. A nested checkpoint (``.../classifier``) is locked through its own parent.

    save_pretrained(model, config, "runs/codec", card={"command": ..., "metrics": {...}})
    model = load_pretrained("codec-speech", Codec, CodecConfig)   # assets/checkpoints/codec-speech
    python -m course_lib.checkpoint seal runs/codec   # re-record the checksums of files you trust
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes, save_file
from torch import nn

from course_lib._version import __version__

try:
    import fcntl
except ImportError:   # Windows: renames are still atomic, readers just do not wait for a swap
    fcntl = None

__all__ = [
    "CheckpointError", "preset", "save_pretrained", "load_pretrained", "read_card", "resolve",
    "checkpoint_root", "git_commit", "sha256_file", "atomic_write", "round_trip_",
]

M = TypeVar("M", bound=nn.Module)
FILES = ("config.json", "model.safetensors", "card.json")
SEALED = ("config.json", "model.safetensors")   # the files whose sha256 the card records


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


@contextlib.contextmanager
def _locked(folders: typing.Iterable[Path], exclusive: bool = False) -> typing.Iterator[None]:
    """Advisory ``flock`` on each existing folder (sorted, so every caller takes them in one order)."""
    fds = []
    try:
        for folder in sorted({os.path.abspath(f) for f in folders}) if fcntl else []:
            try:
                fds.append(os.open(folder, os.O_RDONLY))
                fcntl.flock(fds[-1], fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            except OSError:
                pass          # missing, unreadable, or a file system without flock: go on unlocked
        yield
    finally:
        for fd in fds:
            os.close(fd)      # closing releases the lock


def save_pretrained(model: nn.Module, config: Any, directory: str | Path, card: dict | None = None,
                    dtype: torch.dtype | None = None) -> Path:
    """Save ``model`` and its frozen dataclass ``config`` as a checkpoint folder, atomically.

    Written under a temporary name and swapped in at the end: an interrupted save leaves nothing
    half-written, a concurrent :func:`load_pretrained` sees the old or the new checkpoint. A folder
    at ``directory`` is replaced only if it is a checkpoint (has ``config.json``) or empty.

    Args:
        model: the module whose ``state_dict`` is saved.
        config: a dataclass instance that rebuilds the model (``type(model)(config)``).
        directory: target folder.
        card: provenance and metrics (command, commit, data, seed, steps, wall_time_s, metrics).
        dtype: store floating-point tensors in this dtype (``torch.float16`` halves the file);
            :func:`load_pretrained` casts them back to the model's dtype. Compute a card's
            metrics after :func:`round_trip_` so that they describe the stored weights.

    Returns the checkpoint folder.
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"config must be a dataclass instance, got {type(config).__name__}")
    directory = Path(directory)
    if directory.name in ("", ".", ".."):
        raise ValueError(f"save_pretrained needs a folder with a name, got {str(directory)!r}; e.g. runs/codec.")
    if directory.exists() and not (directory / "config.json").is_file() and not (
            directory.is_dir() and not any(directory.iterdir())):
        raise CheckpointError(f"{directory} exists and is not a checkpoint (no config.json); saving would delete "
                              f"what is in it. Pick a new folder, e.g. {directory / 'checkpoint'}.")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        tmp.chmod(0o755)   # mkdtemp makes 0700; a checkpoint is for everyone to read
        state = {k: v.detach().cpu().contiguous() for k, v in _untied(model).items()}
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        save_file(state, str(tmp / "model.safetensors"))
        arch = type(model).__name__
        (tmp / "config.json").write_text(json.dumps(
            {"architecture": arch, "config": dataclasses.asdict(config)}, indent=2) + "\n", encoding="utf-8")
        full_card = {"name": directory.name, "architecture": arch, "course_lib_version": __version__,
                     "parameters": sum(v.numel() for v in state.values()), **(card or {}),
                     "sha256": {n: sha256_file(tmp / n) for n in SEALED}}
        (tmp / "card.json").write_text(json.dumps(full_card, indent=2, default=str) + "\n", encoding="utf-8")
        old = tmp.with_name(tmp.name + ".old")
        with _locked([directory.parent], exclusive=True):
            if directory.exists():
                os.replace(directory, old)
                try:
                    os.replace(tmp, directory)
                except BaseException:
                    os.replace(old, directory)
                    raise
            else:
                os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _name(name_or_path: str | os.PathLike) -> str:
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise CheckpointError(f"A checkpoint is a shipped name or a folder path, not a {type(name_or_path).__name__}.")
    name = os.fsdecode(os.fspath(name_or_path))
    if not name.strip():
        raise CheckpointError(f"Empty checkpoint name {name!r}. Pass a shipped name ({_shipped() or 'none'}) or the "
                              f"folder a run wrote (`course-lib train MODEL --out DIR`).")
    return name


def _plain(name: str) -> bool:
    """Whether ``name`` can be a shipped checkpoint: one visible path component."""
    return (name == name.strip() and not name.startswith(".") and "\0" not in name
            and not any(sep in name for sep in ("/", "\\", os.sep)))


def _tied(model: nn.Module) -> list[list[str]]:
    """Names of state-dict entries that share storage (tied weights), each group in state-dict order."""
    groups: dict[int, list[str]] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if t.numel():                                   # empty tensors may share the null pointer without a tie
            groups.setdefault(t.data_ptr(), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def _untied(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with one entry per tied group (safetensors refuses shared tensors)."""
    drop = {name for names in _tied(model) for name in names[1:]}
    return {k: v for k, v in model.state_dict().items() if k not in drop}


def _retied(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fill the tied entries that :func:`_untied` left out from the one that was stored."""
    state = dict(state)
    for first, *rest in _tied(model):
        for name in rest:
            if name not in state and first in state:
                state[name] = state[first]
    return state


def preset(presets: dict[str, Any], name: str, what: str) -> Any:
    """``presets[name]``, or a ValueError that lists the names (every config's ``preset`` uses this)."""
    if name not in presets:
        raise ValueError(f"Unknown {what} preset {name!r}; choose one of {sorted(presets)} "
                         f"(the profiles use tiny, small and base: Config.preset(profile().model_scale)).")
    return presets[name]


def _shipped() -> list[str]:
    root = checkpoint_root()
    return sorted(p.parent.name for p in root.glob("*/config.json") if _plain(p.parent.name)) if root.is_dir() else []


def _fix(folder: Path, seal: bool = False) -> str:
    """How to repair ``folder``: restore a shipped checkpoint, re-train (or re-seal) one of yours."""
    if folder.resolve().is_relative_to(checkpoint_root().resolve()):
        return (f"Restore the shipped checkpoint with `git checkout -- {folder}` (and `git lfs pull` if its weights "
                f"are LFS pointers), or re-train it with `course-lib train`.")
    return (f"Re-create it with `course-lib train MODEL --out {folder}`"
            + (f", or, if you made these files yourself and trust them, record their checksums with "
               f"`python -m course_lib.checkpoint seal {folder}`." if seal else "."))


def _read_lock(name: str) -> contextlib.AbstractContextManager:
    return _locked([Path(name).expanduser().absolute().parent, checkpoint_root()])   # wherever name can lead


def _resolve(name: str) -> Path:
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return path
    if _plain(name) and (checkpoint_root() / name).is_dir():
        path = checkpoint_root() / name
        if (path / "config.json").is_file():
            return path
    if path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint: it has no config.json (a checkpoint folder holds "
                              f"{', '.join(FILES)}). Pass the folder that save_pretrained or `course-lib train MODEL "
                              f"--out DIR` wrote, or a shipped name: {_shipped() or 'none'}."
                              + (" " + _fix(path) if path.parent == checkpoint_root() else ""))
    hint = "" if _plain(name) else " A shipped name is a single folder name, without '/', '..' or a leading '.'."
    if not checkpoint_root().is_dir():
        hint += (" The shipped checkpoints are not part of an installed package: they live in the course repository's "
                 "assets/checkpoints. Clone it and set COURSE_CHECKPOINTS=/path/to/clone/assets/checkpoints, or "
                 "install the course with `pip install -e .` from the clone.")
    raise CheckpointError(
        f"No checkpoint {name!r}: it is neither a folder nor a shipped checkpoint in {checkpoint_root()}.{hint} "
        f"Shipped: {_shipped() or 'none'}. Train one with `course-lib train MODEL --out DIR` and pass DIR, "
        f"or use one of the shipped names.")


def resolve(name_or_path: str | Path) -> Path:
    """A checkpoint folder: an existing folder with ``config.json``, or a shipped name under ``assets/checkpoints``."""
    name = _name(name_or_path)
    with _read_lock(name):
        return _resolve(name)


def _read(folder: Path, filename: str) -> bytes:
    try:
        return (folder / filename).read_bytes()
    except OSError as e:
        raise CheckpointError(f"Checkpoint file {folder / filename} is missing or unreadable ({e.strerror}); a "
                              f"checkpoint folder needs {', '.join(FILES)}. {_fix(folder)}") from e


def _json_object(data: bytes, path: Path) -> dict:
    try:
        value = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path} is not a JSON text file (byte {e.start} is not UTF-8): another file was "
                              f"saved under its name, or it is corrupted. {_fix(path.parent)}") from e
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); the checkpoint is corrupted. "
                              f"{_fix(path.parent)}") from e
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} holds a JSON {type(value).__name__}, not an object {{...}}; the checkpoint is "
                              f"corrupted or the file belongs elsewhere. {_fix(path.parent)}")
    return value


def read_card(name_or_path: str | Path) -> dict:
    """The card (provenance, metrics and checksums) of a checkpoint."""
    name = _name(name_or_path)
    with _read_lock(name):
        folder = _resolve(name)
        data = _read(folder, "card.json")
    return _json_object(data, folder / "card.json")


def train_seconds(card: dict, earlier: bool = True) -> float:
    """Training wall time behind a checkpoint: its own run and (``earlier``) every earlier run it started from.

    A fine-tuned checkpoint (``--init-from``) lists the runs before it under ``runs_before``; the README, the decks
    and the notebooks all count a checkpoint's cost this one way. Older cards name their own time ``wall_time_s``."""
    own = float(card.get("train_wall_time_s", card.get("wall_time_s", 0.0)))
    return own + sum(float(r.get("train_wall_time_s", 0.0)) for r in card.get("runs_before", []) if earlier)


def _verify(folder: Path, card: dict, blobs: dict[str, bytes]) -> None:
    sums = card.get("sha256")
    if not (isinstance(sums, dict) and all(isinstance(sums.get(n), str) for n in SEALED)):
        what = ("records the sha256 of the weights only (written by an older course_lib)" if isinstance(sums, str)
                else "has no sha256 of " + " and ".join(SEALED))
        raise CheckpointError(f"{folder / 'card.json'} {what}, so the checkpoint cannot be verified; the card needs "
                              f'"sha256": {{"config.json": ..., "model.safetensors": ...}}. {_fix(folder, seal=True)}')
    for n in SEALED:
        if hashlib.sha256(blobs[n]).hexdigest() != sums[n].strip().lower():
            raise CheckpointError(f"{folder / n} is corrupted or was edited: its sha256 does not match card.json. "
                                  f"{_fix(folder, seal=True)}")


class _Mismatch(Exception):
    def __init__(self, where: str, hint: Any, value: Any):
        expected = hint.__name__ if isinstance(hint, type) and not typing.get_args(hint) else str(hint)
        found = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        super().__init__(f"field {where!r} should be {expected.replace('typing.', '')}, "
                         f"found {type(value).__name__} {found}")


def _check(value: Any, hint: Any, where: str) -> Any:
    """``value`` (parsed JSON) as the type ``hint`` declares: lists become tuples, ints become floats."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):                      # X | None, Optional[X]
        for arg in args:
            with contextlib.suppress(_Mismatch):
                return _check(value, arg, where)
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            variadic = len(args) == 2 and args[1] is Ellipsis           # tuple[X, ...] or tuple[X, Y]
            items = [args[0]] * len(value) if variadic else list(args) or [Any] * len(value)
            if len(items) == len(value):
                return tuple(_check(v, h, f"{where}[{i}]") for i, (v, h) in enumerate(zip(value, items)))
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint in (bool, str, type(None)):
        if isinstance(value, hint):
            return value
    else:
        return value            # annotations the course's configs do not use (Any, ...) pass unchanged
    raise _Mismatch(where, hint, value)


def _config_from_dict(config_cls: type, values: dict) -> Any:
    """``config_cls(**values)``, every field checked against its declared type (``_Mismatch``, ValueError)."""
    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.init}
    unknown, missing = set(values) - set(fields), {n for n, f in fields.items()
                                                   if n not in values and f.default is dataclasses.MISSING
                                                   and f.default_factory is dataclasses.MISSING}
    if unknown or missing:
        raise ValueError(f"does not match {config_cls.__name__}: unknown fields {sorted(unknown) or '-'}, "
                         f"missing fields {sorted(missing) or '-'}")
    hints = typing.get_type_hints(config_cls)
    return config_cls(**{n: _check(v, hints.get(n, Any), n) for n, v in values.items()})


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

    The three files are read under a shared lock (a concurrent save waits), then the card's
    sha256 of ``config.json`` and ``model.safetensors`` is checked against the bytes read.

    Raises:
        CheckpointError: an empty or unknown name, missing or corrupted files, a card without
            checksums, a config field of the wrong type, a checkpoint of another architecture,
            or weights of another size. The message names the fix.
    """
    name = _name(name_or_path)
    with _read_lock(name):
        folder = _resolve(name)
        blobs = {n: _read(folder, n) for n in FILES}
    meta = _json_object(blobs["config.json"], folder / "config.json")
    card = _json_object(blobs["card.json"], folder / "card.json")
    _verify(folder, card, blobs)
    arch = meta.get("architecture")
    if arch != model_cls.__name__:
        raise CheckpointError(
            f"{folder} holds a {arch} checkpoint, not a {model_cls.__name__}. Load it with the module that "
            f"made it (e.g. course_lib.<model>.load_pretrained) or pick a {model_cls.__name__} checkpoint.")
    again = f"It was edited, or made by another version of course_lib or another model. {_fix(folder)}"
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{folder / 'config.json'} has no \"config\" object of {config_cls.__name__} fields. "
                              f"{again}")
    try:
        config = _config_from_dict(config_cls, meta["config"])
    except (_Mismatch, TypeError, ValueError) as e:
        what = f"{config_cls.__name__} {e}" if isinstance(e, _Mismatch) else str(e)
        raise CheckpointError(f"{folder / 'config.json'}: {what}. {again}") from e
    try:
        state = load_bytes(blobs["model.safetensors"])
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{folder / 'model.safetensors'} is not safetensors ({e}). {_fix(folder)}") from e
    try:
        model = model_cls(config)
        model.load_state_dict(_retied(model, state), strict=True)
    except (RuntimeError, ValueError) as e:
        raise CheckpointError(
            f"The weights in {folder} do not fit {model_cls.__name__}({config}): {str(e).splitlines()[0]} "
            f"The checkpoint was made with another size or version; re-train it with this course_lib.") from e
    return model.eval()


def _seal(folder: Path) -> dict:
    """Record the sha256 of ``config.json`` and ``model.safetensors`` in ``folder/card.json``; nothing else changes."""
    with _locked([folder.parent], exclusive=True):
        card = _json_object(_read(folder, "card.json"), folder / "card.json")
        card["sha256"] = {n: hashlib.sha256(_read(folder, n)).hexdigest() for n in SEALED}
        atomic_write(folder / "card.json", json.dumps(card, indent=2, default=str) + "\n")
    return card["sha256"]


if __name__ == "__main__":   # python -m course_lib.checkpoint seal DIR [DIR ...]
    if len(sys.argv) < 3 or sys.argv[1] != "seal":
        sys.exit("usage: python -m course_lib.checkpoint seal DIR [DIR ...]  (records the sha256 of config.json and "
                 "model.safetensors on each card; only for files you made or checked yourself)")
    for arg in sys.argv[2:]:
        print(arg, _seal(resolve(arg)))
