"""course_lib.hubert (a course-sized HuBERT) and course_lib.external.hubert (pretrained HuBERT-base, offline)."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torchaudio

from course_lib import checkpoint
from course_lib import hubert as H
from course_lib.audio import AudioError
from course_lib.data.fsdd import find_fsdd, fsdd
from course_lib.external import hubert as X

TINY = H.HubertConfig.preset("tiny")


def phone_clips(n: int, seconds: float = 1.0, seed: int = 0) -> list[torch.Tensor]:
    """Synthetic "words": each clip cycles through its own order of six 80 ms sounds (harmonics, noise, a hum),
    so a masked sound can be inferred from its context, as in speech."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(1280) / 16000                                      # one 80 ms segment
    k = torch.arange(1, 9)[:, None]
    phones = [(torch.sin(2 * math.pi * f0 * k * t) / k ** tilt).sum(0) for f0, tilt in
              ((110, 1.0), (150, 0.3), (220, 2.0), (300, 0.7))]
    phones += [torch.randn(1280, generator=g), 0.05 * torch.sin(2 * math.pi * 60 * t)]
    phones = [0.3 * p / p.abs().max() for p in phones]
    T, orders = int(seconds * 16000), [torch.randperm(6, generator=g).tolist() for _ in range(n)]
    return [torch.cat([phones[order[j % 6]] for j in range(-(-T // 1280))])[None, :T] for order in orders]


@pytest.fixture(scope="module")
def clips() -> list[torch.Tensor]:
    return phone_clips(6)


@pytest.fixture(scope="module")
def tokenizer(clips) -> H.HuBERT:
    """A tiny untrained HuBERT whose semantic k-means is fitted: enough to test the token plumbing."""
    torch.manual_seed(0)
    model = H.HuBERT(TINY).eval()
    H.fit_semantic_kmeans(model, clips, torch.Generator().manual_seed(0))
    return model


# ----------------------------------------------------------------------------- targets
@pytest.mark.parametrize("T", [640, 641, 959, 12345, 16000, 32000])
def test_mfcc_frames_match_the_feature_encoder(T):
    wav = 0.1 * torch.randn(2, 1, T, generator=torch.Generator().manual_seed(T))
    model = H.HuBERT(TINY).eval()
    assert H.mfcc_features(wav).shape == (2, T // 320, 39)             # 50 Hz, 13 MFCC + deltas + delta-deltas
    assert model.frame_features(wav).shape[:2] == (2, T // 320) and H.num_frames(T) == T // 320


def test_an_mfcc_frame_and_an_encoder_frame_see_the_same_400_samples():
    T, l = 6400, 7                                                      # frame 7: samples [2200, 2600)
    wav = 0.1 * torch.randn(1, 1, T, generator=torch.Generator().manual_seed(0))
    x = wav.clone().requires_grad_(True)
    model = H.HuBERT(TINY)
    model.feature_encoder[1] = torch.nn.Identity()      # GroupNorm's statistics span the clip; the convs do not
    model.frame_features(x)[0, l].sum().backward()
    seen = (x.grad[0, 0] != 0).nonzero().flatten()
    assert (int(seen[0]), int(seen[-1]) + 1) == (320 * l - 40, 320 * l + 360)
    window = wav[..., 320 * l - 40: 320 * l + 360]                        # the same window, alone
    mfcc = torchaudio.transforms.MFCC(16000, 13, melkwargs=dict(n_fft=400, hop_length=320, n_mels=23, center=False))
    torch.testing.assert_close(H.mfcc_features(wav)[0, l, :13], mfcc(window)[0, 0, :, 0], rtol=1e-4, atol=1e-3)


def test_kmeans_targets_are_deterministic_and_use_k_clusters(clips):
    feats = torch.cat(H.clip_features(clips))                           # (N, 39)
    a, b = (H.fit_kmeans(feats, 16, torch.Generator().manual_seed(1)) for _ in range(2))
    torch.testing.assert_close(a.centroids, b.centroids, rtol=0, atol=0)
    assert a.centroids.shape == (16, 39)
    targets = H.label_clips(clips, a)
    assert [len(y) for y in targets] == [c.shape[-1] // 320 for c in clips]
    ids = torch.cat(targets)
    assert ids.dtype == torch.int64 and 0 <= int(ids.min()) and int(ids.max()) < 16
    assert len(ids.unique()) >= 6                                       # the six synthetic sounds get clusters


def test_fit_kmeans_standardises_features():
    x = torch.randn(4000, 8, generator=torch.Generator().manual_seed(0)) * torch.arange(1, 9) * 10 + 100
    km = H.fit_kmeans(x, 8, torch.Generator().manual_seed(0))
    z = km.standardize(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(8), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(8), atol=1e-4, rtol=0)


def test_iteration_two_clusters_standardised_layer_features(tokenizer, clips):
    z = tokenizer.quantizer.standardize(torch.cat([tokenizer.semantic_features(c[None])[0] for c in clips]))
    torch.testing.assert_close(z.mean(0), torch.zeros(z.shape[1]), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(z.shape[1]), atol=1e-3, rtol=0)
    assert tokenizer.quantizer.centroids.shape == (TINY.num_clusters, TINY.n_embd)


# ----------------------------------------------------------------------------- masking and loss
def test_span_mask_fraction_spans_and_determinism():
    p, l = 0.08, 10
    mask = H.span_mask(8, 2000, p, l, torch.Generator().manual_seed(0))
    assert mask.shape == (8, 2000) and mask.dtype == torch.bool
    assert abs(mask.float().mean() - (1 - (1 - p) ** l)) < 0.03          # about 57% of the frames
    for row in mask:                                                    # every masked run is >= one span long
        edges = torch.diff(torch.cat([torch.tensor([0]), row.int(), torch.tensor([0])]))
        runs = (edges == -1).nonzero().flatten() - (edges == 1).nonzero().flatten()
        assert int(runs.min()) >= l
    torch.testing.assert_close(mask, H.span_mask(8, 2000, p, l, torch.Generator().manual_seed(0)))
    assert not torch.equal(mask, H.span_mask(8, 2000, p, l, torch.Generator().manual_seed(1)))
    assert H.span_mask(4, 20, 1e-6, l).sum(1).min() >= l                # every row gets at least one span


def _loss_setup(unmasked_weight: float = 0.0):
    torch.manual_seed(0)
    model = H.HuBERT(dataclasses.replace(TINY, unmasked_weight=unmasked_weight)).eval()
    wav = 0.1 * torch.randn(2, 1, 16000, generator=torch.Generator().manual_seed(0))
    targets = torch.randint(TINY.num_targets, (2, 50), generator=torch.Generator().manual_seed(1))
    mask = H.span_mask(2, 50, TINY.mask_prob, TINY.mask_length, torch.Generator().manual_seed(2))
    return model, wav, targets, mask


def test_loss_counts_only_masked_frames():
    model, wav, targets, mask = _loss_setup()
    base = H.hubert_loss(model, wav, targets, mask).total
    i, j = (~mask).nonzero()[0].tolist()
    other = targets.clone()
    other[i, j] = (other[i, j] + 1) % TINY.num_targets                  # another target on an unmasked frame
    torch.testing.assert_close(H.hubert_loss(model, wav, other, mask).total, base, rtol=0, atol=0)
    i, j = mask.nonzero()[0].tolist()
    other[i, j] = (other[i, j] + 1) % TINY.num_targets                  # ... and on a masked frame
    assert H.hubert_loss(model, wav, other, mask).total != base
    model, wav, targets, mask = _loss_setup(unmasked_weight=0.5)        # 1 - alpha of eq. 3 > 0: unmasked count
    other = targets.clone()
    i, j = (~mask).nonzero()[0].tolist()
    other[i, j] = (other[i, j] + 1) % TINY.num_targets
    assert H.hubert_loss(model, wav, other, mask).total != H.hubert_loss(model, wav, targets, mask).total


def test_gradients_reach_the_feature_encoder_and_the_mask_embedding():
    model, wav, targets, mask = _loss_setup()
    H.hubert_loss(model, wav, targets, mask).total.backward()
    assert model.feature_encoder[0].weight.grad.abs().sum() > 0
    assert model.mask_emb.grad.abs().sum() > 0 and model.label_emb.grad.abs().sum() > 0


def _fsdd_clips() -> list[torch.Tensor]:
    try:
        found = find_fsdd()
    except FileNotFoundError:                   # COURSE_DATA_DIR set to a folder without FSDD
        found = None
    if found is None:
        pytest.skip("FSDD not found (set COURSE_DATA_DIR or place it in ../shared/data/fsdd)")
    ds = fsdd("train")
    return [ds[i].audio[:, :8000] for i in range(0, len(ds), len(ds) // 4)][:4]


@pytest.mark.parametrize("source", ["synthetic", "fsdd"])
def test_masked_prediction_overfits_a_few_clips(source):
    clips = phone_clips(4, 0.5) if source == "synthetic" else _fsdd_clips()
    cfg = dataclasses.replace(TINY, dropout=0.0, num_clusters_iter1=16)
    g = torch.Generator().manual_seed(0)
    targets = H.label_clips(clips, H.fit_kmeans(torch.cat(H.clip_features(clips)), 16, g))
    torch.manual_seed(0)
    result = H.fit(H.HuBERT(cfg), clips, targets, steps=60, generator=g, batch_size=4, crop_s=0.5, lr=5e-3,
                   progress=False, log_every=1)
    first, last = result.history.mean("masked", first_n=3), result.history.mean("masked", last_n=5)
    assert result.finished and last < 0.6 * first and last < math.log(16), (first, last)
    assert result.history.mean("accuracy", last_n=5) > 3 / 16               # well above chance


# ----------------------------------------------------------------------------- semantic tokens
def test_semantic_tokens_are_25_hz_and_deterministic(tokenizer):
    wav = phone_clips(2, 1.0, seed=5)
    batch = torch.stack(wav)                                            # (2, 1, 16000)
    tokens = tokenizer.semantic_tokens(batch)
    assert tokens.shape == (2, 25) and tokens.dtype == torch.int64 and tokenizer.semantic_rate == 25
    assert 0 <= int(tokens.min()) and int(tokens.max()) < TINY.num_clusters
    torch.testing.assert_close(tokenizer.semantic_tokens(batch), tokens, rtol=0, atol=0)
    torch.testing.assert_close(tokenizer.semantic_tokens(batch[:1]), tokens[:1], rtol=0, atol=0)
    assert tokenizer.semantic_tokens(batch[..., :641]).shape == (2, 1)


def test_checkpoint_round_trip_gives_identical_tokens(tokenizer, tmp_path):
    checkpoint.save_pretrained(tokenizer, tokenizer.config, tmp_path / "hubert")
    loaded = H.load_pretrained(tmp_path / "hubert")
    assert loaded.config == tokenizer.config
    wav = torch.stack(phone_clips(3, 1.0, seed=7))
    torch.testing.assert_close(loaded.semantic_tokens(wav), tokenizer.semantic_tokens(wav), rtol=0, atol=0)


def test_train_iterations_runs_both_iterations_and_resumes(tmp_path):
    clips = phone_clips(4, 0.5, seed=3)
    kw = dict(steps=(3, 2), generator=torch.Generator().manual_seed(0), checkpoint_dir=tmp_path, batch_size=2,
              crop_s=0.4, progress=False, warm_start=True)
    run = H.train_iterations(clips, TINY, **kw)
    assert [r.steps for r in run.results] == [3, 2] and run.model.config.iteration == 2
    assert [km.num_clusters for km in run.kmeans] == [TINY.num_clusters_iter1, TINY.num_clusters]
    assert run.model.label_emb.shape[0] == TINY.num_clusters            # iteration 2 predicts K clusters
    assert (tmp_path / "iteration1" / "last.pt").is_file() and (tmp_path / "iteration2" / "last.pt").is_file()
    again = H.train_iterations(clips, TINY, **{**kw, "generator": torch.Generator().manual_seed(0)})
    wav = torch.stack(clips)
    torch.testing.assert_close(again.model.semantic_tokens(wav), run.model.semantic_tokens(wav), rtol=0, atol=0)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("wav, kwargs, match", [
    (torch.randn(1, 16000) * 0.1, {}, "shape"),
    (torch.randn(1, 2, 16000) * 0.1, {}, "mono"),
    (torch.randn(1, 1, 16000) * 0.1, {"sample_rate": 8000}, "resample"),
    (torch.zeros(1, 1, 16000), {}, "silent"),
    (torch.full((1, 1, 16000), float("nan")), {}, "NaN"),
    (torch.randn(1, 1, 639) * 0.1, {}, "too short"),
])
def test_bad_audio_is_refused_with_the_fix(tokenizer, wav, kwargs, match):
    with pytest.raises(AudioError, match=match):
        tokenizer.semantic_tokens(wav, **kwargs)


def test_bad_training_input_and_config_are_refused(clips):
    model = H.HuBERT(TINY)
    with pytest.raises(RuntimeError, match="fit_semantic_kmeans"):
        model.semantic_tokens(torch.stack(clips[:1]))
    with pytest.raises(ValueError, match="label_clips"):
        H.fit(model, clips, [torch.zeros(3, dtype=torch.long)] * len(clips), steps=1)
    with pytest.raises(AudioError, match="too short"):
        H.fit(model, [torch.randn(1, 500) * 0.1], [torch.zeros(1, dtype=torch.long)], steps=1)
    with pytest.raises(ValueError, match="num_targets"):
        H.fit(model, clips[:1], [torch.full((50,), TINY.num_targets)], steps=1)
    with pytest.raises(ValueError, match="layer"):
        H.HubertConfig(layer=9)
    with pytest.raises(ValueError, match="tiny"):
        H.HubertConfig.preset("huge")
    with pytest.raises(ValueError, match="NaN"):
        H.fit_kmeans(torch.full((4, 3), float("nan")), 2)


@pytest.mark.parametrize("name", ["tiny", "small", "base"])
def test_every_preset_builds_and_steps(name):
    cfg = H.HubertConfig.preset(name)
    model = H.HuBERT(cfg)
    wav = 0.1 * torch.randn(1, 1, 6400, generator=torch.Generator().manual_seed(0))
    mask = H.span_mask(1, 20, cfg.mask_prob, cfg.mask_length, torch.Generator().manual_seed(0))
    losses = H.hubert_loss(model, wav, torch.randint(cfg.num_targets, (1, 20)), mask)
    losses.total.backward()
    assert torch.isfinite(losses.total) and model.frame_rate == 50 and model.semantic_rate == 25


# ----------------------------------------------------------------------------- external HuBERT-base, offline
# torchaudio's HuBERT-base architecture (wav2vec2_model arguments of HUBERT_BASE) at a tiny size.
TINY_TA = dict(extractor_mode="group_norm", extractor_conv_layer_config=[(16, 10, 5)] + [(16, 3, 2)] * 4
               + [(16, 2, 2)] * 2, extractor_conv_bias=False, encoder_embed_dim=32, encoder_projection_dropout=0.1,
               encoder_pos_conv_kernel=16, encoder_pos_conv_groups=2, encoder_num_layers=2, encoder_num_heads=2,
               encoder_attention_dropout=0.1, encoder_ff_interm_features=64, encoder_ff_interm_dropout=0.0,
               encoder_dropout=0.1, encoder_layer_norm_first=False, encoder_layer_drop=0.05, aux_num_out=None)


@pytest.fixture(scope="module")
def tiny_torchaudio_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hubert_base") / "tiny.pth"
    torch.save(torchaudio.models.wav2vec2_model(**TINY_TA).state_dict(), path)
    return path


def test_torchaudio_bundle_file_and_architecture_match():
    bundle = torchaudio.pipelines.HUBERT_BASE
    assert Path(bundle._path).name == X.TORCHAUDIO_FILE
    assert {k: v for k, v in bundle._params.items() if k not in TINY_TA or k.startswith(("extractor_mode", "encoder_l"))
            } == {k: TINY_TA[k] for k in ("extractor_mode", "encoder_layer_norm_first", "encoder_layer_drop")}


def test_external_loader_offline_from_a_local_torchaudio_file(tiny_torchaudio_file, clips, tmp_path):
    model = X.load_hubert_base(layer=1, name_or_path=tiny_torchaudio_file, params=TINY_TA, fit_audio=clips,
                               num_clusters=8, generator=torch.Generator().manual_seed(0))
    wav = torch.stack(phone_clips(2, 1.0, seed=9))
    tokens = model.semantic_tokens(wav)
    assert tokens.shape == (2, 25) and int(tokens.max()) < 8 and model.dim == 32
    torch.testing.assert_close(model.semantic_tokens(wav), tokens, rtol=0, atol=0)
    expected = model.backbone.extract_features(torch.nn.functional.pad(wav[:, 0], (40, 40)), num_layers=1)[0][0]
    torch.testing.assert_close(model.layer_features(wav), expected)
    safetensors.torch.save_file(model.quantizer.state_dict(), tmp_path / "km.safetensors")
    again = X.load_hubert_base(tmp_path / "km.safetensors", 1, name_or_path=tiny_torchaudio_file, params=TINY_TA)
    torch.testing.assert_close(again.semantic_tokens(wav), tokens, rtol=0, atol=0)


def test_external_loader_offline_from_a_local_transformers_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    from torchaudio.models.wav2vec2.utils import import_huggingface_model
    cfg = transformers.HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                    conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    torch.manual_seed(0)
    transformers.HubertModel(cfg).save_pretrained(tmp_path / "hf")
    centroids = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    hf = X.load_hubert_base(centroids, 2, source="transformers", name_or_path=tmp_path / "hf")
    ta = X.PretrainedHubert(import_huggingface_model(hf.backbone), 2, X.read_centroids(centroids))
    wav = torch.stack(phone_clips(2, 1.0, seed=11))
    torch.testing.assert_close(hf.layer_features(wav), ta.layer_features(wav))     # both backends agree
    assert hf.semantic_tokens(wav).shape == (2, 25)


def test_external_loader_offline_errors_name_the_fix(monkeypatch, tmp_path, tiny_torchaudio_file):
    monkeypatch.setattr(X, "is_online", lambda *a, **k: False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))    # nothing cached
    with pytest.raises(X.HubertError, match="offline.*name_or_path"):
        X.load_hubert_base()
    with pytest.raises(X.HubertError, match="offline.*save_pretrained"):
        X.load_hubert_base(source="transformers", name_or_path="course-lib-tests/no-such-model")
    with pytest.raises(X.HubertError, match="No HuBERT state-dict"):
        X.load_hubert_base(name_or_path=tmp_path / "missing.pth")
    model = X.load_hubert_base(layer=1, name_or_path=tiny_torchaudio_file, params=TINY_TA)
    with pytest.raises(X.HubertError, match="fit_quantizer"):
        model.semantic_tokens(torch.stack(phone_clips(1)))
    with pytest.raises(X.HubertError, match=r"\(K, 32\)"):
        X.load_hubert_base(torch.randn(8, 768), 1, name_or_path=tiny_torchaudio_file, params=TINY_TA)
    with pytest.raises(ValueError, match="layer"):
        X.load_hubert_base(layer=7, name_or_path=tiny_torchaudio_file, params=TINY_TA)
