"""Classification metrics from logits, computed with torchmetrics on whole tensors (their names, display labels
and directions are in `imgcls.metrics.names`)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.functional import classification as tmc

from imgcls.metrics.bootstrap import bootstrap_intervals
from imgcls.metrics.names import RESAMPLES, SCALAR_ORDER
from imgcls.metrics.selective import selective_accuracy


def compute_metrics(logits: torch.Tensor, targets: torch.Tensor, class_names: list[str], positive_class: int = 1,
                    resamples: int = RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """Every metric of one split: scalars as {"value": x} (with "ci95": [low, high] for the bootstrapped
    ones when `resamples` > 0), plus per-class stats and the confusion matrix.

    For two classes, sensitivity / specificity / precision / F1 / ROC-AUC / PR-AUC are those of
    `positive_class` (default the second class); for more, ROC-AUC and PR-AUC are one-vs-rest macro
    averages over the classes that occur in `targets` (undefined for a class with no positives).
    """
    logits, targets = logits.float(), targets.long()
    num_classes = len(class_names)
    probs = logits.softmax(dim=1)
    stats = _class_stats(probs, targets, num_classes)
    scalars = _scalars(logits, probs, targets, num_classes, positive_class, stats)
    result: dict[str, Any] = {name: {"value": _number(scalars[name])} for name in SCALAR_ORDER if name in scalars}
    if resamples > 0 and targets.numel() > 1:
        for name, interval in bootstrap_intervals(probs, targets, positive_class, resamples, seed).items():
            result[name]["ci95"] = None if interval is None else [float(interval[0]), float(interval[1])]
    # accuracy when the least confident 10 / 5 / 1 % are referred to a person (its own bootstrap: the cut moves)
    result.update(selective_accuracy(probs.cpu().numpy(), targets.cpu().numpy(), resamples=resamples if targets.numel() > 1
                                     else 0, seed=seed))
    if num_classes == 2:
        result["positive_class"] = class_names[positive_class]
    result["per_class"] = _per_class(class_names, stats["precision"][0], stats["recall"][0],
                                     stats["specificity"][0], stats["f1"][0], torch.bincount(targets, minlength=num_classes))
    result["confusion_matrix"] = tmc.multiclass_confusion_matrix(probs, targets, num_classes=num_classes).tolist()
    result["num_samples"] = int(targets.numel())
    return result


def _class_stats(probs, targets, num_classes: int) -> dict[str, tuple]:
    """{precision, recall, specificity, f1: (per class, macro average, weighted average)}."""
    functions = {"precision": tmc.multiclass_precision, "recall": tmc.multiclass_recall,
                 "specificity": tmc.multiclass_specificity, "f1": tmc.multiclass_f1_score}
    return {name: tuple(metric(probs, targets, average=average, num_classes=num_classes)
                        for average in ("none", "macro", "weighted")) for name, metric in functions.items()}


def _scalars(logits, probs, targets, num_classes: int, positive_class: int, stats: dict) -> dict:
    """Every scalar metric, by name (tensors or floats)."""
    common: dict[str, Any] = {"num_classes": num_classes}
    predicted = probs.argmax(1)
    scalars = {
        "accuracy": tmc.multiclass_accuracy(probs, targets, average="micro", **common),
        "balanced_accuracy": stats["recall"][1],
        "loss": F.cross_entropy(logits, targets),
        "mcc": tmc.multiclass_matthews_corrcoef(predicted, targets, **common),
        "cohen_kappa": tmc.multiclass_cohen_kappa(predicted, targets, **common),
        "roc_auc": _ranking_area("roc", probs, targets, num_classes, positive_class),
        "pr_auc": _ranking_area("pr", probs, targets, num_classes, positive_class),
        "ece": tmc.multiclass_calibration_error(probs, targets, n_bins=15, norm="l1", **common),
    }
    for name in ("precision", "recall", "specificity", "f1"):
        scalars[f"{name}_macro"], scalars[f"{name}_weighted"] = stats[name][1], stats[name][2]
    scalars["error_rate"] = 1.0 - scalars["accuracy"]
    if num_classes == 2:
        recall, precision, f1 = stats["recall"][0], stats["precision"][0], stats["f1"][0]
        scalars.update(sensitivity=recall[positive_class], specificity=recall[1 - positive_class],
                       precision=precision[positive_class], f1=f1[positive_class])
    if num_classes >= 5:
        scalars["top5_accuracy"] = tmc.multiclass_accuracy(probs, targets, average="micro", top_k=5, **common)
    return scalars


def _per_class(class_names: list[str], precision, recall, specificity, f1, support) -> dict:
    return {name: {"precision": _number(precision[i]), "recall": _number(recall[i]),
                   "specificity": _number(specificity[i]), "f1": _number(f1[i]), "support": int(support[i])}
            for i, name in enumerate(class_names)}


def _ranking_area(kind: str, probs: torch.Tensor, targets: torch.Tensor, num_classes: int,
                  positive_class: int) -> torch.Tensor | float:
    """ROC-AUC (kind "roc") or average precision, the PR-AUC computed step-wise as scikit-learn does
    (kind "pr"): of the positive class for two classes, else the one-vs-rest macro average over the
    classes present in `targets`."""
    functions: dict[str, tuple[Any, Any]] = {"roc": (tmc.binary_auroc, tmc.multiclass_auroc),
                                             "pr": (tmc.binary_average_precision, tmc.multiclass_average_precision)}
    binary, multiclass = functions[kind]
    present = targets.unique()
    if len(present) < 2:
        return float("nan")
    if num_classes == 2:
        return binary(probs[:, positive_class], (targets == positive_class).long())
    return multiclass(probs, targets, num_classes=num_classes, average="none")[present].mean()


def _number(value) -> float | None:
    """A JSON-safe float; None for undefined values (NaN)."""
    number = float(value)
    return None if math.isnan(number) else number
