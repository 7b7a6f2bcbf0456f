"""run.json's contents: what a run trained or evaluated, on what data, for how long, on which machine.

Not imported by `imgcls.run_files` itself: it reads the hardware through torch, and reading a run folder
(predict on an ONNX export) must not import torch.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sized
from typing import Any, Protocol

from imgcls.environment import hardware, versions
from imgcls.plan import TrainPlan


class SummarizedData(Protocol):
    """What run.json says about the data (a DataBundle)."""

    @property
    def source(self) -> str: ...

    @property
    def cache(self) -> str: ...

    @property
    def splits(self) -> Mapping[str, Sized]: ...

    def class_counts(self, split: str) -> list[int]: ...


class SummarizedFit(Protocol):
    """What run.json says about the training loop (the engine's FitResult)."""

    @property
    def history(self) -> list[dict[str, Any]]: ...

    @property
    def best_epoch(self) -> int | None: ...

    @property
    def stopped_early(self) -> bool: ...

    @property
    def wall_time_s(self) -> float: ...

    @property
    def num_processes(self) -> int: ...

    @property
    def device(self) -> str: ...


def stamp() -> dict[str, Any]:
    """Where and when: the hardware, the library versions and the finishing time (in every run.json)."""
    return {"hardware": hardware(), "versions": versions(),
            "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def training_summary(data: SummarizedData, plan: TrainPlan, fit: SummarizedFit, parameters: tuple[int, int],
                     wall_time_s: float) -> dict[str, Any]:
    """run.json of a training run; `parameters` is (all, trained)."""
    return {
        "kind": "train", "data": data.source, "model": plan.model, "img_size": plan.img_size,
        "in_chans": plan.channels, "class_counts": {split: data.class_counts(split) for split in data.splits},
        "parameters": parameters[0], "trainable_parameters": parameters[1],
        "epochs": plan.epochs, "epochs_run": len(fit.history), "best_epoch": fit.best_epoch,
        "stopped_early": fit.stopped_early, "training_time_s": round(fit.wall_time_s, 2),
        "wall_time_s": round(wall_time_s, 2), "precision": plan.precision,
        "precision_reason": plan.precision_reason, "channels_last": plan.channels_last, "compiled": plan.compile,
        "image_cache": data.cache, "num_processes": fit.num_processes,
        "global_batch_size": plan.global_batch_size, "device": fit.device, **stamp(),
    }


def evaluation_summary(source: str, split: str, model: str, input_shape: tuple[int, int], parameters: int,
                       evaluated_run: str) -> dict[str, Any]:
    """run.json of an evaluation; `input_shape` is (channels, image side)."""
    return {"kind": "evaluation", "data": source, "split": split, "model": model, "img_size": input_shape[1],
            "in_chans": input_shape[0], "parameters": parameters, "evaluated_run": evaluated_run, **stamp()}


def cross_validation_summary(data: SummarizedData, plan: TrainPlan, folds: int, repeats: int,
                             wall_time_s: float) -> dict[str, Any]:
    """run.json of a cross-validation: the whole data, the folds' model, how many folds and repeats."""
    return {"kind": "cross-validation", "data": data.source, "model": plan.model, "img_size": plan.img_size,
            "in_chans": plan.channels, "folds": folds, "repeats": repeats,
            "class_counts": {split: data.class_counts(split) for split in data.splits},
            "wall_time_s": round(wall_time_s, 2), "precision": plan.precision, **stamp()}
