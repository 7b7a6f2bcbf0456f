"""Decoded-image stores: decode and resize every file once, then serve uint8 batches by index.

Three stores, one interface (`len`, `shape`, `store[index] -> uint8 tensor`, `select(rows)`):
- RAM: a plain uint8 tensor (the default when the decoded images fit comfortably in memory);
- disk: `MappedImages`, a raw uint8 file in the cache folder, memory-mapped, reused by later runs and
  shared by DataLoader workers and DDP processes through the page cache. It is keyed on the resolved
  file list, each file's size and mtime, the resolution, channel count and decoder version, so a changed
  dataset is decoded again; a lock makes concurrent processes decode it once;
- none: `LazyImages`, decoding the requested files on every access (what a plain ImageFolder does).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imgcls.atomic import write_json_atomic
from imgcls.data.images import DECODE_ERRORS, decode_image
from imgcls.errors import ImgclsError, describe

DECODER_VERSION = 1  # bump when decode_image changes its output: old disk caches stop matching
RAM_FRACTION = 0.25  # auto keeps decoded images in RAM up to this share of the available memory


def decoded_bytes(count: int, channels: int, img_size: int) -> int:
    return count * channels * img_size * img_size


def available_memory() -> int:
    """Bytes of memory available to new allocations (Linux: MemAvailable), else physical memory."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def choose_cache(mode: str, count: int, channels: int, img_size: int, cache_dir: Path) -> str:
    """`auto` -> ram when the decoded images take at most RAM_FRACTION of available memory, else disk
    when the cache folder's disk has room, else none."""
    if mode != "auto":
        return mode
    need = decoded_bytes(count, channels, img_size)
    if need <= RAM_FRACTION * available_memory():
        return "ram"
    probe = cache_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if shutil.disk_usage(probe).free > 1.2 * need:
        return "disk"
    return "none"


def dataset_key(paths: list[Path], img_size: int, channels: int, interpolation: str = "bilinear") -> str:
    """Identifies decoded images: every file's resolved path, size and mtime, the resolution, channels,
    resampling and decoder version."""
    parts = [DECODER_VERSION, img_size, channels, len(paths)] + ([interpolation] if interpolation != "bilinear" else [])
    digest = hashlib.sha256(json.dumps(parts).encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{os.path.realpath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _as_rows(index: Any) -> np.ndarray | int | slice:
    if isinstance(index, (np.integer, int)):
        return int(index)
    if isinstance(index, slice):
        return index
    if hasattr(index, "numpy"):
        index = index.numpy()
    return np.asarray(index, dtype=np.int64)


class MappedImages:
    """Rows of a memory-mapped (N, C, S, S) uint8 file; safe to pickle into DataLoader workers (each opens
    its own map)."""

    def __init__(self, file: Path, full_shape: tuple[int, ...], rows: np.ndarray, key: str):
        self.file, self.full_shape, self.rows, self.key = Path(file), tuple(full_shape), rows, key
        self._array: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.full_shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def _map(self) -> np.ndarray:
        if self._array is None:
            self._array = np.memmap(self.file, dtype=np.uint8, mode="r", shape=self.full_shape)
        return self._array

    def __getitem__(self, index):
        rows = self.rows[_as_rows(index)]
        if isinstance(rows, np.ndarray) and rows.ndim == 1 and len(rows) > 1:
            order = np.argsort(rows, kind="stable")  # read the file in order, put the batch back in order
            out = np.empty((len(rows), *self.full_shape[1:]), dtype=np.uint8)
            out[order] = self._map()[rows[order]]
            return torch.from_numpy(out)
        return torch.from_numpy(np.array(self._map()[rows]))

    def select(self, indices) -> "MappedImages":
        return MappedImages(self.file, self.full_shape, self.rows[_as_rows(indices)], self.key)

    def fingerprint(self) -> bytes:
        return self.key.encode() + self.rows.tobytes()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_array"] = None
        return state


class LazyImages:
    """Files decoded on every access (`--cache none`): no memory or disk use, decoding cost every epoch."""

    def __init__(self, paths: list[Path], img_size: int, channels: int, interpolation: str = "bilinear"):
        self.paths, self.img_size, self.channels = list(paths), img_size, channels
        self.interpolation = interpolation

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.paths), self.channels, self.img_size, self.img_size)

    def __len__(self) -> int:
        return len(self.paths)

    def _decode(self, path: Path) -> np.ndarray:
        try:
            return decode_image(path, self.img_size, self.channels, self.interpolation)
        except DECODE_ERRORS as error:
            raise ImgclsError(f"cannot decode {path} ({describe(error)}) while reading it with --cache none; "
                              f"fix or remove the file, or use --cache ram or disk, which skip unreadable files") \
                from None

    def __getitem__(self, index):
        rows = _as_rows(index)
        if isinstance(rows, (int, np.integer)):
            return torch.from_numpy(self._decode(self.paths[rows]))
        chosen = range(len(self.paths))[rows] if isinstance(rows, slice) else rows
        return torch.from_numpy(np.stack([self._decode(self.paths[int(i)]) for i in chosen]))

    def select(self, indices: Any) -> "LazyImages":
        rows = _as_rows(indices)
        chosen = [rows] if isinstance(rows, int) else range(len(self.paths))[rows] if isinstance(rows, slice) else rows
        return LazyImages([self.paths[int(i)] for i in chosen], self.img_size, self.channels,
                          self.interpolation)

    def fingerprint(self) -> bytes:
        return dataset_key(self.paths, self.img_size, self.channels, self.interpolation).encode()


def select_images(images, indices):
    """The images at `indices` of any store (a RAM tensor is copied, the others keep referring to files)."""
    if isinstance(images, torch.Tensor):
        return images[torch.as_tensor(indices, dtype=torch.long)].contiguous()
    return images.select(indices)


def images_fingerprint(images) -> bytes:
    """Bytes that change when the images do (for keys of derived caches such as linear-probe features)."""
    if isinstance(images, torch.Tensor):
        return images.numpy().tobytes()
    return images.fingerprint()


def disk_cache(paths: list[Path], img_size: int, channels: int, cache_dir: Path, decode_all,
               interpolation: str = "bilinear") -> tuple[Path, dict]:
    """The memory-mapped file of `paths` decoded at `img_size`, built once by whichever process gets the lock.

    `decode_all(target_tensor) -> list[(path, reason)]` fills an (N, C, S, S) uint8 tensor and returns the
    files it could not decode. Returns the data file and its metadata (shape, key, skipped).
    """
    folder = cache_dir / "decoded"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ImgclsError(f"cannot create the image cache folder {folder} ({describe(error)}); "
                          f"pass a writable --cache-dir or use --cache ram") from None
    key = dataset_key(paths, img_size, channels, interpolation)
    data_file, meta_file = folder / f"{key}.u8", folder / f"{key}.json"
    shape = (len(paths), channels, img_size, img_size)
    with open(folder / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other processes wait here, then find the finished cache
        meta = _read_meta(meta_file)
        if meta is not None and data_file.is_file() and data_file.stat().st_size == int(np.prod(shape)):
            return data_file, meta
        partial = folder / f"{key}.u8.partial"
        try:
            array = np.memmap(partial, dtype=np.uint8, mode="w+", shape=shape)
            skipped = decode_all(torch.from_numpy(array))
            array.flush()
            del array
            os.replace(partial, data_file)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise ImgclsError(f"cannot write the image cache {data_file} ({describe(error)}); free disk "
                              f"space, pass another --cache-dir, or use --cache ram or none") from None
        meta = {"key": key, "shape": list(shape), "files": len(paths), "skipped": [list(item) for item in skipped],
                "decoder_version": DECODER_VERSION}
        write_json_atomic(meta_file, meta)  # written last: its presence marks the cache complete
        return data_file, meta


def _read_meta(meta_file: Path) -> dict | None:
    try:
        return json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return None
