"""Classification metrics from logits, computed with torchmetrics on whole tensors."""

from __future__ import annotations

import math

SCALAR_ORDER = (
    "accuracy", "top5_accuracy", "balanced_accuracy", "loss", "precision_macro", "recall_macro",
    "specificity_macro", "f1_macro", "precision_weighted", "recall_weighted", "specificity_weighted",
    "f1_weighted", "mcc", "roc_auc",
)
LOWER_IS_BETTER = frozenset({"loss"})


def compute_metrics(logits, targets, class_names: list[str]) -> dict:
    """Every metric of one split: scalars as {"value": x}, plus per-class stats and the confusion matrix.

    For two classes, ROC-AUC scores the second class as positive; for more, it is the one-vs-rest macro
    average over the classes that occur in `targets` (AUC is undefined for a class with no positives).
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
        "roc_auc": _roc_auc(probs, targets, num_classes),
    }
    if num_classes >= 5:
        scalars["top5_accuracy"] = tmc.multiclass_accuracy(probs, targets, average="micro", top_k=5, **common)
    result = {name: {"value": _number(scalars[name])} for name in SCALAR_ORDER if name in scalars}
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


def _roc_auc(probs, targets, num_classes: int):
    from torchmetrics.functional import classification as tmc

    present = targets.unique()
    if len(present) < 2:
        return float("nan")
    if num_classes == 2:
        return tmc.binary_auroc(probs[:, 1], targets)
    per_class = tmc.multiclass_auroc(probs, targets, num_classes=num_classes, average="none")
    return per_class[present].mean()


def _number(value) -> float | None:
    """A JSON-safe float; None for undefined values (NaN)."""
    number = float(value)
    return None if math.isnan(number) else number


def is_better(metric: str, new: float | None, best: float | None) -> bool:
    """Whether `new` improves on `best` for `metric` (lower is better for the loss)."""
    if new is None:
        return False
    if best is None:
        return True
    return new < best if metric in LOWER_IS_BETTER else new > best
