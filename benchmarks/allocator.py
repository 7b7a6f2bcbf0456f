"""Training-step time with glibc's default malloc settings vs imgcls's kept freed memory, side by side.

    python benchmarks/allocator.py [--case fastcnn:28:1 --case resnet18:64 ...] [--batch 256] [--rounds 3]
                                   [--out docs/benchmarks.md]

Every imgcls run calls `imgcls.engine.accelerator.keep_freed_memory()` (mallopt: blocks up to 32 MiB from
the heap, up to 1 GiB of freed heap kept). Each measurement is a new process that builds the step as
benchmarks/profile_step.py does (bf16 autocast where the CPU has native bf16, else fp32; channels_last for
conv nets; fused Adam), runs 3 warm-up steps and times `--steps` more; the two settings alternate round by
round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results_file import command_line, replace_section  # noqa: E402

SECTION = "## Kept freed memory: training steps with and without"
CASES = ("fastcnn:28:1", "resnet18:64", "efficientnet_lite0:128", "vit_tiny_patch16_224:224")


def child(case: str, keep: bool, batch: int, steps: int) -> None:
    from profile_step import build_step

    from imgcls.engine.precision import cpu_supports_bf16

    name, size, *channels = case.split(":")
    step, bf16, _ = build_step(name, int(size), batch, int(channels[0]) if channels else 3, keep_memory=keep,
                               precision="bf16" if cpu_supports_bf16() else "fp32")  # both settings alike
    for _ in range(3):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    print(json.dumps({"ms": (time.perf_counter() - started) / steps * 1000, "bf16": bf16}))


def measure(case: str, keep: bool, batch: int, steps: int) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", case, "--keep" if keep else "--default",
                             "--batch", str(batch), "--steps", str(steps)], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{case} failed:\\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", help="MODEL:PIXELS[:CHANNELS], repeatable")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="docs/benchmarks.md")
    parser.add_argument("--section", default=SECTION, help="the heading of docs/benchmarks.md to replace")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--keep", dest="keep", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--default", dest="keep", action="store_false", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.keep, args.batch, args.steps)
        return
    import torch

    from imgcls.environment import cpu_name

    lines = [args.section, "", f"`{command_line()}`",
             f"on {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; batch {args.batch}, "
             f"median ms per step over {args.rounds} rounds of {args.steps} steps, each a new process, the two "
             "settings alternating.", "",
             "| model | px | precision | glibc default ms/step | kept freed memory ms/step | speed-up |",
             "|---|---|---|---|---|---|"]
    for case in args.case or CASES:
        times = {True: [], False: []}
        for _ in range(args.rounds):
            for keep in (False, True):
                found = measure(case, keep, args.batch, args.steps)
                times[keep].append(found["ms"])
        default, kept = statistics.median(times[False]), statistics.median(times[True])
        name, size, *_ = case.split(":")
        lines.append(f"| {name} | {size} | {'bf16' if found['bf16'] else 'fp32'} | {default:.1f} | {kept:.1f} | "
                     f"{default / kept:.2f}x |")
        print(lines[-1], flush=True)
    replace_section(Path(args.out), args.section, "\n".join(lines))


if __name__ == "__main__":
    main()
