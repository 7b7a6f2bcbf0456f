"""How fast this machine is right now: the matmul peaks that put a benchmark's times in context.

Machines of one `lscpu` model differ by a third or more from session to session (and drift within one), so a
time measured in one session is compared with another session's only through these numbers.
"""

from __future__ import annotations

import time


def matmul_peak(dtype, size: int = 4096, repeats: int = 5) -> float:
    """FLOP/s of a `size` x `size` matmul in `dtype` on all threads, after one warm-up."""
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def host_speed() -> dict[str, float]:
    """The fp32 and bf16 matmul peaks in GFLOP/s, measured now (about 3 s)."""
    import torch

    return {"fp32": matmul_peak(torch.float32) / 1e9, "bf16": matmul_peak(torch.bfloat16) / 1e9}


def describe(before: dict[str, float], after: dict[str, float]) -> str:
    """One sentence for a results section: the peaks before and after the runs."""
    return (f"Host speed, 4096x4096 matmul before / after the runs: fp32 {before['fp32']:.0f} / {after['fp32']:.0f} "
            f"GFLOP/s, bf16 {before['bf16']:.0f} / {after['bf16']:.0f} GFLOP/s.")
