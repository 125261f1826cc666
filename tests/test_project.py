"""Project-level contracts: profiles, device, packaging consistency, CLI."""
import json
import re
import subprocess
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import course_lib
from course_lib import PROFILES, get_device, profile, seed_everything

ROOT = Path(__file__).resolve().parents[1]


def _names(requirements):
    return {re.split(r"[<>=!\[ ;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_environment_yml_installs_the_pyproject_package_set():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = _names(project["dependencies"] + extras["dev"] + extras["laion"] + extras["tts"])
    env_lines = [ln.strip()[2:] for ln in (ROOT / "environment.yml").read_text().splitlines()
                 if ln.strip().startswith("- ") and not ln.strip().startswith("- -e")]
    pip_section = env_lines[env_lines.index("pip:") + 1:]
    assert _names(pip_section) == wanted
    # The exact torch pins of the Makefile are the ones conda users get too.
    pins = re.search(r"TORCH_PINS := (.*)", (ROOT / "Makefile").read_text()).group(1).split()
    assert set(pins) <= set(pip_section)


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profiles_by_name_and_env(name, monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", name.upper())
    prof = profile()
    assert prof.name == name and prof.batch_size > 0 and prof.max_steps > 0
    assert prof.device == "cpu" or torch.cuda.is_available()


def test_profiles_grow_from_smoke_to_gpu():
    s, c, g = PROFILES["smoke"], PROFILES["cpu"], PROFILES["gpu"]
    assert s.train_examples < c.train_examples < g.train_examples
    assert s.time_budget_s < c.time_budget_s < g.time_budget_s


def test_default_profile_follows_cuda(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    assert profile().name == ("gpu" if torch.cuda.is_available() else "cpu")


def test_unknown_profile_names_the_valid_ones(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "laptop")
    with pytest.raises(ValueError, match=r"'laptop'.*\['cpu', 'gpu', 'smoke'\].*COURSE_PROFILE"):
        profile()


def test_time_budget_override_keeps_the_rest_of_the_profile(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "cpu")
    monkeypatch.setenv("COURSE_TIME_BUDGET_S", " 45 ")
    prof = profile()
    assert prof.time_budget_s == 45.0
    assert prof == replace(PROFILES["cpu"], time_budget_s=45.0)
    monkeypatch.setenv("COURSE_TIME_BUDGET_S", "")
    assert profile() == PROFILES["cpu"]


@pytest.mark.parametrize("bad", ["soon", "0", "-5", "inf", "nan"])
def test_time_budget_override_rejects_non_positive_or_non_numbers(bad, monkeypatch):
    monkeypatch.setenv("COURSE_TIME_BUDGET_S", bad)
    expected = rf"COURSE_TIME_BUDGET_S must be a positive number of seconds, got '{bad}'.*unset it"
    with pytest.raises(ValueError, match=expected):
        profile("smoke")


def test_seed_everything_makes_runs_repeat():
    seed_everything(3)
    a = torch.randn(5)
    g = seed_everything(3)
    torch.testing.assert_close(a, torch.randn(5))
    torch.testing.assert_close(torch.rand(2, generator=g), torch.rand(2, generator=torch.Generator().manual_seed(3)))


def test_get_device(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    assert get_device("meta") == torch.device("meta")


def _cli(*args):
    out = subprocess.run([sys.executable, "-m", "course_lib", *args], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_cli_info_reports_versions_profile_and_data():
    info = json.loads(_cli("info"))
    assert info["course_lib"] == course_lib.__version__ and info["torch"] == torch.__version__
    assert info["profile"] in PROFILES
    assert info["data_sources"]["synthworld"] == "built-in"


def test_cli_rejects_unknown_model():
    out = subprocess.run([sys.executable, "-m", "course_lib", "train", "nosuchmodel"], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert out.returncode != 0 and "Choose one of" in out.stderr


def test_bench_core_reports_positive_speeds():
    from course_lib.cli import bench_core
    figures = bench_core()
    assert figures["synthworld_clips_per_s_1thread"] > 0 and figures["mel_spectrogram_ms_per_1s_clip"] > 0


def test_every_module_reads_in_one_sitting():
    """STYLE: no file a newcomer cannot read in one sitting (split a module before it passes 600 lines)."""
    long = {p.name: n for p in (ROOT / "course_lib").glob("*.py")
            if (n := len(p.read_text().splitlines())) > 600}
    assert not long, f"split these modules (lines): {long}"


def test_shipped_checkpoints_are_small_and_complete():
    """DESIGN: shipped checkpoints are small (a few MB) and carry config, weights and card."""
    folders = [p for p in (ROOT / "assets" / "checkpoints").iterdir() if p.is_dir()]
    assert folders
    for folder in folders:
        assert {"config.json", "model.safetensors", "card.json"} <= {f.name for f in folder.iterdir()}, folder
        size_mb = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2 ** 20
        assert size_mb < 8, f"{folder.name} is {size_mb:.1f} MB; store it in float16 or shrink the model"
        card = json.loads((folder / "card.json").read_text())
        assert card.get("command", "").startswith("course-lib train"), (folder.name, card.get("command"))


@pytest.mark.parametrize("family", ["codec", "wavegan", "clap"])
def test_model_modules_define_their_api(family):
    """Each model module defines its whole public API itself (no lazy re-exports): fit, presets, load_pretrained."""
    code = (f"import course_lib.{family} as m, course_lib.recipes.{family} as r\n"
            f"missing = [n for n in m.__all__ if n not in vars(m)]\n"
            f"assert not missing, missing\n"
            f"assert {{'fit', 'load_pretrained'}} <= set(dir(m)) and callable(r.train_cli)")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_stored_clean(path):
    """DESIGN: notebooks without outputs; every cell has a unique id (nbformat 4.5 makes it required)."""
    nb = json.loads(path.read_text())
    assert (nb["nbformat"], nb["nbformat_minor"]) >= (4, 5), path.name
    ids = [c.get("id") for c in nb["cells"]]
    assert None not in ids, f"{path.name}: cell {ids.index(None)} has no id; run nbformat.validator.normalize"
    assert len(set(ids)) == len(ids), f"{path.name}: duplicate cell ids"
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name}: cell {i} has outputs"
