"""``course-lib train|eval|generate audiolm`` (course_lib.recipes.audiolm) end to end, with tiny everything.

One module-scoped chain trains every stage for 2-4 steps into a temporary folder: hubert, then
semantic and coarse, then fine, which assembles the three stages and runs the speaker test. A tiny
untrained codec (its RVQ initialised by k-means on one batch) stands in for codec-speech.
"""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from course_lib import audiolm as A
from course_lib import checkpoint
from course_lib import codec as C
from course_lib.baselines import opus
from course_lib import hubert as H
from course_lib.recipes import audiolm as R
from course_lib.recipes import audiolm_rulers as rulers
from course_lib.recipes.common import EXIT_UNFINISHED
from course_lib.train import SettingsMismatch

TINY = ["--preset", "tiny", "--batch-size", "2", "--train-size", "4", "--eval-size", "2", "--no-progress",
        "--threads", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """Every stage trained and exported: {"root", "hubert", "semantic", "coarse", "audiolm", "args", "stages"}."""
    root = tmp_path_factory.mktemp("audiolm")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        codec = C.Codec(C.CodecConfig.preset("tiny"))
        clips = torch.stack([0.2 * torch.sin(torch.arange(16000) * 0.03 * (1 + s))[None] for s in range(2)])
        with torch.no_grad():                                   # varied codes on every RVQ level
            codec.train()(clips, num_quantizers=codec.num_quantizers, generator=torch.Generator().manual_seed(0))
    checkpoint.save_pretrained(codec.eval(), codec.config, root / "codec")
    paths = {"root": root, "hubert": root / "hubert", "semantic": root / "semantic", "coarse": root / "coarse",
             "audiolm": root / "audiolm"}
    assert R.train_cli(TINY + ["--stage", "hubert", "--steps", "4", "--crop-s", "0.4", "--probe-speakers", "2",
                               "--fsdd-probe-takes", "1", "--codec", str(root / "codec"),
                               "--run-dir", str(root / "runs/hubert"), "--out", str(paths["hubert"])]) == 0
    stages = paths["stages"] = TINY + ["--steps", "3", "--hubert", str(paths["hubert"]), "--codec", str(root / "codec")]
    for st in ("semantic", "coarse"):
        assert R.train_cli(stages + ["--stage", st, "--run-dir", str(root / "runs" / st), "--out", str(paths[st])]) == 0
        assert (root / "runs" / st / "tokens-train.pt").is_file()                 # a resumed run does not tokenize again
    paths["args"] = stages + ["--stage", "fine", "--run-dir", str(root / "runs/fine"), "--out", str(paths["audiolm"]),
                              "--semantic", str(paths["semantic"]), "--coarse", str(paths["coarse"]),
                              "--speakers", "2", "--prompts-per-speaker", "1", "--probe-speakers", "1"]
    assert R.train_cli(paths["args"]) == 0
    return paths


def test_hubert_stage_exports_a_tokenizer_with_probes_beside_baselines(trained):
    info = checkpoint.read_card(trained["hubert"])
    assert info["stage"] == "hubert" and info["steps"] == 4 and info["iteration_steps"] == [2, 2]
    model = H.load_pretrained(trained["hubert"])
    assert model.config.iteration == 2 and bool(model.quantizer.fitted)
    probes = info["metrics"]["probes"]
    assert set(probes) == {"voices-digits-heldout", "fsdd-digits"} or set(probes) == {"voices-digits-heldout"}
    for report in probes.values():
        assert report["chance"]["content"] == 0.1
        for tok in ("semantic", "mfcc_kmeans_baseline", "acoustic_coarse", "acoustic_fine"):
            assert 0 <= report[tok]["content_accuracy"] <= 1 and 0 <= report[tok]["speaker_accuracy"] <= 1
    assert set(info["metrics"]["tokens"]) == {"voices-unseen", "voices-seen"}


def test_hubert_stage_clusters_another_layer_of_a_trained_hubert(trained, tmp_path):
    args = TINY + ["--stage", "hubert", "--init", str(trained["hubert"]), "--probe-speakers", "2",
                   "--fsdd-probe-takes", "0", "--codec", str(trained["root"] / "codec"), "--run-dir", str(tmp_path / "run")]
    with pytest.raises(SystemExit, match="layer must be in 1..n_layer=2"):
        R.train_cli(args + ["--semantic-layer", "3", "--out", str(tmp_path / "bad")])
    assert R.train_cli(args + ["--semantic-layer", "2", "--out", str(tmp_path / "h2")]) == 0
    old, new = H.load_pretrained(trained["hubert"]), H.load_pretrained(tmp_path / "h2")
    assert (old.config.layer, new.config.layer) == (1, 2) and bool(new.quantizer.fitted)
    for (k, a), b in zip(old.state_dict().items(), new.state_dict().values()):
        if not k.startswith("quantizer."):
            torch.testing.assert_close(a, b, msg=k)                               # the same weights
    assert not torch.equal(old.quantizer.centroids, new.quantizer.centroids)     # clustered again, on block 2
    info = checkpoint.read_card(tmp_path / "h2")
    assert info["semantic_layer"] == 2 and info["steps"] == 0 and "voices-digits-heldout" in info["metrics"]["probes"]
    assert info["runs_before"][-1]["checkpoint"] == str(trained["hubert"])


def test_each_stage_card_has_held_out_bits_beside_baselines(trained):
    for st in ("semantic", "coarse"):
        info = checkpoint.read_card(trained[st])
        assert info["stage"] == st and info["steps"] == 3 and info["hubert"] == str(trained["hubert"])
        for report in info["metrics"].values():
            assert report["bits_per_token"] > 0 and report["unigram_bits_per_token"] <= report["uniform_bits_per_token"]
    fine = checkpoint.read_card(f"{trained['audiolm']}-fine")
    test = fine["metrics"]["speaker_test"]
    assert set(test) == {"unseen", "seen"} and test["unseen"]["chance"] == 0.5
    assert {"real_continuation", "real_continuation_through_codec", "real_coarse_generated_fine",
            "with_acoustic_prompt", "without_acoustic_prompt"} <= set(test["seen"])
    assert all(0 <= test[g]["real_coarse_generated_fine"] <= 1 for g in test)
    heard = fine["metrics"]["intelligibility"]
    assert heard["clips"] == 10 and heard["chance"] == 0.1          # one held-out voice says the ten digits
    assert all(0 <= heard[k] <= 1 for k in ("real", "codec", "resynthesized"))
    model = A.load_pretrained(trained["audiolm"])                   # the three siblings load as one model
    assert model.config.hubert == str(trained["hubert"])
    assert checkpoint.read_card(f"{trained['audiolm']}-semantic")["metrics"] == \
        checkpoint.read_card(trained["semantic"])["metrics"]


def test_eval_measures_the_speaker_test_with_the_cards_ruler(trained, tmp_path, monkeypatch):
    heard = []
    monkeypatch.setattr(R, "speaker_test", lambda *a: heard.append(a[4]) or {})
    monkeypatch.setattr(R, "_intelligibility", lambda *a: {})
    R.eval_cli(["--checkpoint", str(trained["audiolm"])])
    assert heard == [rulers.RULER_UTTERANCES] * 2                   # what the card was measured with
    for st in A.STAGES:                                             # a card from before the ruler had 32 utterances
        shutil.copytree(f"{trained['audiolm']}-{st}", tmp_path / f"old-{st}")
    card = json.loads((tmp_path / "old-fine" / "card.json").read_text())
    del card["eval"]["ruler_utterances"]
    (tmp_path / "old-fine" / "card.json").write_text(json.dumps(card))
    heard.clear()
    R.eval_cli(["--checkpoint", str(tmp_path / "old")])
    assert heard == [4, 4]


def test_eval_reproduces_the_cards(trained):
    out = R.eval_cli(["--checkpoint", str(trained["audiolm"])])
    assert out["metrics"] == out["card_metrics"]
    out = R.eval_cli(["--checkpoint", str(trained["coarse"])])
    assert out["stage"] == "coarse" and out["metrics"] == out["card_metrics"]
    out = R.eval_cli(["--checkpoint", str(trained["hubert"])])
    assert out["metrics"] == out["card_metrics"]


def test_a_stage_warm_starts_from_a_checkpoint_with_an_added_input(trained, tmp_path):
    old = A.load_pretrained(trained["audiolm"]).coarse.float()
    stage = A.CoarseStage(dataclasses.replace(old.config, aligned_semantic=True))
    R._warm_start(stage, str(trained["coarse"]))
    sem = [torch.tensor([1, 2, 3])]
    codes = torch.randint(0, old.codebook_size, (1, old.levels, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():                                             # the added input starts at zero: same model
        torch.testing.assert_close(stage.logits(old.prefix(sem), codes, stage.aligned(sem, 6)),
                                   old.logits(old.prefix(sem), codes))
    args = trained["stages"] + ["--stage", "coarse", "--aligned-semantic", "--init", str(trained["coarse"]),
                                "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "out")]
    assert R.train_cli(args) == 0
    info = checkpoint.read_card(tmp_path / "out")
    assert info["settings"]["init"] == str(trained["coarse"]) and info["settings"]["aligned_semantic"]
    before = checkpoint.read_card(trained["coarse"])                   # its history outlives the checkpoint
    assert [r["checkpoint"] for r in info["runs_before"]] == [str(trained["coarse"])]
    assert info["runs_before"][0]["command"] == before["command"] and info["runs_before"][0]["steps"] == before["steps"]
    assert checkpoint.load_pretrained(tmp_path / "out", A.CoarseStage, A.AudioLMConfig).config.aligned_semantic
    with pytest.raises(SystemExit, match="does not fit"):
        R.train_cli(trained["stages"] + ["--stage", "fine", "--init", str(trained["coarse"]),
                                         "--run-dir", str(tmp_path / "run2")])


def test_a_stage_trains_at_its_own_size_and_still_assembles(trained, tmp_path):
    args = trained["stages"] + ["--stage", "coarse", "--layers", "2", "--width", "48",
                                "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "out")]
    assert R.train_cli(args) == 0
    info = checkpoint.read_card(tmp_path / "out")
    assert info["settings"]["layers"] == 2 and info["settings"]["width"] == 48
    coarse = checkpoint.load_pretrained(tmp_path / "out", A.CoarseStage, A.AudioLMConfig)
    tiny = A.AudioLMConfig.preset("tiny")
    assert (coarse.config.coarse_layers, coarse.config.coarse_width) == (2, 48)
    assert (coarse.config.fine_layers, coarse.config.fine_width) == (tiny.fine_layers, tiny.fine_width)
    old = A.load_pretrained(trained["audiolm"])                      # a bigger stage 2 beside the preset's others
    model = A.AudioLM(old.semantic, coarse, old.fine, old.semantic_model, old.codec)
    assert model.continue_(torch.randn(1, 1, 8000) * 0.1, 0.8, generator=torch.Generator().manual_seed(0)).ndim == 3
    with pytest.raises(SystemExit, match="multiple of"):
        R.train_cli(trained["stages"] + ["--stage", "coarse", "--width", "47", "--run-dir", str(tmp_path / "r2")])
    assert not (tmp_path / "r2").exists()


def test_perturbed_utterances_follow_the_recorded_ones_at_new_speeds():
    plain, plain_ids = R.training_clips("voices", 4)
    clips, ids = R.training_clips("voices", 2, perturbed=2, speed=(0.85, 1.15))
    assert len(clips) == 4 and ids[:2] == plain_ids[:2] and all(map(torch.equal, clips[:2], plain[:2]))
    for c, name, raw, raw_name in zip(clips[2:], ids[2:], plain[2:], plain_ids[2:]):
        stem, factor = name.rsplit("@x", 1)                         # the same utterance, played faster or slower
        assert stem == raw_name and 0.85 - 0.01 <= float(factor) <= 1.15 + 0.01
        assert c.shape[-1] == pytest.approx(raw.shape[-1] / float(factor), rel=1e-3)
    again, again_ids = R.training_clips("voices", 2, perturbed=2, speed=(0.85, 1.15))
    assert again_ids == ids and all(map(torch.equal, again, clips))
    with pytest.raises(ValueError, match="low <= high"):
        R.perturb_speed(clips, ids, (1.2, 0.9))


def test_a_stage_records_its_perturbed_utterances(trained, tmp_path):
    args = trained["stages"] + ["--stage", "semantic", "--perturbed-size", "2", "--run-dir", str(tmp_path / "run"),
                                "--out", str(tmp_path / "out")]
    assert R.train_cli(args) == 0
    info = checkpoint.read_card(tmp_path / "out")
    assert info["settings"]["perturbed_size"] == 2 and info["settings"]["perturb_speed"] == list(R.PERTURB_SPEED)
    assert info["training_clips"] == 4 + 2


def test_a_finished_run_resumes_only_with_its_settings(trained):
    args = trained["args"]
    with pytest.raises(SettingsMismatch, match="lr"):
        R.train_cli(args + ["--lr", "0.005"])
    with pytest.raises(SettingsMismatch, match="preset"):
        R.train_cli([a if a != "tiny" else "small" for a in args])


def test_a_stopped_run_exports_nothing(trained, tmp_path):
    args = TINY + ["--stage", "semantic", "--steps", "100000", "--time-budget", "0.3", "--hubert",
                   str(trained["hubert"]), "--codec", str(trained["root"] / "codec"),
                   "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "out")]
    assert R.train_cli(args) == EXIT_UNFINISHED
    assert (tmp_path / "run" / "last.pt").is_file() and not (tmp_path / "out").exists()


def test_generate_writes_continuations_and_unconditional_clips(trained, tmp_path):
    ckpt = str(trained["audiolm"])
    assert R.generate_cli(["--checkpoint", ckpt, "--n", "1", "--out", str(tmp_path / "a")]) == 0
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["audiolm_0_000.wav", "audiolm_0_000_prompt.wav"]
    assert R.generate_cli(["--checkpoint", ckpt, "--unconditional", "--n", "2", "--seconds", "0.4",
                           "--out", str(tmp_path / "b")]) == 0
    assert len(list((tmp_path / "b").glob("*.wav"))) == 2


@pytest.mark.parametrize("extra, match", [
    (["--stage", "semantic"], "--hubert"),
    (["--stage", "fine", "--hubert", "h", "--semantic", "s"], "go together"),
    (["--stage", "coarse", "--hubert", "h", "--semantic", "s", "--coarse", "c"], "go together"),
    (["--stage", "hubert", "--data", "voices-mix", "--heldout-speaker", "nobody"], "nobody"),
    (["--stage", "coarse", "--hubert", "h", "--semantic-layer", "1"], "--semantic-layer belongs"),
    (["--stage", "hubert", "--layers", "2"], "size a token stage"),
    (["--stage", "coarse", "--hubert", "h", "--perturbed-size", "2", "--perturb-speed", "1.2", "0.9"], "LOW <= HIGH"),
])
def test_bad_flags_fail_before_training(extra, match, tmp_path):
    with pytest.raises((SystemExit, ValueError), match=match):
        R.train_cli(TINY + extra + ["--run-dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("extra", [["--stage", "vocoder"], ["--stage", "fine", "--steps", "0"],
                                   ["--stage", "fine", "--speakers", "-1"], ["--stage", "coarse", "--dropout", "1"]])
def test_bad_values_are_refused_by_the_parser(extra, capsys):
    with pytest.raises(SystemExit) as e:
        R.train_cli(TINY + extra)
    assert e.value.code == 2 and extra[-2] in capsys.readouterr().err


def test_probe_and_ruler_separate_what_they_should():
    """The rulers themselves: a linear probe finds a label that is in the features, not one that is not."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(400) // 100                                    # 4 classes, each in both halves
    x = torch.randn(400, 8, generator=g)
    x[:, 0] += 10 * y
    assert rulers.linear_probe(x[::2], y[::2], x[1::2], y[1::2], 4) >= 0.95
    assert rulers.linear_probe(x[::2, 1:], y[::2], x[1::2, 1:], y[1::2], 4) <= 0.4     # chance: 0.25
    tone = [0.3 * torch.sin(torch.arange(8000) * f)[None] for f in (0.05, 0.05, 0.2, 0.2)]
    ruler = rulers.speaker_ruler(tone, ["low", "low", "high", "high"])
    assert ruler.predict(tone).tolist() == [1, 1, 0, 0]             # names sorted: high, low
    coded = rulers.speaker_ruler(tone, ["low", "low", "high", "high"], coded_bitrates=(6000.0,))
    through_opus = [opus(t[None], 16_000, 6000.0).audio[0] for t in tone]
    assert coded.predict(through_opus).tolist() == coded.predict(tone).tolist() == [1, 1, 0, 0]
    assert not torch.equal(coded.classifier.mean, ruler.classifier.mean)     # the coded copies are in its statistics


def test_language_floor_counts_the_speakers_that_share_a_language():
    """One speaker per language scores 1 by language alone; English dialects count as one language."""
    assert rulers.language_floor(["de+a", "fr+b"]) == 1.0
    assert rulers.language_floor(["en-us+a", "en-029+b", "de+c"]) == pytest.approx((0.5 + 0.5 + 1) / 3)
    seen = rulers.roster("train", 10)
    assert len(seen) == len(set(seen)) == 10 and all("+" in s for s in seen)
    assert 1 / len(seen) < rulers.language_floor(seen) < 1
    with pytest.raises(ValueError, match="language\\+variant"):
        rulers.language_floor(["adam"])


def test_digit_ruler_recognises_digits_of_voices_it_never_heard():
    """The intelligibility ruler on real (synthesized) digits of held-out voices: far above chance (0.1)."""
    ruler = rulers.digit_ruler(n_speakers=4, takes=2)
    probe = rulers.spoken_digits(2, which="heldout")
    assert rulers.digit_features(probe.clips).shape == (20, 40 * 24)
    assert float((ruler.predict(probe.clips) == probe.content).float().mean()) >= 0.6


def test_bench_reports_every_stage(monkeypatch):
    monkeypatch.setenv("COURSE_CHECKPOINTS", "/nonexistent")       # the untrained small model, offline
    out = R.bench(seconds=0.2)
    assert out["checkpoint"] == "untrained small"
    assert {"semantic_rtf", "coarse_rtf", "fine_rtf", "decode_rtf", "total_rtf"} <= set(out)
    json.dumps(out)


def test_bench_runs_a_coarse_stage_that_hears_every_frame(trained):
    """An aligned coarse stage needs stage 1's tokens expanded to frames, as ``generate`` does."""
    model = A.load_pretrained(trained["audiolm"])
    cfg = dataclasses.replace(model.config, aligned_semantic=True)
    model = A.AudioLM(model.semantic, A.CoarseStage(cfg), model.fine, model.semantic_model, model.codec)
    out = R.bench(seconds=0.2, model=model)
    assert out["checkpoint"] == "given" and out["coarse_rtf"] > 0
