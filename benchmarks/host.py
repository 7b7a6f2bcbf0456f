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


EMULATED_BF16_SIZE = 512  # without native bf16 a 4096x4096 bf16 matmul runs at about 1 GFLOP/s: minutes


def host_speed() -> dict[str, float]:
    """The fp32 and bf16 matmul peaks in GFLOP/s, measured now (about 3 s); on a CPU without native bf16 the
    bf16 one at EMULATED_BF16_SIZE (its "peak" is then the emulation's speed)."""
    import torch

    from imgcls.engine.precision import cpu_supports_bf16

    bf16_size = 4096 if cpu_supports_bf16() else EMULATED_BF16_SIZE
    return {"fp32": matmul_peak(torch.float32) / 1e9,
            "bf16": matmul_peak(torch.bfloat16, bf16_size, 1 if bf16_size < 4096 else 5) / 1e9,
            "bf16_size": bf16_size}


def describe(before: dict[str, float], after: dict[str, float]) -> str:
    """One sentence for a results section: the peaks before and after the runs."""
    bf16 = f"bf16 {before['bf16']:.0f} / {after['bf16']:.0f} GFLOP/s"
    if before.get("bf16_size", 4096) != 4096:
        bf16 = (f"bf16 (no native bf16 on this CPU: emulated, timed at {before['bf16_size']}x{before['bf16_size']}) "
                f"{before['bf16']:.1f} / {after['bf16']:.1f} GFLOP/s")
    return (f"Host speed, 4096x4096 matmul before / after the runs: fp32 {before['fp32']:.0f} / {after['fp32']:.0f} "
            f"GFLOP/s, {bf16}.")
