"""Cross-validation's numbers: each fold's test metrics side by side with their mean and standard deviation, and
the pooled out-of-fold metrics with bootstrap intervals over images (the spread of fold scores understates the
uncertainty of a cross-validated estimate: Bates, Hastie & Tibshirani 2021)."""

from __future__ import annotations

import statistics
from typing import Any

import torch

from imgcls.metrics.bootstrap import pooled_intervals
from imgcls.metrics.calibration import log_probabilities
from imgcls.metrics.classification import compute_metrics
from imgcls.metrics.names import RESAMPLES

FOLD_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "mcc", "roc_auc", "sensitivity", "specificity", "ece",
                "loss")


def pooled_metrics(repeats: list[torch.Tensor], labels: torch.Tensor, class_names: list[str], positive: int = 1,
                   seed: int = 0, resamples: int = RESAMPLES) -> dict[str, Any]:
    """Metrics of the out-of-fold probabilities (one (N, K) matrix per repeat, rows in one image order). One
    repeat: as any held-out split. Several: the bootstrapped metrics are the mean over the repeats, with intervals
    from resampling images (the same draw in every repeat); the rest (per class, confusion matrix, ECE) are those
    of the first repeat."""
    metrics = compute_metrics(log_probabilities(repeats[0]), labels, class_names, positive, resamples, seed)
    if len(repeats) == 1:
        return metrics
    each = [compute_metrics(log_probabilities(probs), labels, class_names, positive, resamples=0)
            for probs in repeats]
    intervals = pooled_intervals(repeats, labels, positive, resamples, seed)
    for name, interval in intervals.items():
        values = [entry[name]["value"] for entry in each if entry.get(name, {}).get("value") is not None]
        if name in metrics and values:
            metrics[name] = {"value": statistics.fmean(values),
                             "ci95": None if interval is None else [interval[0], interval[1]],
                             "per_repeat": values}
    metrics["repeats"] = len(repeats)
    return metrics


def fold_table(folds: list[tuple[str, dict[str, Any]]], count: int, repeats: int) -> dict[str, Any]:
    """cross_validation.json: each fold's test metrics (name, metrics), and their mean and sample standard
    deviation across folds."""
    names = [name for name in FOLD_METRICS if any(metrics.get(name, {}).get("value") is not None
                                                  for _, metrics in folds)]
    rows = [{"fold": fold_name, "images": metrics["num_samples"],
             **{name: metrics.get(name, {}).get("value") for name in names}} for fold_name, metrics in folds]
    mean, sd = {}, {}
    for name in names:
        values = [row[name] for row in rows if row[name] is not None]
        mean[name] = statistics.fmean(values) if values else None
        sd[name] = statistics.stdev(values) if len(values) > 1 else None
    return {"folds": count, "repeats": repeats, "metrics": names, "per_fold": rows, "mean": mean, "sd": sd,
            "note": "mean and standard deviation across folds; the pooled out-of-fold metrics (metrics.json) carry "
                    "bootstrap intervals over images, which the spread across folds understates"}

