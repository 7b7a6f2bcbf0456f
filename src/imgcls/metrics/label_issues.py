"""Likely label errors from out-of-sample class probabilities: confident learning (Northcutt, Jiang & Chuang,
JAIR 2021), the rule cleanlab implements as filter_by="confident_learning". cleanlab is AGPL-3.0, imgcls is
Apache-2.0, so the rule is written here (numpy only) and tests/test_label_issues.py checks it flags the same
images, in the same order, as cleanlab on the same probabilities.

1. Per-class thresholds: t_k is the mean probability of class k over the images labelled k.
2. Confident joint: an image labelled i counts in cell (i, j) when its probability of j reaches t_j (the
   most probable such class when several do). Images in off-diagonal cells are the label issues.
3. Ranking: by self-confidence (the probability of the given label), lowest first.
"""

from __future__ import annotations

import numpy as np

_MISSING_CLASS = 2.0  # threshold of a class no image is labelled with: no probability reaches it
_TOLERANCE = 1e-6  # cleanlab's: a probability equal to the threshold counts


def confident_thresholds(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(K,) mean probability of class k among the images labelled k."""
    return np.asarray([probs[labels == k, k].mean() if np.any(labels == k) else _MISSING_CLASS
                       for k in range(probs.shape[1])])


def confident_joint(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, K) counts of images by given label (rows) and confidently guessed true label (columns), and the
    indices of the images in off-diagonal cells."""
    confident = probs >= confident_thresholds(labels, probs) - _TOLERANCE
    counted = confident.any(axis=1)
    guess = np.where(confident.sum(axis=1) > 1, probs.argmax(axis=1), confident.argmax(axis=1))
    joint = np.zeros((probs.shape[1], probs.shape[1]), dtype=np.int64)
    np.add.at(joint, (labels[counted], guess[counted]), 1)
    np.fill_diagonal(joint, joint.diagonal().clip(min=1))
    return joint, np.flatnonzero(counted & (guess != labels))


def label_issues(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Indices of the likely mislabelled images, the least confident in its given label first."""
    labels = np.asarray(labels, dtype=np.int64)
    _, issues = confident_joint(labels, probs)
    self_confidence = probs[issues, labels[issues]]
    return issues[np.argsort(self_confidence, kind="stable")]


def suggested_labels(labels: np.ndarray, probs: np.ndarray, issues: np.ndarray) -> np.ndarray:
    """The confidently guessed label of each flagged image (its most probable class above its threshold)."""
    confident = probs[issues] >= confident_thresholds(labels, probs) - _TOLERANCE
    return np.where(confident.sum(axis=1) > 1, probs[issues].argmax(axis=1), confident.argmax(axis=1))
