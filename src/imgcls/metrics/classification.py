"""Classification metrics from logits, computed with torchmetrics on whole tensors; which are better lower;
their display names."""

from __future__ import annotations

import math

from imgcls.errors import ImgclsError

SCALAR_ORDER = (
    "accuracy", "error_rate", "top5_accuracy", "balanced_accuracy", "loss",
    "sensitivity", "specificity", "precision", "f1",  # two-class data: of the positive class
    "precision_macro", "recall_macro", "specificity_macro", "f1_macro", "precision_weighted", "recall_weighted",
    "specificity_weighted", "f1_weighted", "mcc", "cohen_kappa", "roc_auc", "pr_auc", "ece",
)
LOWER_IS_BETTER = frozenset({"loss", "error_rate", "ece"})
METRIC_LABELS = {
    "accuracy": "accuracy", "error_rate": "error rate", "top5_accuracy": "top-5 accuracy",
    "balanced_accuracy": "balanced accuracy", "loss": "loss", "sensitivity": "sensitivity",
    "specificity": "specificity", "precision": "precision", "f1": "F1", "precision_macro": "precision (macro)",
    "recall_macro": "sensitivity / recall (macro)",
    "specificity_macro": "specificity (macro)", "f1_macro": "F1 (macro)",
    "precision_weighted": "precision (weighted)", "recall_weighted": "recall (weighted)",
    "specificity_weighted": "specificity (weighted)", "f1_weighted": "F1 (weighted)", "mcc": "MCC",
    "cohen_kappa": "Cohen's kappa", "roc_auc": "ROC-AUC", "pr_auc": "PR-AUC (average precision)",
    "ece": "calibration error (ECE)",
}


def compute_metrics(logits, targets, class_names: list[str], positive_class: int = 1, resamples: int = 1000,
                    seed: int = 0) -> dict:
    """Every metric of one split: scalars as {"value": x} (with "ci95": [low, high] for the bootstrapped
    ones when `resamples` > 0), plus per-class stats and the confusion matrix.

    For two classes, sensitivity / specificity / precision / F1 / ROC-AUC / PR-AUC are those of
    `positive_class` (default the second class); for more, ROC-AUC and PR-AUC are one-vs-rest macro
    averages over the classes that occur in `targets` (undefined for a class with no positives).
    """
    import torch
    from torchmetrics.functional import classification as tmc

    logits, targets = logits.float(), targets.long()
    num_classes = len(class_names)
    probs = logits.softmax(dim=1)
    stats = _class_stats(probs, targets, num_classes)
    scalars = _scalars(logits, probs, targets, num_classes, positive_class, stats)
    result = {name: {"value": _number(scalars[name])} for name in SCALAR_ORDER if name in scalars}
    if resamples > 0 and targets.numel() > 1:
        from imgcls.metrics.bootstrap import bootstrap_intervals

        for name, interval in bootstrap_intervals(probs, targets, positive_class, resamples, seed).items():
            result[name]["ci95"] = None if interval is None else [float(interval[0]), float(interval[1])]
    if num_classes == 2:
        result["positive_class"] = class_names[positive_class]
    result["per_class"] = _per_class(class_names, stats["precision"][0], stats["recall"][0],
                                     stats["specificity"][0], stats["f1"][0], torch.bincount(targets, minlength=num_classes))
    result["confusion_matrix"] = tmc.multiclass_confusion_matrix(probs, targets, num_classes=num_classes).tolist()
    result["num_samples"] = int(targets.numel())
    return result


def _class_stats(probs, targets, num_classes: int) -> dict[str, tuple]:
    """{precision, recall, specificity, f1: (per class, macro average, weighted average)}."""
    from torchmetrics.functional import classification as tmc

    functions = {"precision": tmc.multiclass_precision, "recall": tmc.multiclass_recall,
                 "specificity": tmc.multiclass_specificity, "f1": tmc.multiclass_f1_score}
    return {name: tuple(metric(probs, targets, average=average, num_classes=num_classes)
                        for average in ("none", "macro", "weighted")) for name, metric in functions.items()}


def _scalars(logits, probs, targets, num_classes: int, positive_class: int, stats: dict) -> dict:
    """Every scalar metric, by name (tensors or floats)."""
    import torch.nn.functional as F
    from torchmetrics.functional import classification as tmc

    common = {"num_classes": num_classes}
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


def _ranking_area(kind: str, probs, targets, num_classes: int, positive_class: int):
    """ROC-AUC (kind "roc") or average precision, the PR-AUC computed step-wise as scikit-learn does
    (kind "pr"): of the positive class for two classes, else the one-vs-rest macro average over the
    classes present in `targets`."""
    from torchmetrics.functional import classification as tmc

    binary, multiclass = {"roc": (tmc.binary_auroc, tmc.multiclass_auroc),
                          "pr": (tmc.binary_average_precision, tmc.multiclass_average_precision)}[kind]
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
    """Whether `new` improves on `best` for `metric` (lower is better for the loss)."""
    if new is None:
        return False
    if best is None:
        return True
    return new < best if metric in LOWER_IS_BETTER else new > best
