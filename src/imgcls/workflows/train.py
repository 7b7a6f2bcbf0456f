"""`imgcls train`: a folder of images (or a built-in dataset) to a trained, evaluated run folder.

Reads like torchvision's reference script: the steps a user would name, in the order they run; each is a
call into a lower layer (config, data, models, plan, engine, run_files, report).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

from imgcls.config import Config, build_config, config_from_dict, flat_to_sections
from imgcls.console import get_console, warn
from imgcls.errors import ImgclsError
from imgcls.plan import TrainPlan
from imgcls.run_files import RunFolder


@dataclass
class TrainOutcome:
    run_dir: Path
    metrics: dict[str, dict]  # split -> metrics
    best_epoch: int | None
    epochs_run: int
    wall_time_s: float
    plan: TrainPlan


def train(config: Config | str | None = None, resume: str | Path | None = None, recipe: str | None = None,
          **overrides) -> TrainOutcome:
    """Train a classifier; returns the run folder and the final metrics.

    `config` is a Config, or a dataset (folder or built-in name) with flat overrides such as
    `train("fashion-mnist", model="resnet18", epochs=2)`; `recipe` starts from a named recipe (the CLI's
    `imgcls train fashion-mnist` uses the fashion-mnist recipe by default; the API only when asked).
    `resume` continues a run from its last epoch.
    """
    from imgcls.engine.accelerator import process_state

    started = time.perf_counter()
    if resume is not None:
        run, config = _resumable_run(Path(resume))
    else:
        config = _as_config(config, overrides, recipe)
        from imgcls.models.registry import check_model_name

        check_model_name(config.model.name)  # fail before a run folder is made or any image decoded
    from imgcls.config import collective_timeout_s

    state = process_state(collective_timeout_s())
    if resume is None:
        run = _new_run_folder(config, state.is_main_process)
    try:
        return _train_in(run, config, resume is not None, state, started)
    except BaseException:
        if resume is None and state.is_main_process and run.path.is_dir() and not any(run.path.iterdir()):
            run.path.rmdir()  # nothing was written yet (bad input): leave no empty run folder behind
        raise


def _train_in(run: RunFolder, config: Config, resume: bool, state, started: float) -> TrainOutcome:
    from imgcls.workflows import training_steps as steps

    is_main = state.is_main_process
    defaults, bundle, img_size_note = steps.load_data(config, state.num_processes)
    model = steps.build_model(config, bundle)
    plan = steps.plan_run(config, bundle, defaults, img_size_note, model, state.num_processes,
                          run if resume else None)
    if plan.epoch_sizes:
        from imgcls.engine.trainer import check_epoch_sizes

        check_epoch_sizes(model, plan)  # before anything is written to the run folder
    if is_main:
        steps.report_data_problems(bundle, run)
        if not resume:
            steps.record_start(run, config, plan, bundle)
        elif run.read_plan() != plan.to_dict():
            run.write_plan(plan.to_dict())  # continued on another number of processes
    result = steps.run_training(model, bundle, config, plan, run, resume, is_main)
    if is_main:
        steps.finish(run, bundle, model, plan, result, started, config.train.report)
    return TrainOutcome(run.path, result.final_metrics, result.best_epoch, len(result.history), result.wall_time_s,
                        plan)


def _as_config(config: Config | str | None, overrides: dict, recipe: str | None = None) -> Config:
    if isinstance(config, Config):
        if recipe is not None:
            raise ImgclsError("pass either a Config or a recipe name, not both")
        if overrides:
            from imgcls.config import apply_overrides, validate

            config = copy.deepcopy(config)
            apply_overrides(config, flat_to_sections(overrides), "the arguments")
            validate(config)
        return config
    if config is not None:
        overrides = {"source": config, **overrides}
    return build_config(overrides=flat_to_sections(overrides), recipe=recipe)


def _resumable_run(path: Path) -> tuple[RunFolder, Config]:
    run = RunFolder(path)
    values = run.read_config()
    if values is None:
        raise ImgclsError(f"{run.path} is not an imgcls run folder (no config); pass a folder made by "
                          f"'imgcls train' to --resume")
    if not run.has_resume_state():
        raise ImgclsError(f"{run.path} has no saved training state: it stopped before the first epoch "
                          f"ended; start a new run instead")
    return run, config_from_dict(values, str(run.config_file))


def _new_run_folder(config: Config, is_main: bool) -> RunFolder:
    """A new run folder, made by the main process; every process gets its path."""
    from imgcls.engine.accelerator import share_from_main
    from imgcls.run_files import create_run_folder, default_run_name

    chosen = None
    if is_main:
        default_name = default_run_name(config.data.source, config.model.name)
        chosen = str(create_run_folder(Path(config.train.runs_dir), config.train.name, default_name).path)
    return RunFolder(share_from_main(chosen))


def print_data_summary(bundle, plan: TrainPlan, run: RunFolder) -> None:
    """One paragraph: what is trained on what, where it goes."""
    sizes = ", ".join(f"{split} {len(data)}" for split, data in bundle.splits.items())
    get_console().print(
        f"data: {bundle.source} — {len(bundle.class_names)} classes, {sizes} images, "
        f"{plan.img_size}px, {plan.channels} channel(s), decoded images in {bundle.cache}\n"
        f"model: {plan.model}   run: {run.path}"
    )


def warn_about(notes: dict[str, str]) -> None:
    """Decisions of the plan that overrule what the user asked."""
    if notes.get("tta", "").startswith("off"):
        warn(f"--tta is {notes['tta']}")
