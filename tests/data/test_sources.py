"""DATA arguments: class-per-folder, train/val/test layouts, built-ins, and every way they can be wrong."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgcls.config import DataConfig
from imgcls.data import build_dataset
from imgcls.errors import ImgclsError


def _build(source, **kwargs):
    size = kwargs.pop("img_size", 16)
    return build_dataset(DataConfig(source=str(source), img_size=size, **kwargs), seed=0, img_size=size)


def test_class_folders_are_split_stratified(class_folders):
    bundle = _build(class_folders, val_split=0.25, test_split=0.25)
    assert bundle.class_names == ["cat", "coffee", "rocket"]
    assert set(bundle.splits) == {"train", "val", "test"}
    assert bundle.class_counts("val") == [6, 6, 6] and bundle.class_counts("test") == [6, 6, 6]
    assert bundle.splits["train"].images.shape[1:] == (3, 16, 16)
    all_paths = [p for split in bundle.splits.values() for p in split.paths]
    assert len(all_paths) == len(set(all_paths)) == 72


def test_corrupt_hidden_and_non_image_files(class_folders):
    (class_folders / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (class_folders / "cat" / "readme.txt").write_text("not an image")
    (class_folders / "cat" / ".DS_Store").write_bytes(b"junk")
    (class_folders / "empty").mkdir()
    bundle = _build(class_folders, allow_empty=True)  # without it an empty class folder is an error (T12)
    assert [Path(path).name for path, _ in bundle.skipped] == ["broken.png", "empty"]  # the left-out folder too
    assert (class_folders / "cat" / "broken.png").exists()  # never deleted
    assert any("empty" in warning for warning in bundle.warnings)
    assert bundle.class_names == ["cat", "coffee", "rocket"]
    assert sum(len(split) for split in bundle.splits.values()) == 72


def test_all_grayscale_data_gives_one_channel(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / name / f"{i}.png")
    assert _build(tmp_path).channels == 1
    assert _build(tmp_path, channels=3).channels == 3


def test_train_val_test_layout(tmp_path, class_folders):
    for split in ("train", "val", "test"):
        for class_dir in class_folders.iterdir():
            (tmp_path / "ds" / split / class_dir.name).mkdir(parents=True)
            for image in sorted(class_dir.iterdir())[:4]:
                (tmp_path / "ds" / split / class_dir.name / image.name).write_bytes(image.read_bytes())
    bundle = _build(tmp_path / "ds")
    assert {name: len(split) for name, split in bundle.splits.items()} == {"train": 12, "val": 12, "test": 12}


def test_val_class_missing_from_train_is_an_error(tmp_path, class_folders):
    (tmp_path / "ds" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "ds" / "train" / "dog").mkdir(parents=True)
    (tmp_path / "ds" / "val" / "bird").mkdir(parents=True)
    image = next((class_folders / "cat").iterdir())
    for folder in ("train/cat", "train/dog", "val/bird"):
        (tmp_path / "ds" / folder / image.name).write_bytes(image.read_bytes())
    with pytest.raises(ImgclsError, match="bird"):
        _build(tmp_path / "ds")


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("empty", "no class subfolders"),
    ("flat", "no class subfolders"),
    ("single", "only one class"),
])
def test_bad_folders_have_clear_errors(tmp_path, case, message):
    root = tmp_path / "data"
    if case != "missing":
        root.mkdir()
    if case == "flat":
        Image.new("RGB", (8, 8)).save(root / "x.png")
    if case == "single":
        (root / "only").mkdir()
        Image.new("RGB", (8, 8)).save(root / "only" / "x.png")
    with pytest.raises(ImgclsError, match=message):
        _build(root)


def test_fashion_mnist_from_the_system_copy(fmnist_root):
    config = DataConfig(source="fashion-mnist", max_per_class=50, data_root=str(fmnist_root))
    bundle = build_dataset(config, seed=0, img_size=28)
    assert bundle.class_names[0] == "T-shirt/top" and len(bundle.class_names) == 10
    assert bundle.channels == 1 and bundle.img_size == 28
    assert set(bundle.splits) == {"train", "val", "test"}
    assert bundle.class_counts("test") == [50] * 10
    assert bundle.splits["train"].images.dtype.is_floating_point is False


def test_builtin_grayscale_to_rgb_and_resize(fmnist_root):
    config = DataConfig(source="fashion-mnist", max_per_class=5, channels=3, data_root=str(fmnist_root))
    bundle = build_dataset(config, seed=0, img_size=32)
    images = bundle.splits["train"].images
    assert images.shape[1:] == (3, 32, 32)
    assert (images[:, 0] == images[:, 1]).all()


def test_missing_builtin_offline_says_where_it_looked(tmp_path, monkeypatch):
    import torchvision.datasets

    def no_network(self, *args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", no_network)
    with pytest.raises(ImgclsError) as error:
        build_dataset(DataConfig(source="mnist", data_root=str(tmp_path)), seed=0, img_size=28)
    assert str(tmp_path) in str(error.value) and "downloading it failed" in str(error.value)
