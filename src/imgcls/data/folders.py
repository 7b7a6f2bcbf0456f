"""Find labelled image files on disk: class-per-folder datasets and train/val/test layouts."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imgcls.data.images import is_image_file
from imgcls.errors import ImgclsError

SPLIT_DIR_NAMES = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}


@dataclass
class FileSplit:
    paths: list[Path]
    labels: np.ndarray

    def subset(self, indices: Sequence[int] | np.ndarray) -> FileSplit:
        """The files at `indices`, in that order."""
        return FileSplit([self.paths[i] for i in indices], self.labels[np.asarray(indices, dtype=np.int64)])


@dataclass
class FolderScan:
    class_names: list[str]
    splits: dict[str, FileSplit]  # "all" for a class-per-folder dataset, else "train"/"val"/"test"
    warnings: list[str] = field(default_factory=list)


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_under(folder: Path) -> list[Path]:
    """Image files below `folder`, recursively, skipping hidden files and folders; sorted for determinism."""
    found: list[Path] = []
    for current, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(current) / name for name in sorted(files) if is_image_file(Path(name)))
    return found


def _scan_class_folders(folder: Path, warnings: list[str]) -> dict[str, list[Path]]:
    per_class = {}
    for class_dir in _visible_dirs(folder):
        images = _images_under(class_dir)
        if images:
            per_class[class_dir.name] = images
        else:
            warnings.append(f"class folder {class_dir} has no images; ignored")
    return per_class


def _find_split_dirs(folder: Path) -> dict[str, Path]:
    """The train/val/test subfolders of a pre-split dataset (empty when `folder` is not one)."""
    children = {p.name.lower(): p for p in _visible_dirs(folder)}
    found = {}
    for split, names in SPLIT_DIR_NAMES.items():
        for name in names:
            if name in children:
                found[split] = children[name]
                break
    return found if "train" in found else {}


def _no_classes_error(folder: Path) -> ImgclsError:
    if any(is_image_file(p) for p in folder.iterdir() if p.is_file()):
        return ImgclsError(
            f"{folder} holds images but no class subfolders; put each class's images in a subfolder named "
            f"after the class (e.g. {folder}/cat/, {folder}/dog/)"
        )
    return ImgclsError(
        f"{folder} has no class subfolders with images (extensions: jpg, jpeg, png, bmp, gif, webp, tif, tiff); "
        f"put each class's images in a subfolder named after the class"
    )


def _check_two_classes(folder: Path, class_names: list[str]) -> None:
    if len(class_names) == 1:
        raise ImgclsError(
            f"{folder} has only one class ({class_names[0]}); a classifier needs at least two class subfolders"
        )


def scan_folder(folder: Path) -> FolderScan:
    """Labelled image files of a class-per-folder dataset, or of a train/val[/test] layout."""
    if not folder.exists():
        raise ImgclsError(
            f"dataset folder {folder} does not exist; pass a folder with one subfolder per class, "
            f"or a built-in name (mnist, fashion-mnist, cifar10, cifar100)"
        )
    if not folder.is_dir():
        raise ImgclsError(f"{folder} is a file, not a folder; pass a folder with one subfolder per class")
    warnings: list[str] = []
    split_dirs = _find_split_dirs(folder)
    if not split_dirs:
        per_class = _scan_class_folders(folder, warnings)
        if not per_class:
            raise _no_classes_error(folder)
        class_names = sorted(per_class)
        _check_two_classes(folder, class_names)
        return FolderScan(class_names, {"all": _to_split(per_class, class_names)}, warnings)

    per_split = {split: _scan_class_folders(path, warnings) for split, path in split_dirs.items()}
    if not per_split["train"]:
        raise _no_classes_error(split_dirs["train"])
    class_names = sorted(per_split["train"])
    _check_two_classes(split_dirs["train"], class_names)
    splits = {}
    for split, per_class in per_split.items():
        unknown = sorted(set(per_class) - set(class_names))
        if unknown:
            raise ImgclsError(
                f"class folder(s) {', '.join(unknown)} in {split_dirs[split]} have no images in "
                f"{split_dirs['train']}; add training images for them or remove them"
            )
        if per_class:
            splits[split] = _to_split(per_class, class_names)
        else:
            warnings.append(f"{split_dirs[split]} has no images; ignored")
    return FolderScan(class_names, splits, warnings)


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
            found = [p for p in _images_under(path) if p.is_file()]
            if not found:
                raise ImgclsError(f"folder {path} has no images (jpg, jpeg, png, bmp, gif, webp, tif, tiff)")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ImgclsError(f"{path} does not exist; pass image files or folders of images")
    return files
