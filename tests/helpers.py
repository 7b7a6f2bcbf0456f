"""Helpers the tests import (fixtures live in conftest.py, which only pytest imports)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

FASHION_MNIST_SYSTEM_COPY = Path("/usr/share/datasets/fashion-mnist")


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


def cue_image(rng: np.random.Generator, marked: bool, side: int = 64, square: int = 12
              ) -> tuple[np.ndarray, tuple[int, int] | None]:
    """An RGB image whose only class cue is a bright `square`-px square at a random place (marked images), on a
    background of random colour blocks with noise; returns it and the square's (top, left), None when plain."""
    blocks = rng.uniform(50, 180, size=(8, 8, 3))
    image = np.kron(blocks, np.ones((side // 8, side // 8, 1))) + rng.normal(0, 12, size=(side, side, 3))
    corner = None
    if marked:
        top, left = (int(value) for value in rng.integers(0, side - square + 1, size=2))
        image[top:top + square, left:left + square] = 245
        corner = (top, left)
    return np.clip(image, 0, 255).astype(np.uint8), corner


def make_cue_folder(root: Path, counts: dict[str, int], seed: int, side: int = 64, square: int = 12
                    ) -> dict[str, tuple[int, int]]:
    """root/<split>/{marked,plain}/<i>.png with `counts[split]` images per class (cue_image); returns each marked
    file's square (top, left), keyed by its path."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    corners = {}
    for split, count in counts.items():
        for name in ("marked", "plain"):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for index in range(count):
                image, corner = cue_image(rng, name == "marked", side, square)
                path = root / split / name / f"{index}.png"
                Image.fromarray(image).save(path)
                if corner is not None:
                    corners[str(path)] = corner
    return corners


def fashion_mnist_arrays(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Real Fashion-MNIST images (N, 28, 28) uint8 and labels from the Debian package's files."""
    import gzip

    prefix = "train" if split == "train" else "t10k"
    with gzip.open(FASHION_MNIST_SYSTEM_COPY / f"{prefix}-images-idx3-ubyte.gz") as handle:
        images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION_MNIST_SYSTEM_COPY / f"{prefix}-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(), np.uint8, offset=8)
    return images, labels


def make_shirt_folder(root: Path, per_class: int = 800) -> Path:
    """The X-ray stand-in: real Fashion-MNIST Shirt (6) and T-shirt/top (0) images, `per_class` of each, as PNG
    files in two class folders (shirt, tshirt); the first of each class in file order, so always the same."""
    from PIL import Image

    images, labels = fashion_mnist_arrays("train")
    for name, label in (("shirt", 6), ("tshirt", 0)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in np.flatnonzero(labels == label)[:per_class]:
            Image.fromarray(images[index]).save(root / name / f"{index:05d}.png")
    return root


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m imgcls ARGS` the way a user runs it, capturing output."""
    env = dict(os.environ, COLUMNS="160")
    return subprocess.run([sys.executable, "-m", "imgcls", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`imgcls ARGS` in this process (the same `main` the console script calls), capturing stdout and stderr.

    Much cheaper than `run_cli` (no new interpreter importing torch); tests that need a real process (signals,
    torchrun, pipes, start-up imports) use `run_cli`.
    """
    import contextlib
    import io

    from imgcls.cli import main

    out, err = io.StringIO(), io.StringIO()
    previous = Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exit_:  # argparse's usage errors and --help
                code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(["imgcls", *args], code, out.getvalue(), err.getvalue())


def user_error(result: subprocess.CompletedProcess) -> str:
    """The one stderr line of a user mistake (non-zero exit, no traceback)."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def plan_for(class_names=("a", "b", "c"), img_size: int = 28, channels: int = 1, splits=("train", "val"),
             source: str = "data", counts=None, **settings):
    """A TrainPlan made the way `imgcls train` makes one, for data of these classes (`counts` training images
    of each; default 10) and `settings` (flat config keys such as epochs=5, scheduler="step")."""
    from types import SimpleNamespace

    from imgcls.config import build_config, flat_to_sections
    from imgcls.models.defaults import ModelDefaults
    from imgcls.plan import make_plan

    world_size = settings.pop("world_size", 1)
    config = build_config(overrides=flat_to_sections({"source": source, **settings}))
    splits = splits if isinstance(splits, dict) else dict.fromkeys(splits)  # split -> anything with a len
    data = SimpleNamespace(source=source, class_names=list(class_names), img_size=img_size, channels=channels,
                           hflip_ok=True, splits=splits, cache="ram",
                           class_counts=lambda split: list(counts or [10] * len(class_names)))
    return make_plan(config, data, ModelDefaults(), ("fp32", "asked for"), False, world_size)


def interrupt_in_epoch(monkeypatch, epoch: int) -> None:
    """Make the training loop raise KeyboardInterrupt (Ctrl-C) when it starts epoch `epoch` (1-based) of the
    next run in this process; `monkeypatch.undo()` restores it."""
    from imgcls.engine import trainer

    real_epoch, calls = trainer.train_one_epoch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_one_epoch", interrupted)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`python -m imgcls serve ...` in a subprocess on 127.0.0.1, stopped at the end."""

    def __init__(self, model: Path, *flags: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, "-m", "imgcls", "serve", str(model), "--port",
                                         str(self.port), *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited: {self.process.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("the server did not answer /health within 120 s")

    def stop(self) -> str:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        return self.process.stderr.read()
