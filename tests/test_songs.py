"""Songs: determinism, shapes, the A B A form, attributes, and the tempo / key rulers measured on real songs."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from course_lib.data import synth as S
from course_lib.data.base import Batch, Example, collate
from course_lib.data.songs import STYLES, Key, Songs, bench_songs, chroma, estimate_key, estimate_tempo
from course_lib.spectral import log_mel_spectrogram

SR = 16000
N_STYLES = len(STYLES)


@pytest.fixture(scope="module")
def train() -> Songs:
    return Songs("train", size=4 * N_STYLES)


@pytest.fixture(scope="module")
def batch(train) -> Batch:
    return train.examples(range(len(train)))


@pytest.fixture(scope="module")
def real() -> Batch:
    """48 songs of the test split: the rulers are measured on these."""
    return Songs("test", size=48).examples(range(48))


def _segment(wav: np.ndarray, start: float, end: float) -> np.ndarray:
    return wav[round(start * SR):round(end * SR)]


def _corr(u: np.ndarray, v: np.ndarray) -> float:
    n = min(len(u), len(v))
    u, v = u[:n] - u[:n].mean(), v[:n] - v[:n].mean()
    return float((u * v).sum() / np.sqrt((u * u).sum() * (v * v).sum()))


def _log_mel(x: np.ndarray) -> np.ndarray:
    return log_mel_spectrogram(torch.from_numpy(x)[None], SR, n_fft=1024, hop_length=256, n_mels=64)[0].numpy()


# ----------------------------------------------------------------------------- the style table
@pytest.mark.parametrize("name", list(STYLES))
def test_style_table_is_consistent(name):
    st = STYLES[name]
    assert {st.lead, st.chords, st.bass} <= set(S.INSTRUMENTS) and set(st.kit) <= set(S.DRUMS)
    assert all(p[0] == 0 for p in st.prog_a) and all(p[0] != 0 for p in st.prog_b)   # A opens on the tonic
    assert all(len(p) == 4 for p in st.prog_a + st.prog_b)
    assert all(0 <= t < st.meter for r in st.rhythms for t in r) and all(0 <= d[0] < st.meter for d in st.drums)
    assert 60 <= st.tempo[0] < st.tempo[1] <= 200 and st.min_seconds <= 6.0


def test_styles_differ_in_meter_tempo_drums_or_instruments():
    traits = {(st.meter, st.tempo, st.kit, st.lead, st.chords) for st in STYLES.values()}
    assert len(traits) == N_STYLES and len({st.words for st in STYLES.values()}) == N_STYLES


# ----------------------------------------------------------------------------- shapes, labels, audio hygiene
def test_shapes_labels_and_balance(train, batch):
    T = 6 * SR
    assert train.classes == list(STYLES) and train.num_samples == T and train.sample_rate == SR
    assert batch.audio.shape == (len(train), 1, T) and batch.audio.dtype == torch.float32
    assert batch.label.tolist() == [i % N_STYLES for i in range(len(train))]
    assert [a["style"] for a in batch.attributes] == [train.classes[i % N_STYLES] for i in range(len(train))]
    ex = train[3]
    assert isinstance(ex, Example) and ex.audio.shape == (1, T) and ex.label == 3


def test_audio_is_clean(batch):
    x = batch.audio.numpy()
    assert np.isfinite(x).all()
    assert not ((x != 0) & (np.abs(x) < np.finfo(np.float32).tiny)).any()       # no subnormals
    peak = np.abs(x).max(-1)[:, 0]
    assert (peak <= 0.9 + 1e-6).all() and (peak >= 0.5 - 1e-6).all()            # peak-normalised, no clipping
    np.testing.assert_allclose(peak, [a["level"] for a in batch.attributes], atol=1e-4)
    assert np.abs(x[..., -1]).max() == 0                                         # faded out, no click at the end


# ----------------------------------------------------------------------------- determinism
def test_same_bits_on_recreation_and_in_any_batch(train, batch):
    again = Songs("train", size=len(train))
    assert torch.equal(again.batch(range(len(train))), batch.audio)
    assert torch.equal(again.batch([5, 2]), batch.audio[[5, 2]])                  # batch composition
    assert torch.equal(again[7].audio, batch.audio[7]) and again[7].caption == batch.caption[7]
    assert torch.equal(again.batch([-1]), batch.audio[-1:])


def test_seeds_and_splits_differ(batch):
    for other in (Songs("train", size=N_STYLES, seed=1), Songs("val", size=N_STYLES)):
        x = other.batch(range(N_STYLES))
        assert all(not torch.equal(x[i], batch.audio[i]) for i in range(N_STYLES))


def test_dataloader_uses_the_fast_path(train):
    loader = torch.utils.data.DataLoader(train, batch_size=4, collate_fn=collate)
    b = next(iter(loader))
    assert b.audio.shape == (4, 1, train.num_samples) and b.label.tolist() == [0, 1, 2, 3]


# ----------------------------------------------------------------------------- attributes and captions
def test_attributes(batch):
    for a, cap in zip(batch.attributes, batch.caption):
        st = STYLES[a["style"]]
        assert st.tempo[0] <= a["tempo_bpm"] <= st.tempo[1] and a["meter"] == f"{st.meter}/4"
        assert re.fullmatch(r"[A-G]#? (major|minor)", a["key"])
        assert a["key"] == f"{S.NOTE_NAMES[a['key_root']]} {a['mode']}"
        assert a["form"] in ("ABA", "AABA") and 1 <= a["section_bars"]["B"] <= a["section_bars"]["A"] <= 8
        assert a["section_bars"]["A"] - a["section_bars"]["B"] <= 1
        bar = st.meter * 60 / a["tempo_bpm"]
        labels = "".join(s[0] for s in a["sections"] if s[0] != "coda")
        assert labels == a["form"] and a["sections"][0][1] == 0.0 and a["sections"][-1][2] <= 6.0
        for (_, _, end), (_, start, _) in zip(a["sections"], a["sections"][1:]):
            assert end == start                                                   # contiguous
        for label, start, end in a["sections"]:
            if label != "coda":
                assert end - start == pytest.approx(a["section_bars"][label] * bar, abs=1e-3)
        form_bars = sum(a["section_bars"][s] for s in a["form"])
        assert 6.0 - form_bars * bar < bar + 1e-6                                # the form fills the song
        assert len(a["chords"]) == form_bars + (a["sections"][-1][0] == "coda")
        tonic = S.NOTE_NAMES[a["key_root"]] + ("m" if a["mode"] == "minor" else "")
        assert a["chords"][0] == tonic                                           # A opens on the tonic
        assert a["sections"][-1][0] != "coda" or a["chords"][-1] == tonic       # the coda rings on it
        assert a["key"] in cap and st.words in cap


def test_every_a_has_the_same_chords(batch):
    for a in batch.attributes:
        per_section, i = [], 0
        for s in a["form"]:
            per_section.append((s, tuple(a["chords"][i:i + a["section_bars"][s]])))
            i += a["section_bars"][s]
        assert len({c for s, c in per_section if s == "A"}) == 1


# ----------------------------------------------------------------------------- the form is in the audio
def test_repeated_a_sounds_the_same_and_b_differs(batch):
    for wav, a in zip(batch.audio[:, 0].numpy(), batch.attributes):
        secs = [s for s in a["sections"] if s[0] != "coda"]
        first_a = _segment(wav, *secs[0][1:])
        last_a = _segment(wav, *[s for s in secs if s[0] == "A"][-1][1:])
        b = _segment(wav, *next(s for s in secs if s[0] == "B")[1:])[:len(first_a)]   # B may be a bar shorter
        # The same notes shifted by whole samples: only the tails of the section before differ.
        assert _corr(first_a, last_a) > 0.99, a
        m_first, m_last, m_b = _log_mel(first_a), _log_mel(last_a), _log_mel(b)          # (F, L)
        same = np.abs(m_first - m_last).mean()
        other = np.abs(m_first[:, :m_b.shape[1]] - m_b).mean()                          # other chords and tune
        assert same < 0.1 and other > 0.3 and other > 5 * same, (a, same, other)


def test_styles_are_told_apart_by_a_nearest_centroid_classifier(batch, real):
    """Mean and spread of each log-mel band, nearest class centroid: a floor any generator's style must meet."""
    def features(b: Batch) -> np.ndarray:
        m = log_mel_spectrogram(b.audio[:, 0], SR, n_fft=1024, hop_length=256, n_mels=40)     # (B, F, L)
        return torch.cat([m.mean(-1), m.std(-1)], 1).numpy()
    x_train, x_test = features(batch), features(real)
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
    centroids = np.stack([x_train[batch.label.numpy() == c].mean(0) for c in range(N_STYLES)])
    pred = ((x_test[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (pred == real.label.numpy()).mean() >= 0.9                           # chance: 1/6


# ----------------------------------------------------------------------------- the rulers
def test_estimate_tempo_on_real_songs(real):
    err = [abs(estimate_tempo(w, SR) - a["tempo_bpm"]) / a["tempo_bpm"]
           for w, a in zip(real.audio[:32], real.attributes[:32])]
    assert np.median(err) < 0.05
    assert np.mean(np.array(err) < 0.04) >= 0.9                                  # octave errors are rare
    short = [abs(estimate_tempo(w[..., :3 * SR], SR) - a["tempo_bpm"]) / a["tempo_bpm"]   # generated songs' length
             for w, a in zip(real.audio[:32], real.attributes[:32])]
    # 0.19 on 3-s cuts of val songs while the noisy lags near the clip's end still counted
    assert np.mean(np.array(short) < 0.05) >= 0.8, short


def test_estimate_tempo_of_a_click_track():
    for bpm in (72.0, 100.0, 150.0):
        x = np.zeros(6 * SR)
        x[(np.arange(0, 6, 60 / bpm) * SR).astype(int)] = 1.0                    # (T,) numpy also works
        assert estimate_tempo(x, SR) == pytest.approx(bpm, rel=0.02)


def test_estimate_key_on_real_songs(real):
    keys = [estimate_key(w, SR) for w in real.audio]                             # (1, T) tensors
    right = [k.name == a["key"] for k, a in zip(keys, real.attributes)]
    assert all(isinstance(k, Key) and 0 <= k.root < 12 and k.mode in ("major", "minor") for k in keys)
    assert np.mean(right) >= 0.7                                                 # chance: 1/24; about 0.9 measured


def test_estimate_key_of_a_scale_and_chroma_folds_octaves():
    t = np.arange(4 * SR) / SR
    a_minor = (57, 60, 64, 69, 72, 76, 71, 74, 68)                               # A C E arpeggio, V with G#
    x = sum(np.sin(2 * np.pi * S.midi_to_hz(m) * t) * ((t >= i * 0.4) & (t < i * 0.4 + 0.8))
            for i, m in enumerate(a_minor))
    assert estimate_key(x, SR) == (9, "minor")
    c = chroma(np.sin(2 * np.pi * S.midi_to_hz(45) * t) + np.sin(2 * np.pi * S.midi_to_hz(69) * t), SR)
    assert c.argmax() == 9 and c[9] > 10 * np.delete(c, 9).max()


@pytest.mark.parametrize("wav, match", [(np.zeros((2, 3 * SR)), "mono"), (np.zeros(3 * SR), "silent"),
                                        (np.ones(SR // 2), "at least"), (np.full(3 * SR, np.nan), "NaN")])
def test_rulers_refuse_bad_audio(wav, match):
    with pytest.raises(ValueError, match=match):
        estimate_tempo(wav, SR)


# ----------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("kwargs, match", [
    ({"styles": ["polka"]}, "Unknown styles"), ({"styles": []}, "Unknown styles"), ({"split": "dev"}, "Unknown split"),
    ({"seconds": 4.0}, "cannot hold one A B A form"), ({"seconds": float("nan")}, "cannot hold"),
    ({"seconds": 31.0}, "at most 30 s"),
    ({"size": 0}, "size must be positive"), ({"sample_rate": 4000}, "sample_rate")])
def test_bad_arguments_fail_early(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Songs(**kwargs)


def test_index_errors_and_empty_batches(train):
    with pytest.raises(IndexError):
        train[len(train)]
    assert train.batch([]).shape == (0, 1, train.num_samples)


def test_short_songs_of_short_bar_styles_and_other_rates():
    ds = Songs("val", size=4, seconds=4.0, styles=["march", "waltz"], sample_rate=8000)
    b = ds.examples(range(4))
    assert ds.classes == ["waltz", "march"] and b.audio.shape == (4, 1, 32000)   # global order
    assert all(a["form"] in ("ABA", "AABA") and a["sections"][-1][2] <= 4.0 for a in b.attributes)
    assert np.isfinite(b.audio.numpy()).all() and b.audio.abs().max() <= 0.9 + 1e-6


def test_bench_runs():
    assert bench_songs(n=2, batch_size=2) > 0
