import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from course_lib.checkpoint import CheckpointError, load_pretrained, read_card, round_trip_, save_pretrained


@dataclass(frozen=True)
class TinyConfig:
    width: int = 4
    kernel_sizes: tuple[int, ...] = (3, 5)


class Tiny(nn.Module):
    def __init__(self, config: TinyConfig):
        super().__init__()
        self.config = config
        self.convs = nn.ModuleList(nn.Conv1d(1, config.width, k) for k in config.kernel_sizes)


class Other(Tiny):
    pass


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = Tiny(TinyConfig())
    path = save_pretrained(model, model.config, tmp_path / "tiny", card={"seed": 0, "metrics": {"loss": 0.5}})
    return model, path


def test_round_trip_restores_weights_config_and_card(saved):
    model, path = saved
    loaded = load_pretrained(path, Tiny, TinyConfig)
    assert loaded.config == model.config and isinstance(loaded.config.kernel_sizes, tuple)
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    card = read_card(path)
    assert card["metrics"] == {"loss": 0.5} and card["architecture"] == "Tiny" and len(card["sha256"]) == 64
    assert not loaded.training


def test_half_precision_storage_loads_exactly_the_round_tripped_weights(tmp_path):
    torch.manual_seed(0)
    model = Tiny(TinyConfig(width=256))
    full = save_pretrained(model, model.config, tmp_path / "full")
    round_trip_(model, torch.float16)
    half = save_pretrained(model, model.config, tmp_path / "half", dtype=torch.float16)
    assert (half / "model.safetensors").stat().st_size < 0.75 * (full / "model.safetensors").stat().st_size
    loaded = load_pretrained(half, Tiny, TinyConfig)
    assert loaded.config.width == 256
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert b.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_overwrite_is_atomic_and_leaves_no_temp_folders(saved, tmp_path):
    model, path = saved
    save_pretrained(model, model.config, path, card={"seed": 1})
    assert read_card(path)["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


def test_failed_save_leaves_nothing(tmp_path):
    class Broken(Tiny):
        def state_dict(self, *a, **k):
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        save_pretrained(Broken(TinyConfig()), TinyConfig(), tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


def test_corrupted_weights_are_detected(saved):
    _, path = saved
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted.*git checkout"):
        load_pretrained(path, Tiny, TinyConfig)


def test_other_architecture_is_refused(saved):
    _, path = saved
    with pytest.raises(CheckpointError, match="holds a Tiny checkpoint, not a Other"):
        load_pretrained(path, Other, TinyConfig)


def test_other_size_is_refused(saved):
    _, path = saved
    meta = json.loads((path / "config.json").read_text())
    meta["config"]["width"] = 8
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit.*re-train"):
        load_pretrained(path, Tiny, TinyConfig)


def test_config_of_another_model_is_refused(saved):
    _, path = saved
    meta = json.loads((path / "config.json").read_text())
    meta["config"]["n_heads"] = 2
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unknown fields \\['n_heads'\\]"):
        load_pretrained(path, Tiny, TinyConfig)


@pytest.mark.parametrize("missing", ["config.json", "card.json", "model.safetensors"])
def test_missing_file_is_named(saved, missing):
    _, path = saved
    (path / missing).unlink()
    with pytest.raises(CheckpointError, match=missing):
        load_pretrained(path, Tiny, TinyConfig)


def test_unknown_name_lists_the_fix():
    with pytest.raises(CheckpointError, match="course-lib train"):
        load_pretrained("no-such-checkpoint", Tiny, TinyConfig)
