"""Our ResidualVectorQuantizer against vector-quantize-pytorch's ResidualVQ, side by side.

Same settings for both: latent width D, Q quantizers of K codes, EMA codebooks (decay 0.99),
no k-means, dead-code restart below 0.1 of the fair share n/K (n = B*L vectors), training mode, forward +
backward of ``quantized.sum() + commit_loss`` on (B, D, L) latents. Times are the median of
``--repeat`` interleaved runs after warm-up, on CPU with the current thread count.

    .venv/bin/python benchmarks/bench_rvq.py            # the codec's size: D=64, Q=12, K=1024
    .venv/bin/python benchmarks/bench_rvq.py --quick    # smaller, for a quick look
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from course_lib.quantize import ResidualVectorQuantizer


def _time_pair(fn_a, fn_b, repeat: int) -> tuple[float, float]:
    """Median seconds of each, the two interleaved so that load from other processes hits both alike."""
    for _ in range(2):
        fn_a(), fn_b()
    times_a, times_b = [], []
    for _ in range(repeat):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times_a), statistics.median(times_b)


def run(batch: int = 16, frames: int = 50, dim: int = 64, num_quantizers: int = 12, codebook_size: int = 1024,
        repeat: int = 10, threads: int | None = None) -> dict:
    """Forward+backward milliseconds of ours and theirs at the same settings."""
    if threads:
        torch.set_num_threads(threads)
    from vector_quantize_pytorch import ResidualVQ
    g = torch.Generator().manual_seed(0)
    z = torch.randn(batch, dim, frames, generator=g)                  # (B, D, L)
    ours = ResidualVectorQuantizer(dim, codebook_size, num_quantizers, decay=0.99, kmeans_init=False,
                                   dead_code_threshold=0.1).train()
    theirs = ResidualVQ(dim=dim, num_quantizers=num_quantizers, codebook_size=codebook_size, decay=0.99,
                        kmeans_init=False, threshold_ema_dead_code=0.1 * batch * frames / codebook_size).train()

    def step_ours() -> None:
        x = z.clone().requires_grad_(True)
        out = ours(x, generator=g)
        (out.quantized.sum() + out.commit_loss).backward()

    def step_theirs() -> None:
        x = z.transpose(1, 2).clone().requires_grad_(True)           # theirs is channel-last (B, L, D)
        quantized, _, loss = theirs(x)
        (quantized.sum() + loss.sum()).backward()

    t_ours, t_theirs = _time_pair(step_ours, step_theirs, repeat)
    return {"settings": {"B": batch, "L": frames, "D": dim, "Q": num_quantizers, "K": codebook_size,
                         "threads": torch.get_num_threads()},
            "ours_ms": round(1000 * t_ours, 2), "vector_quantize_pytorch_ms": round(1000 * t_theirs, 2),
            "speedup": round(t_theirs / t_ours, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    kw = dict(num_quantizers=4, codebook_size=256) if args.quick else {}
    print(json.dumps(run(repeat=args.repeat, threads=args.threads, **kw), indent=2))


if __name__ == "__main__":
    main()
