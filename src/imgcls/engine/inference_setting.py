"""How the one inference path runs a model on this machine: its precision, memory layout and batch size.

On a GPU the answer is known (bf16 or fp16 autocast, channels_last for conv nets). On a CPU it is not: on one AMD
EPYC with native bf16, EfficientNet-Lite0's forward at 224 px ran 2.8x faster in bf16 than in fp32 (NCHW, batch 32)
and channels_last doubled that again, while CPUs without fast bf16 run it slower (as measured for training steps,
docs/benchmarks.md). So `auto` times the model's forward
pass in each candidate and keeps the fastest, remembered per CPU, torch version, model and input shape like the
training precision (engine/precision.py). bf16 must also answer as fp32 does: `precision_agreement` checks a
run's validation split once at the end of training (workflows/train_steps).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from imgcls.engine.accelerator import keep_freed_memory
from imgcls.engine.precision import (
    BF16_MIN_SPEEDUP,
    check_precision,
    cpu_supports_bf16,
    read_timings,
    uses_convolutions,
    write_timings,
)
from imgcls.environment import cpu_name
from imgcls.plan import TrainPlan

BATCH_SIZES = (16, 32, 64)  # the batches timed, the next only while the last was faster; the grid at the first
DEFAULT_BATCH = 32
MIN_FORWARD_S = 0.003  # a forward shorter than this (per batch) is too small to gain from bf16: fp32, not timed
MIN_AGREEMENT = 0.999  # bf16 is kept for inference only when the validation split's top-1 agrees this often
_TIMED_CALLS = 2  # timed forwards at least (after a warm-up; one if it takes _LONG_CALL_S)...
_TIMING_BUDGET_S = 0.3  # ...and more while they take less than this
_LONG_CALL_S = 0.25


@dataclass(frozen=True)
class InferenceSetting:
    """What the inference path runs a model in, and why."""

    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast)
    channels_last: bool = False  # NHWC memory for conv nets
    batch_size: int = DEFAULT_BATCH
    reason: str = ""

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def prepare(self, model: nn.Module) -> nn.Module:
        """`model` in eval mode and this setting's memory layout (changed in place)."""
        return model.eval().to(memory_format=self.memory_format)

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager:
        """The autocast context of this precision on `device_type` (a no-op for fp32)."""
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type, dtype=dtype, enabled=self.precision != "fp32")

    @classmethod
    def of_plan(cls, plan: TrainPlan | None) -> InferenceSetting | None:
        """What the run decided (None for a run that decided nothing: an older run, or one still training)."""
        if plan is None or not plan.inference_precision:
            return None
        return cls(plan.inference_precision, plan.inference_channels_last, plan.inference_batch_size,
                   plan.inference_reason)

    def in_plan(self, plan: TrainPlan) -> TrainPlan:
        """`plan` with this setting as its inference decision."""
        return dataclasses.replace(plan, inference_precision=self.precision, inference_channels_last=self.channels_last,
                                   inference_batch_size=self.batch_size, inference_reason=self.reason)


def fastest_setting(model: nn.Module, input_shape: tuple[int, int, int], requested: str = "auto",
                    cache_file: Path | None = None, pinned_auto: str | None = None,
                    allow_bf16: bool = True) -> InferenceSetting:
    """The fastest way to run `model`'s forward on (C, H, W) images here: on a CPU each candidate precision (for
    `auto`: fp32, and bf16 where the CPU has it and `allow_bf16`) and layout is timed, remembered in `cache_file`;
    on a GPU bf16/fp16 and channels_last for conv nets, unmeasured."""
    keep_freed_memory()  # time the forward as the run will make it (and make it so)
    convolutional = uses_convolutions(model)
    if requested == "auto" and pinned_auto is not None:
        check_precision(pinned_auto)
        return InferenceSetting(pinned_auto, convolutional, DEFAULT_BATCH, "auto pinned by IMGCLS_AUTO_PRECISION")
    if requested != "auto":
        check_precision(requested)
    if torch.cuda.is_available():
        precision = requested if requested != "auto" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
        return InferenceSetting(precision, convolutional, 64, "GPU" if requested == "auto" else "asked for")
    if requested != "auto":
        precisions = [requested]
    else:
        precisions = ["fp32", "bf16"] if allow_bf16 and cpu_supports_bf16() else ["fp32"]
    return _measured(model, input_shape, precisions, [False, True] if convolutional else [False], cache_file,
                     requested)


def _measured(model: nn.Module, input_shape: tuple[int, int, int], precisions: list[str], layouts: list[bool],
              cache_file: Path | None, requested: str) -> InferenceSetting:
    """The fastest of `precisions` x `layouts` at BATCH_SIZES[0], then of BATCH_SIZES for it; bf16 only when
    BF16_MIN_SPEEDUP faster than the best fp32."""
    key = "|".join(["inference", cpu_name(), torch.__version__, str(torch.get_num_threads()), type(model).__name__,
                    str(sum(p.numel() for p in model.parameters())), "x".join(map(str, input_shape))])
    remembered = read_timings(cache_file)
    timings: dict[str, float] = remembered.get(key, {})  # "precision|layout|batch" -> seconds per image
    trial = copy.deepcopy(model).eval()

    def per_image(precision: str, channels_last: bool, batch: int) -> float:
        name = f"{precision}|{'cl' if channels_last else 'nchw'}|{batch}"
        if name not in timings:
            with torch.random.fork_rng():  # the run must not depend on whether this was measured or remembered
                timings[name] = forward_seconds(trial, (batch, *input_shape), precision, channels_last) / batch
        return timings[name]

    try:
        grid = {(precision, layout): per_image(precision, layout, BATCH_SIZES[0])
                for precision in precisions for layout in layouts}
        if min(grid.values()) * BATCH_SIZES[0] < MIN_FORWARD_S:
            return InferenceSetting(precisions[0], False, DEFAULT_BATCH,
                                    "a forward this small is too short to gain from bf16 or channels_last")
        fp32 = [key for key in grid if key[0] == "fp32"]
        precision, layout = min(grid, key=grid.__getitem__)
        if precision == "bf16" and fp32 and grid[min(fp32, key=grid.__getitem__)] / grid[(precision, layout)] < \
                BF16_MIN_SPEEDUP:
            precision, layout = min(fp32, key=grid.__getitem__)
        batch = BATCH_SIZES[0]
        for larger in BATCH_SIZES[1:]:  # on CPUs small batches are often the fastest (caches): stop at the turn
            if per_image(precision, layout, larger) >= per_image(precision, layout, batch):
                break
            batch = larger
    finally:
        remembered[key] = timings
        write_timings(cache_file, remembered)
    return InferenceSetting(precision, layout, batch, _reason(grid, precision, layout, batch, requested))


def _reason(grid: dict[tuple[str, bool], float], precision: str, layout: bool, batch: int, requested: str) -> str:
    """One sentence: the images/s of the chosen setting (at BATCH_SIZES[0]) and against fp32 NCHW, as measured."""
    chosen = 1 / grid[(precision, layout)]
    plain = grid.get(("fp32", False))
    than = f", {chosen * plain:.1f}x fp32 NCHW" if plain and (precision, layout) != ("fp32", False) else ""
    asked = f"{precision} asked for; " if requested != "auto" else ""
    return f"{asked}measured {chosen:.0f} images/s at batch {BATCH_SIZES[0]}{than}; batch {batch} fastest"


def forward_seconds(model: nn.Module, input_shape: tuple[int, ...], precision: str, channels_last: bool) -> float:
    """Seconds of one inference forward of `model` on random inputs of `input_shape`, the fastest of a few."""
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    images = torch.randn(*input_shape)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    setting = InferenceSetting(precision, channels_last)
    times: list[float] = []
    with torch.inference_mode(), setting.autocast("cpu"):
        model(images)  # warm-up: oneDNN builds its kernels on the first call
        while not times or (len(times) < _TIMED_CALLS and times[0] < _LONG_CALL_S) or \
                (sum(times) < _TIMING_BUDGET_S and len(times) < 10):
            started = time.perf_counter()
            model(images)
            times.append(time.perf_counter() - started)
    return min(times)
