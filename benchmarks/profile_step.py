"""Where a training step's time goes: torch.profiler's top operators for the steps benchmark b times.

    python benchmarks/profile_step.py [--case resnet18:64 --case efficientnet_lite0:128 ...] [--steps 6]
                                      [--by-shape] [--section TITLE] [--out docs/benchmarks.md]

Each case is one model (built-in or timm) from scratch at one input size, batch 32 (benchmark b's), trained the way
`imgcls train` trains it here: the precision `--precision auto` picks on this CPU (bf16 autocast or fp32),
channels_last for convolutional nets, Adam. The table lists the operators with the most self CPU time over
`--steps` steps after two warm-up steps, and the share of the step they take. `--by-shape` adds, per case, the
convolutions' forward and backward time for each input shape: which layers the convolution time is spent in.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results_file import command_line, replace_section  # noqa: E402

SECTION = "## Where the training step's time goes"
CONVOLUTIONS = ("aten::mkldnn_convolution", "aten::convolution_backward")
CASES = ("resnet18:64", "efficientnet_lite0:128", "vit_tiny_patch16_224:224")


def build_step(name: str, size: int, batch: int, channels: int, keep_memory: bool = True, precision: str = "auto"):
    """One training step of `name` (a built-in or timm model) at `size` px as imgcls runs it: its layout, the
    precision `auto` picks and (unless `keep_memory` is False) the kept freed memory of every imgcls run."""
    import torch

    from imgcls.engine.accelerator import keep_freed_memory
    from imgcls.engine.precision import choose_precision, to_channels_last, unfuse_cpu_attention
    from imgcls.models.registry import create_model

    if keep_memory:
        keep_freed_memory()

    model = create_model(name, num_classes=10, in_chans=channels, img_size=size)
    channels_last = to_channels_last(model)
    bf16 = choose_precision(precision, model, (batch, channels, size, size), channels_last=channels_last)[0] == "bf16"
    unfuse_cpu_attention(model, "bf16" if bf16 else "fp32")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)  # as imgcls builds it
    images = torch.randn(batch, channels, size, size)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,))

    def step(backward: bool = True) -> None:
        """One training step, or (backward=False) only its forward pass."""
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), torch.set_grad_enabled(backward):
            logits = model(images)
        if backward:
            torch.nn.functional.cross_entropy(logits.float(), labels).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return step, bf16, channels_last


def profile_case(name: str, size: int, batch: int, steps: int, channels: int = 3, by_shape: bool = False) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    step, bf16, channels_last = build_step(name, size, batch, channels)
    for _ in range(2):
        step()
    achieved = step_flops(step, steps, bf16)
    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=by_shape) as prof:
        for _ in range(steps):
            step()
    seconds = (time.perf_counter() - started) / steps
    events = sorted(prof.key_averages(), key=lambda event: event.self_cpu_time_total, reverse=True)
    total = sum(event.self_cpu_time_total for event in events)
    lines = [f"**{name} at {size} px, batch {batch}, {'bf16 autocast' if bf16 else 'fp32'}, "
             f"{'channels_last' if channels_last else 'NCHW'}**: {seconds * 1000:.0f} ms a step under the profiler "
             f"({batch / seconds:.0f} images/s). {achieved}", "",
             "| operator | self CPU ms per step | share | calls per step |", "|---|---|---|---|"]
    for event in events[:12]:
        lines.append(f"| `{event.key}` | {event.self_cpu_time_total / 1000 / steps:.1f} | "
                     f"{100 * event.self_cpu_time_total / total:.1f}% | {event.count // steps} |")
    return lines + [""] + (convolutions_by_shape(prof, steps, total) if by_shape else [])


def step_flops(step, steps: int, bf16: bool) -> str:
    """A sentence on the step's FLOPs and its speed without the profiler against the matmul peak in the step's
    precision, measured right after: how close the step runs to what the CPU can do. A step counts 3x its forward
    pass's FLOPs (torch.utils.flop_counter), the backward computing input and weight gradients of the forward's
    size each: the counter's own count of a convolution's backward is 40x too high for depthwise convolutions."""
    import torch
    from host import matmul_peak
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step(backward=False)
    flops = 3 * counter.get_total_flops()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - started) / steps
    peak = matmul_peak(torch.bfloat16 if bf16 else torch.float32)
    return (f"Without the profiler: {seconds * 1000:.0f} ms a step, {flops / 1e9:.1f} GFLOP "
            f"(3x the forward's, torch.utils.flop_counter), {flops / seconds / 1e9:.0f} GFLOP/s: {100 * flops / seconds / peak:.0f}% "
            f"of the {'bf16' if bf16 else 'fp32'} 4096x4096 matmul peak measured right after ({peak / 1e9:.0f} GFLOP/s).")


def convolutions_by_shape(prof, steps: int, total: float) -> list[str]:
    """The convolutions' self time per input shape (activation, weight), forward and backward side by side."""
    times: dict[str, dict[str, float]] = {}
    for event in prof.key_averages(group_by_input_shape=True):
        if event.key in CONVOLUTIONS:
            # backward's inputs are (grad_output, input, weight): name the layer by its input and weight
            shapes = event.input_shapes[:2] if event.key == CONVOLUTIONS[0] else event.input_shapes[1:3]
            layer = " * ".join("x".join(map(str, shape)) for shape in shapes)
            times.setdefault(layer, {})[event.key] = event.self_cpu_time_total / 1000 / steps
    ranked = sorted(times.items(), key=lambda item: sum(item[1].values()), reverse=True)
    lines = ["| convolution: input * weight | forward ms per step | backward ms per step | backward / forward | "
             "share of the step |", "|---|---|---|---|---|"]
    for layer, parts in ranked[:10]:
        forward, backward = parts.get(CONVOLUTIONS[0], 0.0), parts.get(CONVOLUTIONS[1], 0.0)
        ratio = f"{backward / forward:.1f}" if forward else ""
        lines.append(f"| {layer} | {forward:.1f} | {backward:.1f} | {ratio} | "
                     f"{100 * (forward + backward) * 1000 * steps / total:.1f}% |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append",
                        help="MODEL:PIXELS[:CHANNELS], repeatable (default: benchmark b's three, 3 channels)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--by-shape", action="store_true", help="add each case's convolutions by input shape")
    parser.add_argument("--section", default=SECTION, help="the section heading to write (or replace)")
    parser.add_argument("--out", default="docs/benchmarks.md")
    args = parser.parse_args()
    import torch

    from imgcls.environment import cpu_name

    lines = [args.section, "", f"`{command_line()}`",
             f"on {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}.", ""]
    for case in args.case or CASES:
        name, size, *channels = case.split(":")
        lines += profile_case(name, int(size), args.batch, args.steps, int(channels[0]) if channels else 3,
                              args.by_shape)
        print("\n".join(lines), flush=True)
    replace_section(Path(args.out), args.section, "\n".join(lines))


if __name__ == "__main__":
    main()
