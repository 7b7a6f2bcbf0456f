"""Find labelled image files on disk: class-per-folder datasets and train/val/test layouts.

Everything else in a dataset folder (hidden files, `__MACOSX/`, `Thumbs.db`, a README, a symbolic link back up
the tree) is ignored, and said once in one warning; a link that leads back into a folder already read is not
followed, so a link loop cannot make the walk endless or count images twice.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imgcls.data.images import IMAGE_EXTENSIONS, is_image_file
from imgcls.errors import ImgclsError

SPLIT_DIR_NAMES = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}
# What operating systems and tools leave in folders; never classes, never images.
JUNK_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini", "$RECYCLE.BIN", "System Volume Information",
                        "lost+found", "__pycache__"})
NAMED_IGNORED = 8  # ignored entries named in the warning; the rest are counted


def expected_layout(folder: Path) -> str:
    """The layouts imgcls reads and the extensions of the files it takes as images (for error messages)."""
    extensions = " ".join(sorted(IMAGE_EXTENSIONS))
    return (f"expected {folder}/<class>/<image> (or {folder}/train/<class>/<image> with val/ and test/ beside "
            f"train/), image extensions: {extensions}")


@dataclass
class FileSplit:
    paths: list[Path]
    labels: np.ndarray

    def subset(self, indices: Sequence[int] | np.ndarray) -> FileSplit:
        """The files at `indices`, in that order."""
        return FileSplit([self.paths[i] for i in indices], self.labels[np.asarray(indices, dtype=np.int64)])


@dataclass
class FolderScan:
    class_names: list[str]  # class folders with at least one image file, sorted by code point
    splits: dict[str, FileSplit]  # "all" for a class-per-folder dataset, else "train"/"val"/"test"
    classes_in: Path  # the folder of the (training) class folders: DATA, or DATA/train
    empty_classes: list[Path] = field(default_factory=list)  # (training) class folders without any image file
    warnings: list[str] = field(default_factory=list)


class _Walk:
    """One reading of a dataset folder, noting what it ignores."""

    def __init__(self, root: Path):
        self.root = root
        self.ignored: list[str] = []

    def note(self, path: Path, why: str = "") -> None:
        shown = os.path.relpath(path, self.root) + ("/" if path.is_dir() and not why else "")
        self.ignored.append(f"{shown} ({why})" if why else shown)

    @staticmethod
    def loop(path: Path, parent: Path, visited: set[str] | None = None) -> str | None:
        """Why not to enter folder `path`: it encloses `parent` (a link to the root, to `..`, to `/`), or it is
        one already read (`visited`); None: enter it."""
        real, parent_real = os.path.realpath(path), os.path.realpath(parent)
        if os.path.commonpath([real, parent_real]) == real:
            return "link loop"
        return "a link to a folder already read" if real in (visited or ()) else None

    def class_dirs(self, folder: Path) -> list[Path]:
        """The subfolders of `folder` that can be classes; everything else in it is noted as ignored."""
        found = []
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith(".") or entry.name in JUNK_NAMES:
                self.note(entry)
            elif entry.is_symlink() and not entry.exists():
                self.note(entry, "broken or looping link")
            elif not entry.is_dir():
                self.note(entry)
            elif self.loop(entry, folder):
                self.note(entry, "link loop")
            else:
                found.append(entry)
        return found

    def images_under(self, folder: Path) -> list[Path]:
        """Image files below `folder`, recursively, sorted for determinism; links followed, no folder twice."""
        found: list[Path] = []
        visited = {os.path.realpath(folder)}
        for current, dirs, files in os.walk(folder, followlinks=True):
            kept = []
            for name in sorted(dirs):
                path = Path(current) / name
                if name.startswith(".") or name in JUNK_NAMES:
                    self.note(path)
                elif loop := self.loop(path, Path(current), visited):
                    self.note(path, loop)
                else:
                    visited.add(os.path.realpath(path))
                    kept.append(name)
            dirs[:] = kept
            for name in sorted(files):
                path = Path(current) / name
                if is_image_file(path):
                    found.append(path)
                else:
                    self.note(path, "broken or looping link" if path.is_symlink() and not path.exists() else "")
        return found

    def warning(self) -> list[str]:
        if not self.ignored:
            return []
        named = ", ".join(self.ignored[:NAMED_IGNORED])
        more = f" and {len(self.ignored) - NAMED_IGNORED} more" if len(self.ignored) > NAMED_IGNORED else ""
        return [f"ignored {len(self.ignored)} item(s) of {self.root} that are neither class folders nor images: "
                f"{named}{more}"]


def _scan_class_folders(folder: Path, walk: _Walk, empty: list[Path]) -> dict[str, list[Path]]:
    per_class = {}
    for class_dir in walk.class_dirs(folder):
        images = walk.images_under(class_dir)
        if images:
            per_class[class_dir.name] = images
        else:
            empty.append(class_dir)
    return per_class


def _find_split_dirs(folder: Path) -> dict[str, Path]:
    """The train/val/test subfolders of a pre-split dataset (empty when `folder` is not one)."""
    children = {p.name.lower(): p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}
    found = {}
    for split, names in SPLIT_DIR_NAMES.items():
        for name in names:
            if name in children:
                found[split] = children[name]
                break
    return found if "train" in found else {}


def _no_classes_error(folder: Path) -> ImgclsError:
    if any(is_image_file(p) for p in folder.iterdir() if p.is_file()):
        return ImgclsError(f"{folder} holds images but no class subfolders: put each class's images in a subfolder "
                           f"named after the class; {expected_layout(folder)}")
    return ImgclsError(f"{folder} has no class subfolders with images; {expected_layout(folder)}")


def check_two_classes(folder: Path | str, class_names: list[str]) -> None:
    """A classifier needs at least 2 classes (one class would train to a loss of 0 and learn nothing)."""
    if len(class_names) < 2:
        which = f"only one class ({class_names[0]})" if class_names else "no class"
        raise ImgclsError(f"{folder} has {which} with readable images; a classifier needs at least 2 classes: add "
                          f"a subfolder of images for each class")


def normalization_twins(class_names: list[str]) -> list[str]:
    """A warning for class names that differ only in Unicode normalization (café typed on macOS, NFD, and on
    Linux, NFC): the file system keeps them apart, so they are two classes that look like one."""
    groups: dict[str, list[str]] = {}
    for name in class_names:
        groups.setdefault(unicodedata.normalize("NFC", name), []).append(name)
    warnings = []
    for names in groups.values():
        if len(names) > 1:
            shown = " and ".join(f"{name!a} ({_form(name)})" for name in names)
            warnings.append(f"class folders {shown} are the same name in different Unicode normalizations: they are "
                            f"{len(names)} classes here; merge or rename them")
    return warnings


def _form(name: str) -> str:
    return next((form for form in ("NFC", "NFD") if unicodedata.normalize(form, name) == name), "mixed")


def scan_folder(folder: Path) -> FolderScan:
    """Labelled image files of a class-per-folder dataset, or of a train/val[/test] layout."""
    if not folder.exists():
        raise ImgclsError(f"dataset folder {folder} does not exist; pass a folder of class subfolders or a built-in "
                          f"name (mnist, fashion-mnist, cifar10, cifar100); {expected_layout(folder)}")
    if not folder.is_dir():
        raise ImgclsError(f"{folder} is a file, not a folder; {expected_layout(folder)}")
    walk = _Walk(folder)
    split_dirs = _find_split_dirs(folder)
    empty: list[Path] = []
    if not split_dirs:
        per_class = _scan_class_folders(folder, walk, empty)
        if not per_class and not empty:
            raise _no_classes_error(folder)
        class_names = sorted(per_class)
        scan = FolderScan(class_names, {"all": _to_split(per_class, class_names)}, folder, empty)
    else:
        scan = _scan_split_dirs(folder, split_dirs, walk)
    names = scan.class_names + [path.name for path in scan.empty_classes]
    scan.warnings = walk.warning() + normalization_twins(names) + scan.warnings
    return scan


def _scan_split_dirs(folder: Path, split_dirs: dict[str, Path], walk: _Walk) -> FolderScan:
    for entry in walk.class_dirs(folder):
        if entry not in split_dirs.values():
            walk.note(entry)
    empty: list[Path] = []
    per_split = {split: _scan_class_folders(path, walk, empty if split == "train" else []) for split, path in
                 split_dirs.items()}
    if not per_split["train"] and not empty:
        raise _no_classes_error(split_dirs["train"])
    class_names = sorted(per_split["train"])
    splits, warnings = {}, []
    for split, per_class in per_split.items():
        unknown = sorted(set(per_class) - set(class_names))
        if unknown:
            raise ImgclsError(f"class folder(s) {', '.join(unknown)} in {split_dirs[split]} have no images in "
                              f"{split_dirs['train']}; add training images for them or remove them")
        if per_class:
            splits[split] = _to_split(per_class, class_names)
        elif split != "train":
            warnings.append(f"{split_dirs[split]} has no images; ignored")
    return FolderScan(class_names, splits, split_dirs["train"], empty, warnings)


def _to_split(per_class: dict[str, list[Path]], class_names: list[str]) -> FileSplit:
    paths, labels = [], []
    for label, name in enumerate(class_names):
        images = per_class.get(name, [])
        paths.extend(images)
        labels.extend([label] * len(images))
    return FileSplit(paths, np.asarray(labels, dtype=np.int64))


def image_files(inputs: list[str | Path]) -> list[Path]:
    """Files as given, folders searched recursively for images (hidden files skipped), sorted per folder."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = [p for p in _Walk(path).images_under(path) if p.is_file()]
            if not found:
                extensions = " ".join(sorted(IMAGE_EXTENSIONS))
                raise ImgclsError(f"folder {path} has no images (extensions: {extensions})")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ImgclsError(f"{path} does not exist; pass image files or folders of images")
    return files
