"""Operating points of a two-class model: the threshold on the positive class's probability at which it says
"positive", chosen by a rule on validation data (a sensitivity or specificity to reach, Youden's J, or a fixed
value), and what it gives there with Wilson intervals. numpy only: predict and serve apply it without torch."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from imgcls.errors import ImgclsError

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile
TABLE_THRESHOLDS = tuple(round(0.05 * step, 2) for step in range(1, 20))
RULE_HELP = "argmax, auto, youden, a probability such as 0.3, sensitivity=0.95 or specificity=0.9"


@dataclass(frozen=True)
class ThresholdRule:
    kind: str  # "fixed", "sensitivity", "specificity" or "youden"
    target: float | None = None  # the fixed threshold, or the sensitivity / specificity to reach

    def __str__(self) -> str:
        if self.kind == "youden":
            return "youden"
        return f"{self.target:g}" if self.kind == "fixed" else f"{self.kind}={self.target:g}"


def parse_threshold(text: str | None) -> ThresholdRule | None:
    """`--threshold` as a rule; None for the argmax decision (the default). "auto" is Youden's J."""
    if text is None or str(text).strip().lower() in ("", "argmax", "none"):
        return None
    value = str(text).strip().lower()
    if value in ("auto", "youden"):
        return ThresholdRule("youden")
    kind, _, number = value.partition("=") if "=" in value else ("fixed", "", value)
    try:
        target = float(number)
    except ValueError:
        target = math.nan
    if kind not in ("fixed", "sensitivity", "specificity") or not 0.0 <= target <= 1.0:
        raise ImgclsError(f"--threshold '{text}' is not understood; use {RULE_HELP} (numbers between 0 and 1)")
    return ThresholdRule(kind, target)


def roc_points(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds descending, sensitivity, specificity): every distinct score as a threshold, a sample counted
    positive when its score is >= the threshold (scikit-learn's roc_curve without its leading infinity)."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_positive = scores[order], positive[order]
    last_of_each = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    true_positives = np.cumsum(sorted_positive)[last_of_each]
    false_positives = (last_of_each + 1) - true_positives
    positives, negatives = max(int(positive.sum()), 1), max(int((~positive).sum()), 1)
    return sorted_scores[last_of_each], true_positives / positives, 1.0 - false_positives / negatives


def choose_threshold(scores: np.ndarray, positive: np.ndarray, rule: ThresholdRule) -> float:
    """The threshold `rule` picks on these scores: for sensitivity=x the highest threshold that reaches x (the
    best specificity with it), for specificity=x the lowest that keeps x, for youden the largest
    sensitivity + specificity - 1."""
    target = 0.0 if rule.target is None else rule.target
    if rule.kind == "fixed":
        return target
    if not np.any(positive) or np.all(positive):
        raise ImgclsError(f"--threshold {rule} needs validation images of both classes; this validation split "
                          f"has one class only; give a larger --val-split or a fixed threshold")
    thresholds, sensitivity, specificity = roc_points(scores, positive)
    if rule.kind == "sensitivity":
        index = int(np.argmax(sensitivity >= target - 1e-12))
    elif rule.kind == "specificity":
        keeping = np.flatnonzero(specificity >= target - 1e-12)
        if keeping.size == 0:  # not even the highest score keeps it: call nothing positive
            return float(np.nextafter(thresholds[0], np.inf))
        index = int(keeping[-1])
    else:
        index = int(np.argmax(sensitivity + specificity - 1.0))
    return float(thresholds[index])


def wilson_interval(successes: int, trials: int) -> list[float] | None:
    """The 95 % Wilson score interval of a proportion (good at 0 and 1 and at small n, unlike the normal one)."""
    if trials == 0:
        return None
    share = successes / trials
    spread = Z95 * math.sqrt(share * (1 - share) / trials + Z95**2 / (4 * trials**2))
    centre = share + Z95**2 / (2 * trials)
    scale = 1 + Z95**2 / trials
    return [max(0.0, (centre - spread) / scale), min(1.0, (centre + spread) / scale)]


def at_threshold(scores: np.ndarray, positive: np.ndarray, threshold: float | np.ndarray) -> dict:
    """Sensitivity, specificity, PPV, NPV (with Wilson intervals), F1 and accuracy of calling `scores` >=
    `threshold` positive, and the four counts. `threshold` may be one per sample (pooled folds, each with its
    own); "threshold" is then None."""
    positive = np.asarray(positive, dtype=bool)
    called = np.asarray(scores, dtype=np.float64) >= threshold
    tp, fp = int(np.sum(called & positive)), int(np.sum(called & ~positive))
    fn, tn = int(np.sum(~called & positive)), int(np.sum(~called & ~positive))
    result: dict = {"threshold": float(threshold) if np.ndim(threshold) == 0 else None}
    for name, hits, total in (("sensitivity", tp, tp + fn), ("specificity", tn, tn + fp), ("ppv", tp, tp + fp),
                              ("npv", tn, tn + fn)):
        result[name] = {"value": hits / total if total else None, "ci95": wilson_interval(hits, total)}
    result["f1"] = {"value": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None}
    result["accuracy"] = {"value": (tp + tn) / max(called.size, 1)}
    result["counts"] = {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    return result


def threshold_table(scores: np.ndarray, positive: np.ndarray, chosen: float | None = None) -> list[dict]:
    """One row per threshold (0.05 ... 0.95, and the chosen one): sensitivity, specificity, PPV, NPV, F1."""
    thresholds = sorted(set(TABLE_THRESHOLDS) | ({round(chosen, 6)} if chosen is not None else set()))
    rows = []
    for threshold in thresholds:
        point = at_threshold(scores, positive, threshold)
        rows.append({"threshold": threshold, "chosen": chosen is not None and threshold == round(chosen, 6),
                     **{name: point[name]["value"] for name in ("sensitivity", "specificity", "ppv", "npv", "f1")}})
    return rows
