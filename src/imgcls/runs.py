"""Run folders: naming, creating without overwriting, and recognising them."""

from __future__ import annotations

import re
from pathlib import Path

from imgcls.errors import ImgclsError

WEIGHTS_FILE = "best.safetensors"


def default_run_name(source: str, model_name: str) -> str:
    """`<dataset>-<model>`, made safe for a folder name."""
    dataset = Path(source.rstrip("/\\")).name or "data"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{dataset}-{model_name}")


def create_run_dir(runs_dir: Path, name: str | None, default_name: str) -> Path:
    """Make a new, empty run folder; never reuses an existing one.

    An explicit --name that exists is an error (the user asked for that folder); the default name gets
    the first free suffix -2, -3, ... as in Ultralytics.
    """
    runs_dir.mkdir(parents=True, exist_ok=True)
    if name is not None:
        run_dir = runs_dir / name
        try:
            run_dir.mkdir()
        except FileExistsError:
            raise ImgclsError(f"run folder {run_dir} already exists; choose another --name, or continue it "
                              f"with --resume {run_dir}") from None
        return run_dir
    for index in range(1, 10_000):
        run_dir = runs_dir / (default_name if index == 1 else f"{default_name}-{index}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
    raise ImgclsError(f"{runs_dir} holds 10,000 runs named {default_name}; pass --name")


def weights_path(run: str | Path) -> Path:
    """The weights file of a run folder, or `run` itself when it is a .safetensors file."""
    run = Path(run).expanduser()
    if run.is_file():
        if run.suffix != ".safetensors":
            raise ImgclsError(f"{run} is not a checkpoint; pass a run folder or its best.safetensors")
        return run
    if not run.exists():
        raise ImgclsError(f"run {run} does not exist; pass a folder made by 'imgcls train' (e.g. runs/<name>)")
    weights = run / WEIGHTS_FILE
    if not weights.is_file():
        if (run / "config.yaml").is_file():
            raise ImgclsError(f"run {run} has no {WEIGHTS_FILE} yet (training stopped before the first epoch "
                              f"ended); continue it with 'imgcls train --resume {run}'")
        raise ImgclsError(f"{run} is not an imgcls run folder (no {WEIGHTS_FILE}); pass a folder made by "
                          f"'imgcls train' (e.g. runs/<name>)")
    return weights
