"""Checkpoints: best weights as safetensors with metadata, and the full resumable state under last/."""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import DistributedType
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_file, save_model

from imgcls import __version__
from imgcls.atomic import write_atomic, write_json_atomic
from imgcls.errors import ImgclsError, first_line
from imgcls.plan import TrainPlan
from imgcls.run_files import RunFolder
from imgcls.run_files.layout import TRAINER_STATE

METADATA_KEY = "imgcls"


@dataclass(frozen=True)
class BestWeights:
    """Where the training loop keeps its best weights, and the metadata the file carries."""

    file: Path
    metadata: dict[str, Any]


@dataclass
class LoopState:
    """The training loop's bookkeeping, saved in last/ (trainer_state.json) after every epoch."""

    epoch: int = 0  # epochs completed
    best_metric: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0  # epochs since the monitored metric last improved
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch, as in history.csv
    wall_time_s: float = 0.0
    stopped_early: bool = False


def weights_metadata(plan: TrainPlan, options: dict[str, Any]) -> dict[str, Any]:
    """What best.safetensors carries so that the file alone is a usable model."""
    return {"model": plan.model, "num_classes": len(plan.class_names), "in_chans": plan.channels,
            "img_size": plan.img_size, "class_names": list(plan.class_names), "mean": list(plan.mean),
            "std": list(plan.std), "interpolation": plan.interpolation, "options": options,
            "imgcls_version": __version__}


def save_weights(model, path: Path, metadata: dict) -> None:
    """Write the model's weights (shared tensors de-duplicated) and our metadata, atomically."""
    write_atomic(path, lambda tmp: save_model(model, str(tmp), metadata={METADATA_KEY: json.dumps(metadata)}))


def save_best_weights(accelerator, model, path: Path, metadata: dict) -> None:
    """The best weights of a prepared model; every process calls it, the main process writes.

    A model sharded by FSDP is gathered into one full state dict first (a collective, hence every process);
    a DDP or single-process model is written from the main process's copy.
    """
    if accelerator.distributed_type == DistributedType.FSDP:
        state = accelerator.get_state_dict(model)
        if accelerator.is_main_process:
            tensors = {key: value.detach().cpu().contiguous().clone() for key, value in state.items()}
            write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(metadata)}))
    elif accelerator.is_main_process:
        save_weights(accelerator.unwrap_model(model), path, metadata)


def read_metadata(path: Path) -> dict:
    """The imgcls metadata (model name, classes, image size, normalization) of a weights file."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
    except Exception as error:  # safetensors' own error type for a damaged header
        raise ImgclsError(f"{path} is not a readable imgcls checkpoint ({first_line(error)}); "
                          f"train a run first") from None
    if raw is None:
        raise ImgclsError(f"{path} has no imgcls metadata; it was not written by 'imgcls train'")
    return json.loads(raw)


def load_weights_into(model, path: Path) -> None:
    """Load a best.safetensors written by save_weights into a model of the same architecture."""
    missing, unexpected = load_model(model, str(path), strict=False)
    if missing or unexpected:
        raise ImgclsError(f"{path} does not match the model it names ({len(missing)} missing, "
                          f"{len(unexpected)} unexpected tensors); the file is damaged or from another version")


def save_training_state(accelerator: Accelerator, run: RunFolder, trainer_state: LoopState) -> None:
    """Save model, optimizer, scheduler, scaler and RNG states; replace last/ only once it is complete.

    Every process must call this (each saves its own RNG state); the main process does the swap.
    """
    last_dir, staging, retired = run.last_dir, run.last_staging, run.last_retired
    if accelerator.is_main_process and staging.exists():
        shutil.rmtree(staging)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(staging / TRAINER_STATE, dataclasses.asdict(trainer_state))
        if last_dir.exists():
            last_dir.rename(retired)
        staging.rename(last_dir)
        if retired.exists():
            shutil.rmtree(retired)
    accelerator.wait_for_everyone()


def load_training_state(accelerator: Accelerator, run: RunFolder) -> LoopState:
    """Restore everything save_training_state wrote; returns the trainer state (epoch, best, history)."""
    last_dir = run.last_dir
    if not last_dir.is_dir():
        if run.last_retired.is_dir():  # a crash between the two renames: the previous complete state is there
            last_dir = run.last_retired
        else:
            raise ImgclsError(f"{run.path} has no saved training state ({last_dir.name}/); "
                              f"it cannot be resumed, start a new run instead")
    state_file = last_dir / TRAINER_STATE
    if not state_file.is_file():
        raise ImgclsError(f"{last_dir} is incomplete (no {TRAINER_STATE}); start a new run instead")
    accelerator.load_state(str(last_dir))
    return LoopState(**json.loads(state_file.read_text()))


def update_metadata(path: Path, values: dict[str, Any]) -> None:
    """Add `values` to a weights file's imgcls metadata (the weights unchanged), atomically."""
    metadata = {**read_metadata(path), **values}
    tensors = load_file(str(path))
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(metadata)}))
