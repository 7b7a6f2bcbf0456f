"""build_dataset: any DATA argument to decoded, split, labelled uint8 tensors."""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import track

from imgcls.config import DataConfig, cache_dir_of, data_root_of
from imgcls.console import get_console, info
from imgcls.data.builtin import BUILTINS, builtin_name, load_builtin
from imgcls.data.cache import LazyImages, MappedImages, choose_cache, decoded_bytes, disk_cache, select_images
from imgcls.data.folders import FileSplit, FolderScan, check_two_classes, scan_folder
from imgcls.data.images import DECODE_ERRORS, GRAYSCALE_MODES, decode_image, read_mode
from imgcls.data.leakage import copies_across, copies_warning, groups_across, split_keeping_groups, without_copies
from imgcls.data.screening import (
    LEFT_OUT_CLASS,
    classes_without_images,
    kept_labels,
    left_out_warning,
    missing_classes,
    refuse_unreadable,
    unreadable_only,
)
from imgcls.data.split import cap_per_class, stratified_split
from imgcls.errors import ImgclsError, describe

DecodedImages = torch.Tensor | MappedImages | LazyImages  # (N, C, S, S) uint8: in RAM, memory-mapped, or lazy


@dataclass
class ImageSplit:
    images: DecodedImages
    labels: torch.Tensor  # (N,) int64
    paths: list[str] | None = None  # source files, for folders

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class DataBundle:
    source: str
    class_names: list[str]
    channels: int
    img_size: int
    hflip_ok: bool
    splits: dict[str, ImageSplit]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    warnings: list[str] = field(default_factory=list)
    cache: str = "ram"  # where the decoded images live: ram, disk (memory-mapped) or none (decoded per access)
    dropped_copies: list[tuple[str, str]] = field(default_factory=list)  # (val/test file, its twin) by --dedupe

    def class_counts(self, split: str) -> list[int]:
        """Number of images of each class in `split`."""
        labels = self.splits[split].labels.numpy()
        return np.bincount(labels, minlength=len(self.class_names)).tolist()

    def regrouped(self, parts: dict[str, np.ndarray], of: str = "all") -> DataBundle:
        """The same data with new splits: each part the images of split `of` at those indices (a fold of a
        cross-validation); the decoded images are shared, not copied."""
        splits = {name: _select(self.splits[of], indices) for name, indices in parts.items()}
        return dataclasses.replace(self, splits=splits, warnings=[])


def build_dataset(
    config: DataConfig,
    seed: int,
    img_size: int,
    class_names: list[str] | None = None,
    channels: int | None = None,
    interpolation: str = "bilinear",
    whole: bool = False,
    processes: int = 1,
) -> DataBundle:
    """Resolve `config.source`, split it (seeded, stratified) and decode every image once (`config.cache`),
    resized to `img_size` with `interpolation`.

    `class_names` and `channels` pin the output to a trained model's (channels None: 1 when every image is
    grayscale, else 3); `whole` keeps a class-per-folder dataset as one split named "all" (evaluating a
    model on new data). With several `processes` (DDP), RAM caching goes through the disk cache so that
    only one process decodes. Unreadable files are left out and listed in `skipped` (`config.strict`: an
    error); a class folder without a readable image is an error (`config.allow_empty`: left out), unless
    `class_names` are pinned.
    """
    channels = channels or config.channels
    source_path = Path(config.source).expanduser()
    name = None if source_path.exists() else builtin_name(config.source)
    if name is not None:
        bundle = _build_builtin(name, config, seed, data_root_of(config), channels, img_size, interpolation)
    else:
        bundle = _build_folder(source_path, config, seed, channels, (img_size, interpolation), whole, processes,
                               class_names is not None)
    if class_names is not None:
        _relabel(bundle, class_names)
    if config.max_per_class is not None:
        for split_name, split in bundle.splits.items():
            keep = cap_per_class(split.labels.numpy(), config.max_per_class, seed)
            bundle.splits[split_name] = _select(split, keep)
    for split_name in ("val", "test"):
        if split_name in bundle.splits:
            bundle.warnings += missing_classes(split_name, bundle.class_names, bundle.class_counts(split_name))
    return bundle


def _select(split: ImageSplit, indices: np.ndarray) -> ImageSplit:
    if len(indices) == len(split):
        return split
    paths = [split.paths[i] for i in indices] if split.paths is not None else None
    return ImageSplit(select_images(split.images, indices), split.labels[torch.as_tensor(indices)], paths)


def _relabel(bundle: DataBundle, class_names: list[str]) -> None:
    """Map the data's labels onto a trained model's class order."""
    unknown = sorted(set(bundle.class_names) - set(class_names))
    if unknown:
        raise ImgclsError(
            f"class(es) {', '.join(unknown)} in {bundle.source} are not among the model's classes "
            f"({', '.join(class_names)}); evaluate on data with the same class names"
        )
    mapping = np.asarray([class_names.index(name) for name in bundle.class_names], dtype=np.int64)
    for split in bundle.splits.values():
        split.labels = split.labels.new_tensor(mapping)[split.labels]
    bundle.class_names = list(class_names)


def _build_builtin(name: str, config: DataConfig, seed: int, data_root: Path, channels, img_size: int,
                   interpolation: str) -> DataBundle:
    spec = BUILTINS[name]
    channels = channels or spec.channels
    warnings = []
    train_images, train_labels, class_names = load_builtin(name, data_root, train=True)
    test_images, test_labels, _ = load_builtin(name, data_root, train=False)
    if config.test_split > 0:
        warnings.append(f"--test-split is ignored for {name}: its official test set is used")
    if config.cache in ("disk", "none"):
        warnings.append(f"--cache {config.cache} is ignored for {name}: built-in datasets are arrays in memory")
    train_index, val_index = stratified_split(train_labels, [config.val_split], seed)

    def to_split(images: np.ndarray, labels: np.ndarray) -> ImageSplit:
        tensor = _adapt(torch.from_numpy(images), channels, img_size, interpolation)
        return ImageSplit(tensor, torch.from_numpy(labels))

    splits = {"train": to_split(train_images[train_index], train_labels[train_index])}
    if len(val_index):
        splits["val"] = to_split(train_images[val_index], train_labels[val_index])
    splits["test"] = to_split(test_images, test_labels)
    return DataBundle(name, class_names, channels, img_size, spec.hflip_ok, splits, warnings=warnings)


def _adapt(images, channels: int, img_size: int, interpolation: str = "bilinear"):
    """Change the channel count (gray<->RGB) and resolution of a uint8 image batch."""
    if images.shape[1] != channels:
        if channels == 3:
            images = images.expand(-1, 3, -1, -1)
        else:  # ITU-R 601 luma, as PIL's convert("L")
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * weights).sum(1, keepdim=True).round().to(torch.uint8)
    if images.shape[-1] != img_size or images.shape[-2] != img_size:
        resized = F.interpolate(images.float(), size=(img_size, img_size), mode=interpolation, antialias=True)
        images = resized.round().clamp(0, 255).to(torch.uint8)
    return images.contiguous()


def _split_files(folder: Path, config: DataConfig, seed: int, whole: bool, workers: int, warnings: list[str]
                 ) -> tuple[FolderScan, dict[str, FileSplit], list[tuple[str, Path, Path]]]:
    """The folder's scan and the files of each split: a class-per-folder dataset split here (groups and
    byte-identical copies kept in one split), a pre-split folder as it is (its cross-split copies reported, or
    dropped with --dedupe)."""
    scan = scan_folder(folder)
    warnings.extend(scan.warnings)
    fractions = {"all": [config.val_split, config.test_split], "train": [config.val_split]}
    to_split = next((name for name in ("all", "train") if name in scan.splits), None)
    if whole or to_split is None or (to_split == "train" and ("val" in scan.splits or config.val_split <= 0)):
        splits = dict(scan.splits)
    else:
        parts, notes = split_keeping_groups(scan.splits[to_split], fractions[to_split], seed, folder,
                                            config.group_by, workers)
        warnings.extend(notes)
        splits = {name: scan.splits[to_split].subset(indices)
                  for name, indices in zip(("train", "val", "test"), parts) if len(indices)}
        if "test" in scan.splits:
            splits["test"] = scan.splits["test"]
    if whole or set(splits) == {"train"} or "all" in splits or to_split == "all":
        return scan, splits, []  # a split made here has no cross-split copies: they were kept together
    if config.group_by and to_split != "all":
        warnings.extend(groups_across(splits, folder, config.group_by))
    copies = copies_across(splits, workers)
    if copies:
        warnings.append(copies_warning(copies, config.dedupe))
        if config.dedupe:
            splits = without_copies(splits, copies)
    return scan, splits, copies if config.dedupe else []


def _build_folder(folder: Path, config: DataConfig, seed: int, channels, resize: tuple[int, str], whole: bool,
                  processes: int, pinned: bool) -> DataBundle:
    """The folder's files split, screened and decoded; `pinned`: the classes are a trained model's (no class
    folder is an error for having no image)."""
    workers = max(1, config.workers or os.cpu_count() or 1)
    cache_dir = cache_dir_of(config)
    warnings: list[str] = []
    scan, splits, dropped = _split_files(folder, config, seed, whole, workers, warnings)
    if scan.empty_classes and not (pinned or config.allow_empty):
        raise classes_without_images(scan.empty_classes, "have no image files")
    if scan.empty_classes:
        warnings.append(left_out_warning(scan.empty_classes, 0) if not pinned else
                        f"class folder(s) {', '.join(map(str, scan.empty_classes))} have no images; ignored")
    check_two_classes(folder, scan.class_names)
    if config.max_per_class is not None:  # cap before decoding: a few samples of a big folder decode fast
        for split_name, split in splits.items():
            splits[split_name] = split.subset(cap_per_class(split.labels, config.max_per_class, seed))
    skipped: list[tuple[str, str]] = []
    if channels is None:
        channels = _detect_channels(splits, workers, skipped)
    img_size, interpolation = resize
    splits = _without(splits, {path for path, _ in skipped})
    files = sorted({str(path) for split in splits.values() for path in split.paths})
    mode = choose_cache(config.cache, len(files), channels, img_size, cache_dir)
    if mode == "none":
        decoded = {name: ImageSplit(LazyImages(split.paths, img_size, channels, interpolation),
                                    _long(split.labels), [str(path) for path in split.paths])
                   for name, split in splits.items()}
    elif mode == "ram" and processes == 1:
        decoded = {name: _decode_split(split, resize, channels, workers, skipped) for name, split in splits.items()}
    else:  # disk, or several processes: one decodes into the memory-mapped cache, all share its pages
        decoded = _from_disk_cache(files, splits, resize, channels, cache_dir, workers, skipped)
        mode = "disk" if mode == "disk" else f"disk, shared by {processes} processes"
    if config.strict and skipped:
        raise refuse_unreadable(str(folder), skipped)
    if not pinned:
        skipped += [(str(path), LEFT_OUT_CLASS) for path in scan.empty_classes]
    bundle = DataBundle(str(folder), scan.class_names, channels, img_size, True, decoded, skipped, warnings,
                        cache=mode, dropped_copies=[(str(path), str(twin)) for _, path, twin in dropped])
    return bundle if pinned else _without_unreadable_classes(bundle, scan, config.allow_empty)


def _without_unreadable_classes(bundle: DataBundle, scan: FolderScan, allow_empty: bool) -> DataBundle:
    """Classes whose every training file is unreadable: an error naming their folders, or (`allow_empty`) left out
    of every split, the other classes relabelled in their order."""
    counts = bundle.class_counts("train" if "train" in bundle.splits else "all")
    folders = [scan.classes_in / name for name, count in zip(bundle.class_names, counts) if count == 0]
    if not folders:
        return bundle
    if not allow_empty:
        raise unreadable_only(folders, bundle.skipped)
    mapping = kept_labels(counts)
    held_out = 0
    for name, split in bundle.splits.items():
        kept = _select(split, np.flatnonzero(mapping[split.labels.numpy()] >= 0))
        held_out += len(split) - len(kept)
        bundle.splits[name] = ImageSplit(kept.images, torch.from_numpy(mapping)[kept.labels], kept.paths)
    bundle.class_names = [name for name, label in zip(bundle.class_names, mapping) if label >= 0]
    bundle.skipped += [(str(folder), LEFT_OUT_CLASS) for folder in folders]
    bundle.warnings.append(left_out_warning(folders, held_out))
    check_two_classes(bundle.source, bundle.class_names)
    return bundle


def _long(labels: np.ndarray):
    return torch.as_tensor(labels, dtype=torch.long)


def _without(splits: dict[str, FileSplit], bad: set[str]) -> dict[str, FileSplit]:
    if not bad:
        return splits
    kept = {}
    for name, split in splits.items():
        kept[name] = split.subset([i for i, path in enumerate(split.paths) if str(path) not in bad])
    return kept


def _from_disk_cache(files: list[str], splits: dict[str, FileSplit], resize: tuple[int, str], channels: int,
                     cache_dir: Path, workers: int, skipped: list) -> dict[str, ImageSplit]:
    img_size, interpolation = resize

    def decode_all(target) -> list[tuple[str, str]]:
        size_mib = decoded_bytes(len(files), channels, img_size) / 2**20
        info(f"decoding {len(files)} images once into the disk cache ({size_mib:.0f} MiB in {cache_dir / 'decoded'})")
        failed: list[tuple[str, str]] = []
        _decode_files([Path(f) for f in files], target, workers, failed, interpolation)
        return failed

    data_file, meta = disk_cache([Path(f) for f in files], img_size, channels, cache_dir, decode_all, interpolation)
    bad = {path for path, _ in meta["skipped"]}
    skipped.extend((path, reason) for path, reason in meta["skipped"])
    row_of = {path: row for row, path in enumerate(files)}
    decoded = {}
    for name, split in _without(splits, bad).items():
        rows = np.asarray([row_of[str(path)] for path in split.paths], dtype=np.int64)
        images = MappedImages(data_file, tuple(meta["shape"]), rows, meta["key"])
        decoded[name] = ImageSplit(images, _long(split.labels), [str(path) for path in split.paths])
    return decoded


def _detect_channels(splits: dict[str, FileSplit], workers: int, skipped: list[tuple[str, str]]) -> int:
    """1 when every image is grayscale, else 3; files whose header cannot be read are skipped."""
    paths = [path for split in splits.values() for path in split.paths]

    def mode_of(path: Path) -> str | None:
        try:
            return read_mode(path)
        except DECODE_ERRORS as error:
            skipped.append((str(path), describe(error)))
            return None

    with ThreadPoolExecutor(workers) as pool:
        modes = {mode for mode in pool.map(mode_of, paths) if mode is not None}
    return 1 if modes and modes <= GRAYSCALE_MODES else 3


def _decode_files(paths: list[Path], target, workers: int, skipped: list, interpolation: str = "bilinear"):
    """Decode `paths` into the rows of `target` ((N, C, S, S) uint8) with a thread pool; returns the
    mask of rows decoded, and records the files that could not be."""
    size, channels = target.shape[-1], target.shape[1]
    ok = np.zeros(len(paths), dtype=bool)

    def decode_into(index: int) -> None:
        try:
            target[index] = torch.from_numpy(decode_image(paths[index], size, channels, interpolation))
            ok[index] = True
        except DECODE_ERRORS as error:
            skipped.append((str(paths[index]), describe(error)))

    console = get_console()
    with ThreadPoolExecutor(workers) as pool:
        if len(paths) >= 2000 and console.is_terminal:
            list(track(pool.map(decode_into, range(len(paths))), total=len(paths),
                       description="decoding images", console=console, transient=True))
        else:
            list(pool.map(decode_into, range(len(paths))))
    return ok


def _decode_split(split: FileSplit, resize: tuple[int, str], channels: int, workers: int, skipped) -> ImageSplit:
    """Decode every file once into one uint8 tensor in RAM; unreadable files are skipped and recorded."""
    img_size, interpolation = resize
    images = torch.empty((len(split.paths), channels, img_size, img_size), dtype=torch.uint8)
    ok = _decode_files(split.paths, images, workers, skipped, interpolation)
    keep = np.flatnonzero(ok)
    return ImageSplit(
        images[torch.as_tensor(keep, dtype=torch.long)].contiguous() if len(keep) < len(ok) else images,
        torch.as_tensor(split.labels[keep], dtype=torch.long),
        [str(split.paths[i]) for i in keep],
    )
