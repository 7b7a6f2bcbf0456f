"""Classification metrics from logits, computed with torchmetrics on whole tensors."""

from __future__ import annotations

import math

from imgcls.errors import ImgclsError

SCALAR_ORDER = (
    "accuracy", "error_rate", "top5_accuracy", "balanced_accuracy", "loss",
    "sensitivity", "specificity", "precision", "f1",  # two-class data: of the positive class
    "precision_macro", "recall_macro", "specificity_macro", "f1_macro", "precision_weighted", "recall_weighted",
    "specificity_weighted", "f1_weighted", "mcc", "cohen_kappa", "roc_auc", "pr_auc", "ece",
)
LOWER_IS_BETTER = frozenset({"loss"})


def compute_metrics(logits, targets, class_names: list[str], positive_class: int = 1, resamples: int = 1000,
                    seed: int = 0) -> dict:
    """Every metric of one split: scalars as {"value": x} (with "ci95": [low, high] for the bootstrapped
    ones when `resamples` > 0), plus per-class stats and the confusion matrix.

    For two classes, sensitivity / specificity / precision / F1 / ROC-AUC / PR-AUC are those of
    `positive_class` (default the second class); for more, ROC-AUC and PR-AUC are one-vs-rest macro
    averages over the classes that occur in `targets` (undefined for a class with no positives).
    """
    import torch
    import torch.nn.functional as F
    from torchmetrics.functional import classification as tmc

    logits = logits.float()
    targets = targets.long()
    num_classes = len(class_names)
    probs = logits.softmax(dim=1)
    common = {"num_classes": num_classes}

    def per_class_and_averages(metric):
        per_class = metric(probs, targets, average="none", **common)
        macro = metric(probs, targets, average="macro", **common)
        weighted = metric(probs, targets, average="weighted", **common)
        return per_class, macro, weighted

    precision, precision_macro, precision_weighted = per_class_and_averages(tmc.multiclass_precision)
    recall, recall_macro, recall_weighted = per_class_and_averages(tmc.multiclass_recall)
    specificity, specificity_macro, specificity_weighted = per_class_and_averages(tmc.multiclass_specificity)
    f1, f1_macro, f1_weighted = per_class_and_averages(tmc.multiclass_f1_score)
    support = torch.bincount(targets, minlength=num_classes)

    scalars = {
        "accuracy": tmc.multiclass_accuracy(probs, targets, average="micro", **common),
        "balanced_accuracy": recall_macro,
        "loss": F.cross_entropy(logits, targets),
        "precision_macro": precision_macro,
        "recall_macro": recall_macro,
        "specificity_macro": specificity_macro,
        "f1_macro": f1_macro,
        "precision_weighted": precision_weighted,
        "recall_weighted": recall_weighted,
        "specificity_weighted": specificity_weighted,
        "f1_weighted": f1_weighted,
        "mcc": tmc.multiclass_matthews_corrcoef(probs.argmax(1), targets, **common),
        "cohen_kappa": tmc.multiclass_cohen_kappa(probs.argmax(1), targets, **common),
        "roc_auc": _ranking_area("roc", probs, targets, num_classes, positive_class),
        "pr_auc": _ranking_area("pr", probs, targets, num_classes, positive_class),
        "ece": tmc.multiclass_calibration_error(probs, targets, n_bins=15, norm="l1", **common),
    }
    scalars["error_rate"] = 1.0 - scalars["accuracy"]
    if num_classes == 2:
        scalars.update(sensitivity=recall[positive_class], specificity=recall[1 - positive_class],
                       precision=precision[positive_class], f1=f1[positive_class])
    if num_classes >= 5:
        scalars["top5_accuracy"] = tmc.multiclass_accuracy(probs, targets, average="micro", top_k=5, **common)
    result = {name: {"value": _number(scalars[name])} for name in SCALAR_ORDER if name in scalars}
    if resamples > 0 and targets.numel() > 1:
        from imgcls.bootstrap import bootstrap_intervals

        for name, interval in bootstrap_intervals(probs, targets, positive_class, resamples, seed).items():
            result[name]["ci95"] = None if interval is None else [float(interval[0]), float(interval[1])]
    if num_classes == 2:
        result["positive_class"] = class_names[positive_class]
    result["per_class"] = {
        name: {
            "precision": _number(precision[i]),
            "recall": _number(recall[i]),
            "specificity": _number(specificity[i]),
            "f1": _number(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    result["confusion_matrix"] = tmc.multiclass_confusion_matrix(probs, targets, **common).tolist()
    result["num_samples"] = int(targets.numel())
    return result


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
