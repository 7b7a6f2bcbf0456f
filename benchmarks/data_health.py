"""Data health on real Fashion-MNIST: planted copies (recall per kind, precision), Fashion-MNIST's own
near-duplicates, speed and memory of the passes, label issues with 5 % flipped labels, and class imbalance.

    python benchmarks/data_health.py [--parts copies,fmnist,scale,labels,imbalance] [--out docs/data-health.md]

Each part writes its section of docs/data-health.md (figures) and the speed part also docs/benchmarks.md.
Needs Debian's dataset-fashion-mnist; imagehash (test extra) for the hash baselines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from host import describe, host_speed  # noqa: E402
from planted_copies import KINDS, folder_name, plant_copies, write_images  # noqa: E402
from results_file import command_line, replace_section  # noqa: E402

import imgcls  # noqa: E402
from imgcls.data.builtin import load_builtin  # noqa: E402

RAW = Path(tempfile.gettempdir()) / "imgcls-bench-fmnist"


def _fmnist(train: bool):
    return load_builtin("fashion-mnist", RAW, train=train)


def _cpu() -> str:
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("Model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return platform.processor()


# --- planted copies -------------------------------------------------------------------------------------------

def _baselines(planted, files: list[str]) -> dict[str, tuple[dict[str, float], int, float]]:
    """imagededup's default (phash within 10 bits) and CleanVision's near rule (identical whash), on the same
    folder: recall per kind and pairs among untouched images."""
    import imagehash

    index = {name: i for i, name in enumerate(files)}
    copies = np.zeros(len(files), bool)
    copies[[index[p.copy] for p in planted]] = True
    results = {}
    for label, function, radius in (("imagededup default: phash <= 10 bits", imagehash.phash, 10),
                                    ("CleanVision near rule: identical whash", imagehash.whash, 0)):
        hashes = np.array([int(str(function(Image.open(f))), 16) for f in files], dtype=np.uint64)
        recall = {kind: float(np.mean([np.bitwise_count(hashes[index[p.original]] ^ hashes[index[p.copy]]) <= radius
                                       for p in planted if p.kind == kind])) for kind in KINDS}
        untouched = hashes[~copies]
        close = 0
        for start in range(0, len(untouched), 1000):
            block = np.bitwise_count(untouched[start:start + 1000, None] ^ untouched[None, :]) <= radius
            close += int(np.triu(block, k=start + 1).sum())
        found = sum(np.bitwise_count(hashes[index[p.original]] ^ hashes[index[p.copy]]) <= radius for p in planted)
        results[label] = (recall, close, found / max(1, found + close))
    return results


def part_copies(work: Path, per_kind: int, originals: int) -> str:
    train_images, train_labels, class_names = _fmnist(True)
    test_images, test_labels, _ = _fmnist(False)
    rng = np.random.default_rng(0)
    a = rng.choice(len(train_images), originals * 4 // 5, replace=False)
    b = rng.choice(len(test_images), originals // 5, replace=False)
    root = work / "planted"
    planted = plant_copies(root, (train_images[a], train_labels[a]), (test_images[b], test_labels[b]), class_names,
                           per_kind, seed=0)
    key = {frozenset((p.original, p.copy)): p.kind for p in planted}
    rows = []
    for search in ("neighbours", "hash"):
        started = time.perf_counter()
        record = imgcls.check_data(str(root), out=work / f"check-{search}", search=search, quiet=True)
        seconds = time.perf_counter() - started
        reported = {frozenset((p["first"], p["second"])) for p in record["pairs"]}
        recall = {kind: np.mean([pair in reported for pair, k in key.items() if k == kind]) for kind in KINDS}
        true = sum(pair in key for pair in reported)
        false = len(reported) - true
        rows.append((f"imgcls, {search} search (threshold {record['near_duplicate_threshold']})", recall,
                     f"{true / max(1, len(reported)):.4f}", false, f"{seconds:.0f} s"))
    files = sorted(str(p) for p in root.rglob("*") if p.is_file())
    for label, (recall, close, precision) in _baselines(planted, files).items():
        rows.append((label, recall, f"{precision:.4f}", close, ""))
    header = "| method | " + " | ".join(KINDS) + " | precision | false pairs | time |"
    table = [header, "|" + "---|" * (len(KINDS) + 4)]
    for label, recall, precision, untouched, seconds in rows:
        table.append(f"| {label} | " + " | ".join(f"{recall[k]:.2f}" for k in KINDS)
                     + f" | {precision} | {untouched:,} | {seconds} |")
    return "\n".join([
        "## Planted copies: recall per kind, precision",
        "",
        f"{originals:,} real Fashion-MNIST images ({originals * 4 // 5:,} from its train split in train/, "
        f"{originals // 5:,} from its test split in test/), and {per_kind} copies of each kind, every copy of a "
        f"different original, placed in the other split (so every planted pair is leakage): "
        f"{per_kind * len(KINDS)} planted pairs among {originals + per_kind * len(KINDS):,} files "
        "(`benchmarks/planted_copies.py`). Recall is the share of planted pairs reported; precision is the share "
        "of reported pairs that were planted (every other pair counts as false; those found were distinct "
        "garments that look alike). For the hash baselines the false pairs counted are those between untouched "
        "images only, so their precision is an upper bound. Time: the whole `imgcls data check` of the folder.",
        "",
        *table,
        "",
        "The hash baselines use imagehash on the same files, as those tools do (imagededup compares phash "
        "within `max_distance_threshold` 10 by default; CleanVision calls a near-duplicate set the images with "
        "the same wavelet hash). On Fashion-MNIST's dark backgrounds both rules pair thousands of different "
        "garments; neither mirrors images.",
        "",
        "imagededup's own published figures (UKBench, 'transformed' set: crop, flips, 25 degree rotation, aspect "
        "change, all kinds together; user_guide/benchmarks.md): phash within 10 bits: precision 0.341, recall "
        "0.079; dhash identical: precision 1.0, recall 0.040; its CNN at its default 0.9: precision 0.999, "
        "recall 0.384. On its exact-duplicate set every method finds all pairs.",
        "",
        f"Machine: {_cpu()}. Command: `{command_line()}`.",
        "",
    ])


# --- Fashion-MNIST's own near-duplicates -----------------------------------------------------------------------

def _grid(record: dict, images: np.ndarray, path: Path, shown: int = 12) -> None:
    rows = []
    for pair in record["pairs"][:shown]:
        first, second = (int(name.split("[")[1].rstrip("]")) + (60000 if name.startswith("test") else 0)
                         for name in (pair["first"], pair["second"]))
        tile = np.concatenate([images[first, 0], np.full((28, 2), 128, np.uint8), images[second, 0]], axis=1)
        rows.append(np.pad(tile, 2, constant_values=255))
    if rows:
        grid = np.concatenate([np.concatenate(rows[i:i + 4], axis=1) for i in range(0, len(rows) - len(rows) % 4, 4)]
                              or rows[:1], axis=0)
        Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.Resampling.NEAREST).save(path)


def part_fmnist(work: Path, docs: Path) -> str:
    started = time.perf_counter()
    record = imgcls.check_data("fashion-mnist", out=work / "fmnist", search="hash", data_root=str(RAW), quiet=True)
    seconds = time.perf_counter() - started
    pairs = record["pairs"]
    where = {"inside train": 0, "inside test": 0, "train-test": 0}
    for pair in pairs:
        splits = {pair["first_split"], pair["second_split"]}
        where["train-test" if len(splits) == 2 else f"inside {splits.pop()}"] += 1
    conflicts = sum(p["conflict"] for p in pairs)
    images = np.concatenate([_fmnist(True)[0], _fmnist(False)[0]])
    _grid(record, images, docs / "data-health-fmnist-pairs.png")
    exact = sum(p["kind"] == "exact" for p in pairs)
    return "\n".join([
        "## Fashion-MNIST's own near-duplicates",
        "",
        f"`imgcls data check fashion-mnist --search hash` on the copy imgcls reads (Debian's dataset-fashion-mnist, "
        f"70,000 images): exact duplicates {exact}; near-duplicate pairs at aligned similarity >= "
        f"{record['near_duplicate_threshold']}: {where['inside train']} inside train, {where['inside test']} inside "
        f"test, {where['train-test']} between train and test ({conflicts} of all pairs carry different labels); "
        f"{record['summary']['near_constant']} near-constant images. {seconds:.0f} s on {_cpu()}.",
        "",
        "![the most similar pairs](data-health-fmnist-pairs.png)",
        "",
        "The most similar pairs, two images side by side, most similar first. A hash search finds re-encoded, "
        "resized, brightened and mirrored copies, not crops (see the table above); the neighbour search that "
        "finds crops is quadratic and is not run on all 70,000 here.",
        "",
        f"Command: `{command_line()}`.",
        "",
    ])


# --- speed and memory ------------------------------------------------------------------------------------------

_CHILD = """
import sys, time, numpy as np
from pathlib import Path
from imgcls.data.builtin import load_builtin
from imgcls.data.fingerprints import fingerprint_arrays
from imgcls.data.near_duplicates import near_duplicate_pairs
count, search = int(sys.argv[1]), sys.argv[2]
train, _, _ = load_builtin("fashion-mnist", Path(sys.argv[3]), train=True)
test, _, _ = load_builtin("fashion-mnist", Path(sys.argv[3]), train=False)
images = np.concatenate([train, test])
if count > len(images):  # more than 70,000: mirrored, shifted copies of training images (some found as pairs)
    extra = np.roll(train[: count - len(images), :, :, ::-1], 1, axis=2)
    images = np.concatenate([images, extra])
images = images[:count]
started = time.perf_counter()
prints = fingerprint_arrays(images)
middle = time.perf_counter()
sides = np.minimum(prints.width, prints.height)
pairs, used = near_duplicate_pairs(prints.thumbs, ~prints.flat, sides, search=search)
done = time.perf_counter()
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))  # kB
print(middle - started, done - middle, peak / 1024, len(pairs))
"""


def _measure(count: int, search: str) -> tuple[float, float, float, int]:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(count), search, str(RAW)], capture_output=True,
                         text=True, check=True).stdout.split()
    return float(out[0]), float(out[1]), float(out[2]), int(out[3])


def part_scale() -> str:
    before = host_speed()
    rows = []
    for count, search in ((70_000, "hash"), (100_000, "hash"), (5_000, "neighbours"), (10_000, "neighbours"),
                          (20_000, "neighbours")):
        fingerprint, near, peak_mib, pairs = _measure(count, search)
        rows.append(f"| {count:,} | {search} | {fingerprint:.1f} | {near:.1f} | {fingerprint + near:.1f} | "
                    f"{count / (fingerprint + near):,.0f} | {peak_mib:,.0f} | {pairs:,} |")
    after = host_speed()
    return "\n".join([
        "## Data check: speed and memory",
        "",
        "Fashion-MNIST's arrays (past 70,000: mirrored, 1-pixel-shifted copies of training images), in a fresh "
        "process each: "
        "fingerprints (decoded-pixel digest, 32x32 thumbnail) then the near-duplicate search and alignment. "
        "Peak memory is the process's maximum resident set (VmHWM), imports (torch) included.",
        "",
        "| images | search | fingerprints (s) | near pairs (s) | total (s) | images/s | peak memory (MiB) | pairs |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Machine: {_cpu()}. {describe(before, after)} Command: `{command_line()}`.",
        "",
    ])


# --- label issues ----------------------------------------------------------------------------------------------

def _symlink_folder(target: Path, files: list[Path], labels: list[str]) -> None:
    for file, label in zip(files, labels):
        (target / label).mkdir(parents=True, exist_ok=True)
        (target / label / file.name).symlink_to(file)


def part_labels(work: Path, per_class: int, flipped: float, epochs: int) -> str:
    images, labels, class_names = _fmnist(True)
    rng = np.random.default_rng(0)
    chosen = np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                             for c in range(len(class_names))])
    given = labels[chosen].copy()
    flip = rng.random(len(chosen)) < flipped
    given[flip] = (given[flip] + rng.integers(1, len(class_names), flip.sum())) % len(class_names)
    folder = work / "noisy"
    files = write_images(folder / "_files", images[chosen], np.zeros(len(chosen), int), ["all"], "im")
    names = [folder_name(class_names[g]) for g in given]
    _symlink_folder(folder / "data", files, names)
    halves = np.array_split(rng.permutation(len(files)), 2)
    runs = []
    for fold, (held, kept) in enumerate(((halves[0], halves[1]), (halves[1], halves[0]))):
        split_root = work / f"fold{fold}"
        _symlink_folder(split_root / "train", [files[i] for i in kept], [names[i] for i in kept])
        _symlink_folder(split_root / "val", [files[i] for i in held], [names[i] for i in held])
        outcome = imgcls.train(source=str(split_root), model="fastcnn", epochs=epochs, runs_dir=str(work / "runs"),
                               name=f"fold{fold}", seed=0, workers=0, cache_dir=str(work / "cache"))
        runs.append(outcome.run_dir)
    record = imgcls.check_data(str(folder / "data"), runs=runs, out=work / "labels-check", quiet=True,
                               search="hash")
    flipped_files = {str((folder / "_files" / "all" / files[i].name).resolve()) for i in np.flatnonzero(flip)}
    ranked = [str(Path(issue["file"]).resolve()) for issue in record["label_issues"]]
    top100 = sum(name in flipped_files for name in ranked[:100])
    top200 = sum(name in flipped_files for name in ranked[:200])
    return "\n".join([
        "## Label issues: 5 % of the labels flipped",
        "",
        f"{len(chosen):,} Fashion-MNIST training images ({per_class} per class), {int(flip.sum())} of them "
        f"({flip.mean():.1%}) given a wrong label at random. Out-of-sample probabilities for every image by 2-fold "
        f"cross-fitting: two `imgcls train` runs (fastcnn, {epochs} epochs), each trained on one half and "
        "validated on the other; `imgcls data check DATA --run FOLD0 --run FOLD1` ranks the images flagged by "
        "confident learning (least confident in the given label first).",
        "",
        "| flagged | flips among the top 100 (precision) | flips found in the top 200 (recall) |",
        "|---|---|---|",
        f"| {len(ranked)} of {record['label_issues_checked']:,} | {top100 / 100:.2f} ({top100}) | "
        f"{top200 / max(1, int(flip.sum())):.2f} ({top200} of {int(flip.sum())}) |",
        "",
        f"Machine: {_cpu()}. Command: `{command_line()}`.",
        "",
    ])


# --- imbalance -------------------------------------------------------------------------------------------------

def part_imbalance(work: Path, majority: int, ratio: int, epochs: int, pair: tuple[int, int]) -> str:
    images, labels, class_names = _fmnist(True)
    test_images, test_labels, _ = _fmnist(False)
    rng = np.random.default_rng(0)
    big, small = pair
    root = work / "imbalanced"
    chosen = np.concatenate([rng.choice(np.flatnonzero(labels == big), majority, replace=False),
                             rng.choice(np.flatnonzero(labels == small), majority // ratio, replace=False)])
    names = [folder_name(class_names[big]), folder_name(class_names[small])]
    write_images(root / "train", images[chosen], (labels[chosen] == small).astype(int), names, "tr")
    held = np.flatnonzero(np.isin(test_labels, pair))
    write_images(root / "test", test_images[held], (test_labels[held] == small).astype(int), names, "te")
    rows = []
    for label, extra in (("plain", {}), ("--class-weights auto", {"class_weights": "auto"}),
                         ("--sampler balanced", {"sampler": "balanced"})):
        outcome = imgcls.train(source=str(root), model="fastcnn", epochs=epochs, runs_dir=str(work / "runs"),
                               name=label.strip("-").replace(" ", "_"), seed=0, workers=0, positive_class=names[1],
                               cache_dir=str(work / "cache"), **extra)
        test = outcome.metrics["test"]
        cells = [f"{test[k]['value']:.3f} [{test[k]['ci95'][0]:.3f}, {test[k]['ci95'][1]:.3f}]"
                 for k in ("sensitivity", "specificity", "balanced_accuracy")]
        rows.append(f"| {label} | " + " | ".join(cells) + f" | {test['accuracy']['value']:.3f} |")
    return "\n".join([
        "## Imbalance: one class ten times rarer",
        "",
        f"Two Fashion-MNIST classes, {names[0]} ({majority} training images) and {names[1]} ({majority // ratio}), "
        f"tested on the official test images of both (1,000 each); fastcnn, {epochs} epochs, seed 0, each "
        f"option alone. Sensitivity is the rare class's ({names[1]}, the positive class); [low, high] is the 95 % "
        "bootstrap interval.",
        "",
        f"| training | sensitivity ({names[1]}) | specificity | balanced accuracy | accuracy |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Machine: {_cpu()}. Command: `{command_line()}`.",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="copies,fmnist,scale,labels,imbalance")
    parser.add_argument("--per-kind", type=int, default=100)
    parser.add_argument("--originals", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", default="docs/data-health.md")
    parser.add_argument("--benchmarks", default="docs/benchmarks.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imgcls-data-health-"))
    out = Path(args.out)
    try:
        for part in args.parts.split(","):
            if part == "copies":
                text = part_copies(work, args.per_kind, args.originals)
            elif part == "fmnist":
                text = part_fmnist(work, out.parent)
            elif part == "scale":
                text = part_scale()
                replace_section(Path(args.benchmarks), text.splitlines()[0], text)
            elif part == "labels":
                text = part_labels(work, 200, 0.05, args.epochs)
            elif part == "imbalance":
                text = part_imbalance(work, 1000, 10, args.epochs, (2, 4))  # Pullover (common), Coat (rare)
            else:
                raise SystemExit(f"unknown part {part}")
            replace_section(out, text.splitlines()[0], text)
            print(text, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
