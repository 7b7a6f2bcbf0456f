"""`imgcls train`: a folder of images (or a built-in dataset) to a trained, evaluated run folder (or, with
--folds, a cross-validation of them). `train` sets up the run; the steps it runs are in workflows/train_steps."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from imgcls.config import (
    Config,
    apply_overrides,
    build_config,
    collective_timeout_s,
    config_from_dict,
    flat_to_sections,
    validate,
)
from imgcls.engine.accelerator import process_state, share_from_main
from imgcls.engine.tracking import check_installed
from imgcls.errors import ImgclsError
from imgcls.models.registry import check_model_name
from imgcls.plan import trackers
from imgcls.recipe_book import load_recipe
from imgcls.run_files import RunFolder, create_run_folder, default_run_name
from imgcls.workflows.cross_validate import cross_validate
from imgcls.workflows.train_steps import TrainOutcome, train_in

__all__ = ["TrainOutcome", "train"]


def train(config: Config | str | None = None, resume: str | Path | None = None, recipe: str | None = None,
          **overrides: Any) -> TrainOutcome:
    """Train a classifier; returns the run folder and the final metrics.

    `config` is a Config, or a dataset (folder or built-in name) with flat overrides such as
    `train("fashion-mnist", model="resnet18", epochs=2)`; `recipe` starts from a named recipe (the CLI's
    `imgcls train fashion-mnist` uses the fashion-mnist recipe by default; the API only when asked).
    `resume` continues a run from its last epoch. With `folds` (--folds K) it is a K-fold cross-validation
    (workflows/cross_validate), resumable fold by fold.
    """
    started = time.perf_counter()
    if resume is not None:
        run, config = _resumable_run(Path(resume))
        if run.is_cross_validation():
            return cross_validate(run, config, True, process_state(collective_timeout_s()), started)
    else:
        config = _as_config(config, overrides, recipe)
        check_model_name(config.model.name)  # fail before a run folder is made or any image decoded
    check_installed(trackers(config.train.track))
    state = process_state(collective_timeout_s())
    if resume is None:
        run = _new_run_folder(config, state.is_main_process)
    try:
        if config.train.folds:
            return cross_validate(run, config, False, state, started)
        return train_in(run, config, resume is not None, state, started)
    except BaseException:
        if resume is None and state.is_main_process and run.path.is_dir() and not any(run.path.iterdir()):
            run.path.rmdir()  # nothing was written yet (bad input): leave no empty run folder behind
        raise


# --- helpers ---

def _as_config(config: Config | str | None, overrides: dict[str, Any], recipe: str | None = None) -> Config:
    if isinstance(config, Config):
        if recipe is not None:
            raise ImgclsError("pass either a Config or a recipe name, not both")
        if overrides:
            config = copy.deepcopy(config)
            apply_overrides(config, flat_to_sections(overrides), "the arguments")
            validate(config)
        return config
    if config is not None:
        overrides = {"source": config, **overrides}
    return build_config(overrides=flat_to_sections(overrides), recipe=load_recipe(recipe) if recipe else None)


def _resumable_run(path: Path) -> tuple[RunFolder, Config]:
    run = RunFolder(path)
    values = run.read_config()
    if values is None:
        raise ImgclsError(f"{run.path} is not an imgcls run folder (no config); pass a folder made by "
                          f"'imgcls train' to --resume")
    if RunFolder(run.path.parent).is_cross_validation():
        raise ImgclsError(f"{run.path} is a part of the cross-validation {run.path.parent}; resume the whole: "
                          f"imgcls train --resume {run.path.parent}")
    if not run.has_resume_state() and not run.is_cross_validation():
        raise ImgclsError(f"{run.path} has no saved training state: it stopped before the first epoch "
                          f"ended; start a new run instead")
    return run, config_from_dict(values, str(run.config_file))


def _new_run_folder(config: Config, is_main: bool) -> RunFolder:
    """A new run folder, made by the main process; every process gets its path."""
    chosen = None
    if is_main:
        default_name = default_run_name(config.data.source, config.model.name)
        chosen = str(create_run_folder(Path(config.train.runs_dir), config.train.name, default_name).path)
    return RunFolder(share_from_main(chosen))


