"""`imgcls train DATA --folds K [--repeats R] [--final]`: K-fold cross-validation. The data is decoded once;
each fold is an ordinary run (a sub-folder) trained on the other folds, with its own validation part for the
best epoch, the temperature and the threshold, and tested on its fold. Their test predictions together are the
out-of-fold predictions: every image once per repeat, pooled into one set of metrics with bootstrap intervals
(a fold's metrics alone vary with the few images it holds; Varoquaux 2018). `--final` then trains the
deployable model on all the data, its temperature and threshold fitted out of fold."""

from __future__ import annotations

import copy
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState

from imgcls.config import Config
from imgcls.console import get_console, info
from imgcls.data import DataBundle
from imgcls.data.folds import assign_folds, fold_parts, file_groups
from imgcls.engine.decisions import Predictions
from imgcls.errors import ImgclsError
from imgcls.metrics import positive_index
from imgcls.metrics.calibration import log_probabilities
from imgcls.metrics.cross_validation import fold_table, pooled_metrics
from imgcls.metrics.operating_point import at_threshold
from imgcls.plan import TrainPlan
from imgcls.reporting.run_report import write_figures_and_report
from imgcls.reporting.tables import print_cross_validation, print_metrics
from imgcls.run_files import RunFolder
from imgcls.run_files.predictions import load_split_predictions
from imgcls.run_files.summary import cross_validation_summary
from imgcls.workflows.train_steps import TrainingData, TrainOutcome, check_threshold, load_training_data, train_in

OUT_OF_FOLD = "out_of_fold"  # the split name of the pooled held-out predictions


def cross_validate(run: RunFolder, config: Config, resumed: bool, state: PartialState,
                   started: float) -> TrainOutcome:
    """Train every fold of every repeat (a finished fold is not trained again; an interrupted one resumes from
    its last epoch), pool the out-of-fold predictions, write the whole's metrics and report, then --final."""
    data = load_training_data(config, state.num_processes, whole=True)
    whole = _checked_whole(data[1], config)
    folds, groups = _fold_assignment(run, config, whole, resumed, state.is_main_process)
    outcomes = []
    for repeat, fold_of in enumerate(folds):
        for fold in range(config.train.folds):
            outcomes.append(_train_fold(run, config, data, whole.regrouped(
                fold_parts(whole.splits["all"].labels.numpy(), groups, fold_of, fold, config.data.val_split,
                           config.train.seed)), (repeat, fold), state))
    state.wait_for_everyone()  # the last fold's predictions are written (by the main process)
    metrics: dict[str, dict[str, Any]] = {}
    pooled = None
    if state.is_main_process:
        pooled = _out_of_fold(run, whole, folds, config.train.folds)
        metrics = _write_whole(run, config, whole, pooled, outcomes, time.perf_counter() - started)
    state.wait_for_everyone()
    if config.train.final:
        final = _train_final(run, config, data, whole, pooled, outcomes, state)
        if state.is_main_process:
            get_console().print(f"final model (all {len(whole.splits['all'])} images): [bold]{final.run_dir}[/bold]")
    return TrainOutcome(run.path, metrics, None, sum(outcome.epochs_run for outcome in outcomes),
                        sum(outcome.wall_time_s for outcome in outcomes), outcomes[0].plan)


def _checked_whole(whole: DataBundle, config: Config) -> DataBundle:
    if set(whole.splits) != {"all"}:
        raise ImgclsError(f"--folds splits a folder with one subfolder per class; {config.data.source} is already "
                          f"split ({', '.join(whole.splits)}): pass the folder of class folders, or drop --folds")
    if config.data.test_split > 0:
        raise ImgclsError("--test-split has no place with --folds: every fold is the test split once; drop it")
    positive_index(list(whole.class_names), config.train.positive_class)
    check_threshold(config, whole.class_names, has_val=config.data.val_split > 0)
    return whole


def _fold_assignment(run: RunFolder, config: Config, whole: DataBundle, resumed: bool,
                     is_main: bool) -> tuple[list[np.ndarray], np.ndarray]:
    """Each repeat's fold of every image (seeded: the seed plus the repeat), stratified and group-aware; recorded
    in folds.json, and on resuming checked against it (the data must not have changed)."""
    split = whole.splits["all"]
    paths = [str(path) for path in split.paths or []]
    labels = split.labels.numpy()
    workers = max(1, config.data.workers or os.cpu_count() or 1)
    groups, warnings = file_groups([Path(path) for path in paths], Path(config.data.source), config.data.group_by,
                                   workers)
    for warning in warnings:
        info(warning)
    folds = [assign_folds(labels, groups, config.train.folds, config.train.seed + repeat)
             for repeat in range(config.train.repeats)]
    record = {"folds": config.train.folds, "repeats": config.train.repeats, "files": paths,
              "labels": labels.tolist(), "groups": groups.tolist(), "fold": [fold.tolist() for fold in folds]}
    if resumed:
        saved = run.read_folds() or {}
        if saved.get("files") != paths or saved.get("fold") != record["fold"]:
            raise ImgclsError(f"the data of {run.path} changed since the cross-validation started (other files or "
                              f"folds); resume with the same data, or start a new run")
    elif is_main:
        run.write_config(config.to_dict())
        run.write_classes(list(whole.class_names))
        run.write_folds(record)
    return folds, groups


def _train_fold(run: RunFolder, config: Config, data: TrainingData, bundle: DataBundle, which: tuple[int, int],
                state: PartialState) -> TrainOutcome:
    """One fold (its train, val and test parts in `bundle`) as an ordinary run in its sub-folder: skipped when
    finished, resumed when interrupted."""
    repeat, fold = which
    folder = run.fold(repeat, fold, config.train.repeats)
    name = f"{folder.name} of {config.train.folds * config.train.repeats}"
    fold_config = copy.deepcopy(config)
    fold_config.train.folds, fold_config.train.repeats, fold_config.train.final = 0, 1, False
    fold_config.train.report = False  # one report for the whole; each fold keeps its metrics and predictions
    if folder.metrics_file.is_file():
        if state.is_main_process:
            get_console().print(f"{name}: finished earlier, kept")
        return _finished_outcome(folder)
    resumed = folder.has_resume_state()
    if state.is_main_process:
        folder.path.mkdir(exist_ok=True)
    state.wait_for_everyone()
    if state.is_main_process:
        get_console().print(f"[bold]{name}[/bold]: train {len(bundle.splits['train'])}, val "
                            f"{len(bundle.splits.get('val', []))}, test {len(bundle.splits['test'])} images"
                            + (" (resumed)" if resumed else ""))
    return train_in(folder, fold_config, resumed, state, time.perf_counter(), (data[0], bundle, data[2]))


def _finished_outcome(folder: RunFolder) -> TrainOutcome:
    summary = folder.read_summary()
    return TrainOutcome(folder.path, folder.read_metrics(), summary.get("best_epoch"), summary.get("epochs_run", 0),
                        summary.get("training_time_s", 0.0), TrainPlan.from_dict(folder.read_plan() or {}))


class OutOfFold:
    """Every image's held-out prediction in each repeat, in the order of the whole data."""

    def __init__(self, labels: torch.Tensor, repeats: int):
        self.labels = labels
        self.calibrated: list[torch.Tensor] = []  # per repeat (N, K): as each fold's model answers
        self.uncalibrated: list[torch.Tensor] = []  # per repeat: before each fold's temperature
        self.fold: list[np.ndarray] = []  # per repeat: the fold that held each image out
        self.thresholds: list[np.ndarray | None] = []  # per repeat: each image's fold's threshold (two classes)
        self.rule = ""

    def for_fitting(self) -> Predictions:
        """The uncalibrated predictions of every repeat, as one held-out split to fit a temperature on."""
        return {OUT_OF_FOLD: (torch.cat(self.uncalibrated), self.labels.repeat(len(self.uncalibrated)))}


def _out_of_fold(run: RunFolder, whole: DataBundle, folds: list[np.ndarray], count: int) -> OutOfFold:
    """Gather the folds' test predictions into the whole data's order; every image exactly once per repeat."""
    split = whole.splits["all"]
    row_of = {str(path): row for row, path in enumerate(split.paths or [])}
    pooled = OutOfFold(split.labels, len(folds))
    for repeat, fold_of in enumerate(folds):
        probs = torch.full((len(split), len(whole.class_names)), float("nan"))
        raw = probs.clone()
        thresholds = np.full(len(split), np.nan)
        for fold in range(count):
            folder = run.fold(repeat, fold, len(folds))
            saved = load_split_predictions(folder)["test"]
            rows = torch.as_tensor([row_of[path] for path in saved.paths or []], dtype=torch.long)
            if not bool(torch.all(torch.isnan(probs[rows, 0]))) or not np.all(fold_of[rows.numpy()] == fold):
                raise RuntimeError(f"{folder.path}: its test images are not its fold's")  # an internal invariant
            decisions = folder.read_decisions()
            temperature = float(decisions.get("temperature", 1.0))
            probs[rows] = torch.from_numpy(saved.probs).float()
            raw[rows] = (log_probabilities(probs[rows]) * temperature).softmax(dim=1).float()
            if "threshold" in decisions:
                thresholds[rows.numpy()] = decisions["threshold"]["threshold"]
                pooled.rule = decisions["threshold"]["rule"]
        if bool(torch.isnan(probs[:, 0]).any()):
            raise RuntimeError(f"repeat {repeat + 1}: {int(torch.isnan(probs[:, 0]).sum())} images have no "
                               f"out-of-fold prediction")  # an internal invariant
        pooled.calibrated.append(probs)
        pooled.uncalibrated.append(raw)
        pooled.fold.append(fold_of)
        pooled.thresholds.append(None if np.isnan(thresholds).any() else thresholds)
    return pooled


def _write_whole(run: RunFolder, config: Config, whole: DataBundle, pooled: OutOfFold,
                 outcomes: list[TrainOutcome], wall_time_s: float) -> dict[str, dict[str, Any]]:
    """The whole's metrics.json (pooled out-of-fold, with intervals), cross_validation.json (per fold, mean, sd),
    out_of_fold.csv, run.json, figures and report; printed."""
    class_names = list(whole.class_names)
    positive = positive_index(class_names, config.train.positive_class)
    metrics = pooled_metrics(pooled.calibrated, pooled.labels, class_names, positive, config.train.seed)
    if pooled.thresholds and pooled.thresholds[0] is not None:
        scores = pooled.calibrated[0][:, positive].double().numpy()
        metrics["operating_point"] = {"rule": pooled.rule, "chosen_on": "each fold's own val",
                                      **at_threshold(scores, pooled.labels.numpy() == positive, pooled.thresholds[0])}
    run.write_metrics({OUT_OF_FOLD: metrics})
    table = fold_table([(Path(outcome.run_dir).name, outcome.metrics["test"]) for outcome in outcomes],
                       config.train.folds, config.train.repeats)
    run.write_cross_validation(table)
    _write_out_of_fold_csv(run, whole, pooled)
    run.write_summary(cross_validation_summary(whole, outcomes[0].plan, config.train.folds, config.train.repeats,
                                               wall_time_s))
    print_cross_validation(table)
    print_metrics({OUT_OF_FOLD: metrics}, title=f"pooled out-of-fold metrics ({len(pooled.labels)} images"
                  + (f", mean of {len(pooled.calibrated)} repeats" if len(pooled.calibrated) > 1 else "") + ")")
    if config.train.report:
        shown = whole.regrouped({OUT_OF_FOLD: np.arange(len(pooled.labels))})
        write_figures_and_report(run, shown, {OUT_OF_FOLD: (pooled.calibrated[0], pooled.labels)}, class_names,
                                 seed=config.train.seed,
                                 title=f"{run.name}: {config.train.folds}-fold cross-validation")
        get_console().print(f"cross-validation: [bold]{run.path}[/bold]   report: {run.report_file}")
    return {OUT_OF_FOLD: metrics}


def _write_out_of_fold_csv(run: RunFolder, whole: DataBundle, pooled: OutOfFold) -> None:
    paths = whole.splits["all"].paths or []
    labels = pooled.labels.tolist()
    rows = []
    for repeat, (probs, fold_of) in enumerate(zip(pooled.calibrated, pooled.fold)):
        values = probs.tolist()
        rows += [[str(paths[row]), whole.class_names[labels[row]], repeat + 1, int(fold_of[row]) + 1,
                  *(f"{value:.9g}" for value in values[row])] for row in range(len(paths))]  # float32, exactly
    run.write_out_of_fold(["path", "label", "repeat", "fold", *(f"p_{name}" for name in whole.class_names)], rows)


def _train_final(run: RunFolder, config: Config, data: TrainingData, whole: DataBundle, pooled: OutOfFold | None,
                 outcomes: list[TrainOutcome], state: PartialState) -> TrainOutcome:
    """The deployable model: all the data, the folds' settings, as many epochs as the folds' median best epoch
    (the last epoch kept: no image is held out), its temperature and threshold fitted on the out-of-fold
    predictions (`pooled`: gathered by the main process, which alone decides)."""
    folder = run.final
    final_config = copy.deepcopy(config)
    final_config.train.folds, final_config.train.repeats, final_config.train.final = 0, 1, False
    final_config.data.val_split, final_config.train.monitor, final_config.train.patience = 0.0, "last", 0
    best = [outcome.best_epoch for outcome in outcomes if outcome.best_epoch]
    if best and config.train.monitor != "last":
        final_config.train.epochs = max(1, round(statistics.median(best)))
        if state.is_main_process:
            info(f"final model: {final_config.train.epochs} epochs, the folds' median best epoch")
    if folder.metrics_file.is_file():
        return _finished_outcome(folder)
    resumed = folder.has_resume_state()
    if state.is_main_process:
        folder.path.mkdir(exist_ok=True)
    state.wait_for_everyone()
    bundle = whole.regrouped({"train": np.arange(len(whole.splits["all"]))})
    return train_in(folder, final_config, resumed, state, time.perf_counter(), (data[0], bundle, data[2]),
                    decide_on=pooled.for_fitting() if pooled is not None else None)
