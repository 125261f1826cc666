"""The codec's data (course_lib.recipes.codec): the voices mix, the leave-one-speaker-out split, the card's sources."""
from __future__ import annotations

import pytest
import torch

from course_lib.data import find_fsdd
from course_lib.recipes import codec as recipe

needs_fsdd = pytest.mark.skipif(find_fsdd() is None, reason="FSDD not found (../shared/data/fsdd or COURSE_DATA_DIR)")


def _speaker(clip_id: str) -> str:
    return clip_id.split("_")[1]                                     # "3_george_12.wav@x0.9" -> "george"


def test_mix_reaches_the_fraction_without_copies() -> None:
    a, b = [torch.zeros(1, 5) for _ in range(6)], [torch.ones(1, 9) for _ in range(2)]
    mixed = recipe.mix(a, b, 0.5)
    assert len(mixed) == 12 and sum(x is b[0] or x is b[1] for x in mixed) == 6   # 50/50, b repeated
    assert all(any(x is y for y in a + b) for x in mixed)                       # references, not copies
    assert len(recipe.mix(a, b, 0.25)) == 8 and recipe.mix(a, b, 0.5) == mixed
    with pytest.raises(ValueError, match="fraction_b"):
        recipe.mix(a, [], 0.5)


@needs_fsdd
@pytest.mark.parametrize("speaker", recipe.fsdd_speakers() if find_fsdd() else [])
def test_leave_one_speaker_out_has_no_overlap(speaker: str) -> None:
    train = recipe.training_clips("fsdd", 16_000, heldout_speaker=speaker, speed=(0.9,))
    speakers = {_speaker(i) for i in train.ids}
    assert speaker not in speakers and speakers == set(recipe.fsdd_speakers()) - {speaker}
    assert len(train.clips) == len(train.ids) == 2 * 3 * 10 * 40          # 3 speakers, 10 digits, takes 10-49, x2
    sets = {s.name: s for s in recipe.evaluation_sets("fsdd", heldout_speaker=speaker, voices_size=0)}
    unseen, seen = sets[f"fsdd-unseen-{speaker}"], sets["fsdd-seen-speakers"]
    assert {_speaker(i) for i in unseen.ids} == {speaker} and len(unseen.ids) == 500   # every take 0-49
    assert speaker not in {_speaker(i) for i in seen.ids} and len(seen.ids) == 3 * 10 * 5
    assert not {i.split("@")[0] for i in train.ids} & set(seen.ids)        # seen voices, unseen takes


@needs_fsdd
def test_seen_voices_are_the_ones_the_card_says_were_trained() -> None:
    """A machine with more FSDD speakers than the checkpoint heard must not count the extra ones as seen."""
    heard = recipe.fsdd_speakers()[:2]
    sets = {s.name: s for s in recipe.evaluation_sets("fsdd", heldout_speaker=None, voices_size=0,
                                                      trained_speakers=heard)}
    assert {_speaker(i) for i in sets["fsdd-seen-speakers"].ids} == set(heard)
    assert recipe.seen_speakers("george") == [s for s in recipe.fsdd_speakers() if s != "george"]
    with pytest.raises(ValueError, match="'alice'.*download_fsdd"):
        recipe.seen_speakers("george", ["jackson", "alice"])


@needs_fsdd
def test_unknown_heldout_speaker_names_the_choices() -> None:
    with pytest.raises(ValueError, match="george"):
        recipe.training_clips("fsdd", 16_000, heldout_speaker="alice")


@needs_fsdd
def test_voices_mix_is_deterministic_and_has_both_sources() -> None:
    pytest.importorskip("espeakng_loader")
    kw = {"size": 6, "seed": 3, "heldout_speaker": "george", "speed": (), "voices_size": 4}
    a = recipe.training_clips("voices-mix", 16_000, **kw)
    b = recipe.training_clips("voices-mix", 16_000, **kw)
    assert a.ids == b.ids and all(torch.equal(x, y) for x, y in zip(a.clips, b.clips))
    assert a.sources == ["fsdd", "voices"]
    fsdd_ids, voice_ids = [i for i in a.ids if i.endswith(".wav")], [i for i in a.ids if i.startswith("voices-")]
    assert len(fsdd_ids) == len(voice_ids) == 6 and len(a.ids) == 12                  # 50/50
    assert "george" not in {_speaker(i) for i in fsdd_ids}
    voiced = [c for c, i in zip(a.clips, a.ids) if i.startswith("voices-")]
    peaks_db = [20 * torch.log10(c.abs().max()) for c in voiced]
    assert all(-20.5 < p < -2.5 for p in peaks_db) and max(peaks_db) - min(peaks_db) > 1    # loudness varies
    for clip in voiced:                                                # low-passed at 4 kHz like FSDD
        power = torch.fft.rfft(clip[0]).abs().square()
        assert power[int(4300 * clip.shape[-1] / 16_000):].sum() < 1e-3 * power.sum()
    c = recipe.training_clips("voices-mix", 16_000, **{**kw, "seed": 4})
    assert c.ids != a.ids                                              # the seed picks other utterances


@needs_fsdd
def test_voices_mix_card_records_every_source_with_its_license(tmp_path, monkeypatch) -> None:
    pytest.importorskip("espeakng_loader")
    from course_lib import checkpoint
    from course_lib.data import voices
    from course_lib.recipes.common import DATA_SOURCES
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "codec-mix"
    args = ["--data", "voices-mix", "--preset", "tiny", "--steps", "2", "--batch-size", "2", "--crop-s", "0.2",
            "--train-size", "6", "--voices-size", "4", "--eval-size", "4", "--voices-eval-size", "2",
            "--heldout-speaker", "jackson", "--no-progress", "--no-speed-perturb", "--threads", "1",
            "--run-dir", "run", "--out", str(out)]
    assert recipe.train_cli(args) == 0
    card = checkpoint.read_card(out)
    assert [d["name"] for d in card["data"]] == [DATA_SOURCES["fsdd"].name, DATA_SOURCES["voices"].name]
    assert "CC BY-SA 4.0" in card["data"][0]["license"] and card["data"][1]["license"] == voices.LICENSE_NOTE
    assert "GPL-3.0" in voices.LICENSE_NOTE and recipe._card_sources(str(out)) == ["fsdd", "voices"]
    assert card["heldout_speaker"] == "jackson" and card["settings"]["heldout_speaker"] == "jackson"
    assert list(card["metrics"]) == ["fsdd-unseen-jackson", "voices-unseen", "fsdd-seen-speakers"]
    assert "jackson" in card["eval"]["sets"]["fsdd-unseen-jackson"]["description"]
    result = recipe.eval_cli(["--checkpoint", str(out)])                # the card's clips, the card's numbers
    assert result["heldout_speaker"] == "jackson" and result["clips"] == {"fsdd-unseen-jackson": 4,
                                                                          "voices-unseen": 2, "fsdd-seen-speakers": 4}
    for name, report in card["metrics"].items():
        ours = result["metrics"][name]
        assert ours["skipped"] == report["skipped"], name
        for system in ("autoencoder", "opus"):
            rows = report[system].values() if system == "opus" else [report[system]]
            mine = ours[system].values() if system == "opus" else [ours[system]]
            for row, again in zip(rows, mine):
                assert again == pytest.approx(row, abs=1e-4), (name, system)
        for q, row in report["codec"].items():
            assert ours["codec"][q]["pesq_wb"] == pytest.approx(row["pesq_wb"], abs=1e-4), (name, q)
            assert ours["codec"][q]["mel_distance"] == pytest.approx(row["mel_distance"], abs=1e-5), (name, q)


def test_warm_start_copies_all_weights_or_only_a_matching_encoder(tmp_path) -> None:
    from course_lib import checkpoint
    from course_lib.codec import Codec, CodecConfig

    torch.manual_seed(0)
    small = Codec(CodecConfig.preset("tiny"))
    checkpoint.save_pretrained(small, small.config, tmp_path / "tiny", card={"name": "tiny"})
    same = Codec(CodecConfig.preset("tiny"))
    assert recipe._warm_start(same, str(tmp_path / "tiny")) == "all"
    assert all(torch.equal(a, b) for a, b in zip(same.state_dict().values(), small.state_dict().values()))
    istft = Codec(CodecConfig.preset("tiny-istft"))            # same encoder, another decoder and quantizer
    before = [p.clone() for p in istft.decoder.parameters()]
    assert recipe._warm_start(istft, str(tmp_path / "tiny")) == "encoder"
    assert all(torch.equal(a, b) for a, b in zip(istft.encoder.state_dict().values(), small.encoder.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(istft.decoder.parameters(), before))      # decoder untouched
    with pytest.raises(SystemExit, match="neither its configuration nor its encoder"):
        recipe._warm_start(Codec(CodecConfig.preset("small")), str(tmp_path / "tiny"))


def test_decoder_only_needs_a_checkpoint_of_the_same_preset(tmp_path) -> None:
    base = ["--data", "synthworld", "--steps", "1", "--run-dir", str(tmp_path / "run"), "--no-progress"]
    with pytest.raises(SystemExit, match="--decoder-only keeps a trained codec's codes"):
        recipe.train_cli([*base, "--preset", "tiny", "--decoder-only"])
    with pytest.raises(SystemExit, match="same preset \\('small'\\), e.g. codec-speech"):
        recipe.train_cli([*base, "--preset", "small", "--decoder-only", "--init-from", "codec-speech"])
