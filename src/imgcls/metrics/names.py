"""The metrics' names, display labels and directions, the positive class of two-class data, and the bootstrap's
size: what tables, plots and plans need without computing anything (no torch import)."""

from __future__ import annotations

import math

from imgcls.errors import ImgclsError

RESAMPLES = 1000  # bootstrap resamples of a 95% interval (the default everywhere)

SCALAR_ORDER = (
    "accuracy", "error_rate", "top5_accuracy", "balanced_accuracy", "loss",
    "sensitivity", "specificity", "precision", "f1",  # two-class data: of the positive class
    "precision_macro", "recall_macro", "specificity_macro", "f1_macro", "precision_weighted", "recall_weighted",
    "specificity_weighted", "f1_weighted", "mcc", "cohen_kappa", "roc_auc", "pr_auc", "ece", "ece_uncalibrated",
    "loss_uncalibrated", "selective_accuracy_90", "selective_accuracy_95", "selective_accuracy_99",
)
LOWER_IS_BETTER = frozenset({"loss", "error_rate", "ece", "ece_uncalibrated", "loss_uncalibrated"})
METRIC_LABELS = {
    "accuracy": "accuracy", "error_rate": "error rate", "top5_accuracy": "top-5 accuracy",
    "balanced_accuracy": "balanced accuracy", "loss": "loss", "sensitivity": "sensitivity",
    "specificity": "specificity", "precision": "precision", "f1": "F1", "precision_macro": "precision (macro)",
    "recall_macro": "sensitivity / recall (macro)",
    "specificity_macro": "specificity (macro)", "f1_macro": "F1 (macro)",
    "precision_weighted": "precision (weighted)", "recall_weighted": "recall (weighted)",
    "specificity_weighted": "specificity (weighted)", "f1_weighted": "F1 (weighted)", "mcc": "MCC",
    "cohen_kappa": "Cohen's kappa", "roc_auc": "ROC-AUC", "pr_auc": "PR-AUC (average precision)",
    "ece": "calibration error (ECE)", "ece_uncalibrated": "ECE before temperature scaling",
    "loss_uncalibrated": "loss before temperature scaling",
    "selective_accuracy_90": "accuracy at 90% coverage", "selective_accuracy_95": "accuracy at 95% coverage",
    "selective_accuracy_99": "accuracy at 99% coverage",
}


IMBALANCED = 3.0  # largest / smallest class from which tables lead with balanced accuracy and per-class sensitivity
LEAD_WHEN_IMBALANCED = ("balanced_accuracy", "recall_macro")


def imbalance_ratio(metrics: dict) -> float:
    """Largest / smallest class support of the training split of a metrics.json dict (else its first split)."""
    split = metrics.get("train") or next(iter(metrics.values()))
    supports = [entry["support"] for entry in split.get("per_class", {}).values()]
    if not supports:
        return 1.0
    return float("inf") if min(supports) == 0 else max(supports) / min(supports)


def metric_order(imbalanced: bool) -> list[str]:
    """The metrics' keys in the order tables show them: balanced accuracy and mean sensitivity first when the
    data is imbalanced (accuracy mostly measures the largest class there)."""
    lead = list(LEAD_WHEN_IMBALANCED) if imbalanced else []
    return lead + [key for key in METRIC_LABELS if key not in lead]


def positive_index(class_names: list[str], positive: str | None) -> int:
    """Index of the positive class for two-class metrics: a class name or index; default the second class."""
    if positive is None:
        return 1
    if positive in class_names:
        return class_names.index(positive)
    if positive.isdigit() and int(positive) < len(class_names):
        return int(positive)
    raise ImgclsError(f"--positive-class '{positive}' is not a class of this data; choose one of "
                      f"{', '.join(class_names)}")


def is_better(metric: str, new: float | None, best: float | None) -> bool:
    """Whether `new` improves on `best` for `metric` (lower is better for the loss); NaN never does."""
    if new is None or math.isnan(new):
        return False
    if best is None or math.isnan(best):
        return True
    return new < best if metric in LOWER_IS_BETTER else new > best
