"""What the data check reads from every image, decoded once at full resolution: size, mode, EXIF rotation, a
digest of the decoded pixels (exact duplicates whatever the file name or lossless format), how flat the image
is, and a 32x32 grayscale thumbnail (near-duplicates, `data.near_duplicates`)."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from imgcls.data.images import DECODE_ERRORS, to_channels
from imgcls.errors import describe

THUMB = 32  # side of the thumbnails near-duplicates are compared on
FLAT_STD = 2.0  # gray levels: a thumbnail this flat pairs with every other flat image; flagged, never paired
EXIF_ORIENTATION = 0x0112


@dataclass
class Fingerprints:
    """One row per readable image, in the order given."""

    width: np.ndarray  # (N,) int
    height: np.ndarray  # (N,) int
    mode: list[str]  # PIL mode as stored ("L", "RGB", "P", "I;16", ...)
    exif_rotated: np.ndarray  # (N,) bool: the file's EXIF orientation turns or mirrors it
    pixel_digest: list[str]  # md5 of the decoded RGB pixels and their size
    thumbs: np.ndarray  # (N, THUMB, THUMB) uint8 grayscale, the whole image resized
    flat: np.ndarray  # (N,) bool: near-constant image

    def __len__(self) -> int:
        return len(self.pixel_digest)


@dataclass(frozen=True)
class _Row:
    width: int
    height: int
    mode: str
    exif_rotated: bool
    pixel_digest: str
    thumb: np.ndarray


def _row_of(image: Image.Image, mode: str, exif_rotated: bool) -> _Row:
    rgb = to_channels(image, 3)
    digest = hashlib.md5(f"{rgb.width}x{rgb.height}\0".encode())
    digest.update(rgb.tobytes())
    thumb = rgb.convert("L").resize((THUMB, THUMB), Image.Resampling.BILINEAR, reducing_gap=None)
    return _Row(rgb.width, rgb.height, mode, exif_rotated, digest.hexdigest(), np.asarray(thumb, dtype=np.uint8))


def _read_file(path: Path) -> _Row:
    with Image.open(path) as opened:
        orientation = opened.getexif().get(EXIF_ORIENTATION, 1)
        mode = opened.mode
        image = ImageOps.exif_transpose(opened)
        image.load()
        return _row_of(image, mode, orientation not in (1, None))


def _collect(rows: list[_Row]) -> Fingerprints:
    thumbs = np.stack([row.thumb for row in rows]) if rows else np.zeros((0, THUMB, THUMB), np.uint8)
    return Fingerprints(
        width=np.asarray([row.width for row in rows], dtype=np.int64),
        height=np.asarray([row.height for row in rows], dtype=np.int64),
        mode=[row.mode for row in rows],
        exif_rotated=np.asarray([row.exif_rotated for row in rows], dtype=bool),
        pixel_digest=[row.pixel_digest for row in rows],
        thumbs=thumbs,
        flat=thumbs.reshape(len(rows), -1).std(axis=1) < FLAT_STD if rows else np.zeros(0, bool),
    )


def fingerprint_files(paths: list[Path], workers: int = 2) -> tuple[Fingerprints, list[int], dict[int, str]]:
    """Fingerprints of the readable files, their positions in `paths`, and {position: reason} for the others."""
    def read(position: int) -> tuple[int, _Row | str]:
        try:
            return position, _read_file(paths[position])
        except DECODE_ERRORS as error:
            return position, describe(error)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(read, range(len(paths)), chunksize=64))
    rows = [row for _, row in results if isinstance(row, _Row)]
    positions = [position for position, row in results if isinstance(row, _Row)]
    errors = {position: row for position, row in results if isinstance(row, str)}
    return _collect(rows), positions, errors


def fingerprint_arrays(images: np.ndarray) -> Fingerprints:
    """Fingerprints of decoded (N, C, H, W) uint8 images (a built-in dataset's arrays)."""
    mode = "L" if images.shape[1] == 1 else "RGB"
    rows = []
    for array in images:
        pixels = array[0] if mode == "L" else array.transpose(1, 2, 0)
        rows.append(_row_of(Image.fromarray(np.ascontiguousarray(pixels), mode=mode), mode, False))
    return _collect(rows)


def split_fingerprints(splits: dict, class_names: list[str]) -> dict[str, dict[str, object]]:
    """What a resumed run checks its data against, per split: the image count, and a digest of the class names,
    every image's label and (for folders) its class folder and file name. Cheap: no file is read."""
    prints: dict[str, dict[str, object]] = {}
    for name, split in splits.items():
        digest = hashlib.sha256("\0".join(class_names).encode())
        digest.update(np.ascontiguousarray(split.labels.numpy(), dtype=np.int64).tobytes())
        for path in split.paths or []:
            digest.update("/".join(Path(path).parts[-2:]).encode() + b"\0")
        prints[name] = {"images": len(split), "sha256": digest.hexdigest()}
    return prints


def fingerprint_changes(saved: dict[str, dict], current: dict[str, dict]) -> list[str]:
    """How the data differs from the saved fingerprints, one phrase per split ([] when it is the same)."""
    changes = []
    for name in sorted(set(saved) | set(current)):
        before, now = saved.get(name), current.get(name)
        if before is None or now is None:
            changes.append(f"split {name} {'is new' if before is None else 'is gone'}")
        elif before["images"] != now["images"]:
            changes.append(f"split {name} has {now['images']} images, {before['images']} when the run started")
        elif before["sha256"] != now["sha256"]:
            changes.append(f"split {name} holds other files or labels than when the run started")
    return changes

