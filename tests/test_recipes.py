"""The shared command line (course_lib.recipes.common): one set of flags, safe outputs, honest exits."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from course_lib import checkpoint
from course_lib.recipes import codec as codec_recipe
from course_lib.recipes import common
from course_lib.train import SettingsMismatch

ROOT = Path(__file__).resolve().parents[1]
TINY_CODEC = ["--data", "synthworld", "--preset", "tiny", "--batch-size", "2", "--crop-s", "0.2", "--train-size", "4",
              "--eval-size", "2", "--no-progress", "--no-speed-perturb", "--threads", "1"]


@pytest.mark.parametrize("flag, value", [("--steps", "0"), ("--batch-size", "0"), ("--crop-s", "0"),
                                         ("--speed-perturb", "0"), ("--train-size", "0"), ("--steps", "two"),
                                         ("--time-budget", "-1"), ("--threads", "0"), ("--lr", "nan")])
def test_bad_values_are_refused_by_the_parser(flag, value, capsys):
    with pytest.raises(SystemExit) as e:
        codec_recipe.train_cli(TINY_CODEC + [flag, value])
    assert e.value.code == 2 and flag in capsys.readouterr().err


@pytest.mark.parametrize("family", ["codec", "wavegan", "clap", "audiolm"])
def test_every_family_has_the_shared_flags(family, capsys):
    from importlib import import_module
    with pytest.raises(SystemExit):
        import_module(f"course_lib.recipes.{family}").train_cli(["--help"])
    text = capsys.readouterr().out
    for flag in ("--preset", "--profile", "--seed", "--steps", "--time-budget", "--threads", "--device", "--out",
                 "--run-dir", "--force", "--train-size", "--eval-size"):
        assert flag in text, (family, flag)


def test_default_output_is_under_runs_and_shipped_checkpoints_need_force(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = common.train_parser("codec", ["tiny"], ["synthworld"]).parse_args([])
    run = common.plan_run(args, "codec", [])
    assert run.run_dir == Path("runs/codec-synthworld") and run.out == Path("runs/codec-synthworld/checkpoint")
    shipped = checkpoint.checkpoint_root() / "codec-speech"
    args = common.train_parser("codec", ["tiny"], ["synthworld"]).parse_args(["--out", str(shipped)])
    with pytest.raises(SystemExit, match="--force"):
        common.plan_run(args, "codec", [])
    args.force = True
    assert common.plan_run(args, "codec", []).out == shipped      # asked for on purpose


def test_a_model_in_parts_refuses_to_replace_its_shipped_parts(tmp_path):
    shipped = str(checkpoint.checkpoint_root() / "audiolm-speech")             # audiolm-speech-fine etc. are shipped
    with pytest.raises(SystemExit, match="audiolm-speech-fine.*--force"):
        common.refuse_shipped_parts(shipped, ("semantic", "coarse", "fine"), force=False)
    common.refuse_shipped_parts(shipped, ("semantic", "coarse", "fine"), force=True)            # on purpose
    common.refuse_shipped_parts(str(tmp_path / "mine"), ("semantic", "coarse", "fine"), force=False)
    common.refuse_shipped_parts(None, ("fine",), force=False)                   # the default writes under runs/


def test_a_stopped_run_exits_nonzero_exports_nothing_and_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    code = codec_recipe.train_cli(TINY_CODEC + ["--steps", "100000", "--time-budget", "0.5", "--out", str(out)])
    assert code == common.EXIT_UNFINISHED and not out.exists()
    assert (tmp_path / "runs" / "codec-synthworld" / "last.pt").is_file()
    state = torch.load(tmp_path / "runs" / "codec-synthworld" / "last.pt", weights_only=True)
    assert 0 < state["step"] < 100000


def test_resume_with_other_settings_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert codec_recipe.train_cli(TINY_CODEC + ["--steps", "1", "--out", "a"]) == 0
    with pytest.raises(SettingsMismatch) as e:
        codec_recipe.train_cli(TINY_CODEC + ["--steps", "2", "--lr", "0.005", "--out", "b"])
    assert "lr 0.001 -> 0.005" in str(e.value) and "\n" not in str(e.value) and "--run-dir" in str(e.value)
    assert not Path("b").exists()


def test_card_has_one_schema(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert codec_recipe.train_cli(TINY_CODEC + ["--steps", "1", "--out", "c"]) == 0
    card = checkpoint.read_card("c")
    for key in ("command", "commit", "data", "seed", "steps", "max_steps", "stopped_by", "train_wall_time_s",
                "metrics", "settings"):
        assert key in card, key
    assert card["data"] == [common.DATA_SOURCES["synthworld"]._asdict()]


def test_cached_reuses_a_file_with_the_same_stamp_and_recomputes_on_another(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"codes": torch.arange(3)}

    net, path = torch.nn.Linear(2, 2), tmp_path / "runs" / "codes.pt"
    stamp = {"sha256": common.digest(net, torch.ones(4), "songs")}
    first = common.cached(path, stamp, compute)
    again = common.cached(path, stamp, compute)
    assert len(calls) == 1 and torch.equal(first["codes"], again["codes"])
    with torch.no_grad():
        net.weight.add_(1.0)                                 # other weights: another stamp, computed again
    assert common.digest(net, torch.ones(4), "songs") != stamp["sha256"]
    common.cached(path, {"sha256": common.digest(net, torch.ones(4), "songs")}, compute)
    assert len(calls) == 2 and [p.name for p in path.parent.iterdir()] == ["codes.pt"]   # no temporary file left
    assert common.digest(torch.ones(4), "a") != common.digest(torch.ones(4), "b")


def test_best_time_takes_the_fastest_run():
    calls = []
    assert common.best_time(lambda: calls.append(1), repeat=3, warmup=2) >= 0 and len(calls) == 5


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun not installed beside this Python")
def test_torchrun_trains_the_codec_with_two_processes(tmp_path):
    """The same command under torchrun: gloo on CPU, DDP, rank-0 saving, EMA codebooks synced."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "course_lib", "train", "codec", *TINY_CODEC,
           "--steps", "3", "--out", str(tmp_path / "ddp")]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    card = json.loads((tmp_path / "ddp" / "card.json").read_text())
    assert card["steps"] == 3 and card["stopped_by"] == "max_steps"
    assert len(list((tmp_path / "runs").rglob("last.pt"))) == 1


def test_bfloat16_autocast_on_cpu_trains():
    from course_lib import codec
    from course_lib.train import autocast
    with autocast("cpu", True):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast("cpu", False):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    torch.manual_seed(0)
    model = codec.Codec(codec.CodecConfig.preset("tiny"))
    clips = [0.3 * torch.sin(torch.arange(8000) * 0.05)[None]]
    result = codec.fit(model, clips, steps=2, batch_size=2, crop_s=0.2, mixed_precision=True, progress=False)
    assert result.finished and all(torch.isfinite(torch.tensor(v)) for v in result.history.records[-1].values())


def test_train_command_turns_sigterm_into_a_saving_stop(monkeypatch):
    """`kill PID` on a background `course-lib train` raises KeyboardInterrupt, which the Trainer saves on."""
    import signal

    from course_lib import cli

    def train_cli(argv):
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):   # the handler runs between bytecodes
                pass
        return 0
    monkeypatch.setattr(codec_recipe, "train_cli", train_cli)
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["train", "codec"]) == 0
    assert signal.getsignal(signal.SIGTERM) is before
