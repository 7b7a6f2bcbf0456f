"""K-fold cross-validation splits: stratified, with every group of `--group-by` and every set of byte-identical
files in one fold, and inside each fold's training part a validation part kept apart the same way."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imgcls.data.groups import file_digests, group_names, joined
from imgcls.data.split import grouped_stratified_split
from imgcls.errors import ImgclsError


def file_groups(paths: list[Path], root: Path, group_by: str | None, workers: int) -> tuple[np.ndarray, list[str]]:
    """One group id per file: files of one `group_by` group, or byte-identical, share it; and warnings."""
    keyings: list[list[str | None]] = [list(file_digests(paths, workers))]
    warnings: list[str] = []
    if group_by:
        names, warnings = group_names(group_by, paths, root)
        keyings.append(names)
    return joined(*keyings), warnings


def assign_folds(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0 ... folds-1) of every sample: near-equal, stratified parts, each group whole in one."""
    counts = np.bincount(labels)
    if counts[counts > 0].min() < folds:
        raise ImgclsError(f"--folds {folds} needs at least {folds} images of every class; the smallest class has "
                          f"{counts[counts > 0].min()}: use fewer folds")
    parts = grouped_stratified_split(labels, groups, [1.0 / folds] * (folds - 1), seed)
    fold_of = np.empty(len(labels), dtype=np.int64)
    for fold, indices in enumerate(parts):
        fold_of[indices] = fold
    if len({fold for fold, indices in enumerate(parts) if len(indices)}) < folds:
        raise ImgclsError(f"--folds {folds}: the groups are too few or too large to fill {folds} folds; use fewer")
    return fold_of


def fold_parts(labels: np.ndarray, groups: np.ndarray, fold_of: np.ndarray, fold: int, val_fraction: float,
               seed: int) -> dict[str, np.ndarray]:
    """Indices of the fold's train, val (a `val_fraction` of the other folds, groups kept whole) and test (the
    fold itself) parts; no val part when `val_fraction` is 0."""
    test = np.flatnonzero(fold_of == fold)
    rest = np.flatnonzero(fold_of != fold)
    if val_fraction <= 0:
        return {"train": rest, "test": test}
    train, val = grouped_stratified_split(labels[rest], groups[rest], [val_fraction], seed + fold)
    return {"train": rest[train], "val": rest[val], "test": test}
