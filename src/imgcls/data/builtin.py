"""Built-in datasets (MNIST, Fashion-MNIST, CIFAR-10/100) through torchvision, from a local copy or downloaded."""

from __future__ import annotations

import gzip
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torchvision.datasets

from imgcls.errors import ImgclsError, first_line


@dataclass(frozen=True)
class BuiltinSpec:
    torchvision_class: str
    channels: int
    size: int
    system_copy: str | None = None  # where a distribution package installs the raw files
    hflip_ok: bool = True


BUILTINS: dict[str, BuiltinSpec] = {
    "mnist": BuiltinSpec("MNIST", 1, 28, hflip_ok=False),
    "fashion-mnist": BuiltinSpec("FashionMNIST", 1, 28, system_copy="/usr/share/datasets/fashion-mnist"),
    "cifar10": BuiltinSpec("CIFAR10", 3, 32),
    "cifar100": BuiltinSpec("CIFAR100", 3, 32),
}
_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist",
            "cifar-10": "cifar10", "cifar_10": "cifar10", "cifar-100": "cifar100", "cifar_100": "cifar100"}

_HOW_TO_GET = {
    "fashion-mnist": "install it with 'apt-get install dataset-fashion-mnist', or copy the four *-ubyte.gz files "
    "into {raw}",
    "mnist": "copy the four *-ubyte(.gz) files from http://yann.lecun.com/exdb/mnist into {raw}",
    "cifar10": "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and extract it "
    "into {root}",
    "cifar100": "download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and extract it "
    "into {root}",
}


def builtin_name(source: str) -> str | None:
    """The canonical built-in name for `source`, or None when it is not one."""
    key = source.strip().lower()
    key = _ALIASES.get(key, key)
    return key if key in BUILTINS else None


def native_image_size(source: str) -> int | None:
    """The side of a built-in dataset's images (28 for MNIST, 32 for CIFAR); None for a folder."""
    name = None if Path(source).expanduser().exists() else builtin_name(source)
    return BUILTINS[name].size if name is not None else None


def _copy_system_files(spec: BuiltinSpec, raw_dir: Path) -> None:
    """Gunzip a distribution package's copy (read-only) into torchvision's raw folder."""
    if spec.system_copy is None or not Path(spec.system_copy).is_dir():
        return
    raw_dir.mkdir(parents=True, exist_ok=True)
    for packed in sorted(Path(spec.system_copy).glob("*-ubyte.gz")):
        target = raw_dir / packed.name[: -len(".gz")]
        if target.exists():
            continue
        partial = target.with_name(target.name + ".partial")
        with gzip.open(packed, "rb") as source, open(partial, "wb") as sink:
            shutil.copyfileobj(source, sink)
        partial.replace(target)


def load_builtin(name: str, root: Path, train: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (N, C, H, W) uint8, labels (N,) int64 and class names of one official split."""
    spec = BUILTINS[name]
    dataset_class = getattr(torchvision.datasets, spec.torchvision_class)
    raw_dir = root / spec.torchvision_class / "raw"
    _copy_system_files(spec, raw_dir)
    try:
        dataset = dataset_class(str(root), train=train, download=False)
    except RuntimeError:
        dataset = _download(name, dataset_class, root, train, raw_dir)
    images = np.asarray(dataset.data)
    images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    labels = np.asarray(dataset.targets, dtype=np.int64)
    return np.ascontiguousarray(images, dtype=np.uint8), labels, list(dataset.classes)


def _download(name: str, dataset_class, root: Path, train: bool, raw_dir: Path):
    looked = [str(raw_dir if "MNIST" in dataset_class.__name__ else root)]
    system_copy = BUILTINS[name].system_copy
    if system_copy:
        looked.append(system_copy)
    try:
        return dataset_class(str(root), train=train, download=True)
    except Exception as error:  # network errors come in many types (URLError, HTTPError, OSError, RuntimeError)
        how = _HOW_TO_GET[name].format(raw=raw_dir, root=root)
        reason = first_line(error, 120)
        raise ImgclsError(
            f"{name} is not in {' or '.join(looked)} and downloading it failed ({reason}); {how}, "
            f"or pass --data-root pointing at an existing copy"
        ) from None
