"""Offline tests of the LAION-CLAP wrapper against a locally built checkpoint of the same architecture.

The official checkpoints are 600 MB-2 GB downloads; the loading code is the same for a checkpoint
built here: HTSAT-tiny + RoBERTa, saved in the official layout (``{"state_dict": {"module." + key}}``
with the ``position_ids`` key that old transformers stored). To stay fast the RoBERTa tower has one
layer and a 1,000-word vocabulary; everything else is the official architecture.
"""
from __future__ import annotations

import importlib.util
import zlib

import pytest
import torch

from course_lib.audio import AudioError

if importlib.util.find_spec("laion_clap") is None or importlib.util.find_spec("torchvision") is None:
    pytest.skip("laion-clap (and torchvision) not installed: pip install 'course_lib[laion]'",
                allow_module_level=True)

from course_lib.external import laion  # noqa: E402

SMALL_ROBERTA = {"num_hidden_layers": 1, "vocab_size": 1000}


def word_tokenizer(texts: list[str]) -> dict:
    """A stand-in for roberta-base's tokenizer (which would need a download): hashed words, 77 tokens."""
    ids = torch.ones(len(texts), 77, dtype=torch.long)             # 1 = RoBERTa's <pad>
    mask = torch.zeros(len(texts), 77, dtype=torch.long)
    for i, t in enumerate(texts):
        row = [0] + [3 + zlib.crc32(w.encode()) % 990 for w in t.lower().split()][:75] + [2]
        ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    torch.manual_seed(0)
    model = laion.build_laion_model(enable_fusion=False, roberta_overrides=SMALL_ROBERTA)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    state["module.text_branch.embeddings.position_ids"] = torch.arange(514)[None]   # as in the 2023 checkpoints
    path = tmp_path_factory.mktemp("laion") / "local-non-fusion.pt"
    torch.save({"epoch": 45, "state_dict": state}, path)
    return model, path


@pytest.fixture(scope="module")
def loaded(reference):
    return laion.load_laion_clap(reference[1], tokenizer=word_tokenizer, roberta_overrides=SMALL_ROBERTA)


def test_offline_load_reproduces_the_reference_model(reference, loaded):
    model, _ = reference
    assert loaded.enable_fusion is False and loaded.sample_rate == 48_000
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    texts = ["a dog barks", "rain on a tin roof"]
    t = loaded.embed_text(texts)
    with torch.no_grad():
        expected = model.get_text_embedding(word_tokenizer(texts))
    assert t.shape == (2, loaded.embed_dim)
    torch.testing.assert_close(t, expected)
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(2))


def test_audio_matches_the_official_pipeline(reference, loaded):
    # The official CLAP_Module.get_audio_embedding_from_data: numpy int16 round trip, then get_audio_features.
    from laion_clap.training.data import float32_to_int16, get_audio_features, int16_to_float32
    model, _ = reference
    wav = 0.3 * torch.randn(2, 1, 48_000, generator=torch.Generator().manual_seed(0))
    a = loaded.embed_audio(wav, sample_rate=48_000)
    assert a.shape == (2, loaded.embed_dim)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(2))
    feats = [get_audio_features({}, torch.from_numpy(int16_to_float32(float32_to_int16(x.numpy()))).float(),
                                480_000, data_truncating="rand_trunc", data_filling="repeatpad",
                                audio_cfg=loaded.model.audio_cfg.__dict__) for x in wav[:, 0]]
    with torch.no_grad():
        expected = model.get_audio_embedding(feats)
    torch.testing.assert_close(a, expected)
    with pytest.raises(AudioError, match="resample"):
        loaded.embed_audio(torch.randn(1, 1, 16_000), sample_rate=16_000)
    with pytest.raises(AudioError, match="shape"):
        loaded.embed_audio(torch.randn(48_000))


def test_bad_text(loaded):
    with pytest.raises(ValueError, match="empty"):
        loaded.embed_text([])
    with pytest.raises(ValueError, match="empty string"):
        loaded.embed_text([""])


def test_wrong_variant_is_a_clear_error(reference):
    with pytest.raises(laion.LaionError, match="non-fusion checkpoint but enable_fusion=True"):
        laion.load_laion_clap(reference[1], enable_fusion=True, tokenizer=word_tokenizer,
                              roberta_overrides=SMALL_ROBERTA)


def test_wrong_architecture_is_a_clear_error(reference, tmp_path):
    state = torch.load(reference[1], weights_only=True)["state_dict"]
    del state["module.audio_projection.0.weight"]
    torch.save({"state_dict": state}, tmp_path / "broken.pt")
    with pytest.raises(laion.LaionError, match="missing keys"):
        laion.load_laion_clap(tmp_path / "broken.pt", tokenizer=word_tokenizer, roberta_overrides=SMALL_ROBERTA)


def test_official_weights_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    monkeypatch.setattr(laion, "is_online", lambda *a, **k: False)
    with pytest.raises(laion.LaionError, match="offline"):
        laion.load_laion_clap()                                      # 630k-audioset-best.pt
    with pytest.raises(laion.LaionError, match="offline"):
        laion.load_laion_clap("630k-audioset-fusion-best.pt")
    with pytest.raises(laion.LaionError, match="No LAION-CLAP checkpoint"):
        laion.load_laion_clap(tmp_path / "missing.pt")
