"""Checkpoints: best weights as safetensors with metadata, and the full resumable state under last/."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import DistributedType
from accelerate.utils.other import load as accelerate_load
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_file, save_model

from imgcls import __version__
from imgcls.atomic import disk_full, no_space_message, write_atomic, write_json_atomic
from imgcls.console import warn
from imgcls.errors import ImgclsError, first_line
from imgcls.plan import TrainPlan
from imgcls.run_files import RunFolder
from imgcls.run_files.layout import MANIFEST, TRAINER_STATE

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
    partial: dict[str, Any] = field(default_factory=dict)  # a signal stopped the next epoch here (EpochProgress)


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
        raise ImgclsError(f"{path} is not a complete imgcls checkpoint: it is corrupt, truncated or of another "
                          f"format ({first_line(error)}); restore it, or train a run to get one") from None
    if raw is None:
        raise ImgclsError(f"{path} has no imgcls metadata; it was not written by 'imgcls train'")
    try:
        return json.loads(raw)
    except ValueError:
        raise ImgclsError(f"{path} is not a complete imgcls checkpoint: its metadata is corrupt; restore it, or "
                          f"train a run to get one") from None


def load_weights_into(model, path: Path) -> None:
    """Load a best.safetensors written by save_weights into a model of the same architecture."""
    missing, unexpected = load_model(model, str(path), strict=False)
    if missing or unexpected:
        raise ImgclsError(f"{path} does not match the model it names ({len(missing)} missing, "
                          f"{len(unexpected)} unexpected tensors); the file is damaged or from another version")


def save_training_state(accelerator: Accelerator, run: RunFolder, trainer_state: LoopState) -> None:
    """Save model, optimizer, scheduler, scaler and RNG states; replace last/ only once it is complete.

    Every process must call this (each saves its own RNG state); the main process writes the manifest (every
    file's size and sha256, the completion marker, written last) and does the swap: last/ -> last.old/,
    staging -> last/, then last.old/ removed. A crash at any point leaves one complete state to resume from.
    """
    last_dir, staging, retired = run.last_dir, run.last_staging, run.last_retired
    if accelerator.is_main_process and staging.exists():
        shutil.rmtree(staging)  # what a killed save left behind
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(staging), safe_serialization=True)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            write_json_atomic(staging / TRAINER_STATE, dataclasses.asdict(trainer_state))
            write_json_atomic(staging / MANIFEST, {"files": _file_digests(staging), "imgcls_version": __version__})
            if last_dir.exists():
                if retired.exists():  # a crash after the last swap left both; the new state is complete now
                    shutil.rmtree(retired)
                last_dir.rename(retired)
            staging.rename(last_dir)
            if retired.exists():
                shutil.rmtree(retired)
    except Exception as error:  # torch.save and safetensors report a full disk as RuntimeError / SafetensorError
        full = disk_full(error, run.path)
        shutil.rmtree(staging, ignore_errors=True)
        if full:
            raise ImgclsError(no_space_message(staging) + " with 'imgcls train --resume RUN'") from None
        raise
    accelerator.wait_for_everyone()


def _file_digests(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file under `folder` (flushed to disk on the way), by relative path."""
    digests = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
            os.fsync(handle.fileno())
        digests[path.relative_to(folder).as_posix()] = {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}
    return digests


def load_training_state(accelerator: Accelerator, run: RunFolder) -> LoopState:
    """Restore everything save_training_state wrote; returns the trainer state (epoch, best, history).

    The newest complete state is used: last/, or last.old/ where last/ is missing, incomplete or damaged (said on
    the console). Every pickled file is first read with weights_only=True, so that none can run code.
    """
    candidates = [folder for folder in (run.last_dir, run.last_retired) if folder.is_dir()]
    if not candidates:
        raise ImgclsError(f"{run.path} has no saved training state ({run.last_dir.name}/); "
                          f"it cannot be resumed, start a new run instead")
    problems: list[str] = []
    for folder in candidates:
        problem = checkpoint_problem(folder)
        if problem is None:
            if problems and accelerator.is_main_process:
                warn(f"{problems[0]}; resuming from the previous complete state {folder.name}/ instead")
            refuse_pickled_code(folder)
            accelerator.load_state(str(folder))
            return LoopState(**json.loads((folder / TRAINER_STATE).read_text()))
        problems.append(problem)
    raise ImgclsError(f"{'; '.join(problems)}; it cannot be resumed, start a new run instead")


def checkpoint_problem(folder: Path) -> str | None:
    """Why a saved state folder must not be loaded (incomplete or damaged), or None when it is complete.

    The manifest is the completion marker; a folder saved by imgcls 0.2 has none, and its marker is
    trainer_state.json (also written last)."""
    if not (folder / TRAINER_STATE).is_file():
        return f"checkpoint is incomplete: {folder} (no {TRAINER_STATE})"
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return None
    try:
        expected = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return f"checkpoint is corrupt: {manifest} is not a manifest"
    for name, facts in expected.items():
        path = folder / name
        if not path.is_file():
            return f"checkpoint is incomplete: {path} is missing"
        if path.stat().st_size != facts["bytes"]:
            return f"checkpoint is corrupt: {path} has {path.stat().st_size} bytes, {facts['bytes']} were saved"
    actual = _file_digests(folder)
    for name, facts in expected.items():
        if actual[name]["sha256"] != facts["sha256"]:
            return f"checkpoint is corrupt: {folder / name} has changed since it was saved"
    return None


def refuse_pickled_code(folder: Path) -> None:
    """Read every pickled file of a saved state with weights_only=True (tensors, numbers, containers only).

    Accelerate loads the RNG states with weights_only=True but skips them silently when that fails, and loads
    registered objects (the --ema average) with weights_only=False: a file that passes here can do no harm there.
    """
    for path in sorted(folder.glob("*.pkl")) + sorted(folder.glob("*.bin")):
        try:
            accelerate_load(str(path), map_location="cpu")
        except Exception as error:  # pickle.UnpicklingError for a forbidden global; others for damage
            raise ImgclsError(f"refused to load {path}: it is not plain tensors and numbers ({first_line(error)}); "
                              f"imgcls never unpickles code, so this run cannot be resumed: start a new run") from None


def update_metadata(path: Path, values: dict[str, Any]) -> None:
    """Add `values` to a weights file's imgcls metadata (the weights unchanged), atomically."""
    metadata = {**read_metadata(path), **values}
    tensors = load_file(str(path))
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(metadata)}))
