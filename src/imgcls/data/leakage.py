"""Keeping a test score honest when splitting: groups and byte-identical copies stay in one split, and copies
a pre-split folder already has across its splits are reported (or dropped from val/test with --dedupe)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imgcls.data.folders import FileSplit
from imgcls.data.folds import file_groups
from imgcls.data.groups import file_digests, group_names
from imgcls.data.split import grouped_stratified_split

NAMED = 3  # copies named in the one-line warning


def split_keeping_groups(files: FileSplit, fractions: list[float], seed: int, root: Path, group_by: str | None,
                         workers: int) -> tuple[list[np.ndarray], list[str]]:
    """Indices of the parts of a seeded stratified split where every group of `group_by` and every set of
    byte-identical files lands whole in one part; and warnings."""
    groups, warnings = file_groups(files.paths, root, group_by, workers)
    return grouped_stratified_split(files.labels, groups, fractions, seed), warnings


def groups_across(splits: dict[str, FileSplit], root: Path, group_by: str) -> list[str]:
    """A warning for every group of a pre-split folder found in more than one split."""
    paths = [path for split in splits.values() for path in split.paths]
    split_of = [name for name, split in splits.items() for _ in split.paths]
    names, warnings = group_names(group_by, paths, root)
    seen: dict[str, set[str]] = {}
    for name, split in zip(names, split_of):
        if name is not None:
            seen.setdefault(name, set()).add(split)
    spanning = sorted(name for name, where in seen.items() if len(where) > 1)
    if spanning:
        shown = ", ".join(spanning[:NAMED]) + (f" and {len(spanning) - NAMED} more" if len(spanning) > NAMED else "")
        warnings.append(f"{len(spanning)} group(s) of --group-by have images in more than one split ({shown}): "
                        f"the test score will be optimistic; move each group into one split")
    return warnings


def copies_across(splits: dict[str, FileSplit], workers: int) -> list[tuple[str, Path, Path]]:
    """(split, file, its copy in an earlier split) for every val/test file byte-identical to a file of an
    earlier split (train before val before test)."""
    first_seen: dict[str, tuple[str, Path]] = {}
    found = []
    for name, split in splits.items():
        for path, digest in zip(split.paths, file_digests(split.paths, workers)):
            if digest in first_seen and first_seen[digest][0] != name:
                found.append((name, path, first_seen[digest][1]))
            first_seen.setdefault(digest, (name, path))
    return found


def copies_warning(copies: list[tuple[str, Path, Path]], dedupe: bool) -> str:
    named = "; ".join(f"{split}/{path.name} = {twin.name}" for split, path, twin in copies[:NAMED])
    more = f" and {len(copies) - NAMED} more" if len(copies) > NAMED else ""
    action = ("dropped from val/test (--dedupe; listed in the run folder)" if dedupe else
              "the test score will be optimistic; --dedupe drops them, 'imgcls data check' finds near copies too")
    return (f"{len(copies)} file(s) in val/test are byte-identical to files of an earlier split ({named}{more}): "
            f"{action}")


def without_copies(splits: dict[str, FileSplit], copies: list[tuple[str, Path, Path]]) -> dict[str, FileSplit]:
    """The splits without the val/test copies found by `copies_across`."""
    dropped = {(split, path) for split, path, _ in copies}
    return {name: split.subset([i for i, path in enumerate(split.paths) if (name, path) not in dropped])
            for name, split in splits.items()}
