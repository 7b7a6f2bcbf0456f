"""Selective prediction: refer the least confident predictions to a person and measure the rest. The
risk-coverage curve, accuracy at a chosen coverage (with a bootstrap interval), and the confidence below which
to abstain for a target accuracy. numpy only: predict and serve use it without torch."""

from __future__ import annotations

import math

import numpy as np

from imgcls.errors import ImgclsError

COVERAGES = (0.90, 0.95, 0.99)
AUTO_ACCURACY = 0.99  # `--abstain-below auto`: the accuracy the kept predictions should reach on validation
ABSTAIN_HELP = "auto (validation accuracy 0.99 on what is kept), accuracy=0.98, or a probability such as 0.7"


def coverage_key(coverage: float) -> str:
    """The metric's name for accuracy at this coverage ("selective_accuracy_95")."""
    return f"selective_accuracy_{round(coverage * 100)}"


def by_confidence(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) of each prediction, the most confident first (ties in data order)."""
    probs = np.asarray(probs)
    confidence = probs.max(1).astype(np.float64)
    correct = probs.argmax(1) == np.asarray(labels)
    order = np.argsort(-confidence, kind="stable")
    return confidence[order], correct[order]


def risk_coverage(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, error rate of the kept predictions) when the k most confident are kept, k = 1 ... N."""
    _, correct = by_confidence(probs, labels)
    kept = np.arange(1, correct.size + 1)
    return kept / correct.size, 1.0 - np.cumsum(correct) / kept


def selective_accuracy(probs: np.ndarray, labels: np.ndarray, coverages: tuple[float, ...] = COVERAGES,
                       resamples: int = 0, seed: int = 0) -> dict[str, dict]:
    """{coverage_key: {"value", "ci95"?}}: accuracy of the ceil(c·N) most confident predictions. The interval
    is a percentile bootstrap of the whole procedure (the images are resampled, then the cut is made again)."""
    _, correct = by_confidence(probs, labels)
    size = correct.size
    if size == 0:
        return {}
    result: dict[str, dict] = {}
    for coverage in coverages:
        kept = max(1, math.ceil(coverage * size - 1e-9))
        result[coverage_key(coverage)] = {"value": float(correct[:kept].mean())}
    if resamples > 0 and size > 1:
        draws = _bootstrap(correct, coverages, resamples, seed)
        for coverage, values in zip(coverages, draws):
            low, high = np.quantile(values, [0.025, 0.975])
            result[coverage_key(coverage)]["ci95"] = [float(low), float(high)]
    return result


def _bootstrap(correct: np.ndarray, coverages: tuple[float, ...], resamples: int, seed: int) -> list[np.ndarray]:
    """Accuracy at each coverage in each resample: per-image counts (multinomial weights) in the confidence
    order; a resampled image is kept while the weight before it is under the coverage's share."""
    generator = np.random.default_rng(seed)
    size = correct.size
    chunk = max(1, min(resamples, 2_000_000 // size))
    draws: list[list[np.ndarray]] = [[] for _ in coverages]
    for start in range(0, resamples, chunk):
        count = min(chunk, resamples - start)
        weights = generator.multinomial(size, np.full(size, 1.0 / size), size=count).astype(np.float64)
        before = np.cumsum(weights, axis=1) - weights
        for position, coverage in enumerate(coverages):
            kept = weights * (before < coverage * size - 1e-9)
            draws[position].append((kept * correct).sum(1) / np.maximum(kept.sum(1), 1.0))
    return [np.concatenate(values) for values in draws]


def parse_abstain(text: str | None) -> tuple[str, float] | None:
    """`--abstain-below` as ("confidence", p) or ("accuracy", target); None when off."""
    if text is None or str(text).strip().lower() in ("", "none", "off"):
        return None
    value = str(text).strip().lower()
    if value == "auto":
        return "accuracy", AUTO_ACCURACY
    kind, _, number = value.partition("=") if "=" in value else ("confidence", "", value)
    try:
        target = float(number)
    except ValueError:
        target = math.nan
    if kind not in ("confidence", "accuracy") or not 0.0 < target <= 1.0:
        raise ImgclsError(f"--abstain-below '{text}' is not understood; use {ABSTAIN_HELP}")
    return kind, target


def confidence_for_accuracy(probs: np.ndarray, labels: np.ndarray, target: float) -> tuple[float, float, float]:
    """(confidence, coverage, accuracy): the lowest confidence whose kept predictions (confidence >= it) reach
    `target` accuracy on these labels, with the share it keeps and the accuracy there. A target no cut reaches
    keeps only the most confident prediction's ties."""
    confidence, correct = by_confidence(probs, labels)
    if confidence.size == 0:
        raise ImgclsError("--abstain-below needs the run's validation predictions; this run has none: pass a "
                          "confidence such as --abstain-below 0.7")
    last_of_each = np.r_[np.flatnonzero(np.diff(confidence)), confidence.size - 1]  # ties are kept together
    accuracy = (np.cumsum(correct) / np.arange(1, correct.size + 1))[last_of_each]
    reaching = np.flatnonzero(accuracy >= target - 1e-12)
    chosen = int(reaching[-1]) if reaching.size else 0
    kept = last_of_each[chosen] + 1
    return float(confidence[kept - 1]), float(kept / confidence.size), float(accuracy[chosen])
