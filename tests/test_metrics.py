"""Every metric is cross-checked against scikit-learn on the same predictions."""

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from imgcls.metrics import compute_metrics


def _predictions(num_classes: int, n: int = 400, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, num_classes, (n,), generator=generator)
    logits = torch.randn(n, num_classes, generator=generator) * 1.5
    logits[torch.arange(n), targets] += 1.2  # informative but imperfect
    return logits, targets


@pytest.mark.parametrize("num_classes", [2, 3, 10])
def test_metrics_match_scikit_learn(num_classes):
    logits, targets = _predictions(num_classes)
    names = [f"c{i}" for i in range(num_classes)]
    result = compute_metrics(logits, targets, names)
    probs = logits.softmax(1).numpy()
    y, pred = targets.numpy(), probs.argmax(1)
    labels = list(range(num_classes))

    assert result["accuracy"]["value"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-6)
    assert result["balanced_accuracy"]["value"] == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-6)
    assert result["loss"]["value"] == pytest.approx(skm.log_loss(y, probs, labels=labels), abs=1e-5)
    assert result["mcc"]["value"] == pytest.approx(skm.matthews_corrcoef(y, pred), abs=1e-5)
    for average in ("macro", "weighted"):
        assert result[f"precision_{average}"]["value"] == pytest.approx(
            skm.precision_score(y, pred, average=average, zero_division=0), abs=1e-6)
        assert result[f"recall_{average}"]["value"] == pytest.approx(
            skm.recall_score(y, pred, average=average), abs=1e-6)
        assert result[f"f1_{average}"]["value"] == pytest.approx(skm.f1_score(y, pred, average=average), abs=1e-6)

    matrix = skm.confusion_matrix(y, pred, labels=labels)
    assert result["confusion_matrix"] == matrix.tolist()
    true_neg = matrix.sum() - matrix.sum(0) - matrix.sum(1) + np.diag(matrix)
    specificity = true_neg / (true_neg + matrix.sum(0) - np.diag(matrix))
    support = matrix.sum(1)
    assert result["specificity_macro"]["value"] == pytest.approx(specificity.mean(), abs=1e-6)
    assert result["specificity_weighted"]["value"] == pytest.approx((specificity * support).sum() / support.sum(),
                                                                     abs=1e-6)
    precision, recall, f1, sk_support = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    for i, name in enumerate(names):
        stats = result["per_class"][name]
        assert stats["precision"] == pytest.approx(precision[i], abs=1e-6)
        assert stats["recall"] == pytest.approx(recall[i], abs=1e-6)
        assert stats["f1"] == pytest.approx(f1[i], abs=1e-6)
        assert stats["specificity"] == pytest.approx(specificity[i], abs=1e-6)
        assert stats["support"] == sk_support[i]

    if num_classes == 2:
        expected_auc = skm.roc_auc_score(y, probs[:, 1])
    else:
        expected_auc = skm.roc_auc_score(y, probs, multi_class="ovr", average="macro")
    assert result["roc_auc"]["value"] == pytest.approx(expected_auc, abs=1e-5)
    if num_classes >= 5:
        assert result["top5_accuracy"]["value"] == pytest.approx(
            skm.top_k_accuracy_score(y, probs, k=5, labels=labels), abs=1e-6)
    else:
        assert "top5_accuracy" not in result


def test_roc_auc_ignores_classes_absent_from_targets():
    logits, targets = _predictions(4)
    keep = targets != 3
    logits, targets = logits[keep], targets[keep]
    result = compute_metrics(logits, targets, ["a", "b", "c", "d"])
    probs = logits.softmax(1).numpy()
    y = targets.numpy()
    expected = np.mean([skm.roc_auc_score(y == k, probs[:, k]) for k in range(3)])
    assert result["roc_auc"]["value"] == pytest.approx(expected, abs=1e-5)


def test_undefined_metrics_are_null_not_nan():
    logits = torch.tensor([[2.0, 0.0], [1.0, 0.0]])
    targets = torch.tensor([0, 0])
    result = compute_metrics(logits, targets, ["a", "b"])
    assert result["roc_auc"]["value"] is None
    assert not any(isinstance(v.get("value"), float) and math.isnan(v["value"])
                   for v in result.values() if isinstance(v, dict) and "value" in v)
