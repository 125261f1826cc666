"""SynthWorld, captions and FSDD: determinism, splits, shapes, recognisability proxies, offline paths."""
from __future__ import annotations

import hashlib
import importlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib.data import captions
from course_lib.data import synth as S
from course_lib.data import synth_speech as V
from course_lib.data import (CLASSES, FAMILIES, Batch, Example, SynthWorld, bench_synthworld, collate,
                             download_fsdd, find_fsdd, fsdd, global_label, sources_found)

SR = 16000
N_CLASSES = len(CLASSES)


def centroid(y: np.ndarray, sr: int = SR) -> np.ndarray:
    """Spectral centroid (Hz) of each row of y (B, T)."""
    p = np.abs(np.fft.rfft(y, axis=-1)) ** 2
    f = np.fft.rfftfreq(y.shape[-1], 1 / sr)
    return (p * f).sum(-1) / p.sum(-1)


def yin_f0(y: np.ndarray, sr: int = SR, fmin: float = 25, fmax: float = 2500) -> float:
    """Median YIN f0 (librosa, the peer implementation) over the loud frames of one clip."""
    librosa = pytest.importorskip("librosa")
    f = librosa.yin(y, fmin=fmin, fmax=fmax, sr=sr, frame_length=2048)
    rms = librosa.feature.rms(y=y, frame_length=2048, hop_length=512)[0][: len(f)]
    return float(np.median(f[rms > 0.3 * rms.max()]))


@pytest.fixture(scope="module")
def world() -> SynthWorld:
    return SynthWorld("train", size=4 * N_CLASSES)


@pytest.fixture(scope="module")
def batch(world) -> Batch:
    return world.examples(range(len(world)))


# ----------------------------------------------------------------------------- structure
def test_classes_and_families(world):
    assert len(world.classes) >= 24 and len(set(world.classes)) == len(world.classes)
    assert world.families == ["drums", "notes", "environment", "speech", "music"]
    assert all(len(FAMILIES[f]) >= 4 for f in world.families)
    for label, name in enumerate(world.classes):
        assert name in FAMILIES[world.class_family(label)]
        assert CLASSES[global_label(name)] == name


def test_family_filter_relabels_and_keeps_audio():
    drums = SynthWorld("val", families=["drums"], size=16)
    assert drums.classes == list(S.DRUMS) and drums.families == ["drums"]
    full = SynthWorld("val", size=N_CLASSES)
    # index 0 is a kick in both: same stream, same bits
    assert torch.equal(drums[0].audio, full[0].audio)
    assert {drums[i].label for i in range(16)} == set(range(8))
    music = SynthWorld("val", families="music", size=6)
    assert music[0].attributes["class"] == music.classes[0] == "waltz" and music[0].label == 0


@pytest.mark.parametrize("kwargs, match", [({"families": ["drum"]}, "choose from"), ({"split": "dev"}, "split"),
                                           ({"sample_rate": 4000}, "8000"), ({"duration": 0.1}, "0.25"),
                                           ({"caption_set": "zero"}, "caption_set"), ({"speakers": [99]}, "speakers")])
def test_bad_arguments_fail_early(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SynthWorld(**kwargs)


def test_index_errors(world):
    with pytest.raises(IndexError):
        world[len(world)]
    assert torch.equal(world[-1].audio, world[len(world) - 1].audio)


def test_shapes_dtypes_range(world, batch):
    ex = world[3]
    assert isinstance(ex, Example) and ex.audio.shape == (1, SR) and ex.audio.dtype == torch.float32
    assert isinstance(ex.label, int) and isinstance(ex.caption, str) and ex.caption
    assert batch.audio.shape == (len(world), 1, SR) and batch.label.dtype == torch.int64
    assert torch.isfinite(batch.audio).all() and batch.audio.abs().max() <= 1.0
    peak = batch.audio.abs().amax(dim=(1, 2))
    assert (peak > 0.2).all(), "a clip is (nearly) silent"
    assert batch.audio[..., -1].abs().max() == 0, "clips end with a fade to zero"
    for a in batch.attributes:
        assert {"family", "class", "index", "split"} <= set(a)
        assert all(isinstance(v, (int, float, str)) for v in a.values()), a


def test_class_balance(world, batch):
    counts = np.bincount(batch.label.numpy(), minlength=N_CLASSES)
    assert (counts == 4).all()
    assert [a["class"] for a in batch.attributes] == [world.classes[i] for i in batch.label.tolist()]


# ----------------------------------------------------------------------------- determinism and splits
def test_deterministic_bit_identical(batch):
    again = SynthWorld("train", size=4 * N_CLASSES)
    idx = [0, 5, 13, 22, 33, 40, 67]
    b2 = again.examples(idx)
    assert torch.equal(b2.audio, batch.audio[idx])
    assert b2.caption == [batch.caption[i] for i in idx]
    assert b2.attributes == [batch.attributes[i] for i in idx]


def test_batch_composition_does_not_change_a_clip(world, batch):
    # every class, alone and inside batches of other sizes and orders
    singles = torch.stack([world[i].audio for i in range(N_CLASSES)])
    assert torch.equal(singles, batch.audio[:N_CLASSES])
    mixed = list(range(2 * N_CLASSES - 1, -1, -3))
    assert torch.equal(world.batch(mixed), batch.audio[mixed])


def test_seed_and_caption_set():
    a, b = SynthWorld("train", size=40), SynthWorld("train", size=40, seed=1)
    assert not torch.equal(a.batch(range(40)), b.batch(range(40)))
    held = SynthWorld("train", size=40, caption_set="heldout")
    assert torch.equal(a.batch(range(40)), held.batch(range(40))), "captions must not change the audio"


def test_splits_are_disjoint():
    digests = {}
    for split in ("train", "val", "test"):
        audio = SynthWorld(split, size=3 * N_CLASSES).batch(range(3 * N_CLASSES)).numpy()
        digests[split] = {hashlib.sha1(row.tobytes()).hexdigest() for row in audio}
        assert len(digests[split]) == 3 * N_CLASSES, f"repeated clip inside {split}"
    assert not digests["train"] & digests["val"] and not digests["train"] & digests["test"]
    assert not digests["val"] & digests["test"]
    assert len(SynthWorld("train")) == 4096 and len(SynthWorld("val")) == 512 and len(SynthWorld("test")) == 1024


def test_dataloader_uses_collate(world, batch):
    loader = torch.utils.data.DataLoader(world, batch_size=10, shuffle=False, collate_fn=collate)
    first = next(iter(loader))
    assert isinstance(first, Batch) and first.audio.shape == (10, 1, SR)
    assert torch.equal(first.audio, batch.audio[:10]) and first.caption == batch.caption[:10]
    assert torch.equal(collate([world[2], world[7]]).audio, batch.audio[[2, 7]])


# ----------------------------------------------------------------------------- captions
def test_template_counts_and_heldout_disjoint():
    for family in [*FAMILIES, "digits"]:
        train, held = captions.templates(family, "train"), captions.templates(family, "heldout")
        assert len(train) >= 8 and len(held) >= 3, family
        assert not set(train) & set(held), family
        assert len(captions.templates(family, "train", prompt_only=True)) >= 2
        assert len(captions.templates(family, "heldout", prompt_only=True)) >= 2
    every = lambda which: {t for f in [*FAMILIES, "digits"] for t in captions.templates(f, which)}  # noqa: E731
    assert not every("train") & every("heldout"), "a held-out template is used for training in another family"


def test_every_template_formats_for_every_class(batch):
    seen = set()
    for a in batch.attributes:
        if a["class"] in seen:
            continue
        seen.add(a["class"])
        for template_set in captions.TEMPLATE_SETS:
            for t in captions.templates(a["family"], template_set):
                text = t.format_map(captions.fields(a, np.random.default_rng(0)))
                assert "{" not in text and text.strip() == text and "  " not in text, text
    assert len(seen) == N_CLASSES


def test_heldout_caption_set_uses_only_heldout_templates(monkeypatch):
    marked = {f: {"train": v["train"], "heldout": tuple("HELDOUT " + t for t in v["heldout"])}
              for f, v in captions.TEMPLATES.items()}
    monkeypatch.setattr(captions, "TEMPLATES", marked)
    held = SynthWorld("val", size=N_CLASSES, caption_set="heldout").examples(range(N_CLASSES)).caption
    train = SynthWorld("val", size=N_CLASSES).examples(range(N_CLASSES)).caption
    assert all(c.startswith("HELDOUT ") for c in held)
    assert not any("HELDOUT" in c for c in train)


def test_captions_mention_attributes(batch):
    for a, cap in zip(batch.attributes, batch.caption):
        names = captions.SYNONYMS[a["class"]]
        assert any(n in cap for n in names) or a["family"] == "speech", (a["class"], cap)
    notes = [(a, c) for a, c in zip(batch.attributes, batch.caption) if a["family"] == "notes"]
    assert any(a["note"] in c or f"{a['pitch_hz']:.0f} Hz" in c for a, c in notes)
    music = [(a, c) for a, c in zip(batch.attributes, batch.caption) if a["family"] == "music"]
    assert any(str(a["tempo_bpm"]) in c or a["key"] in c for a, c in music)


def test_prompts_for_zero_shot():
    for name in CLASSES:
        held, train = captions.prompts(name, "heldout"), captions.prompts(name, "train")
        assert held and train and not set(held) & set(train)
        assert captions.prompt(name) == held[0]
        assert captions.prompt(name, "train", np.random.default_rng(1)) in train
        assert all("{" not in p for p in held + train)
    assert captions.prompt("kick", "heldout") == "an audio clip of a kick drum"
    with pytest.raises(ValueError, match="Unknown class"):
        captions.prompts("tuba")


# ----------------------------------------------------------------------------- recognisability
def test_drum_centroid_ordering():
    ds = SynthWorld("test", families=["drums"], size=8 * 12)
    b = ds.examples(range(len(ds)))
    c = centroid(b.audio[:, 0].numpy())
    med = {name: np.median(c[b.label.numpy() == k]) for k, name in enumerate(ds.classes)}
    assert med["closed_hihat"] > med["snare"] > med["kick"]
    assert med["open_hihat"] > med["clap"] > med["tom"] > med["kick"]
    assert med["kick"] < 200 and med["closed_hihat"] > 4000


def test_kick_pitch_drops():
    r = S.Rng([np.random.default_rng([7, i]) for i in range(4)])
    y, a = S.drum("kick", r, SR, SR, onset=np.zeros(4))
    early, late = y[:, :800], y[:, 1600:4800]                    # first 50 ms vs 0.1-0.3 s
    zc = lambda x: (np.diff(np.sign(x), axis=-1) != 0).sum(-1) / (x.shape[-1] / SR) / 2  # noqa: E731
    assert (zc(early) > 1.3 * zc(late)).all()
    np.testing.assert_allclose(zc(late), a["pitch_hz"], rtol=0.15)


def test_note_f0_matches_attribute():
    ds = SynthWorld("test", families=["notes"], size=7 * 3)
    b = ds.examples(range(len(ds)))
    for y, a in zip(b.audio[:, 0].numpy(), b.attributes):
        if a["instrument"] == "bell":                            # inharmonic: pitch = strongest partial
            est = np.argmax(np.abs(np.fft.rfft(y))) * SR / len(y)
        else:
            est = yin_f0(y)
        assert abs(est / a["pitch_hz"] - 1) < 0.03, (a["instrument"], a["note"], est)


def test_speakers_differ_in_f0_and_formants():
    est, cents = {}, {}
    for k in V.TRAIN_SPEAKERS:
        ds = SynthWorld("test", families=["speech"], size=12, speakers=[k])
        b = ds.examples([0, 4, 6])                                # ba, sa, ba
        assert {a["speaker"] for a in b.attributes} == {V.SPEAKERS[k].id}
        ba = [i for i, a in enumerate(b.attributes) if a["class"] == "ba"]
        est[k] = np.median([yin_f0(b.audio[i, 0].numpy(), fmin=60, fmax=500) for i in ba])
        np.testing.assert_allclose(est[k], np.mean([b.attributes[i]["f0_hz"] for i in ba]), rtol=0.1)
        cents[k] = np.median(centroid(b.audio[ba, 0].numpy()))
    order = sorted(V.TRAIN_SPEAKERS, key=lambda k: V.SPEAKERS[k].f0_hz)
    assert [est[k] for k in order] == sorted(est.values())
    assert cents[4] > cents[0], "a child's formants sit higher than a deep male voice's"
    held = SynthWorld("test", families=["speech"], size=24, speakers="heldout").examples(range(24))
    assert {a["speaker"] for a in held.attributes} <= {"spk6", "spk7"}


def test_speech_has_frication_for_s():
    ds = SynthWorld("val", families=["speech"], size=24)
    b = ds.examples(range(24))
    c = centroid(b.audio[:, 0].numpy())
    sa = c[[a["class"] == "sa" for a in b.attributes]]
    mu = c[[a["class"] == "mu" for a in b.attributes]]
    assert sa.min() > mu.max()


def test_music_attributes_and_beat():
    ds = SynthWorld("val", families=["music"], size=6 * 4, duration=2.0)
    b = ds.examples(range(len(ds)))
    for y, a in zip(b.audio[:, 0].numpy(), b.attributes):
        lo, hi = {"waltz": (140, 200), "rock_beat": (90, 140), "arpeggio": (80, 130), "ambient_pad": (60, 80),
                  "dance_beat": (118, 132), "melody": (80, 120)}[a["style"]]
        assert lo <= a["tempo_bpm"] <= hi and a["key"].split()[1] in ("major", "minor")
        if a["style"] == "dance_beat":                           # a kick on every beat: envelope periodicity
            env = np.abs(y[: len(y) // 160 * 160]).reshape(-1, 160).max(-1)   # 10 ms frames
            env = env - env.mean()
            ac = np.correlate(env, env, "full")[len(env) - 1:]
            lag = 60 / a["tempo_bpm"] / 0.01
            best = np.argmax(ac[int(lag * 0.7):int(lag * 1.3)]) + int(lag * 0.7)
            assert abs(best - lag) <= 2, (best, lag)


@pytest.mark.parametrize("sr, duration", [(8000, 1.0), (22050, 0.5), (16000, 2.0)])
def test_other_sample_rates_and_durations(sr, duration):
    ds = SynthWorld("val", sample_rate=sr, duration=duration, size=N_CLASSES)
    audio = ds.batch(range(N_CLASSES))
    assert audio.shape == (N_CLASSES, 1, round(sr * duration))
    assert torch.isfinite(audio).all() and (audio.abs().amax(dim=(1, 2)) > 0.2).all()
    if sr == 8000:
        c = centroid(audio[:8, 0].numpy(), sr)
        assert c[2] > c[1] > c[0]                                 # hi-hat > snare > kick still


def test_bench_runs():
    assert bench_synthworld(n=20) > 0


# ----------------------------------------------------------------------------- FSDD
FSDD_ROOT = find_fsdd()
fsdd_mod = importlib.import_module("course_lib.data.fsdd")   # the module (`course_lib.data.fsdd` is the function)
needs_fsdd = pytest.mark.skipif(FSDD_ROOT is None, reason="FSDD not found (set COURSE_DATA_DIR or put it in "
                                                          "../shared/data/fsdd); the SynthWorld tests still ran")


@needs_fsdd
def test_fsdd_splits_and_examples():
    test = fsdd("test")
    assert len(test) == len(test.speakers) * 10 * 5
    if test.speakers == ["george", "jackson", "nicolas", "yweweler"]:
        assert len(test) == 200 and len(fsdd("val")) == 200 and len(fsdd("train")) == 1600
        assert len(fsdd("trainval")) == 1800
    assert {f.name for f in fsdd("test").files}.isdisjoint(f.name for f in fsdd("train").files)
    assert all(int(f.stem.split("_")[2]) < 5 for f in test.files)
    ex = test[0]
    assert isinstance(ex, Example) and ex.audio.dim() == 2 and ex.audio.shape[0] == 1
    assert ex.label == ex.attributes["digit"] and ex.attributes["source"] == "fsdd"
    assert captions.SYNONYMS[test.classes[ex.label]][0] in ex.caption
    assert ex.caption == fsdd("test")[0].caption                 # deterministic captions
    raw = fsdd("test", sample_rate=8000)[0].audio
    assert abs(ex.audio.shape[-1] - 2 * raw.shape[-1]) <= 2      # resampled 8 kHz -> 16 kHz


@needs_fsdd
def test_fsdd_fixed_duration_centres():
    natural = fsdd("test", sample_rate=8000)[3].audio
    padded = fsdd("test", sample_rate=8000, duration=3.0)[3].audio
    assert padded.shape == (1, 24000)
    left = (24000 - natural.shape[-1]) // 2
    assert torch.equal(padded[:, left:left + natural.shape[-1]], natural)
    cropped = fsdd("test", sample_rate=8000, duration=0.1)[3].audio
    assert cropped.shape == (1, 800)
    loader = torch.utils.data.DataLoader(fsdd("val", duration=1.0), batch_size=4, collate_fn=collate)
    assert next(iter(loader)).audio.shape == (4, 1, 16000)


def test_fsdd_missing_names_places_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="COURSE_DATA_DIR") as info:
        fsdd("test", root=tmp_path)
    assert str(tmp_path) in str(info.value) and "download_fsdd" in str(info.value)


def test_find_fsdd_honours_env(tmp_path, monkeypatch):
    (tmp_path / "fsdd" / "recordings").mkdir(parents=True)
    (tmp_path / "fsdd" / "recordings" / "0_test_0.wav").write_bytes(b"")
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    assert find_fsdd() == tmp_path / "fsdd"
    assert sources_found()["fsdd"] == str(tmp_path / "fsdd")


def test_sources_found_keys():
    found = sources_found()
    assert set(found) == {"synthworld", "fsdd", "sonic_pi", "espeak"} and found["synthworld"] == "built-in"


# ----------------------------------------------------------------------------- download_fsdd, offline
def _zip(path: Path, files: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(f"free-spoken-digit-dataset-1.0.10/recordings/{name}", data)
    return path.as_uri()


def _wav_bytes() -> bytes:
    import io

    import soundfile as sf
    buf = io.BytesIO()
    sf.write(buf, np.zeros(800, np.int16), 8000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_download_from_file_url_installs_atomically(tmp_path):
    files = {f"{d}_alice_{k}.wav": _wav_bytes() for d in range(10) for k in range(6)}
    url = _zip(tmp_path / "fsdd.zip", files)
    dest = tmp_path / "data" / "fsdd"
    got = download_fsdd(root=dest, url=url, sha256=hashlib.sha256((tmp_path / "fsdd.zip").read_bytes()).hexdigest())
    assert got == dest and len(list((dest / "recordings").glob("*.wav"))) == 60 and (dest / "README.md").exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["fsdd"], "temporary files left behind"
    ds = fsdd("test", root=dest, duration=0.5)
    assert len(ds) == 10 * 5 and ds.speakers == ["alice"] and ds[0].audio.shape == (1, 8000)
    assert download_fsdd(root=dest, url="http://127.0.0.1:9/never-used.zip") == dest   # cached: no network


def test_download_checks_sha256_and_leaves_nothing(tmp_path):
    url = _zip(tmp_path / "fsdd.zip", {"0_alice_0.wav": _wav_bytes()})
    dest = tmp_path / "data" / "fsdd"
    with pytest.raises(ValueError, match="Checksum mismatch"):
        download_fsdd(root=dest, url=url, sha256="0" * 64)
    assert not dest.exists() and list((tmp_path / "data").iterdir()) == []


@needs_fsdd
def test_download_verifies_speaker_manifest(tmp_path):
    good = {p.name: p.read_bytes() for p in sorted((FSDD_ROOT / "recordings").glob("*_george_*.wav"))}
    if len(good) != 500:
        pytest.skip("needs all 500 files of speaker george")
    assert fsdd_mod.speaker_digests(FSDD_ROOT / "recordings")["george"] == fsdd_mod.SPEAKER_DIGESTS["george"]
    dest = tmp_path / "ok" / "fsdd"
    download_fsdd(root=dest, url=_zip(tmp_path / "good.zip", good))
    assert len(list((dest / "recordings").glob("*.wav"))) == 500
    bad = dict(good, **{"3_george_7.wav": good["3_george_7.wav"][:-2] + b"\x01\x02"})
    dest = tmp_path / "bad" / "fsdd"
    with pytest.raises(ValueError, match="george"):
        download_fsdd(root=dest, url=_zip(tmp_path / "bad.zip", bad))
    assert not dest.exists() and list((tmp_path / "bad").iterdir()) == []


def test_download_offline_error_is_clear(tmp_path):
    dest = tmp_path / "cache" / "fsdd"
    with pytest.raises(ConnectionError, match="offline") as info:
        download_fsdd(root=dest, url="http://127.0.0.1:9/fsdd.zip", timeout=5)
    assert "COURSE_DATA_DIR" in str(info.value)
    assert not dest.exists() and list((tmp_path / "cache").iterdir()) == []


def test_download_refuses_non_empty_unrelated_folder(tmp_path):
    (tmp_path / "fsdd").mkdir()
    (tmp_path / "fsdd" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        download_fsdd(root=tmp_path / "fsdd", url="http://127.0.0.1:9/x.zip")
    assert (tmp_path / "fsdd" / "notes.txt").read_text() == "mine"


def test_no_subnormal_floats_slow_down_models():
    import numpy as np
    from course_lib.data import SynthWorld
    audio = SynthWorld("train", size=68, seed=0).batch(range(68)).numpy()
    tiny = np.finfo(np.float32).tiny
    assert not ((audio != 0) & (np.abs(audio) < tiny)).any()
