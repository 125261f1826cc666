import contextlib
import dataclasses
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
import torch
from torch import nn

from course_lib import checkpoint
from course_lib.checkpoint import (CheckpointError, checkpoint_root, load_pretrained, read_card, round_trip_,
                                   save_pretrained, sha256_file, train_seconds)


@dataclass(frozen=True)
class TinyConfig:
    width: int = 4
    kernel_sizes: tuple[int, ...] = (3, 5)
    sample_rate: int = 16_000

    def __post_init__(self):
        if not self.kernel_sizes:
            raise ValueError("kernel_sizes must not be empty")


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
    assert card["metrics"] == {"loss": 0.5} and card["architecture"] == "Tiny"
    assert set(card["sha256"]) == {"config.json", "model.safetensors"}
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
    with pytest.raises(CheckpointError, match="corrupted.*course-lib train"):
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
    _reseal(path)                 # a consistent checkpoint of another size
    with pytest.raises(CheckpointError, match="do not fit.*re-train"):
        load_pretrained(path, Tiny, TinyConfig)


def test_config_of_another_model_is_refused(saved):
    _, path = saved
    meta = json.loads((path / "config.json").read_text())
    meta["config"]["n_heads"] = 2
    (path / "config.json").write_text(json.dumps(meta))
    _reseal(path)
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


# ---------------------------------------------------------------------------------------------
# Hardening: checksums of config and weights, typed configs, names, concurrent saves.

def _reseal(path):
    """What a tool that rewrites a checkpoint consistently would do: record the new checksums."""
    card = json.loads((path / "card.json").read_text())
    card["sha256"] = {n: sha256_file(path / n) for n in ("config.json", "model.safetensors")}
    (path / "card.json").write_text(json.dumps(card, indent=2))


def _set_config(path, **changes):
    meta = json.loads((path / "config.json").read_text())
    meta["config"].update(changes)
    (path / "config.json").write_text(json.dumps(meta))


WAV = (b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x80>\x00\x00\x00}\x00\x00\x02\x00\x10\x00"
       b"data\x00\x00\x00\x00\xff\xfe")                     # a WAV file saved under a JSON name


# Defect 1: the card's checksum covers config.json and the weights, and is required.

def test_card_records_sha256_of_config_and_weights(saved):
    _, path = saved
    assert read_card(path)["sha256"] == {"config.json": sha256_file(path / "config.json"),
                                         "model.safetensors": sha256_file(path / "model.safetensors")}


def test_edited_config_is_detected(saved):
    _, path = saved
    _set_config(path, sample_rate=44100)        # same shapes: the old loader took it silently
    with pytest.raises(CheckpointError, match=r"config\.json is corrupted or was edited.*course-lib train"):
        load_pretrained(path, Tiny, TinyConfig)


@pytest.mark.parametrize("schema", ["none", "old weights-only string", "no config.json entry"])
def test_card_without_both_checksums_is_refused(saved, schema):
    _, path = saved
    card = json.loads((path / "card.json").read_text())
    weights = card.pop("sha256")["model.safetensors"]
    if schema != "none":
        card["sha256"] = weights if schema.startswith("old") else {"model.safetensors": weights}
    (path / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=r"card\.json (has no|records the) sha256.*checkpoint seal"):
        load_pretrained(path, Tiny, TinyConfig)


def test_seal_records_the_checksums_of_trusted_files(saved):
    _, path = saved
    _set_config(path, sample_rate=44100)
    card = read_card(path)
    checkpoint._seal(path)
    resealed = read_card(path)
    assert resealed.pop("sha256") != card.pop("sha256") and resealed == card
    assert load_pretrained(path, Tiny, TinyConfig).config.sample_rate == 44100


def test_shipped_cards_record_both_checksums():
    cards = sorted(checkpoint_root().glob("**/card.json"))
    assert len(cards) >= 5 and any(c.parent.name == "classifier" for c in cards)
    for card in cards:
        assert json.loads(card.read_text())["sha256"] == {
            n: sha256_file(card.parent / n) for n in ("config.json", "model.safetensors")}, card


def test_corrupted_shipped_checkpoint_advises_git_checkout(saved, tmp_path, monkeypatch):
    _, path = saved
    monkeypatch.setenv("COURSE_CHECKPOINTS", str(tmp_path))
    (path / "model.safetensors").write_bytes(b"\0" + (path / "model.safetensors").read_bytes()[1:])
    with pytest.raises(CheckpointError, match=r"model\.safetensors is corrupted.*git checkout -- "):
        load_pretrained("tiny", Tiny, TinyConfig)


# Defect 2 and 5: every field checked against its declared type; non-objects and binaries refused.

@pytest.mark.parametrize("field, value, message", [
    ("width", "4", r"'width' should be int, found str '4'"),
    ("width", 4.0, r"'width' should be int, found float 4\.0"),
    ("width", True, r"'width' should be int, found bool True"),
    ("kernel_sizes", 3.5, r"'kernel_sizes' should be tuple\[int, \.\.\.\], found float 3\.5"),
    ("kernel_sizes", [3, "5"], r"'kernel_sizes\[1\]' should be int, found str '5'"),
    ("kernel_sizes", {"a": 3}, r"'kernel_sizes' should be tuple\[int, \.\.\.\], found dict"),
    ("sample_rate", None, r"'sample_rate' should be int, found NoneType None"),
])
def test_wrong_typed_config_field_is_named(saved, field, value, message):
    _, path = saved
    _set_config(path, **{field: value})
    _reseal(path)                               # consistent card: the type check is what must catch it
    with pytest.raises(CheckpointError, match=r"config\.json: TinyConfig field " + message + ".*course-lib train"):
        load_pretrained(path, Tiny, TinyConfig)


@pytest.mark.parametrize("name", ["config.json", "card.json"])
@pytest.mark.parametrize("content, message", [
    (WAV, "not a JSON text file"),
    (b"[1, 2, 3]", "holds a JSON list, not an object"),
    (b'"config"', "holds a JSON str, not an object"),
    (b"[" * 100_000, "not valid JSON"),
])
def test_non_object_or_binary_json_is_refused(saved, name, content, message):
    _, path = saved
    (path / name).write_bytes(content)
    if name == "config.json":
        _reseal(path)
    with pytest.raises(CheckpointError, match=re.escape(name) + ".*" + message):
        load_pretrained(path, Tiny, TinyConfig)
    if name == "card.json":
        with pytest.raises(CheckpointError, match=message):
            read_card(path)


@pytest.mark.parametrize("meta", [{"architecture": "Tiny"}, {"architecture": "Tiny", "config": [4, [3, 5]]}])
def test_config_without_a_config_object_is_refused(saved, meta):
    _, path = saved
    (path / "config.json").write_text(json.dumps(meta))
    _reseal(path)
    with pytest.raises(CheckpointError, match=r"config\.json has no \"config\" object"):
        load_pretrained(path, Tiny, TinyConfig)


def test_value_the_config_refuses_is_a_checkpoint_error(saved):
    _, path = saved
    _set_config(path, kernel_sizes=[])
    _reseal(path)
    with pytest.raises(CheckpointError, match="kernel_sizes must not be empty.*course-lib train"):
        load_pretrained(path, Tiny, TinyConfig)


@dataclass(frozen=True)
class RichConfig:
    rate: float = 0.5
    betas: tuple[float, float] = (0.5, 0.9)
    names: tuple[str, ...] = ("a", "b")
    levels: tuple[tuple[int, ...], ...] = ((1, 2), (3,))
    seed: int | None = None
    cap: Optional[int] = 7
    flag: bool = False


class Rich(nn.Module):
    def __init__(self, config: RichConfig):
        super().__init__()
        self.config = config
        self.lin = nn.Linear(2, 2)


def test_supported_field_types_round_trip_and_are_checked(tmp_path):
    config = RichConfig(rate=2, betas=(0, 1.5), levels=((4,), (), (5, 6)), seed=3, cap=None, flag=True)
    path = save_pretrained(Rich(config), config, tmp_path / "rich")
    loaded = load_pretrained(path, Rich, RichConfig).config
    assert loaded == config and type(loaded.rate) is float and type(loaded.betas[0]) is float
    assert loaded.levels == ((4,), (), (5, 6)) and isinstance(loaded.levels[0], tuple)
    for field, value, message in [("betas", [0.5], r"'betas' should be tuple\[float, float\], found list"),
                                  ("betas", [0.5, "x"], r"'betas\[1\]' should be float, found str"),
                                  ("levels", [[1], [2.5]], r"'levels\[1\]\[0\]' should be int, found float"),
                                  ("seed", 1.5, r"'seed' should be int \| None, found float"),
                                  ("cap", "7", r"'cap' should be Optional\[int\], found str"),
                                  ("flag", 1, r"'flag' should be bool, found int"),
                                  ("names", "ab", r"'names' should be tuple\[str, \.\.\.\], found str")]:
        save_pretrained(Rich(config), config, path)
        _set_config(path, **{field: value})
        _reseal(path)
        with pytest.raises(CheckpointError, match=message):
            load_pretrained(path, Rich, RichConfig)


def test_every_course_config_survives_its_json_round_trip():
    """The type checker knows every annotation the course's configs use (and their presets' values)."""
    import importlib
    import inspect
    configs = []
    for name in ("codec", "wavegan", "clap", "gan_eval", "jukebox", "hubert", "audiolm", "audioldm"):
        try:
            module = importlib.import_module(f"course_lib.{name}")
        except ModuleNotFoundError:
            continue
        for obj in vars(module).values():
            if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and obj.__name__.endswith("Config"):
                with contextlib.suppress(TypeError):
                    configs.append(obj())
            elif isinstance(obj, dict):
                configs += [v for v in obj.values() if dataclasses.is_dataclass(v) and not isinstance(v, type)]
    assert {"CodecConfig", "WaveGANConfig", "ClapConfig"} <= {type(c).__name__ for c in configs}
    for config in configs:
        values = json.loads(json.dumps(dataclasses.asdict(config)))
        assert checkpoint._config_from_dict(type(config), values) == config, config


# Defect 3: names.

@pytest.mark.parametrize("name", ["", "  ", "\t\n"])
def test_empty_name_is_refused(name):
    for fn in (checkpoint.resolve, read_card):
        with pytest.raises(CheckpointError, match="Empty checkpoint name") as e:
            fn(name)
        assert "git checkout" not in str(e.value)


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A checkpoint root with one checkpoint ``tiny``, a checkpoint ``outside`` beside it, cwd elsewhere."""
    root, elsewhere = tmp_path / "root", tmp_path / "cwd" / "deeper"
    elsewhere.mkdir(parents=True)
    model = Tiny(TinyConfig())
    save_pretrained(model, model.config, root / "tiny")
    save_pretrained(model, model.config, tmp_path / "outside")
    monkeypatch.setenv("COURSE_CHECKPOINTS", str(root))
    monkeypatch.chdir(elsewhere)
    return root


@pytest.mark.parametrize("name", ["../outside", "tiny/..", "..", ".", "tiny/../../outside", ".tiny"])
def test_shipped_names_stay_inside_the_checkpoint_root(shipped, name):
    with pytest.raises(CheckpointError, match="(No checkpoint|is not a checkpoint)"):
        checkpoint.resolve(name)


def test_folder_without_config_is_not_a_checkpoint(shipped, tmp_path):
    with pytest.raises(CheckpointError, match=r"is not a checkpoint: it has no config\.json"):
        checkpoint.resolve(tmp_path)
    with pytest.raises(CheckpointError, match=r"is not a checkpoint: it has no config\.json"):
        load_pretrained("/", Tiny, TinyConfig)


def test_shipped_names_and_explicit_folders_resolve(shipped, tmp_path):
    assert checkpoint.resolve("tiny") == shipped / "tiny"
    assert checkpoint.resolve(tmp_path / "outside") == tmp_path / "outside"
    assert checkpoint.resolve("../../outside").resolve() == (tmp_path / "outside").resolve()   # an explicit path
    assert load_pretrained("tiny", Tiny, TinyConfig).config == TinyConfig()
    assert load_pretrained(str(tmp_path / "outside"), Tiny, TinyConfig).config == TinyConfig()


def test_save_refuses_to_replace_a_folder_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    model = Tiny(TinyConfig())
    with pytest.raises(CheckpointError, match="not a checkpoint.*would delete"):
        save_pretrained(model, model.config, tmp_path)
    with pytest.raises(ValueError, match="folder with a name"):
        save_pretrained(model, model.config, Path("."))
    assert (tmp_path / "notes.txt").read_text() == "mine"


# Defect 4: one writer saving again and again while readers load: never a gap, never a mix.

def test_concurrent_saves_and_loads_never_fail(tmp_path):
    path, errors, done, loads = tmp_path / "run", [], threading.Event(), [0]
    model = Tiny(TinyConfig(width=64, kernel_sizes=(3, 5, 7, 9)))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(-1.0)                                             # each save holds one constant
    save_pretrained(model, model.config, path)

    def write():
        try:
            for i in range(60):
                with torch.no_grad():
                    for p in model.parameters():
                        p.fill_(float(i))
                save_pretrained(model, model.config, path, card={"step": i})
        except Exception as e:                                      # pragma: no cover - reported below
            errors.append(e)
        finally:
            done.set()

    def read():
        while not done.is_set():
            try:
                loaded = load_pretrained(path, Tiny, TinyConfig)
                values = set(torch.cat([p.detach().flatten() for p in loaded.parameters()]).tolist())
                assert len(values) == 1, f"weights of two saves mixed: {sorted(values)[:4]}"
                read_card(path)
                loads[0] += 1
            except Exception as e:
                errors.append(e)
                return

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    assert loads[0] > 10 and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


class Tied(Tiny):
    """A tied pair (as a language model's embedding and output head) and two empty buffers that are not tied."""

    def __init__(self, config: TinyConfig):
        super().__init__(config)
        self.embed = nn.Embedding(5, config.width)
        self.head = nn.Linear(config.width, 5, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("none_a", torch.zeros(0))
        self.register_buffer("none_b", torch.zeros(0, 3))


def test_tied_weights_are_stored_once_and_retied(tmp_path):
    model = Tied(TinyConfig())
    checkpoint.save_pretrained(model, model.config, tmp_path / "tied")
    loaded = load_pretrained(tmp_path / "tied", Tied, TinyConfig)
    assert loaded.head.weight is loaded.embed.weight                  # still one parameter after loading
    torch.testing.assert_close(loaded.embed.weight, model.embed.weight)
    assert loaded.none_b.shape == (0, 3) and read_card(tmp_path / "tied")["parameters"] == sum(
        p.numel() for p in model.parameters())


def test_train_seconds_counts_every_run_a_checkpoint_started_from():
    assert train_seconds({"wall_time_s": 60.0}) == 60.0                          # an older card's own time
    fine_tuned = {"train_wall_time_s": 30.0, "runs_before": [{"train_wall_time_s": 100.0}, {"steps": 5}]}
    assert train_seconds(fine_tuned) == 130.0 and train_seconds(fine_tuned, earlier=False) == 30.0
    assert train_seconds({}) == 0.0
