"""Tests of course_lib.quantize: VQ-VAE codebooks and SoundStream's residual VQ."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from course_lib.quantize import (ResidualVectorQuantizer, VectorQuantizer, bits_per_second, codebook_stats,
                                 kmeans)


def _clustered(n: int = 512, dim: int = 8, k: int = 16, seed: int = 0) -> torch.Tensor:
    """(1, D, n) latents drawn around k well-separated centres."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=g) * 4
    x = centres[torch.randint(0, k, (n,), generator=g)] + 0.1 * torch.randn(n, dim, generator=g)
    return x.t()[None]


@pytest.mark.parametrize("num_quantizers", [1, 4])
def test_rvq_roundtrip(num_quantizers: int) -> None:
    rvq = ResidualVectorQuantizer(dim=16, codebook_size=32, num_quantizers=num_quantizers).eval()
    z = torch.randn(2, 16, 50)                       # (B, D, L)
    out = rvq(z)
    assert out.codes.shape == (2, num_quantizers, 50)
    assert out.codes.dtype == torch.long
    torch.testing.assert_close(rvq.decode(out.codes), out.quantized)
    torch.testing.assert_close(rvq.encode(z), out.codes)


def test_more_quantizers_lower_error() -> None:
    rvq = ResidualVectorQuantizer(dim=8, codebook_size=16, num_quantizers=4)
    z = torch.randn(4, 8, 128)
    g = torch.Generator().manual_seed(0)
    rvq.train()(z, generator=g)                      # k-means initialisation of every layer on its residual
    rvq.eval()
    errors = [(rvq(z, num_quantizers=q).quantized - z).pow(2).mean().item() for q in range(1, 5)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.5 * errors[0]


def test_straight_through_gradient_reaches_encoder() -> None:
    encoder = nn.Conv1d(1, 8, 3, padding=1)
    decoder = nn.Conv1d(8, 1, 3, padding=1)
    rvq = ResidualVectorQuantizer(dim=8, codebook_size=16, num_quantizers=3)
    x = torch.randn(2, 1, 64)
    z_e = encoder(x)
    out = rvq(z_e, generator=torch.Generator().manual_seed(0))
    loss = (decoder(out.quantized) - x).pow(2).mean() + out.commit_loss
    loss.backward()
    assert encoder.weight.grad is not None and encoder.weight.grad.abs().sum() > 0
    # The whole stack is one straight-through estimator: d quantized / d z_e is the identity.
    z = torch.randn(1, 8, 5, requires_grad=True)
    rvq.eval()(z).quantized.sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z))


def test_ema_update_arithmetic_by_hand() -> None:
    vq = VectorQuantizer(dim=2, codebook_size=2, decay=0.5, eps=0.0, kmeans_init=False, dead_code_threshold=0)
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    vq.cluster_size.copy_(torch.tensor([2.0, 4.0]))
    vq.embed_sum.copy_(torch.tensor([[0.0, 0.0], [40.0, 40.0]]))
    # Three inputs: two nearest code 0, one nearest code 1.
    x = torch.tensor([[1.0, 0.0], [3.0, 2.0], [9.0, 11.0]]).t()[None]   # (1, D=2, L=3)
    out = vq.train()(x)
    assert out.codes.tolist() == [[0, 0, 1]]
    # N_0 = 0.5*2 + 0.5*2 = 2 ;  N_1 = 0.5*4 + 0.5*1 = 2.5
    torch.testing.assert_close(vq.cluster_size, torch.tensor([2.0, 2.5]))
    # m_0 = 0.5*(0,0) + 0.5*(4,2) = (2,1) ;  m_1 = 0.5*(40,40) + 0.5*(9,11) = (24.5, 25.5)
    torch.testing.assert_close(vq.embed_sum, torch.tensor([[2.0, 1.0], [24.5, 25.5]]))
    # e_i = m_i / N_i (eps = 0: smoothing changes nothing)
    torch.testing.assert_close(vq.codebook, torch.tensor([[1.0, 0.5], [9.8, 10.2]]))


def test_dead_code_restart() -> None:
    # 64 inputs, K = 4: fair share 16; threshold 1/32 of it = 0.5
    vq = VectorQuantizer(dim=2, codebook_size=4, decay=0.5, kmeans_init=False, dead_code_threshold=1 / 32)
    far = torch.tensor([1000.0, 1000.0])
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1000.0, 1000.0]]))
    vq.cluster_size.fill_(1.0)
    vq.embed_sum.copy_(vq.codebook)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 2, 64, generator=g)            # all inputs near the origin: code 3 gets nothing
    vq.train()(x, generator=g)                       # N_3 = 0.5 < threshold? not yet (0.5 is not < 0.5)
    torch.testing.assert_close(vq.codebook[3], far, rtol=1e-3, atol=0)
    vq(x, generator=g)                               # N_3 = 0.25 < 0.5: restarted from a current input
    assert vq.codebook[3].abs().max() < 2
    inputs = x[0].t()                                # (64, 2)
    assert (inputs - vq.codebook[3]).abs().sum(1).min() < 1e-6, "restarted code must equal an encoder output"
    assert vq.cluster_size[3] == pytest.approx(0.5)


def test_kmeans_init_uses_all_codes() -> None:
    z = _clustered(k=16)
    vq = VectorQuantizer(dim=8, codebook_size=16, dead_code_threshold=0)
    out = vq.train()(z, generator=torch.Generator().manual_seed(0))
    assert bool(vq.initialized)
    assert codebook_stats(out.codes, 16).usage.item() >= 0.75
    centroids, counts = kmeans(z[0].t(), 16, iters=10, generator=torch.Generator().manual_seed(0))
    assert centroids.shape == (16, 8) and counts.sum() == 512


def test_quantizer_dropout() -> None:
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(dim=8, codebook_size=16, num_quantizers=4, quantizer_dropout=1.0)
    z = torch.randn(32, 8, 10)
    g = torch.Generator().manual_seed(1)
    rvq.train()(z, generator=g)                      # initialise
    rvq.eval()
    codebooks = [layer.codebook.clone() for layer in rvq.layers]
    rvq.train()
    for layer in rvq.layers:                         # freeze the codebooks so decode() matches the forward pass
        layer.decay = 0.999999
        layer.dead_code_threshold = 0
    out = rvq(z, generator=g)
    for layer, cb in zip(rvq.layers, codebooks):
        torch.testing.assert_close(layer.codebook, cb, atol=1e-3, rtol=0)
    used = []
    for b in range(32):
        candidates = [(out.quantized[b] - rvq.decode(out.codes[b:b + 1, :q])[0]).abs().max().item()
                      for q in range(1, 5)]
        used.append(min(range(4), key=candidates.__getitem__) + 1)
        assert min(candidates) < 1e-2
    assert len(set(used)) >= 3, f"dropout should vary n_q over the batch, got {used}"
    # In eval mode every example uses all quantizers.
    out = rvq.eval()(z)
    torch.testing.assert_close(out.quantized, rvq.decode(out.codes))


def test_dropout_is_deterministic_under_generator() -> None:
    rvq = ResidualVectorQuantizer(dim=8, codebook_size=16, num_quantizers=4, quantizer_dropout=1.0)
    z = torch.randn(8, 8, 10)
    state = {k: v.clone() for k, v in rvq.state_dict().items()}
    a = rvq.train()(z, generator=torch.Generator().manual_seed(3)).quantized
    rvq.load_state_dict(state)
    b = rvq(z, generator=torch.Generator().manual_seed(3)).quantized
    torch.testing.assert_close(a, b)


def test_nearest_code_agrees_with_vector_quantize_pytorch() -> None:
    vqp = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(0)
    ours = ResidualVectorQuantizer(dim=16, codebook_size=64, num_quantizers=3).eval()
    for layer in ours.layers:
        layer.codebook.copy_(torch.randn(64, 16))
    theirs = vqp.ResidualVQ(dim=16, codebook_size=64, num_quantizers=3).eval()
    for mine, their in zip(ours.layers, theirs.layers):
        their._codebook.embed.copy_(mine.codebook[None])
        their._codebook.initted.fill_(True)
    z = torch.randn(4, 16, 40)
    q_theirs, codes_theirs, _ = theirs(z.transpose(1, 2))   # channel-last in, codes (B, L, Q)
    out = ours(z)
    assert torch.equal(out.codes, codes_theirs.permute(0, 2, 1))
    torch.testing.assert_close(out.quantized, q_theirs.transpose(1, 2), atol=1e-5, rtol=1e-5)


def test_bitrate_arithmetic() -> None:
    assert bits_per_second(50, 12, 1024) == 6000.0
    assert bits_per_second(50, 1, 1024) == 500.0
    assert bits_per_second(75, 8, 1024) == 6000.0   # EnCodec 24 kHz at 6 kbps
    rvq = ResidualVectorQuantizer(dim=4, codebook_size=256, num_quantizers=4)
    assert rvq.bitrate(50) == 50 * 4 * 8
    assert rvq.bitrate(50, num_quantizers=1) == 400.0
    with pytest.raises(ValueError, match="1..4"):
        rvq.bitrate(50, num_quantizers=5)


def test_codebook_stats_by_hand() -> None:
    codes = torch.tensor([[[0, 0, 1, 1], [2, 2, 2, 2]]])   # (B=1, Q=2, L=4), K=4
    stats = codebook_stats(codes, 4)
    torch.testing.assert_close(stats.usage, torch.tensor([0.5, 0.25]))
    torch.testing.assert_close(stats.perplexity, torch.tensor([2.0, 1.0]))
    assert stats.dead.tolist() == [2, 3]


def test_codebook_loss_without_ema_trains_codebook() -> None:
    vq = VectorQuantizer(dim=4, codebook_size=8, ema=False, kmeans_init=False)
    z = torch.randn(2, 4, 16)
    out = vq.train()(z)
    (out.commit_loss + out.codebook_loss).backward()
    assert vq.codebook.grad is not None and vq.codebook.grad.abs().sum() > 0
    rvq = ResidualVectorQuantizer(dim=4, codebook_size=8, num_quantizers=2, quantizer_dropout=1.0,
                                  ema=False, kmeans_init=False).train()
    out = rvq(z, generator=torch.Generator().manual_seed(0))
    out.codebook_loss.backward()
    assert rvq.layers[0].codebook.grad.abs().sum() > 0


def test_bad_codes_raise() -> None:
    rvq = ResidualVectorQuantizer(dim=4, codebook_size=8, num_quantizers=2).eval()
    with pytest.raises(ValueError, match="0..7"):
        rvq.decode(torch.full((1, 2, 3), 8))
    with pytest.raises(ValueError, match=r"\(B, Q, L\)"):
        rvq.decode(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="1..2"):
        rvq.decode(torch.zeros(1, 3, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="integers"):
        rvq.decode(torch.zeros(1, 2, 5))
    with pytest.raises(ValueError, match="latents"):
        rvq.layers[0](torch.randn(1, 5, 3))
    assert math.isfinite(rvq.bitrate(50))
