"""Speed benchmarks of issue 5, measured side by side in one run and written to docs/benchmarks.md.

    python benchmarks/speed.py [--only a,b,c,d] [--vit vit_small_patch16_224] [--section "## Speed ..."]
                               [--out docs/benchmarks.md]

a. time-to-accuracy: `imgcls train fashion-mnist` (its default recipe), process start to final metrics;
b. training throughput of imgcls against a plain PyTorch loop of the kind tutorials write (ImageFolder,
   PIL decoding every epoch, fp32, Adam), same model, same JPEG folder, same batch size, same epochs,
   with the validation accuracy each reaches;
c. achieved FLOP/s of a ViT training step against the measured fp32 and bf16 matmul peak;
d. data time vs step time per epoch, with and without the decoded-image cache.
(e, start-up latency, is benchmarks/startup.py.)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results_file import command_line, replace_section  # noqa: E402
from host import describe, host_speed, matmul_peak  # noqa: E402

from imgcls.engine.precision import cpu_supports_bf16  # noqa: E402

IMGCLS = [sys.executable, "-m", "imgcls"]
JPEG_SIDE = 320  # source JPEGs: the size of a typical downloaded photo dataset after a first resize
BATCH = 32
EPOCHS = 3
THROUGHPUT_CASES = (("resnet18", 64), ("efficientnet_lite0", 128), ("vit_tiny_patch16_224", 224))


def machine() -> str:
    from imgcls.environment import cpu_name

    import torch

    return f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {platform.python_version()}"


# --- a: time to accuracy ---

def time_to_accuracy(work: Path) -> list[str]:
    """`imgcls train fashion-mnist` in a new process: wall time to metrics.json and to the finished report."""
    started = time.time()
    result = subprocess.run([*IMGCLS, "train", "fashion-mnist", "--runs-dir", str(work / "runs-a"), "--name", "recipe"],
                            capture_output=True, text=True)
    finished = time.time()
    if result.returncode != 0:
        raise SystemExit(f"benchmark a failed:\n{result.stderr[-2000:]}")
    run = work / "runs-a" / "recipe"
    to_metrics = (run / "metrics.json").stat().st_mtime - started
    metrics = json.loads((run / "metrics.json").read_text())
    summary = json.loads((run / "run.json").read_text())
    test = metrics["test"]["accuracy"]
    low, high = test["ci95"]
    verdict = "met" if test["value"] >= 0.94 and to_metrics <= 300 else "NOT met"
    return [
        "### a. Time to accuracy: `imgcls train fashion-mnist` (recipe fashion-mnist)", "",
        f"`imgcls train fashion-mnist` in a new process, real Fashion-MNIST (Debian's dataset-fashion-mnist), "
        f"{summary['model']} {summary['parameters']:,} parameters, {summary['epochs_run']} epochs, "
        f"precision {summary['precision']} ({summary['precision_reason']}), channels_last "
        f"{summary['channels_last']}. Target: test accuracy >= 94.0% within 5 min, process start to final metrics.",
        "",
        "| process start to final metrics | to finished report.html | training (epochs) | test accuracy [95% CI] | target |",
        "|---|---|---|---|---|",
        f"| {to_metrics:.0f} s | {finished - started:.0f} s | {summary['training_time_s']:.0f} s | "
        f"{test['value']:.4f} [{low:.4f}, {high:.4f}] | {verdict} |",
    ]


# --- b: throughput against a plain loop ---

def make_jpeg_folder(root: Path, train_per_class: int, val_per_class: int) -> Path:
    """Fashion-MNIST images as a train/ val/ folder of RGB JPEGs, JPEG_SIDE px, one folder per class."""
    import numpy as np
    from PIL import Image

    from imgcls.config import default_data_root
    from imgcls.data.builtin import load_builtin

    images, labels, class_names = load_builtin("fashion-mnist", default_data_root(), train=True)
    rng = np.random.default_rng(0)
    for split, count, offset in (("train", train_per_class, 0), ("val", val_per_class, train_per_class)):
        for label, name in enumerate(class_names):
            folder = root / split / name.replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            chosen = np.flatnonzero(labels == label)[offset : offset + count]
            for index in chosen:
                tint = rng.uniform(0.7, 1.0, size=3)  # a little colour, so the JPEGs are real 3-channel files
                gray = Image.fromarray(images[index, 0]).resize((JPEG_SIDE, JPEG_SIDE), Image.Resampling.BICUBIC)
                rgb = (np.asarray(gray, dtype=np.float32)[..., None] * tint).astype(np.uint8)
                Image.fromarray(rgb).save(folder / f"{index}.jpg", quality=90)
    return root


PLAIN_LOOP = '''
import sys, time, timm, torch
from torchvision import datasets, transforms
from torch.utils.data import DataLoader
name, size, folder, epochs, batch, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
torch.manual_seed(seed)
norm = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
train_tf = transforms.Compose([transforms.Resize((size, size)), transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm])
val_tf = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(), norm])
train_set = datasets.ImageFolder(folder + "/train", train_tf)
val_set = datasets.ImageFolder(folder + "/val", val_tf)
train_loader = DataLoader(train_set, batch_size=batch, shuffle=True, num_workers=2)
val_loader = DataLoader(val_set, batch_size=batch, num_workers=2)
kwargs = {"img_size": size} if "vit" in name else {}
model = timm.create_model(name, num_classes=len(train_set.classes), **kwargs)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
criterion = torch.nn.CrossEntropyLoss()
epoch_times = []
for epoch in range(epochs):
    model.train()
    started = time.perf_counter()
    for images, labels in train_loader:
        optimizer.zero_grad()
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
    epoch_times.append(time.perf_counter() - started)
model.eval()
correct = 0
with torch.no_grad():
    for images, labels in val_loader:
        correct += (model(images).argmax(1) == labels).sum().item()
print("RESULT", len(train_set), ",".join(f"{t:.3f}" for t in epoch_times), correct / len(val_set))
'''


def plain_loop(name: str, size: int, folder: Path, work: Path, seed: int = 0) -> dict:
    script = work / "plain_loop.py"
    script.write_text(PLAIN_LOOP)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(script), name, str(size), str(folder), str(EPOCHS), str(BATCH),
                             str(seed)],
                            capture_output=True, text=True)
    wall = time.perf_counter() - started
    line = next((line for line in result.stdout.splitlines() if line.startswith("RESULT")), None)
    if line is None:
        raise SystemExit(f"plain loop failed:\n{result.stderr[-2000:]}")
    _, count, times, accuracy = line.split()
    epoch_times = [float(t) for t in times.split(",")]
    return {"images_per_s": int(count) / min(epoch_times[1:]), "accuracy": float(accuracy), "wall_s": wall,
            "epoch_times": epoch_times}


def imgcls_run(name: str, size: int, folder: Path, work: Path, run_name: str, *extra: str, seed: int = 0) -> dict:
    """The same training through `imgcls train` (adam, lr 1e-3 constant, flips only, no weight decay)."""
    runs = work / "runs-b"
    started = time.perf_counter()
    result = subprocess.run(
        [*IMGCLS, "train", str(folder), "--model", name, "--img-size", str(size), "--epochs", str(EPOCHS),
         "--batch-size", str(BATCH), "--optimizer", "adam", "--lr", "1e-3", "--scheduler", "constant",
         "--warmup-epochs", "0", "--weight-decay", "0", "--augment", "light", "--crop-padding", "0",
         "--seed", str(seed), "--runs-dir", str(runs), "--name", run_name, *extra],
        capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"imgcls run failed:\n{result.stderr[-2000:]}")
    with open(runs / run_name / "history.csv") as file:
        history = list(csv.DictReader(file))
    summary = json.loads((runs / run_name / "run.json").read_text())
    return {"images_per_s": max(float(row["train_images_per_s"]) for row in history[1:]),
            "accuracy": float(history[-1]["val_accuracy"]), "wall_s": wall, "history": history,
            "precision": summary["precision"], "channels_last": summary["channels_last"],
            "cache": summary["image_cache"]}


def throughput(work: Path, folder: Path, cases=THROUGHPUT_CASES) -> list[str]:
    lines = [
        "### b. Training throughput: imgcls vs a plain PyTorch loop", "",
        f"Same JPEG folder (Fashion-MNIST upscaled to {JPEG_SIDE}x{JPEG_SIDE} RGB JPEGs, quality 90; "
        f"{_count(folder / 'train')} train / {_count(folder / 'val')} val images, 10 classes), same timm model "
        f"from scratch, batch {BATCH}, Adam lr 1e-3, horizontal flips, {EPOCHS} epochs. The plain loop is "
        "torchvision ImageFolder + Resize + ToTensor + Normalize, PIL decoding every epoch, fp32, NCHW, "
        "DataLoader(num_workers=2). imgcls runs its defaults (`--cache auto`, `--precision auto`, channels_last). "
        "Images/s is the best training epoch after the first (steady state; epoch time without validation); "
        "wall is the whole process, start-up and imgcls's decoding, evaluation and report included. "
        "Accuracy: validation accuracy after the last epoch. Target: >= 3x at equal or better accuracy.", "",
        "| model | px | plain img/s | imgcls img/s | speed-up | plain wall | imgcls wall | plain val acc | imgcls val acc | imgcls precision, layout |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, size in cases:
        plain = plain_loop(name, size, folder, work)
        ours = imgcls_run(name, size, folder, work, f"{name}-{size}")
        layout = "channels_last" if ours["channels_last"] else "NCHW"
        lines.append(f"| {name} | {size} | {plain['images_per_s']:.1f} | {ours['images_per_s']:.1f} | "
                     f"{ours['images_per_s'] / plain['images_per_s']:.2f}x | {plain['wall_s']:.0f} s | "
                     f"{ours['wall_s']:.0f} s | {plain['accuracy']:.3f} | {ours['accuracy']:.3f} | "
                     f"{ours['precision']}, {layout} |")
        print(lines[-1], flush=True)
    return lines


def accuracy_over_seeds(work: Path, folder: Path, seeds: int, name: str = "resnet18", size: int = 64) -> list[str]:
    """One seed per pipeline says little after 3 epochs on 1,000 images: repeat the cheapest case."""
    import statistics

    plain = [plain_loop(name, size, folder, work, seed)["accuracy"] for seed in range(1, seeds + 1)]
    ours = [imgcls_run(name, size, folder, work, f"{name}-seed{seed}", seed=seed)["accuracy"]
            for seed in range(1, seeds + 1)]

    def spread(values: list[float]) -> str:
        if len(values) == 1:  # one seed: no spread to report
            return f"{values[0]:.3f}"
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f} ({', '.join(f'{v:.3f}' for v in values)})"

    return [f"Validation accuracy of {name} at {size} px over seeds 1-{seeds} (same settings as above; mean ± sd):",
            "", "| pipeline | val accuracy after 3 epochs |", "|---|---|",
            f"| plain loop | {spread(plain)} |", f"| imgcls | {spread(ours)} |"]


def _count(folder: Path) -> int:
    return sum(1 for path in folder.rglob("*.jpg"))


# --- c: ViT FLOP/s against the matmul peak ---

def vit_step_flops(name: str = "vit_tiny_patch16_224", size: int = 224, batch: int = 64) -> list[str]:
    import timm
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from imgcls.engine.accelerator import keep_freed_memory
    from imgcls.engine.precision import unfuse_cpu_attention

    keep_freed_memory()  # as every imgcls run does
    model = timm.create_model(name, num_classes=10)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3, fused=True)  # as imgcls builds it
    images, labels = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(images)
        torch.nn.functional.cross_entropy(logits.float(), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step(False)
    flops = counter.get_total_flops()
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    lines = [
        "### c. ViT training step: achieved FLOP/s vs the matmul peak", "",
        f"{name} at {size} px, batch {batch}, forward + backward + AdamW (fused, as imgcls builds it), one process; FLOPs counted by "
        f"torch.utils.flop_counter ({flops / batch / 1e9:.2f} GFLOP per image per step); peak = a 4096x4096 "
        "matmul in the same dtype, measured in the same run.", "",
        "| precision | step time | images/s | achieved GFLOP/s | matmul peak GFLOP/s | % of that peak | % of the fp32 peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, bf16 in (("fp32", False), ("bf16 autocast", True)):
        if bf16:
            unfuse_cpu_attention(model, "bf16")  # as imgcls trains in bf16 on a CPU
        step(bf16)
        started = time.perf_counter()
        repeats = 3
        for _ in range(repeats):
            step(bf16)
        seconds = (time.perf_counter() - started) / repeats
        achieved = flops / seconds
        peak = peaks["bf16" if bf16 else "fp32"]
        lines.append(f"| {label} | {seconds:.2f} s | {batch / seconds:.1f} | {achieved / 1e9:.0f} | {peak / 1e9:.0f} | "
                     f"{100 * achieved / peak:.0f}% | {100 * achieved / peaks['fp32']:.0f}% |")
    ratio = peaks["bf16"] / peaks["fp32"]
    lines += ["", f"On this CPU the bf16 matmul peak is {ratio:.2f}x the fp32 peak (`--precision auto` times both "
              "for the actual model and keeps bf16 only at >= 1.10x)."]
    return lines


# --- d: data time vs step time, with and without the cache ---

def data_vs_step(work: Path, folder: Path, name: str = "resnet18", size: int = 64) -> list[str]:
    lines = [
        "### d. Data time vs step time per epoch, with and without the cache", "",
        f"`imgcls train` on the JPEG folder of b, {name} at {size} px, batch {BATCH}, DataLoader workers 2 "
        "(default) and 0; data time = the training loop waiting for the next batch, step time = forward, backward "
        "and update (history.csv columns data_time_s, step_time_s). Target: data <= 10% of step from the "
        "second epoch with the cache. With workers 0 the training process decodes and augments itself, so "
        "that is where decoding every epoch (`--cache none`) shows.", "",
        "| --cache | --workers | epoch | data time | step time | data / step |", "|---|---|---|---|---|---|",
    ]
    cache_dir = work / "cache-d"
    for mode, workers in (("ram", 2), ("disk", 2), ("none", 2), ("ram", 0), ("none", 0)):
        run = imgcls_run(name, size, folder, work, f"cache-{mode}-{workers}", "--cache", mode, "--cache-dir",
                         str(cache_dir), "--workers", str(workers))
        for row in run["history"]:
            data, step = float(row["data_time_s"]), float(row["step_time_s"])
            lines.append(f"| {mode} | {workers} | {row['epoch']} | {data:.2f} s | {step:.2f} s | "
                         f"{100 * data / step:.1f}% |")
        print("\n".join(lines[-EPOCHS:]), flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="a,b,c,d", help="comma-separated benchmarks to run")
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--val-per-class", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=3, help="b: seeds for the resnet18 accuracy check (0: none)")
    parser.add_argument("--case", action="append", metavar="MODEL:PIXELS",
                        help="b: the models to compare, repeatable (default: resnet18:64, efficientnet_lite0:128, "
                        "vit_tiny_patch16_224:224)")
    parser.add_argument("--vit", default="vit_tiny_patch16_224", help="c: the ViT whose training step is timed")
    parser.add_argument("--vit-batch", type=int, default=64, help="c: its batch size")
    parser.add_argument("--section", default="## Speed vs a plain PyTorch loop (benchmark b)", help="the heading of docs/benchmarks.md to replace")
    parser.add_argument("--out", default="docs/benchmarks.md")
    args = parser.parse_args()
    chosen = set(args.only.split(","))
    work = Path(tempfile.mkdtemp(prefix="imgcls-speed-"))
    command = command_line()
    lines = [args.section, "", f"`{command}` on {machine()}; every table below comes from that one run.", ""]
    speed_before = host_speed()
    try:
        if "a" in chosen:
            lines += time_to_accuracy(work) + [""]
            print("\n".join(lines), flush=True)
        folder = None
        if chosen & {"b", "b-seeds", "d"}:
            folder = make_jpeg_folder(work / "jpegs", args.train_per_class, args.val_per_class)
        if "b" in chosen:
            cases = [(name, int(size)) for name, size in (case.split(":") for case in args.case)] if args.case \
                else THROUGHPUT_CASES
            lines += throughput(work, folder, cases) + [""]
        if ("b" in chosen or "b-seeds" in chosen) and args.seeds:
            lines += accuracy_over_seeds(work, folder, args.seeds) + [""]
            print("\n".join(lines[-7:]), flush=True)
        if "c" in chosen and not cpu_supports_bf16():
            lines += ["### c. ViT training step: achieved FLOP/s vs the matmul peak", "",
                      "Not run: this CPU has no native bf16 (`lscpu` shows neither `avx512_bf16` nor `amx_bf16`); "
                      "its bf16 matmuls are emulated at about 1 GFLOP/s, so c's bf16 step would take hours.", ""]
        elif "c" in chosen:
            lines += vit_step_flops(args.vit, batch=args.vit_batch) + [""]
            print("\n".join(lines[-12:]), flush=True)
        if "d" in chosen:
            lines += data_vs_step(work, folder) + [""]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines[2] += " " + describe(speed_before, host_speed())
    text = "\n".join(lines)
    print(text)
    replace_section(Path(args.out), args.section, text)


if __name__ == "__main__":
    main()
