"""`imgcls calibrate`: refit a trained run's temperature on other held-out data (a new site's images, a larger
validation set), keeping its operating point where it was."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from imgcls.console import get_console
from imgcls.engine.checkpoint import update_metadata
from imgcls.engine.decisions import fit_decisions
from imgcls.errors import ImgclsError
from imgcls.metrics.calibration import MIN_IMAGES
from imgcls.run_files.predictions import SplitPredictions, load_split_predictions, save_split_predictions
from imgcls.workflows.evaluate import split_logits
from imgcls.workflows.export import export
from imgcls.workflows.predict import load


def calibrate(run: str | Path, data: str | None = None, split: str | None = None, batch_size: int = 128,
              data_root: str | None = None) -> dict[str, Any]:
    """Fit the temperature of `run` on `data` (a class-per-folder dataset, whole) or, without it (or when it is the
    run's own data), on the run's validation split (`split` chooses another); the weights file, decisions.json, the saved predictions and a current ONNX export take
    the new temperature, and a chosen threshold moves with it (the same operating point). Returns the fit."""
    loaded = load(run)
    if loaded.run is None:
        raise ImgclsError(f"{run} is a bare weights file; calibrate the run folder it came from")
    folder = loaded.run
    logits, labels, found = split_logits(loaded, data, split, batch_size, data_root=data_root,
                                         prefer=("val", "all"))  # never the run's test split unless asked
    if labels.numel() < MIN_IMAGES:
        raise ImgclsError(f"{found.data.source} ({found.split}) has {labels.numel()} images; a temperature needs at "
                          f"least {MIN_IMAGES} labelled held-out images: pass a larger DATA")
    where = f"{Path(found.data.source).name or found.data.source} ({found.split})"
    fitted = fit_decisions({where: (logits.softmax(dim=1), labels)}, True, None, loaded.positive_index, where)
    old, new = loaded.temperature, fitted.temperature
    threshold = None if loaded.threshold is None else moved_threshold(loaded.threshold, old, new)
    update_metadata(loaded.weights_file, {"temperature": new, "threshold": threshold})
    record = {**folder.read_decisions(), "calibration": fitted.record["calibration"], "temperature": new}
    if threshold is not None:
        record["threshold"] = {**record.get("threshold", {}), "threshold": threshold}
    folder.write_decisions(record)
    _rescale_saved_predictions(folder, list(loaded.class_names), old / new)
    if folder.export_file("onnx").is_file():
        export(folder.path, "onnx")  # the graph carries the temperature: rewritten, not left stale
    before, after = fitted.record["calibration"]["before"], fitted.record["calibration"]["after"]
    get_console().print(f"temperature {old:.4f} -> {new:.4f}, fitted on {where}, {labels.numel()} images: "
                        f"NLL {before['loss']:.4f} -> {after['loss']:.4f}, ECE {before['ece']:.4f} -> "
                        f"{after['ece']:.4f}" + (f"; threshold {loaded.threshold:.4f} -> {threshold:.4f} (the same "
                                                  f"operating point)" if threshold is not None else ""))
    return {"temperature": new, "previous_temperature": old, "threshold": threshold, **fitted.record["calibration"]}


def moved_threshold(threshold: float, old: float, new: float) -> float:
    """The probability threshold that keeps the same decisions when the temperature goes from `old` to `new`: two
    classes call positive when logit difference / T >= logit(threshold)."""
    if threshold <= 0.0 or threshold >= 1.0:
        return threshold
    return 1.0 / (1.0 + math.exp(-math.log(threshold / (1.0 - threshold)) * old / new))


def _rescale_saved_predictions(folder, class_names: list[str], power: float) -> None:
    """The run's saved probabilities at the new temperature (softmax(log p * T_old / T_new))."""
    for split, saved in load_split_predictions(folder).items():
        logits = np.log(np.clip(saved.probs.astype(np.float64), 1e-300, None)) * power
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        save_split_predictions(folder, split, SplitPredictions(probs.astype(np.float32), saved.labels, saved.paths),
                               class_names)
