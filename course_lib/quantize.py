"""Vector quantizers: VQ-VAE's codebook and SoundStream's residual VQ.

Two papers, one file:

* van den Oord et al. 2017, "Neural Discrete Representation Learning" (VQ-VAE): a codebook
  of ``K`` vectors, nearest-neighbour look-up, the straight-through estimator (eq. 3's
  ``sg``), the commitment loss, and (appendix A.1) exponential-moving-average (EMA)
  codebook updates instead of a codebook loss.
* Zeghidour et al. 2021, "SoundStream" (Algorithm 1): residual vector quantization -- each
  quantizer codes what the previous ones left over -- plus k-means initialisation, restart
  of dead codes and *quantizer dropout*, so that one model serves several bitrates.

Tensors follow the package legend: B batch, D latent width, L frames, Q quantizers,
K codebook size. Latents are channel-first ``(B, D, L)`` like every conv feature map.

Example:
    >>> rvq = ResidualVectorQuantizer(dim=16, codebook_size=32, num_quantizers=4).eval()
    >>> out = rvq(torch.randn(2, 16, 50))
    >>> out.codes.shape
    torch.Size([2, 4, 50])
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "VQOutput", "RVQOutput", "CodebookStats", "VectorQuantizer", "ResidualVectorQuantizer",
    "kmeans", "codebook_stats", "bits_per_second",
]


class VQOutput(NamedTuple):
    """Result of one vector quantizer."""

    quantized: Tensor      # (B, D, L) z_q with straight-through gradients to z_e
    codes: Tensor          # (B, L) int64 code indices
    commit_loss: Tensor    # () mean ||z_e - sg(z_q)||^2 (VQ-VAE eq. 3, third term, without beta)
    codebook_loss: Tensor  # () mean ||sg(z_e) - z_q||^2 (eq. 3, second term); 0 with EMA updates


class RVQOutput(NamedTuple):
    """Result of a residual vector quantizer."""

    quantized: Tensor      # (B, D, L) sum of the active quantizers' outputs
    codes: Tensor          # (B, Q, L) int64; Q = quantizers used in this call
    commit_loss: Tensor    # () summed over quantizers, averaged over active entries
    codebook_loss: Tensor  # () likewise; 0 with EMA updates


class CodebookStats(NamedTuple):
    """How a set of codes uses its codebooks (one entry per quantizer)."""

    usage: Tensor       # (Q,) fraction of the K codes used at least once
    perplexity: Tensor  # (Q,) exp(entropy) of the code histogram; K means perfectly uniform
    dead: Tensor        # (Q,) int64 number of codes never used


def _all_reduce(t: Tensor) -> Tensor:
    """Sum ``t`` over DDP processes (in place), so EMA statistics agree on every rank."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


def _sq_distances(x: Tensor, codebook: Tensor) -> Tensor:
    """Squared Euclidean distances, (N, D) x (K, D) -> (N, K), as ||x||^2 - 2 x.e + ||e||^2."""
    # One matrix product instead of an (N, K, D) difference tensor: the costly part is a GEMM.
    return torch.addmm((codebook * codebook).sum(1), x, codebook.t(), alpha=-2.0) + (x * x).sum(1, keepdim=True)


def kmeans(x: Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means on the rows of ``x``; used to initialise a codebook (SoundStream, section 3.3).

    Args:
        x: (N, D) vectors.
        k: number of centroids K. With fewer than K vectors, starting points repeat (with replacement).
        iters: Lloyd iterations.
        generator: randomness for the starting points.

    Returns:
        centroids (K, D) and cluster sizes (K,) of the last assignment.
    """
    n = x.shape[0]
    gen_device = generator.device if generator is not None else torch.device("cpu")
    if n >= k:
        idx = torch.randperm(n, generator=generator, device=gen_device)[:k]
    else:
        idx = torch.randint(0, n, (k,), generator=generator, device=gen_device)
    centroids = x[idx.to(x.device)].clone()  # (K, D)
    counts = torch.zeros(k, device=x.device, dtype=x.dtype)
    for _ in range(iters):
        assign = _sq_distances(x, centroids).argmin(1)  # (N,)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        # Empty clusters keep their old centroid.
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centroids)
    return centroids, counts


class VectorQuantizer(nn.Module):
    """One codebook of ``codebook_size`` vectors of width ``dim`` (VQ-VAE, van den Oord et al. 2017).

    Args:
        dim: latent width D.
        codebook_size: number of codes K.
        ema: update the codebook by exponential moving averages (appendix A.1) instead of a
            codebook loss; the codebook is then a buffer, not a parameter.
        decay: EMA decay gamma.
        eps: Laplace smoothing of the EMA cluster sizes (avoids division by zero).
        kmeans_init: on the first training batch, set the codebook by k-means on that batch.
        kmeans_iters: Lloyd iterations of that k-means.
        dead_code_threshold: in training, a code whose EMA cluster size falls below this
            fraction of the uniform share ``n / K`` (n = vectors per batch) is restarted from a
            random encoder output of the current batch (0 disables). Relative, so it means the
            same for any batch size; 0.1 = "used 10x less often than a fair share". Needs ``ema=True``.
    """

    def __init__(self, dim: int, codebook_size: int, *, ema: bool = True, decay: float = 0.99,
                 eps: float = 1e-5, kmeans_init: bool = True, kmeans_iters: int = 10,
                 dead_code_threshold: float = 0.1) -> None:
        super().__init__()
        if dim < 1 or codebook_size < 2:
            raise ValueError(f"VectorQuantizer needs dim >= 1 and codebook_size >= 2, got {dim=}, {codebook_size=}.")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}; 0.99 is the usual value.")
        self.dim, self.codebook_size = dim, codebook_size
        self.ema, self.decay, self.eps = ema, decay, eps
        self.kmeans_init, self.kmeans_iters = kmeans_init, kmeans_iters
        self.dead_code_threshold = dead_code_threshold if ema else 0.0
        # Without k-means the codebook starts as small random vectors (and is marked initialised).
        init = torch.randn(codebook_size, dim) / math.sqrt(dim)
        if ema:
            self.register_buffer("codebook", init)                          # (K, D) e_i = m_i / N_i
            self.register_buffer("cluster_size", torch.ones(codebook_size))  # (K,)   N_i
            self.register_buffer("embed_sum", init.clone())                 # (K, D) m_i
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("initialized", torch.tensor(not kmeans_init))

    # ------------------------------------------------------------------ look-up
    def encode(self, z_e: Tensor) -> Tensor:
        """Nearest code of each frame: (B, D, L) -> (B, L) int64."""
        b, d, l = z_e.shape
        x = z_e.transpose(1, 2).reshape(-1, d)                     # (B*L, D)
        return _sq_distances(x, self.codebook.to(x.dtype)).argmin(1).view(b, l)

    def decode(self, codes: Tensor) -> Tensor:
        """Code vectors of ``codes``: (B, L) -> (B, D, L)."""
        return F.embedding(codes, self.codebook).transpose(1, 2)

    def forward(self, z_e: Tensor, generator: torch.Generator | None = None) -> VQOutput:
        """Quantize ``z_e`` (B, D, L); in training mode also update the codebook.

        Args:
            z_e: (B, D, L) encoder output.
            generator: randomness for k-means initialisation and dead-code restarts.
        """
        if z_e.dim() != 3 or z_e.shape[1] != self.dim:
            raise ValueError(f"VectorQuantizer expects (B, {self.dim}, L) latents, got {tuple(z_e.shape)}.")
        b, d, l = z_e.shape
        x = z_e.transpose(1, 2).reshape(-1, d)                     # (B*L, D)
        if self.training and not bool(self.initialized):
            self._kmeans_init(x.detach().float(), generator)
        codes = _sq_distances(x.detach(), self.codebook.detach().to(x.dtype)).argmin(1)  # (B*L,)
        if self.training and self.ema:
            self._ema_update(x.detach().float(), codes, generator)
        z_q = F.embedding(codes, self.codebook).view(b, l, d).transpose(1, 2)  # (B, D, L)
        commit_loss = F.mse_loss(z_e, z_q.detach())
        codebook_loss = z_e.new_zeros(()) if self.ema else F.mse_loss(z_q, z_e.detach())
        # Straight-through estimator: forward uses z_q, backward copies dL/dz_q onto z_e.
        z_q = z_e + (z_q - z_e).detach()
        return VQOutput(z_q, codes.view(b, l), commit_loss, codebook_loss)

    # --------------------------------------------------------------- training
    @torch.no_grad()
    def _kmeans_init(self, x: Tensor, generator: torch.Generator | None) -> None:
        centroids, counts = kmeans(x, self.codebook_size, self.kmeans_iters, generator)
        _all_reduce(centroids)
        if dist.is_available() and dist.is_initialized():
            centroids /= dist.get_world_size()
        self.codebook.data.copy_(centroids)
        if self.ema:
            self.cluster_size.copy_(counts.clamp(min=1.0))
            self.embed_sum.copy_(centroids * self.cluster_size[:, None])
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, x: Tensor, codes: Tensor, generator: torch.Generator | None) -> None:
        """VQ-VAE appendix A.1 (eqs. 6-8), with Laplace smoothing of N_i, then dead-code restart."""
        one_hot_counts = torch.bincount(codes, minlength=self.codebook_size).to(x.dtype)  # n_i
        sums = torch.zeros(self.codebook_size, self.dim, device=x.device, dtype=x.dtype).index_add_(0, codes, x)
        _all_reduce(one_hot_counts)
        _all_reduce(sums)
        # eq. (6): N_i <- gamma N_i + (1 - gamma) n_i ;  eq. (7): m_i <- gamma m_i + (1 - gamma) sum_j z_ij
        self.cluster_size.mul_(self.decay).add_(one_hot_counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        # Laplace smoothing keeps N_i > 0: N_i' = (N_i + eps) / (n + K eps) * n
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
        # eq. (8): e_i = m_i / N_i
        self.codebook.copy_(self.embed_sum / smoothed[:, None])
        if self.dead_code_threshold > 0:
            self._restart_dead_codes(x, generator)

    @torch.no_grad()
    def _restart_dead_codes(self, x: Tensor, generator: torch.Generator | None) -> int:
        """Replace codes with EMA cluster size < threshold * n / K by random current inputs (SoundStream 3.3)."""
        floor = self.dead_code_threshold * x.shape[0] / self.codebook_size
        dead = self.cluster_size < floor                            # (K,)
        n_dead = int(dead.sum())
        if n_dead == 0:
            return 0
        gen_device = generator.device if generator is not None else torch.device("cpu")
        pick = torch.randint(0, x.shape[0], (n_dead,), generator=generator, device=gen_device).to(x.device)
        new = x[pick]
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(new, src=0)  # every rank restarts with the same vectors
        self.codebook[dead] = new
        # A restarted code starts as a cluster of size `floor` centred on its new vector.
        self.cluster_size[dead] = floor
        self.embed_sum[dead] = new * floor
        return n_dead


class ResidualVectorQuantizer(nn.Module):
    """Residual VQ with quantizer dropout (SoundStream, Zeghidour et al. 2021, Algorithm 1).

    Quantizer ``i`` codes the residual that quantizers ``1..i-1`` left; the output is the
    sum of the first ``n_q`` quantizers' vectors, so ``n_q`` sets the bitrate:
    ``n_q * log2(K) * frame_rate`` bits per second.

    Args:
        dim: latent width D.
        codebook_size: codes per quantizer K.
        num_quantizers: Q.
        quantizer_dropout: in training, the fraction of examples for which ``n_q`` is drawn
            uniformly from ``1..Q`` (SoundStream uses 1.0; DAC, Kumar et al. 2023, found 0.5
            keeps full-bitrate quality higher). The others use all Q quantizers.
        **vq_kwargs: passed to every :class:`VectorQuantizer` (ema, decay, kmeans_init, ...).
    """

    def __init__(self, dim: int, codebook_size: int, num_quantizers: int, *,
                 quantizer_dropout: float = 0.0, **vq_kwargs: float | bool | int) -> None:
        super().__init__()
        if num_quantizers < 1:
            raise ValueError(f"num_quantizers must be >= 1, got {num_quantizers}.")
        if not 0.0 <= quantizer_dropout <= 1.0:
            raise ValueError(f"quantizer_dropout is a fraction of examples in [0, 1], got {quantizer_dropout}.")
        self.dim, self.codebook_size, self.num_quantizers = dim, codebook_size, num_quantizers
        self.quantizer_dropout = quantizer_dropout
        self.layers = nn.ModuleList(VectorQuantizer(dim, codebook_size, **vq_kwargs) for _ in range(num_quantizers))

    def _check_n_q(self, num_quantizers: int | None) -> int:
        n_q = self.num_quantizers if num_quantizers is None else num_quantizers
        if not 1 <= n_q <= self.num_quantizers:
            raise ValueError(f"num_quantizers must lie in 1..{self.num_quantizers}, got {num_quantizers}.")
        return n_q

    def forward(self, z_e: Tensor, num_quantizers: int | None = None,
                generator: torch.Generator | None = None) -> RVQOutput:
        """Quantize (B, D, L) latents with the first ``num_quantizers`` quantizers (default all).

        In training with ``quantizer_dropout > 0``, each chosen example keeps only its first
        ``n_q ~ U{1..Q}`` quantizers: their codes are still computed (and EMA-updated) but the
        later ones contribute nothing to its output or losses.
        """
        n_q = self._check_n_q(num_quantizers)
        b = z_e.shape[0]
        keep = None                                                 # (B,) quantizers kept per example
        if self.training and self.quantizer_dropout > 0 and num_quantizers is None:
            gen_device = generator.device if generator is not None else torch.device("cpu")
            draw = torch.randint(1, n_q + 1, (b,), generator=generator, device=gen_device)
            chosen = torch.rand(b, generator=generator, device=gen_device) < self.quantizer_dropout
            keep = torch.where(chosen, draw, torch.full_like(draw, n_q)).to(z_e.device)
        # Algorithm 1: y_hat <- 0; residual <- y; for i: y_hat += Q_i(residual); residual -= Q_i(residual)
        y_hat = torch.zeros_like(z_e)
        residual = z_e
        codes, commit, codebook = [], z_e.new_zeros(()), z_e.new_zeros(())
        for i, layer in enumerate(self.layers[:n_q]):
            out = layer(residual, generator=generator)
            z_q = out.quantized.detach()                            # (B, D, L) values of Q_i(residual)
            if keep is None:
                y_hat = y_hat + z_q
                commit = commit + out.commit_loss
                codebook = codebook + out.codebook_loss
            else:
                mask = (keep > i).to(z_e.dtype)[:, None, None]      # (B, 1, 1)
                y_hat = y_hat + z_q * mask
                frac = mask.mean().clamp(min=1e-8)
                # Per-example losses, averaged over the examples where quantizer i is active.
                commit = commit + (F.mse_loss(residual, z_q, reduction="none") * mask).mean() / frac
                if not layer.ema:
                    z_q_grad = layer.decode(out.codes)              # (B, D, L) with codebook gradients
                    codebook = codebook + (F.mse_loss(z_q_grad, residual.detach(), reduction="none")
                                           * mask).mean() / frac
            residual = residual - z_q
            codes.append(out.codes)
        # One straight-through estimator for the whole stack: d y_hat / d z_e = identity.
        quantized = z_e + (y_hat - z_e).detach()
        return RVQOutput(quantized, torch.stack(codes, 1), commit, codebook)

    @torch.no_grad()
    def encode(self, z_e: Tensor, num_quantizers: int | None = None) -> Tensor:
        """Codes of (B, D, L) latents: (B, Q, L) int64 with Q = ``num_quantizers`` (default all)."""
        n_q = self._check_n_q(num_quantizers)
        residual, codes = z_e, []
        for layer in self.layers[:n_q]:
            c = layer.encode(residual)                              # (B, L)
            residual = residual - layer.decode(c)
            codes.append(c)
        return torch.stack(codes, 1)

    def decode(self, codes: Tensor) -> Tensor:
        """Latents from codes (B, q, L), any 1 <= q <= Q: the sum of the first q quantizers' vectors."""
        if codes.dim() != 3:
            raise ValueError(f"codes must have shape (B, Q, L), got {tuple(codes.shape)}; "
                             "add a batch dimension with codes[None] for one clip.")
        if codes.dtype.is_floating_point:
            raise ValueError(f"codes must be integers (torch.long), got {codes.dtype}.")
        self._check_n_q(codes.shape[1])
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(f"codes must lie in 0..{self.codebook_size - 1}, got values in "
                             f"{int(codes.min())}..{int(codes.max())}; were they made by a codec with another codebook size?")
        out = 0
        for i in range(codes.shape[1]):
            out = out + self.layers[i].decode(codes[:, i])
        return out

    def bitrate(self, frame_rate: float, num_quantizers: int | None = None) -> float:
        """Bits per second at ``frame_rate`` frames per second with the first ``num_quantizers``."""
        return bits_per_second(frame_rate, self._check_n_q(num_quantizers), self.codebook_size)


def bits_per_second(frame_rate: float, num_quantizers: int, codebook_size: int) -> float:
    """Bitrate of RVQ codes: ``frame_rate * num_quantizers * log2(codebook_size)``.

    >>> bits_per_second(50, 12, 1024)   # 50 Hz, 12 quantizers of 10 bits
    6000.0
    """
    return float(frame_rate * num_quantizers * math.log2(codebook_size))


def codebook_stats(codes: Tensor, codebook_size: int) -> CodebookStats:
    """Usage, perplexity and dead codes per quantizer of codes (B, Q, L) (or (B, L) for one)."""
    if codes.dim() == 2:
        codes = codes[:, None]
    q = codes.shape[1]
    flat = codes.transpose(0, 1).reshape(q, -1)                    # (Q, B*L)
    hist = torch.stack([torch.bincount(row, minlength=codebook_size) for row in flat]).float()  # (Q, K)
    p = hist / hist.sum(1, keepdim=True).clamp(min=1)
    entropy = -(p * p.clamp(min=1e-12).log()).sum(1)
    used = (hist > 0).sum(1)
    return CodebookStats(used.float() / codebook_size, entropy.exp(), codebook_size - used)
