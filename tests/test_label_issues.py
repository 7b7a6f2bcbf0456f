"""Confident learning in imgcls flags the same images, in the same order, as cleanlab (AGPL: a test-only
cross-check, never a dependency)."""

from __future__ import annotations

import numpy as np
import pytest

from imgcls.metrics.label_issues import confident_joint, label_issues, suggested_labels


def _noisy_probabilities(seed: int, count: int = 3000, classes: int = 5, flipped: float = 0.08):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, count)
    logits = rng.normal(0, 1.0, (count, classes))
    logits[np.arange(count), truth] += rng.uniform(0.5, 4.0, count)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = truth.copy()
    flip = rng.random(count) < flipped
    labels[flip] = (truth[flip] + rng.integers(1, classes, flip.sum())) % classes
    return labels, probs, flip


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_same_issues_in_the_same_order_as_cleanlab(seed):
    cleanlab_filter = pytest.importorskip("cleanlab.filter")
    cleanlab_count = pytest.importorskip("cleanlab.count")
    labels, probs, flip = _noisy_probabilities(seed)
    theirs = cleanlab_filter.find_label_issues(labels, probs, filter_by="confident_learning",
                                               return_indices_ranked_by="self_confidence")
    ours = label_issues(labels, probs)
    assert ours.tolist() == list(theirs)
    joint, _ = confident_joint(labels, probs)
    assert (joint == cleanlab_count.compute_confident_joint(labels, probs, calibrate=False)).all()
    assert flip[ours[:100]].mean() > 0.8  # and it finds the flipped labels


def test_a_class_nobody_is_labelled_with_and_the_suggested_labels():
    labels = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.1, 0.85, 0.05],
                      [0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.05, 0.9, 0.05]])
    issues = label_issues(labels, probs)
    assert issues.tolist() == [2]
    assert suggested_labels(labels, probs, issues).tolist() == [1]
