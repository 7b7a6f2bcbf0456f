"""The decoded-image cache: RAM, memory-mapped disk (keyed, shared, reused) and none give the same images."""

from __future__ import annotations

import multiprocessing
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from imgcls.config import DataConfig
from imgcls.data import build_dataset
from imgcls.data import cache as cache_module
from imgcls.data.cache import LazyImages, MappedImages, choose_cache, disk_cache
from imgcls.data.loader import TensorImageDataset, make_loader
from imgcls.errors import ImgclsError
from tests.helpers import make_class_folders


def _bundle(folder: Path, cache: str, cache_dir: Path, **extra):
    config = DataConfig(source=str(folder), img_size=32, cache=cache, cache_dir=str(cache_dir), workers=1, **extra)
    return build_dataset(config, seed=0, img_size=32)


@pytest.fixture
def photos(tmp_path) -> Path:
    return make_class_folders(tmp_path / "photos", per_class=10, size=40)


def test_every_store_serves_the_same_pixels(photos, tmp_path):
    ram = _bundle(photos, "ram", tmp_path / "cache")
    disk = _bundle(photos, "disk", tmp_path / "cache")
    lazy = _bundle(photos, "none", tmp_path / "cache")
    assert (ram.cache, disk.cache, lazy.cache) == ("ram", "disk", "none")
    for split in ram.splits:
        assert isinstance(disk.splits[split].images, MappedImages)
        assert isinstance(lazy.splits[split].images, LazyImages)
        assert disk.splits[split].paths == ram.splits[split].paths == lazy.splits[split].paths
        assert torch.equal(disk.splits[split].labels, ram.splits[split].labels)
        rows = torch.tensor([3, 0, 5, 3])  # unsorted, repeated: batches are fetched in any order
        expected = ram.splits[split].images[rows]
        assert torch.equal(disk.splits[split].images[rows], expected)
        assert torch.equal(lazy.splits[split].images[rows], expected)
        assert torch.equal(disk.splits[split].images[2], ram.splits[split].images[2])
        assert disk.splits[split].images.shape == tuple(ram.splits[split].images.shape)


def test_disk_cache_is_reused_and_redone_when_a_file_changes(photos, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    first = _bundle(photos, "disk", cache_dir)
    data_files = sorted((cache_dir / "decoded").glob("*.u8"))
    assert len(data_files) == 1 and not list((cache_dir / "decoded").glob("*.partial"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache matches")

    monkeypatch.setattr("imgcls.data.build.decode_image", no_decoding)
    again = _bundle(photos, "disk", cache_dir, val_split=0.3)  # another split of the same files: same cache
    assert again.splits["train"].images.file == first.splits["train"].images.file
    monkeypatch.undo()

    changed = sorted((photos / "cat").iterdir())[0]
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    redone = _bundle(photos, "disk", cache_dir)
    assert redone.splits["train"].images.file != first.splits["train"].images.file
    assert len(list((cache_dir / "decoded").glob("*.u8"))) == 2


def test_another_resolution_is_another_cache(photos, tmp_path):
    cache_dir = tmp_path / "cache"
    small = build_dataset(DataConfig(source=str(photos), cache="disk", cache_dir=str(cache_dir)), 0, 16)
    large = _bundle(photos, "disk", cache_dir)
    assert small.splits["train"].images.file != large.splits["train"].images.file
    assert small.splits["train"].images.shape[-1] == 16 and large.splits["train"].images.shape[-1] == 32


def test_unreadable_files_are_skipped_by_disk_and_named_by_none(photos, tmp_path):
    broken = photos / "cat" / "broken.jpg"
    good = (photos / "cat" / "1.jpg").read_bytes()
    broken.write_bytes(good[: len(good) * 2 // 3])  # a truncated JPEG: the header reads, the pixels do not
    cache_dir = tmp_path / "cache"
    for _ in range(2):  # built, then reused: the skipped list comes back from the cache's metadata
        disk = _bundle(photos, "disk", cache_dir)
        assert [path for path, _ in disk.skipped] == [str(broken)]
        assert all(str(broken) not in split.paths for split in disk.splits.values())
    lazy = _bundle(photos, "none", cache_dir, channels=3)
    split = next(split for split in lazy.splits.values() if str(broken) in split.paths)
    with pytest.raises(ImgclsError, match="broken.jpg.*--cache ram or disk"):
        split.images[split.paths.index(str(broken))]


def test_mapped_images_pickle_without_their_pixels_and_load_in_workers(photos, tmp_path):
    disk = _bundle(photos, "disk", tmp_path / "cache")
    images = disk.splits["train"].images
    images[0]  # opens the map in this process
    assert len(pickle.dumps(images)) < 2000  # workers get the file name, not a copy of the data
    dataset = TensorImageDataset(disk.splits["train"], (0.5,) * 3, (0.25,) * 3)
    in_process = [batch for batch in make_loader(dataset, 8, shuffle=False, workers=0, seed=0)]
    in_workers = [batch for batch in make_loader(dataset, 8, shuffle=False, workers=2, seed=0)]
    assert len(in_process) == len(in_workers)
    for (x0, y0), (x1, y1) in zip(in_process, in_workers):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


def _build_in_process(args) -> None:
    paths, cache_dir, counter = args

    def decode_all(target):
        with open(counter, "a") as file:
            file.write("decoded\n")
        target.fill_(7)
        return []

    disk_cache([Path(p) for p in paths], 8, 1, Path(cache_dir), decode_all)


def test_concurrent_processes_decode_once(photos, tmp_path):
    paths = [str(p) for p in sorted(photos.rglob("*.png"))]
    counter = tmp_path / "count.txt"
    context = multiprocessing.get_context("spawn")
    with context.Pool(3) as pool:  # as three DDP ranks starting together
        pool.map(_build_in_process, [(paths, str(tmp_path / "cache"), str(counter))] * 3)
    assert counter.read_text().count("decoded") == 1


def test_auto_picks_ram_when_it_fits_else_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "available_memory", lambda: 4 * 2**30)
    assert choose_cache("auto", 10_000, 3, 64, tmp_path) == "ram"  # 123 MB of 4 GB
    assert choose_cache("auto", 100_000, 3, 224, tmp_path) == "disk"  # 15 GB
    assert choose_cache("none", 10, 1, 8, tmp_path) == "none"


def test_several_processes_share_one_memory_mapped_copy_instead_of_one_each(photos, tmp_path):
    config = DataConfig(source=str(photos), img_size=32, cache="ram", cache_dir=str(tmp_path / "cache"), workers=1)
    shared = build_dataset(config, 0, 32, processes=2)
    alone = build_dataset(config, 0, 32)
    # N processes must not need N copies in RAM: each maps the one decoded file, the page cache holds it once
    assert shared.cache == "disk, shared by 2 processes" and isinstance(shared.splits["train"].images, MappedImages)
    assert len(list((tmp_path / "cache" / "decoded").glob("*.u8"))) == 1
    assert torch.equal(shared.splits["train"].images[np.arange(len(shared.splits["train"]))],
                       alone.splits["train"].images)


def test_bad_cache_choice_is_one_line(photos, tmp_path):
    from imgcls.config import build_config

    with pytest.raises(ImgclsError, match="--cache must be one of auto, ram, disk, none"):
        build_config(overrides={"data": {"source": str(photos), "cache": "gpu"}})


def test_batched_pad_crop_flip_matches_shifted_crops():
    from imgcls.data.transforms import BatchPadCropFlip

    torch.manual_seed(0)
    images = torch.randint(0, 256, (64, 2, 9, 11), dtype=torch.uint8)
    out = BatchPadCropFlip(2, hflip=True)(images)
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2), mode="reflect")
    flipped = 0
    for index in range(len(images)):
        windows = [padded[index, :, top : top + 9, left : left + 11] for top in range(5) for left in range(5)]
        plain = any(torch.equal(out[index], window) for window in windows)
        mirrored = any(torch.equal(out[index], window.flip(-1)) for window in windows)
        assert plain or mirrored
        flipped += mirrored and not plain
    assert 10 < flipped < 54  # about half are flipped
    assert torch.equal(BatchPadCropFlip(0, hflip=False)(images), images)


def test_batched_random_erasing_blanks_one_rectangle_in_the_asked_fraction():
    from imgcls.data.transforms import BatchPadCropFlip, erase_rectangles

    torch.manual_seed(0)
    images = torch.randint(1, 256, (2000, 3, 28, 28), dtype=torch.uint8)  # no zeros before erasing
    out = erase_rectangles(images, 0.5)
    erased = (out == 0).all(dim=1)  # (N, H, W): pixels blanked in every channel
    touched = erased.flatten(1).any(dim=1)
    assert 0.45 < touched.float().mean() < 0.55
    assert torch.equal(out[~touched], images[~touched])
    for mask in erased[touched][:200]:  # each erased region is one filled rectangle of 2-33% of the image
        rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
        assert mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
        assert int(mask.sum()) == len(rows) * len(cols)
        assert 0.01 <= len(rows) * len(cols) / 784 <= 0.36
    shifted = BatchPadCropFlip(0, hflip=False, erase=1.0)(images)
    assert (shifted == 0).all(dim=1).flatten(1).any(dim=1).all()


def test_erase_outside_the_light_preset_is_one_line(photos):
    from imgcls.config import build_config

    with pytest.raises(ImgclsError, match="--erase belongs to --augment light"):
        build_config(overrides={"data": {"source": str(photos), "augment": "strong", "erase": 0.5}})
    with pytest.raises(ImgclsError, match="--erase is the fraction"):
        build_config(overrides={"data": {"source": str(photos), "erase": 1.5}})
