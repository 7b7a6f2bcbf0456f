"""The scene of tutorial 000: fine-tuning ViT-B/16 at 224 px on 1,120 images (70% of 1,600 in two class
folders), its loop against `imgcls train` in fp32 and with the precision `auto` picks, side by side.

    python benchmarks/vit_scene.py [--epochs 1] [--per-class 800] [--section TITLE] [--out docs/benchmarks.md]

The tutorial's loop, as it is written there: torchvision ImageFolder, random_split 70/30 (seed 0),
RandomResizedCrop + flips + rotation, PIL decoding every epoch, DataLoader(batch 32, num_workers=4), Adam,
fp32, NCHW; it complains of three minutes an epoch. Its chest X-rays are not public, so the 1,600 images
here are two Fashion-MNIST classes (shirt, T-shirt) upscaled to 512x512 grayscale JPEGs; the network starts
from random weights (the hub is offline here), which costs exactly what fine-tuning pretrained ones does.
Per run: seconds of the training epoch (best epoch after the first where there are several), training
images/s, the epoch of the tutorial's 1,120 images at that rate, and process start to end. `--per-class`
below 800 runs the same pipeline on fewer images (on 2 cores one fp32 epoch of all 1,120 takes ~8 minutes).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results_file import command_line, replace_section  # noqa: E402

SECTION = "## The tutorial's ViT-B/16 scene: its loop vs imgcls"
MODEL, SIZE, BATCH, PER_CLASS, SIDE = "vit_base_patch16_224", 224, 32, 800, 512

TUTORIAL_LOOP = '''
import sys, time, timm, torch
from torch import nn, optim
from torchvision import datasets, transforms
folder, epochs = sys.argv[1], int(sys.argv[2])
norm = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
train_tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                               transforms.RandomVerticalFlip(), transforms.RandomRotation(0.2),
                               transforms.ToTensor(), norm])
full = datasets.ImageFolder(folder)
train_size = int(0.7 * len(full))
torch.manual_seed(0)
train_set, val_set = torch.utils.data.random_split(full, [train_size, len(full) - train_size])
train_set.dataset.transform = train_tf
loader = torch.utils.data.DataLoader(train_set, batch_size=32, shuffle=True, num_workers=4)
model = timm.create_model("vit_base_patch16_224", pretrained=False)
model.head = nn.Linear(model.head.in_features, len(full.classes))
criterion, optimizer = nn.CrossEntropyLoss(), optim.Adam(model.parameters())
times = []
for epoch in range(epochs):
    model.train()
    started = time.perf_counter()
    for inputs, labels in loader:
        optimizer.zero_grad()
        loss = criterion(model(inputs), labels)
        loss.backward()
        optimizer.step()
    times.append(time.perf_counter() - started)
print("RESULT", train_size, ",".join(f"{t:.2f}" for t in times))
'''


def make_folder(root: Path, per_class: int) -> Path:
    """2 x `per_class` (1,600 in the tutorial) grayscale 512 px JPEGs in two class folders (Fashion-MNIST shirts and T-shirts, upscaled)."""
    import numpy as np
    from PIL import Image

    from imgcls.config import default_data_root
    from imgcls.data.builtin import load_builtin

    images, labels, class_names = load_builtin("fashion-mnist", default_data_root(), train=True)
    for label in (0, 6):  # T-shirt/top, Shirt
        folder = root / class_names[label].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        for index in np.flatnonzero(labels == label)[:per_class]:
            Image.fromarray(images[index, 0]).resize((SIDE, SIDE), Image.Resampling.BICUBIC).save(
                folder / f"{index}.jpg", quality=90)
    return root


def tutorial(folder: Path, work: Path, epochs: int) -> dict:
    script = work / "tutorial_loop.py"
    script.write_text(TUTORIAL_LOOP)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(script), str(folder), str(epochs)], capture_output=True, text=True)
    wall = time.perf_counter() - started
    line = next((line for line in result.stdout.splitlines() if line.startswith("RESULT")), None)
    if line is None:
        raise SystemExit(f"tutorial loop failed:\n{result.stderr[-2000:]}")
    _, count, times = line.split()
    epoch = min(float(t) for t in times.split(",")[1:] or times.split(","))
    return {"epoch_s": epoch, "images": int(count), "images_per_s": int(count) / epoch, "wall_s": wall,
            "precision": "fp32, NCHW"}


def imgcls(folder: Path, work: Path, epochs: int, precision: str) -> dict:
    name = f"vit-{precision}"
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "imgcls", "train", str(folder), "--model", MODEL, "--img-size", str(SIZE),
         "--val-split", "0.3", "--epochs", str(epochs), "--batch-size", str(BATCH), "--optimizer", "adam",
         "--augment", "standard", "--precision", precision, "--no-report", "--runs-dir", str(work / "runs"),
         "--name", name], capture_output=True, text=True, env=dict(os.environ, IMGCLS_CACHE_DIR=str(work / "cache")))
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"imgcls failed:\n{result.stderr[-2000:]}")
    with open(work / "runs" / name / "history.csv") as file:
        history = list(csv.DictReader(file))
    steady = history[1:] or history
    best = min(steady, key=lambda row: float(row["train_time_s"]))
    summary = json.loads((work / "runs" / name / "run.json").read_text())
    return {"epoch_s": float(best["train_time_s"]), "images_per_s": float(best["train_images_per_s"]),
            "wall_s": wall, "precision": summary["precision"],
            "images": images_per_epoch(sum(summary["class_counts"]["train"]), summary["global_batch_size"])}


def images_per_epoch(train_images: int, batch: int) -> int:
    """The images imgcls trains on an epoch: whole batches, unless it keeps the ragged last one."""
    from imgcls.data.loader import drops_ragged_batch

    return train_images // batch * batch if drops_ragged_batch(train_images, batch) else train_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--per-class", type=int, default=PER_CLASS, help="images per class (the tutorial: 800)")
    parser.add_argument("--section", default=SECTION, help="the section heading to write (or replace)")
    parser.add_argument("--out", default="docs/benchmarks.md")
    args = parser.parse_args()
    from imgcls.engine.precision import cpu_supports_bf16
    from imgcls.environment import cpu_name

    precisions = ("fp32", "bf16") if cpu_supports_bf16() else ("fp32",)  # emulated bf16 would take hours here
    work = Path(tempfile.mkdtemp(prefix="imgcls-vit-scene-"))
    folder = make_folder(work / "xrays", args.per_class)
    rows = [("the tutorial's loop", tutorial(folder, work, args.epochs))]
    print(rows[-1], flush=True)
    for precision in precisions:
        rows.append((f"imgcls --precision {precision}", imgcls(folder, work, args.epochs, precision)))
        print(rows[-1], flush=True)
    base = rows[0][1]["images_per_s"]
    lines = [args.section, "", f"`{command_line()}`"
             + f" on {cpu_name()}, {os.cpu_count()} cores ({time.strftime('%Y-%m-%d')}). {MODEL} ({SIZE} px, "
             f"batch {BATCH}, Adam), {2 * args.per_class} JPEGs split 70/30; see the script's docstring for the data "
             "and the loop.", "",
             "| pipeline | precision | training images | training epoch | images/s | vs the tutorial | "
             "epoch of the tutorial's 1,120 images at this rate | process start to end |",
             "|---|---|---|---|---|---|---|---|"]
    for label, row in rows:
        lines.append(f"| {label} | {row['precision']} | {row['images']} | {row['epoch_s']:.0f} s | "
                     f"{row['images_per_s']:.2f} | {row['images_per_s'] / base:.2f}x | "
                     f"{1120 / row['images_per_s'] / 60:.1f} min | {row['wall_s']:.0f} s |")
    print("\n".join(lines))
    replace_section(Path(args.out), args.section, "\n".join(lines))


if __name__ == "__main__":
    main()
