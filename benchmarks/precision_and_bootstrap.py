"""Two small measurements behind design choices, side by side in one run:

1. CPU training-step throughput, fp32 vs bf16 autocast, for the conv nets `--precision auto` covers.
2. Cost of the 1,000-resample bootstrap intervals at typical split sizes.

    python benchmarks/precision_and_bootstrap.py [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import imgcls
from imgcls.metrics.bootstrap import bootstrap_intervals

sys.path.insert(0, str(Path(__file__).parent))
from results_file import command_line, replace_section  # noqa: E402

MARKER = "## CPU precision and bootstrap cost"


def step_throughput(name: str, bf16: bool, batch: int = 128, steps: int = 10) -> float:
    """Images per second of forward+backward+AdamW on 1x28x28 inputs."""
    torch.manual_seed(0)
    model = imgcls.create_model(name, num_classes=10, in_chans=1, img_size=28)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    images, labels = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(images)
        torch.nn.functional.cross_entropy(logits.float(), labels).backward()
        optimizer.step()
        optimizer.zero_grad()

    for _ in range(3):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - started)


def bootstrap_seconds(samples: int, classes: int) -> float:
    targets = torch.randint(0, classes, (samples,))
    logits = torch.randn(samples, classes)
    logits[torch.arange(samples), targets] += 2
    started = time.perf_counter()
    bootstrap_intervals(logits.softmax(1), targets, resamples=1000)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/benchmarks.md")
    args = parser.parse_args()
    lines = [MARKER, "", f"`{command_line()}`",
             "", "Training step, batch 128, 1x28x28, one process, images/s:", "",
             "| model | fp32 | bf16 autocast | bf16 / fp32 |", "|---|---|---|---|"]
    for name in ("multilayer_cnn", "resnet10t", "mobilenetv3_small_100", "efficientnet_lite0"):
        fp32, bf16 = step_throughput(name, False), step_throughput(name, True)
        lines.append(f"| {name} | {fp32:.0f} | {bf16:.0f} | {bf16 / fp32:.2f} |")
    lines += ["", "Bootstrap intervals, 1,000 resamples (all interval metrics incl. ROC-AUC):", "",
              "| predictions | classes | seconds |", "|---|---|---|"]
    for samples, classes in ((1600, 2), (10000, 10), (48000, 10), (10000, 100)):
        lines.append(f"| {samples} | {classes} | {bootstrap_seconds(samples, classes):.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    replace_section(Path(args.out), MARKER, text)

if __name__ == "__main__":
    main()
