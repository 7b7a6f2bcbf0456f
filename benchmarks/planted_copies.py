"""A pre-split folder of real Fashion-MNIST images salted with planted copies across splits.

Used by the duplicate-detection test (tests/data/test_duplicates.py) and benchmark (benchmarks/data_health.py):
each copy is one of the kinds users make by accident — the same file again, renamed, converted to a lossless
format, re-encoded as JPEG, resized, cropped, brightened or darkened, mirrored — and the answer key says which
original it came from, so recall per kind and precision among reported pairs can be counted.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

KINDS = ("exact", "renamed", "png_to_bmp", "jpeg_q60", "resize", "crop", "brightness", "hflip")


@dataclass(frozen=True)
class PlantedPair:
    original: str  # path of the untouched image
    copy: str  # path of the planted copy (in the other split)
    kind: str


def _transformed(source: Path, kind: str, target_stem: Path, rng: np.random.Generator) -> Path:
    """Write the copy of `source` of one kind next to `target_stem` (suffix chosen here); returns its path."""
    target_stem.parent.mkdir(parents=True, exist_ok=True)
    if kind == "exact":  # the same bytes under the same name, in the other split
        target = target_stem.with_name(source.name)
        shutil.copyfile(source, target)
        return target
    if kind == "renamed":
        target = target_stem.with_suffix(source.suffix)
        shutil.copyfile(source, target)
        return target
    image = Image.open(source)
    image.load()
    width, height = image.size
    if kind == "png_to_bmp":
        target = target_stem.with_suffix(".bmp")
        image.save(target)
        return target
    if kind == "jpeg_q60":
        target = target_stem.with_suffix(".jpg")
        image.convert("RGB" if image.mode not in ("L", "RGB") else image.mode).save(target, quality=60)
        return target
    if kind == "resize":
        scale = 0.9 if rng.random() < 0.5 else 1.1
        image = image.resize((round(width * scale), round(height * scale)), Image.Resampling.BICUBIC)
    elif kind == "crop":  # 5 % of each side's length, taken off at a random place
        cut_w, cut_h = max(1, round(0.05 * width)), max(1, round(0.05 * height))
        left, top = int(rng.integers(0, cut_w + 1)), int(rng.integers(0, cut_h + 1))
        image = image.crop((left, top, left + width - cut_w, top + height - cut_h))
    elif kind == "brightness":
        image = ImageEnhance.Brightness(image).enhance(1.15 if rng.random() < 0.5 else 0.85)
    elif kind == "hflip":
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    else:
        raise ValueError(f"unknown kind of copy {kind!r}")
    target = target_stem.with_suffix(".png")
    image.save(target)
    return target


def folder_name(class_name: str) -> str:
    """A class name usable as one folder name (Fashion-MNIST has "T-shirt/top")."""
    return class_name.replace("/", "-")


def write_images(folder: Path, images: np.ndarray, labels: np.ndarray, class_names: list[str], prefix: str
                 ) -> list[Path]:
    """Save (N, H, W) or (N, 1, H, W) uint8 images as PNG files in class subfolders of `folder`."""
    paths = []
    for index, (image, label) in enumerate(zip(images, labels)):
        class_dir = folder / folder_name(class_names[int(label)])
        class_dir.mkdir(parents=True, exist_ok=True)
        path = class_dir / f"{prefix}{index:05d}.png"
        Image.fromarray(np.asarray(image).reshape(image.shape[-2:])).save(path)
        paths.append(path)
    return paths


def plant_copies(root: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                 class_names: list[str], per_kind: int, seed: int = 0) -> list[PlantedPair]:
    """Write train/ and test/ class folders of the given images under `root`, then `per_kind` copies of every
    kind, each of a different original: half of train originals placed in test/, half of test originals in
    train/ (always under the original's class). Returns the answer key."""
    rng = np.random.default_rng(seed)
    originals = {"train": write_images(root / "train", *train, class_names, "tr"),
                 "test": write_images(root / "test", *test, class_names, "te")}
    chosen = {split: list(rng.permutation(len(paths))) for split, paths in originals.items()}
    planted = []
    for kind in KINDS:
        for number in range(per_kind):
            source_split = "train" if number % 2 == 0 else "test"
            target_split = "test" if source_split == "train" else "train"
            source = originals[source_split][chosen[source_split].pop()]
            target_stem = root / target_split / source.parent.name / f"copy_{kind}_{number:04d}"
            copy = _transformed(source, kind, target_stem, rng)
            planted.append(PlantedPair(str(source), str(copy), kind))
    return planted
