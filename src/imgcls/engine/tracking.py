"""Live training curves in TensorBoard (RUN/tb) and MLflow (a local store, or $MLFLOW_TRACKING_URI) through
Accelerate's trackers (`log_with`, `init_trackers`, `log`, and each tracker's `finish`). Neither library is
imported unless a run asks for it; both are optional extras."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from imgcls.config import keep_mlflow_offline
from imgcls.errors import ImgclsError
from imgcls.plan import TrainPlan
from imgcls.run_files import RunFolder

EXTRAS = {"tensorboard": 'pip install "imgcls[tensorboard]"', "mlflow": 'pip install "imgcls[mlflow]"'}
TENSORBOARD_DIR = "tb"  # RUN/tb
EXPERIMENT = "imgcls"  # the MLflow experiment every run is recorded under
CURVES = {"train_loss": "train/loss", "train_accuracy": "train/accuracy", "val_loss": "val/loss",
          "val_accuracy": "val/accuracy", "lr": "lr", "train_images_per_s": "train/images_per_s",
          "epoch_time_s": "epoch_time_s"}  # a history.csv column -> its curve's name


def check_installed(names: tuple[str, ...]) -> None:
    """One line naming the extra to install for each tracker whose library is missing (before any work starts)."""
    for name in names:
        if importlib.util.find_spec(name) is None:
            raise ImgclsError(f"--track {name} needs the {name} package, which is not installed: {EXTRAS[name]}")


def make_trackers(plan: TrainPlan, run: RunFolder) -> list:
    """Accelerate trackers for `plan.track`, not yet started (Accelerator(log_with=...) starts them)."""
    check_installed(plan.track)
    trackers: list = []
    if "tensorboard" in plan.track:
        from accelerate.tracking import TensorBoardTracker

        trackers.append(TensorBoardTracker(TENSORBOARD_DIR, run.path))
    if "mlflow" in plan.track:
        keep_mlflow_offline()
        import mlflow
        from accelerate.tracking import MLflowTracker

        mlflow.set_tracking_uri(plan.tracking_uri)
        artifacts = None
        if plan.tracking_uri.startswith("sqlite:///"):  # the local store: artifacts beside the database
            store = Path(plan.tracking_uri.removeprefix("sqlite:///")).parent
            store.mkdir(parents=True, exist_ok=True)
            artifacts = (store / "artifacts").as_uri()
        trackers.append(MLflowTracker(experiment_name=EXPERIMENT, logging_dir=artifacts, run_name=run.path.name,
                                      tags={"imgcls.run_folder": str(run.path.resolve())}))
    return trackers


def hyperparameters(plan: TrainPlan, config: dict[str, Any] | None) -> dict[str, bool | int | float | str]:
    """The plan (every resolved value) and the config as given, flattened to `plan.lr`, `config.train.epochs`,
    ...: scalars as they are, anything else as JSON text (what TensorBoard's hparams and MLflow's params take)."""
    flat: dict[str, bool | int | float | str] = {}
    for section, values in (("plan", plan.to_dict()), ("config", config or {})):
        _flatten(values, section, flat)
    return flat


def _flatten(values: dict[str, Any], prefix: str, into: dict[str, bool | int | float | str]) -> None:
    for key, value in values.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict) and prefix == "config":  # the config's sections; the plan's notes stay whole
            _flatten(value, name, into)
        elif isinstance(value, (bool, int, float, str)):
            into[name] = value
        else:
            into[name] = json.dumps(value, default=str)[:500]  # MLflow's limit on one parameter's value


def curves(row: dict[str, Any]) -> dict[str, float]:
    """An epoch's row of history.csv as the tracked curves (the values it has)."""
    return {name: float(row[key]) for key, name in CURVES.items() if isinstance(row.get(key), (int, float))}
