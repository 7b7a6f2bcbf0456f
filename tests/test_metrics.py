"""Every metric is cross-checked against scikit-learn on the same predictions."""

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from imgcls.metrics.classification import compute_metrics


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


@pytest.mark.parametrize("num_classes", [2, 4])
def test_kappa_pr_auc_error_rate_and_calibration_match_references(num_classes):
    logits, targets = _predictions(num_classes, seed=3)
    result = compute_metrics(logits, targets, [f"c{i}" for i in range(num_classes)], resamples=0)
    probs = logits.softmax(1).numpy()
    y, pred = targets.numpy(), probs.argmax(1)
    assert result["cohen_kappa"]["value"] == pytest.approx(skm.cohen_kappa_score(y, pred), abs=1e-5)
    assert result["error_rate"]["value"] == pytest.approx(1 - skm.accuracy_score(y, pred), abs=1e-6)
    if num_classes == 2:
        expected_ap = skm.average_precision_score(y, probs[:, 1])
    else:
        expected_ap = skm.average_precision_score(np.eye(num_classes)[y], probs, average="macro")
    assert result["pr_auc"]["value"] == pytest.approx(expected_ap, abs=1e-5)
    confidence, correct = probs.max(1), (pred == y)
    bins = np.clip(np.ceil(confidence * 15).astype(int) - 1, 0, 14)
    ece = sum(abs(correct[bins == b].mean() - confidence[bins == b].mean()) * (bins == b).mean()
              for b in range(15) if (bins == b).any())
    assert result["ece"]["value"] == pytest.approx(ece, abs=1e-5)


@pytest.mark.parametrize("positive", [0, 1])
def test_two_class_set_follows_the_positive_class(positive):
    logits, targets = _predictions(2, seed=5)
    result = compute_metrics(logits, targets, ["healthy", "tb"], positive_class=positive, resamples=0)
    probs = logits.softmax(1).numpy()
    y, pred = targets.numpy(), probs.argmax(1)
    assert result["positive_class"] == ["healthy", "tb"][positive]
    assert result["sensitivity"]["value"] == pytest.approx(skm.recall_score(y, pred, pos_label=positive), abs=1e-6)
    assert result["specificity"]["value"] == pytest.approx(skm.recall_score(y, pred, pos_label=1 - positive),
                                                           abs=1e-6)
    assert result["precision"]["value"] == pytest.approx(skm.precision_score(y, pred, pos_label=positive), abs=1e-6)
    assert result["f1"]["value"] == pytest.approx(skm.f1_score(y, pred, pos_label=positive), abs=1e-6)
    assert result["roc_auc"]["value"] == pytest.approx(skm.roc_auc_score(y == positive, probs[:, positive]), abs=1e-5)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_bootstrap_intervals_equal_a_naive_scikit_learn_bootstrap(num_classes):
    from imgcls.metrics.bootstrap import bootstrap_intervals

    logits, targets = _predictions(num_classes, n=150, seed=7)
    probs = logits.softmax(1)
    resamples, seed = 60, 11
    intervals = bootstrap_intervals(probs, targets, resamples=resamples, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randint(0, 150, (resamples, 150), generator=generator).numpy()
    y_all, p_all = targets.numpy(), probs.numpy()
    naive = {"accuracy": [], "balanced_accuracy": [], "f1_macro": [], "mcc": [], "roc_auc": []}
    for index in indices:
        y, p = y_all[index], p_all[index]
        pred = p.argmax(1)
        naive["accuracy"].append(skm.accuracy_score(y, pred))
        naive["balanced_accuracy"].append(skm.balanced_accuracy_score(y, pred))
        naive["f1_macro"].append(skm.f1_score(y, pred, average="macro", labels=np.unique(y)))
        naive["mcc"].append(skm.matthews_corrcoef(y, pred))
        naive["roc_auc"].append(skm.roc_auc_score(y, p[:, 1]) if num_classes == 2 else
                                skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
    for name, values in naive.items():
        expected = np.percentile(values, [2.5, 97.5])
        assert intervals[name] == pytest.approx(tuple(expected), abs=1e-6), name


def test_intervals_cover_the_true_value_at_the_stated_rate():
    """200 simulated studies of 200 cases: the 95% intervals must cover the truth in >= 90% of them."""
    from scipy.stats import norm

    from imgcls.metrics.bootstrap import bootstrap_intervals

    generator = torch.Generator().manual_seed(0)
    true_accuracy, true_auc = 0.8, float(norm.cdf(1 / np.sqrt(2)))
    covered = {"accuracy": 0, "roc_auc": 0}
    for study in range(200):
        labels = torch.randint(0, 2, (200,), generator=generator)
        scores = torch.randn(200, generator=generator, dtype=torch.float64) + labels  # AUC = Phi(1/sqrt 2)
        probs_auc = torch.stack([1 - torch.sigmoid(scores), torch.sigmoid(scores)], 1)
        auc_ci = bootstrap_intervals(probs_auc, labels, resamples=1000, seed=study)["roc_auc"]
        correct = torch.rand(200, generator=generator) < true_accuracy
        predicted = torch.where(correct, labels, 1 - labels)
        probs_acc = torch.nn.functional.one_hot(predicted, 2).double() * 0.9 + 0.05
        acc_ci = bootstrap_intervals(probs_acc, labels, resamples=1000, seed=study)["accuracy"]
        covered["roc_auc"] += auc_ci[0] <= true_auc <= auc_ci[1]
        covered["accuracy"] += acc_ci[0] <= true_accuracy <= acc_ci[1]
    assert covered["accuracy"] / 200 >= 0.90 and covered["roc_auc"] / 200 >= 0.90, covered


def test_metrics_json_carries_intervals():
    logits, targets = _predictions(2)
    result = compute_metrics(logits, targets, ["a", "b"])
    for name in ("accuracy", "balanced_accuracy", "f1_macro", "mcc", "roc_auc", "sensitivity", "specificity"):
        low, high = result[name]["ci95"]
        assert low <= result[name]["value"] <= high, name


def test_imbalanced_data_leads_with_balanced_accuracy_and_mean_sensitivity():
    from imgcls.metrics import imbalance_ratio, metric_order
    from imgcls.reporting.html import metric_rows

    def split(supports):
        return {"per_class": {f"c{i}": {"support": n} for i, n in enumerate(supports)},
                "accuracy": {"value": 0.9}, "balanced_accuracy": {"value": 0.6}, "recall_macro": {"value": 0.6}}

    imbalanced = {"train": split([1000, 100]), "test": split([500, 500])}
    assert imbalance_ratio(imbalanced) == 10.0
    assert [row["label"] for row in metric_rows(imbalanced, ["train", "test"])][:3] == [
        "balanced accuracy", "sensitivity / recall (macro)", "accuracy"]
    balanced = {"train": split([100, 90])}
    assert metric_order(imbalance_ratio(balanced) >= 3)[0] == "accuracy"
