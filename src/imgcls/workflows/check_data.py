"""imgcls data check: read every image once, find what would hurt training or inflate the test score, and
write it down (data_check.json, data_check.html). Nothing the user owns is moved, renamed or deleted."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from imgcls.atomic import check_replaceable
from imgcls.config import DataConfig, data_root_of
from imgcls.data.builtin import builtin_name, load_builtin
from imgcls.data.fingerprints import Fingerprints, fingerprint_arrays, fingerprint_files
from imgcls.data.folders import FileSplit, scan_folder
from imgcls.data.health import DataHealth, Images, LabelIssue, check_images
from imgcls.data.leakage import groups_across
from imgcls.data.near_duplicates import DEFAULT_THRESHOLD
from imgcls.errors import ImgclsError
from imgcls.metrics.label_issues import label_issues, suggested_labels
from imgcls.reporting.data_check import HTML_NAME, JSON_NAME, picture_from_array, print_data_check, write_data_check
from imgcls.run_files import RunFolder, default_run_name
from imgcls.run_files.predictions import load_split_predictions

SEARCHES = ("auto", "hash", "neighbours")
Checked = tuple[Images, Fingerprints, list[int], dict[int, str], Callable[[int], Image.Image]]


def check_data(data: str, runs: Sequence[str | Path] = (), out: str | Path | None = None,
               threshold: float | None = None, search: str = "auto", group_by: str | None = None,
               data_root: str | None = None, quiet: bool = False) -> dict:
    """Check DATA (a folder, a train/val/test folder or a built-in name) and write data_check.json and
    data_check.html to `out` (default ./<data>-data-check/); with `runs`, rank likely label errors from their
    held-out predictions; `threshold`: the aligned similarity of a near-duplicate pair (default 0.999).
    Returns the JSON record (schema: docs/data-health.md)."""
    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    _check_options(threshold, search)
    folder = Path(out).expanduser() if out else Path(default_run_name(data, "data-check"))
    if folder.exists() and not folder.is_dir():
        raise ImgclsError(f"--out {folder} is a file; pass a folder for data_check.json and data_check.html")
    for name in (JSON_NAME, HTML_NAME):
        check_replaceable(folder / name, "--out")
    run_folders = [_finished_run(run) for run in runs]
    images, prints, readable, unreadable, picture = _read(data, data_root, os.cpu_count() or 1)
    health: DataHealth = check_images(images, prints, readable, unreadable, threshold, search)
    if group_by:
        health.groups_across = _groups_across(data, images, group_by)
    for run in run_folders:
        _add_label_issues(health, run)
    health.label_issues.sort(key=lambda issue: issue.self_confidence)
    record = write_data_check(folder, health, data, picture)
    if not quiet:
        print_data_check(record, folder)
    return record


def _check_options(threshold: float, search: str) -> None:
    if not 0.0 < threshold <= 1.0:
        raise ImgclsError(f"--threshold {threshold} is outside (0, 1]; pass an aligned similarity such as "
                          f"{DEFAULT_THRESHOLD}")
    if search not in SEARCHES:
        raise ImgclsError(f"--search {search!r} is not one of {', '.join(SEARCHES)}")


def _finished_run(run: str | Path) -> RunFolder:
    folder = RunFolder(run)
    folder.require_finished()
    if not load_split_predictions(folder):
        raise ImgclsError(f"{folder.path} has no saved predictions; rebuild them with 'imgcls eval {folder.path}'")
    return folder


def _read(data: str, data_root: str | None, workers: int) -> Checked:
    path = Path(data).expanduser()
    name = None if path.exists() else builtin_name(data)
    if name is not None:
        return _read_builtin(name, data_root_of(DataConfig(source=data, data_root=data_root)))
    scan = scan_folder(path)
    names, splits, labels = [], [], []
    for split, files in scan.splits.items():
        names += [str(file) for file in files.paths]
        splits += [split] * len(files.paths)
        labels.append(files.labels)
    images = Images(names, splits, np.concatenate(labels), scan.class_names)
    prints, readable, unreadable = fingerprint_files([Path(name) for name in names], workers)

    def picture(index: int) -> Image.Image:
        with Image.open(names[index]) as opened:
            return ImageOps.exif_transpose(opened).convert("RGB")

    return images, prints, readable, unreadable, picture


def _read_builtin(name: str, root: Path) -> Checked:
    train_images, train_labels, class_names = load_builtin(name, root, train=True)
    test_images, test_labels, _ = load_builtin(name, root, train=False)
    arrays = np.concatenate([train_images, test_images])
    names = [f"train[{i}]" for i in range(len(train_images))] + [f"test[{i}]" for i in range(len(test_images))]
    splits = ["train"] * len(train_images) + ["test"] * len(test_images)
    images = Images(names, splits, np.concatenate([train_labels, test_labels]).astype(np.int64), class_names)
    return images, fingerprint_arrays(arrays), list(range(len(arrays))), {}, \
        lambda index: picture_from_array(arrays[index])


def _groups_across(data: str, images: Images, group_by: str) -> list[str]:
    if not Path(data).expanduser().is_dir():
        raise ImgclsError("--group-by needs a dataset folder (built-in datasets have no file names)")
    splits: dict[str, FileSplit] = {}
    for split in dict.fromkeys(images.splits):
        rows = [i for i, name in enumerate(images.splits) if name == split]
        splits[split] = FileSplit([Path(images.names[i]) for i in rows], images.labels[rows])
    return groups_across(splits, Path(data).expanduser(), group_by) if len(splits) > 1 else []


def _add_label_issues(health: DataHealth, run: RunFolder) -> None:
    """Flag likely label errors among the images the run held out (its val and test predictions)."""
    images = health.images
    run_classes = run.read_classes() or []
    if sorted(run_classes) != sorted(images.class_names):
        raise ImgclsError(f"{run.path} was trained on classes {', '.join(run_classes)}, not this data's "
                          f"({', '.join(images.class_names)}); pass a run trained on these classes")
    column_of = [run_classes.index(name) for name in images.class_names]
    index_of = _path_index(images.names)
    for split, predictions in load_split_predictions(run).items():
        if split == "train" or predictions.paths is None:
            continue
        found = [(row, index_of.get(_key(path))) for row, path in enumerate(predictions.paths)]
        found = [(row, index) for row, index in found if index is not None]
        if not found:
            continue
        rows, indices = (np.asarray(values) for values in zip(*found))
        probs = predictions.probs[rows][:, column_of]
        labels = images.labels[indices]
        flagged = label_issues(labels, probs)
        suggested = suggested_labels(labels, probs, flagged)
        health.label_checked += len(indices)
        health.label_issues += [LabelIssue(int(indices[i]), int(s), float(probs[i, labels[i]]), str(run.path))
                                for i, s in zip(flagged, suggested)]


def _key(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def _path_index(names: list[str]) -> dict[str, int]:
    return {_key(name): index for index, name in enumerate(names)}
