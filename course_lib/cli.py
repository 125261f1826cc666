"""Command line: ``python -m course_lib`` or ``course-lib``.

    course-lib info                    versions, device, profile, data sources, shipped checkpoints
    course-lib bench [MODEL ...]       speed figures as JSON
    course-lib train MODEL [ARGS...]   train a model (ARGS: see ``course-lib train MODEL --help``)
    course-lib eval MODEL [ARGS...]    metrics as JSON
    course-lib generate MODEL [ARGS...]

Each family's recipe (``course_lib.recipes.<MODEL>``) provides ``train_cli(argv)``, ``eval_cli(argv)``,
``bench()`` and, where the model generates, ``generate_cli(argv)``; this file only dispatches.
Under ``torchrun --nproc_per_node=N -m course_lib train MODEL ...`` the same command trains with DDP.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import platform
import sys

import numpy
import torch
import torchaudio

import course_lib
from course_lib import checkpoint, data, get_device, profile, spectral
from course_lib.recipes.common import best_time
from course_lib.train import stop_on_sigterm

# Model families in course order. A family appears in `bench` and `info` once its module exists.
MODELS = ("wavegan", "codec", "jukebox", "audiolm", "clap", "audioldm")


def _recipe(name: str):
    if name not in MODELS:
        raise SystemExit(f"Unknown model {name!r}. Choose one of: {', '.join(MODELS)}.")
    if importlib.util.find_spec(f"course_lib.recipes.{name}") is None:
        raise SystemExit(f"The model family {name!r} is not part of this version of the course yet.")
    return importlib.import_module(f"course_lib.recipes.{name}")


def _available_models() -> list[str]:
    return [m for m in MODELS if importlib.util.find_spec(f"course_lib.recipes.{m}") is not None]


def info() -> dict:
    """Versions, device, profile, data sources and shipped checkpoints."""
    prof = profile()
    root = checkpoint.checkpoint_root()
    return {
        "course_lib": course_lib.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchaudio": torchaudio.__version__,
        "numpy": numpy.__version__,
        "device": str(get_device()),
        "cuda_available": torch.cuda.is_available(),
        "threads": torch.get_num_threads(),
        "profile": prof.name,
        "profile_settings": {k: getattr(prof, k) for k in prof.__dataclass_fields__},
        "data_sources": data.sources_found(),
        "checkpoints": sorted(p.name for p in root.glob("*") if (p / "card.json").is_file()) if root.is_dir() else [],
        "models": _available_models(),
    }


def bench_core() -> dict:
    """Speed of the shared primitives (CPU, current thread count)."""
    wav = torch.randn(16, 1, 16_000)
    mel_s = best_time(lambda: spectral.mel_spectrogram(wav, 16_000, n_fft=1024, hop_length=256, n_mels=80))
    return {
        "synthworld_clips_per_s_1thread": round(data.bench_synthworld(), 1),
        "mel_spectrogram_ms_per_1s_clip": round(1000 * mel_s / 16, 3),
    }


def bench(models: list[str] | None = None) -> dict:
    results = {"device": "cpu", "threads": torch.get_num_threads(), "core": bench_core()}
    for name in models or _available_models():
        module = _recipe(name)
        if hasattr(module, "bench"):
            results[name] = module.bench()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="course-lib", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, device, profile, data sources")
    p_bench = sub.add_parser("bench", help="speed figures as JSON")
    p_bench.add_argument("models", nargs="*", help=f"subset of {MODELS} (default: all available)")
    for cmd in ("train", "eval", "generate"):
        p = sub.add_parser(cmd, help=f"{cmd} a model; extra arguments go to the model (MODEL --help)")
        p.add_argument("model", help=", ".join(MODELS))
        p.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)

    if ns.command == "info":
        print(json.dumps(info(), indent=2))
    elif ns.command == "bench":
        print(json.dumps(bench(ns.models or None), indent=2))
    else:
        module = _recipe(ns.model)
        fn = getattr(module, f"{ns.command}_cli", None)
        if fn is None:
            raise SystemExit(f"`course-lib {ns.command} {ns.model}` is not available for this model.")
        if ns.command == "train":
            with stop_on_sigterm():   # `kill PID` saves last.pt like Ctrl-C; the same command resumes
                result = fn(ns.args)
        else:
            result = fn(ns.args)
        if ns.command == "eval":
            print(json.dumps(result, indent=2))
            return 0
        return int(result or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
