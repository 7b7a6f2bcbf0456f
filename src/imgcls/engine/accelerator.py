"""The Accelerator of a run (one per run, whatever ran before in the process) and the process layout."""

from __future__ import annotations

import ctypes
import datetime
import os
from contextlib import contextmanager
from typing import Iterator

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, broadcast_object_list, set_seed

from imgcls.console import quiet_unless_main


@contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """With `enabled` (--deterministic), torch's deterministic algorithms only and no cuDNN autotuning while the
    block runs (cuBLAS gets the workspace setting it needs for that); the process's settings are restored after."""
    if not enabled:
        yield
        return
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]


def make_accelerator(precision: str, seed: int | None = None, find_unused_parameters: bool = False,
                     compile_model: bool = False, log_with: list | None = None):
    """An Accelerator for `precision` (fp32 / bf16 / fp16, already resolved), with seedable shuffling.

    find_unused_parameters lets DDP cope with parameters that are frozen for some epochs; compile_model
    has `prepare` wrap the model in torch.compile (inductor); log_with: Accelerate trackers (engine/tracking.py).
    """
    keep_freed_memory()
    mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
    # Accelerate fixes precision and compile settings once per process (a shared state); every imgcls run
    # owns a fresh Accelerator instead, so train/evaluate/predict can follow each other in one process with
    # any settings. The process group (PartialState) is kept, so this holds under torchrun too.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    accelerator = Accelerator(
        cpu=cpu_only(),
        mixed_precision=mixed,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)],
        dynamo_backend="inductor" if compile_model else "no",
        log_with=log_with or None,
    )
    if seed is not None:
        set_seed(seed)
    return accelerator


_MMAP_THRESHOLD = 32 << 20  # blocks up to this size come from the heap (glibc's documented maximum)
_TRIM_THRESHOLD = 1 << 30  # free memory the heap keeps before handing any back to the OS
_KEPT: bool | None = None  # keep_freed_memory's outcome in this process (None: not tried yet)


def keep_freed_memory() -> bool:
    """Have glibc's malloc reuse freed memory for the next training step instead of returning it to the OS.

    By default glibc serves large blocks with fresh mmap'd pages and trims the heap after frees, so a CPU
    training step page-faults part of its activations in anew each time (a 3-epoch Fashion-MNIST recipe run
    spent 11 s in the kernel; 1 s with this). Keeping up to 1 GiB of freed heap is what jemalloc/tcmalloc
    (the usual LD_PRELOAD advice) would do, without preloading anything: 1.04-1.13x faster steps side by
    side (docs/benchmarks.md, "Kept freed memory"). No-op, returning False, where the C library is not glibc
    (macOS, musl, Windows). Idempotent.
    """
    global _KEPT
    if _KEPT is None:
        _KEPT = False
        try:
            libc = ctypes.CDLL("libc.so.6")
            m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
            _KEPT = bool(libc.mallopt(m_mmap_threshold, _MMAP_THRESHOLD)) and bool(
                libc.mallopt(m_trim_threshold, _TRIM_THRESHOLD))
        except (OSError, AttributeError):
            pass
    return _KEPT



def freed_memory_kept() -> bool:
    """Whether keep_freed_memory() has taken effect in this process (without calling it)."""
    return bool(_KEPT)


def cpu_only() -> bool:
    """No accelerator present; Accelerate then needs cpu=True to run several processes with gloo."""
    return not torch.cuda.is_available() and not torch.backends.mps.is_available()


def process_state(timeout_s: float | None = None) -> PartialState:
    """This process's place in the job (Accelerate's PartialState: rank, world size, main or not).

    The first call starts the process group under torchrun / accelerate launch, with `timeout_s` for every
    collective: a rank that waits longer for the others (one of them hung) fails instead of waiting forever.
    Non-main processes stop printing (errors excepted).
    """
    options = {"timeout": datetime.timedelta(seconds=timeout_s)} if timeout_s else {}
    state = PartialState(cpu=cpu_only(), **options)  # cpu=True lets torchrun start multi-process CPU (gloo) runs
    quiet_unless_main(state.is_main_process)
    return state


def share_from_main(value):
    """`value` as computed by the main process, on every process (a no-op in a single process)."""
    state = process_state()
    if state.num_processes == 1:
        return value
    box = [value]
    broadcast_object_list(box)
    return box[0]
