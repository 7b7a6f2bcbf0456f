"""Which images belong together and must never be split apart: a patient's scans (`--group-by`, a pattern in the
file path or a CSV table of file -> group) and byte-identical copies of one file."""

from __future__ import annotations

import csv
import hashlib
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from imgcls.errors import ImgclsError


def file_digests(paths: list[Path], workers: int = 2) -> list[str]:
    """md5 of every file's bytes (byte-identical copies, whatever their names)."""
    def digest(path: Path) -> str:
        return hashlib.md5(path.read_bytes()).hexdigest()

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(digest, paths, chunksize=256))


def _from_table(table: Path, paths: list[Path], root: Path) -> tuple[list[str | None], int]:
    groups: dict[str, str] = {}
    with table.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if rows and [cell.strip().lower() for cell in rows[0][:2]] in (["file", "group"], ["path", "group"]):
        rows = rows[1:]
    for number, row in enumerate(rows, start=1):
        if len(row) < 2 or not row[0].strip():
            raise ImgclsError(f"--group-by {table}: row {number} is not 'file,group'; write one file and its group "
                              f"per row")
        groups[row[0].strip()] = row[1].strip()
    found: list[str | None] = []
    for path in paths:
        keys = (str(path), path.relative_to(root).as_posix() if path.is_relative_to(root) else "", path.name)
        found.append(next((groups[key] for key in keys if key in groups), None))
    return found, len(groups)


def _from_pattern(pattern: str, paths: list[Path], root: Path) -> list[str | None]:
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ImgclsError(f"--group-by '{pattern}' is not a regular expression ({error}); pass one such as "
                          f"'patient_(\\d+)' or a CSV file of file,group rows") from None
    found: list[str | None] = []
    for path in paths:
        match = compiled.search(path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path))
        found.append(None if match is None else (match.group(1) if compiled.groups else match.group(0)))
    return found


def group_names(group_by: str, paths: list[Path], root: Path) -> tuple[list[str | None], list[str]]:
    """The group of every file (None: in no group) and warnings. `group_by` is a CSV file (file,group rows;
    file as a path, a path relative to `root`, or a file name) or a regular expression searched in the path
    relative to `root` (its first capture group, else the whole match, names the group)."""
    table = Path(group_by).expanduser()
    if group_by.lower().endswith(".csv") or table.is_file():
        if not table.is_file():
            raise ImgclsError(f"--group-by {table} does not exist; pass a CSV file of file,group rows or a regular "
                              f"expression")
        found, _ = _from_table(table, paths, root)
    else:
        found = _from_pattern(group_by, paths, root)
    missing = sum(name is None for name in found)
    if missing == len(found):
        raise ImgclsError(f"--group-by '{group_by}' gives no file a group; check the pattern against a file path "
                          f"such as {paths[0].relative_to(root) if paths and paths[0].is_relative_to(root) else ''}")
    warnings = [f"--group-by: {missing} of {len(found)} files are in no group; each stays on its own"
                ] if missing else []
    return found, warnings


def joined(*keyings: list[str | None]) -> np.ndarray:
    """Component id of every item when items sharing any key (of any keying) belong together (union-find)."""
    count = len(keyings[0]) if keyings else 0
    parent = np.arange(count)

    def root_of(item: int) -> int:
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return int(item)

    for keys in keyings:
        first_with: dict[str, int] = {}
        for item, key in enumerate(keys):
            if key is None:
                continue
            if key in first_with:
                parent[root_of(item)] = root_of(first_with[key])
            else:
                first_with[key] = item
    roots = np.asarray([root_of(item) for item in range(count)], dtype=np.int64)
    return np.unique(roots, return_inverse=True)[1]
