"""Numeric precision and memory layout: what `--precision auto` picks, and channels_last for conv nets.

On GPUs the answer is known (bf16 where supported, else fp16 with a grad scaler). On CPUs it is not:
bf16 autocast is faster on some CPUs and slower on others (on one 2-core Intel Xeon this project was measured on,
oneDNN's bf16 matmul ran at half the fp32 rate; see docs/benchmarks.md), so `auto` times a
few training steps of the actual model in both and keeps bf16 only when it is clearly faster. The answer
is remembered per CPU, torch version, model and input shape.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch
from torch import nn

from imgcls.atomic import write_json_atomic
from imgcls.config import PRECISIONS
from imgcls.console import warn
from imgcls.engine.accelerator import cpu_only, freed_memory_kept, keep_freed_memory, process_state, share_from_main
from imgcls.environment import cpu_name
from imgcls.errors import ImgclsError

BF16_MIN_SPEEDUP = 1.10  # bf16 must be this much faster than fp32 to be chosen by auto
MIN_TIMED_STEP_S = 0.005  # a step shorter than this is timer noise (a linear head): auto keeps fp32
_TIMED_STEPS = 3  # timed steps at least (after a warm-up step)...
_TIMING_BUDGET_S = 0.6  # ...and more while they take less than this
_MAX_TIMED_STEPS = 30
_LONG_STEPS_S = 3.0  # fewer than _TIMED_STEPS steps once they add up to this: slow-downs average out in long steps


def cpu_supports_bf16() -> bool:
    """The CPU has native bf16 instructions (AVX512-BF16, AMX or Arm BF16) that oneDNN uses."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def check_precision(precision: str) -> None:
    """Reject a precision that does not exist, or that the hardware cannot run, with the alternative to use."""
    if precision not in PRECISIONS:
        raise ImgclsError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    on_gpu = torch.cuda.is_available()
    if precision == "fp16" and not on_gpu:
        raise ImgclsError("--precision fp16 needs a CUDA GPU (it relies on a grad scaler there); "
                          "on a CPU use --precision bf16 or fp32")
    if precision == "bf16" and on_gpu and not torch.cuda.is_bf16_supported():
        raise ImgclsError("this GPU has no bf16 support; use --precision fp16 (with a grad scaler) or fp32")
    if precision == "bf16" and not on_gpu and not cpu_supports_bf16():
        warn("this CPU has no native bf16 instructions (lscpu: no avx512_bf16 or amx_bf16): bf16 is emulated, "
             "about 10x slower than fp32 for a conv net's training step and 100x for matmuls; use --precision fp32 "
             "or auto")


def choose_precision(requested: str, model=None, input_shape: tuple[int, ...] | None = None,
                     cache_file: Path | None = None, channels_last: bool = False,
                     pinned_auto: str | None = None) -> tuple[str, str]:
    """The precision to run in, and why: (fp32|bf16|fp16, reason).

    `auto` on a CPU with native bf16 times `model` on random inputs of `input_shape` (batch included)
    in fp32 and in bf16 autocast, unless `cache_file` already holds the answer for this setup.
    `pinned_auto` (from $IMGCLS_AUTO_PRECISION) makes `auto` mean that precision without measuring.
    """
    if requested == "auto" and pinned_auto is not None:
        check_precision(pinned_auto)
        return pinned_auto, "auto pinned by IMGCLS_AUTO_PRECISION"
    if requested != "auto":
        check_precision(requested)
        return requested, "asked for"
    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return "bf16", "GPU with bf16"
        return "fp16", "GPU without bf16 (fp16 with a grad scaler)"
    if not torch.backends.mps.is_available() and cpu_supports_bf16() and model is not None and input_shape:
        return _measured_cpu_choice(model, input_shape, cache_file, channels_last)
    return "fp32", "no faster precision on this device"


def agreed_precision(requested: str, model, input_shape, cache_file, channels_last: bool,
                     pinned_auto: str | None = None) -> tuple[str, str]:
    """choose_precision, decided (and measured, for auto) by the main process; every process uses its answer."""
    keep_freed_memory()  # time the steps as training will run them
    answer = None
    if process_state().is_main_process:
        answer = choose_precision(requested, model, input_shape, cache_file, channels_last, pinned_auto)
    return share_from_main(answer)


def _measured_cpu_choice(model, input_shape, cache_file: Path | None, channels_last: bool) -> tuple[str, str]:
    key = "|".join([cpu_name(), torch.__version__, str(torch.get_num_threads()), type(model).__name__,
                    str(sum(p.numel() for p in model.parameters())), "x".join(map(str, input_shape)),
                    "cl" if channels_last else "nchw", "heap-kept" if freed_memory_kept() else "heap-default"])
    remembered = read_timings(cache_file)
    if key not in remembered:
        with torch.random.fork_rng():  # the run must not depend on whether this was measured or remembered
            fp32 = step_seconds(model, input_shape, False, channels_last)
            bf16 = step_seconds(model, input_shape, True, channels_last)
        remembered[key] = {"fp32_s": round(fp32, 4), "bf16_s": round(bf16, 4)}
        write_timings(cache_file, remembered)
    timing = remembered[key]
    if timing["fp32_s"] < MIN_TIMED_STEP_S:
        return "fp32", "a step this small is too short to gain from bf16"
    speedup = timing["fp32_s"] / max(timing["bf16_s"], 1e-9)
    if speedup >= BF16_MIN_SPEEDUP:
        return "bf16", f"bf16 measured {speedup:.2f}x faster than fp32 here"
    return "fp32", f"bf16 measured {speedup:.2f}x the speed of fp32 here"


def read_timings(cache_file: Path | None) -> dict:
    """The timings remembered in `cache_file` ({} when there are none or it is unreadable)."""
    if cache_file is None or not cache_file.is_file():
        return {}
    try:
        values = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}
    return values if isinstance(values, dict) else {}


def write_timings(cache_file: Path | None, timings: dict) -> None:
    """Remember `timings` in `cache_file`; an unwritable cache only costs the measurement next time."""
    if cache_file is None:
        return
    try:
        write_json_atomic(cache_file, timings)
    except OSError:
        pass


PROBE_PIXELS = 256 * 28 * 28  # auto times batches of up to this many pixels (at least 16 images, at most the batch)


def probe_batch(batch_size: int, img_size: int) -> int:
    """The batch auto times: the run's own where small (bf16's gain grows with the batch: 1.1-1.3x for the
    Fashion-MNIST recipe's net at 32 images, 1.5x at its 256), else 16 images or PROBE_PIXELS, the larger (16
    images of 224 px are 4x PROBE_PIXELS already; 32 doubled the timing of a 224-px run for nothing)."""
    return min(batch_size, max(16, PROBE_PIXELS // (img_size * img_size)))


def step_seconds(model, input_shape, bf16: bool, channels_last: bool) -> float:
    """Seconds of one forward+backward step of a copy of `model` (its weights and statistics stay untouched).

    The fastest of at least _TIMED_STEPS steps, or of as many as add up to _LONG_STEPS_S (ViT-B/16's 32-image
    step took 143 s to time four times in fp32 and bf16; one step of 1.9 s was too few for EfficientNet-Lite0 at
    224 px, which it once timed at 0.99x where bf16 trains 1.2x faster), more while they add up to under
    _TIMING_BUDGET_S: a shared 2-core machine slows single steps at random, and a mean of two 15 ms steps once
    made auto pick fp32 for the Fashion-MNIST recipe (1.09x) where bf16 is 1.5x faster.
    """
    trial = copy.deepcopy(model).train()
    if bf16:
        unfuse_cpu_attention(trial, "bf16")  # time bf16 as training would run it
    images = torch.randn(*input_shape)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            output = trial(images)
        output.float().square().mean().backward()

    step()  # warm-up: oneDNN builds its kernels on the first call
    times: list[float] = []
    while not times or (len(times) < _TIMED_STEPS and sum(times) < _LONG_STEPS_S) or \
            (sum(times) < _TIMING_BUDGET_S and len(times) < _MAX_TIMED_STEPS):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return min(times)


MAX_UNFUSED_TOKENS = 256  # above this, the attention matrices of plain matmuls grow past what a CPU run should hold


def unfuse_cpu_attention(model, precision: str) -> bool:
    """bf16 on a CPU: timm's attention as plain matmuls and a softmax instead of the fused (flash) kernel.

    PyTorch's CPU flash attention is slow in bf16, its backward above all (a third of a ViT-S/16 step): at
    ViT token counts the plain path runs its two matmuls on oneDNN's bf16 kernels, 1.3x (ViT-S/16) to 1.5x
    (ViT-Ti/16) faster per training step (docs/benchmarks.md, "ViT-S training step"). Only up to
    MAX_UNFUSED_TOKENS patches, where the extra memory (batch x heads x tokens^2) stays small; fp32 and GPUs
    keep the fused kernel, which is the faster one there. Returns whether anything changed.
    """
    patches = getattr(getattr(model, "patch_embed", None), "num_patches", None)
    if precision != "bf16" or not cpu_only() or patches is None or patches > MAX_UNFUSED_TOKENS:
        return False
    changed = False
    for module in model.modules():
        if getattr(module, "fused_attn", None) is True:
            module.fused_attn = False
            changed = True
    return changed


def uses_convolutions(model) -> bool:
    """The model has 2-D convolutions beyond a ViT's patch embedding (kernel == stride)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.kernel_size != module.stride:
            return True
    return False


def to_channels_last(model) -> bool:
    """Move a convolutional model to channels_last (NHWC) memory; returns whether it did."""
    if not uses_convolutions(model):
        return False
    model.to(memory_format=torch.channels_last)
    return True
