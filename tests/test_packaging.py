"""``pip install .`` (not editable) gives a working package: every subpackage, and clear checkpoint advice."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from this checkout, installed (without dependencies) into a fresh folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp / "dist"), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next((tmp / "dist").glob("course_lib-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(tmp / "site"),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    return tmp


def test_wheel_holds_every_subpackage(installed):
    wheel = next((installed / "dist").glob("course_lib-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    expected = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "course_lib").rglob("*.py"))
    missing = [n for n in expected if n not in names]
    assert not missing, f"the wheel lacks {missing}: list the subpackages in pyproject.toml"


def _run(installed: Path, code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COURSE_CHECKPOINTS")}
    return subprocess.run([sys.executable, "-c", code], cwd=installed, capture_output=True, text=True, timeout=300,
                          env={**clean, "PYTHONPATH": str(installed / "site"), **env})


def test_installed_package_imports_and_finds_checkpoints(installed):
    code = ("import course_lib, course_lib.data, course_lib.recipes.codec, course_lib.external\n"
            "assert course_lib.__file__.startswith(%r), course_lib.__file__\n"
            "from course_lib import codec\n"
            "try:\n    codec.load_pretrained('codec-speech')\n"
            "except course_lib.checkpoint.CheckpointError as e:\n    print('ERROR', e)\n"
            "else:\n    print('LOADED')\n") % str(installed / "site")
    alone = _run(installed, code)
    assert alone.returncode == 0, alone.stderr
    assert "ERROR" in alone.stdout and "COURSE_CHECKPOINTS" in alone.stdout        # says where to get them
    pointed = _run(installed, code, COURSE_CHECKPOINTS=str(ROOT / "assets" / "checkpoints"))
    assert pointed.returncode == 0 and "LOADED" in pointed.stdout, pointed.stdout + pointed.stderr
