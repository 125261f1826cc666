"""The MUSHRA widget headless: blind order, anchor, scores saved and read back, statistics, clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from course_lib import listening_test as lt
from course_lib.spectral import stft

SR = 16_000


def _clip(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(1, SR // 2, generator=g)


def _band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spec = stft(torch.as_tensor(x, dtype=torch.float32), 512, 128).abs().square()
    f = torch.fft.rfftfreq(512, 1 / SR)
    return float(spec[..., (f >= lo) & (f < hi), :].sum())


def test_anchor_keeps_the_low_band_and_removes_the_high_one():
    x = _clip(0).numpy()
    y = lt.low_anchor(x, SR)
    assert y.shape == x.shape
    assert _band_energy(y, 0, 2000) > 0.8 * _band_energy(x, 0, 2000)
    assert _band_energy(y, 5000, 8000) < 1e-4 * _band_energy(x, 5000, 8000)


def test_anchor_cutoff_scales_to_narrow_material_and_bad_cutoffs_are_named(monkeypatch):
    x = _clip(0).numpy()
    y = lt.low_anchor(x, SR, anchor_hz=1000.0)               # e.g. half the band of speech that stops at 2 kHz
    assert _band_energy(y, 0, 500) > 0.8 * _band_energy(x, 0, 500)
    assert _band_energy(y, 2500, 4000) < 1e-3 * _band_energy(x, 2500, 4000)
    for bad in (0.0, SR / 2):
        with pytest.raises(ValueError, match="anchor_hz"):
            lt.low_anchor(x, SR, anchor_hz=bad)
    cutoffs, real_anchor = [], lt.low_anchor                 # the widget passes its cutoff on to the anchor

    def recorded(wav, sample_rate, anchor_hz=lt.ANCHOR_HZ):
        cutoffs.append(anchor_hz)
        return real_anchor(wav, sample_rate, anchor_hz)

    monkeypatch.setattr(lt, "low_anchor", recorded)
    trial = lt.mushra(_clip(0), {"codec": _clip(1)}, SR, trial="t", anchor_hz=1000.0)
    assert trial.order.count(lt.ANCHOR) == 1 and cutoffs == [1000.0]


def test_trial_hides_the_reference_among_blind_conditions_and_saves(tmp_path):
    ref, a, b = _clip(0), _clip(1), _clip(2)
    path = tmp_path / "scores.json"
    test = lt.mushra(ref, {"codec": a, "opus": b}, SR, trial="t1", path=path, seed=3)
    assert sorted(test.order) == sorted(["codec", "opus", lt.HIDDEN_REFERENCE, lt.ANCHOR])
    assert lt.mushra(ref, {"codec": a, "opus": b}, SR, trial="t1", seed=3).order == test.order   # seeded
    assert {tuple(lt.mushra(ref, {"codec": a, "opus": b}, SR, "t", seed=s).order) for s in range(8)} != {tuple(test.order)}
    # the hidden reference plays the reference's samples; the labels give no name away
    assert all(s.description in "ABCD" for s in test.sliders.values())
    test.set_score(lt.HIDDEN_REFERENCE, 97)
    other = next(label for label, name in zip("ABCD", test.order) if name != lt.HIDDEN_REFERENCE)
    test.set_score(other, 12)                                    # by blind label, as the listener sees it
    test.save_button.click()                                     # what the button does in a browser
    assert "Saved trial 't1'" in test.status.value
    saved = lt.load_scores(path)
    assert saved["t1"][lt.HIDDEN_REFERENCE] == 97 and 12 in saved["t1"].values()
    second = lt.mushra(ref, {"codec": a, "opus": b}, SR, trial="t2", path=path, seed=4)
    second.save()
    assert set(lt.load_scores(path)) == {"t1", "t2"}             # trials merge into one file
    assert json.loads(path.read_text())["format"] == "mushra-scores/1"


def test_statistics_screening_and_rank_agreement():
    scores = {f"t{i}": {"good": 80 + i, "bad": 20 + i, "mid": 50 + i, lt.HIDDEN_REFERENCE: 100 - i} for i in range(5)}
    means = lt.mean_scores(scores)
    assert means["good"][0] == pytest.approx(82.0) and means["good"][2] == 5
    assert 0 < means["good"][1] < 5                         # t-interval of 80..84
    assert lt.screen_listener(scores)                         # hidden reference >= 96 everywhere
    scores["t0"][lt.HIDDEN_REFERENCE] = scores["t1"][lt.HIDDEN_REFERENCE] = 40
    assert not lt.screen_listener(scores)                     # 2 of 5 trials below 90
    listener = {s: m[0] for s, m in means.items()}
    assert lt.rank_agreement(listener, {"good": 3.1, "mid": 2.0, "bad": 1.2}) == pytest.approx(1.0)
    assert lt.rank_agreement(listener, {"good": 1.0, "mid": 2.0, "bad": 9.0}, higher_is_better=False) == pytest.approx(1.0)


def test_bad_input_fails_clearly(tmp_path):
    ref = _clip(0)
    with pytest.raises(ValueError, match="at least one system"):
        lt.mushra(ref, {}, SR, "t")
    with pytest.raises(ValueError, match="reserved"):
        lt.mushra(ref, {lt.HIDDEN_REFERENCE: ref}, SR, "t")
    with pytest.raises(ValueError, match="samples"):
        lt.mushra(ref, {"short": ref[:, :100]}, SR, "t")
    test = lt.mushra(ref, {"x": _clip(1)}, SR, "t")
    with pytest.raises(KeyError, match="No condition"):
        test.set_score("Z", 10)
    with pytest.raises(ValueError, match="0..100"):
        test.set_score("x", 120)
    with pytest.raises(FileNotFoundError, match="Save my scores"):
        lt.load_scores(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a MUSHRA score file"):
        lt.load_scores(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="at least 3"):
        lt.rank_agreement({"a": 1, "b": 2}, {"a": 1, "b": 2})
