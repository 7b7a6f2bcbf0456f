"""Decisions on a model's output: temperature scaling, operating points with Wilson intervals, selective prediction
and the rule predict and serve answer with; cross-checked against scikit-learn and SciPy where they have the same
numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import binomtest
from sklearn.metrics import roc_curve

from imgcls.engine.decisions import Decisions, apply_decisions, calibrated, fit_decisions
from imgcls.engine.ranking import UNCERTAIN, DecisionRule
from imgcls.errors import ImgclsError
from imgcls.metrics.calibration import fit_temperature, log_probabilities
from imgcls.metrics.operating_point import (
    at_threshold,
    choose_threshold,
    parse_threshold,
    roc_points,
    threshold_table,
    wilson_interval,
)
from imgcls.metrics.selective import confidence_for_accuracy, parse_abstain, risk_coverage, selective_accuracy
from imgcls.workflows.calibrate import moved_threshold


def _scores(size: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    positive = rng.random(size) < 0.4
    return np.clip(rng.normal(0.35 + 0.3 * positive, 0.2), 0, 1).round(3), positive  # rounded: ties


def test_roc_points_are_scikit_learns_roc_curve():
    scores, positive = _scores()
    thresholds, sensitivity, specificity = roc_points(scores, positive)
    fpr, tpr, expected = roc_curve(positive, scores, drop_intermediate=False)
    assert np.allclose(thresholds, expected[1:]) and np.allclose(sensitivity, tpr[1:])
    assert np.allclose(specificity, 1 - fpr[1:])


@pytest.mark.parametrize("rule, check", [
    ("sensitivity=0.95", lambda point, higher: point["sensitivity"]["value"] >= 0.95 > higher["sensitivity"]["value"]),
    ("specificity=0.9", lambda point, higher: point["specificity"]["value"] >= 0.9),
])
def test_a_rule_reaches_its_target_at_the_highest_such_threshold(rule, check):
    scores, positive = _scores()
    threshold = choose_threshold(scores, positive, parse_threshold(rule))
    point = at_threshold(scores, positive, threshold)
    higher = at_threshold(scores, positive, np.nextafter(threshold, 2))  # the next threshold up misses it
    assert check(point, higher)
    fpr, tpr, thresholds = roc_curve(positive, scores, drop_intermediate=False)
    at = int(np.flatnonzero(thresholds == threshold)[0])  # our figures are scikit-learn's at that threshold
    assert point["sensitivity"]["value"] == pytest.approx(tpr[at])
    assert point["specificity"]["value"] == pytest.approx(1 - fpr[at])


def test_youden_maximises_sensitivity_plus_specificity():
    scores, positive = _scores(seed=3)
    chosen = at_threshold(scores, positive, choose_threshold(scores, positive, parse_threshold("auto")))
    best = max(at_threshold(scores, positive, t)["sensitivity"]["value"] + at_threshold(scores, positive, t)
               ["specificity"]["value"] for t in np.unique(scores))
    assert chosen["sensitivity"]["value"] + chosen["specificity"]["value"] == pytest.approx(best)


@pytest.mark.parametrize("hits, trials", [(95, 100), (0, 20), (20, 20), (3, 7), (512, 1000)])
def test_wilson_intervals_are_scipys(hits, trials):
    expected = binomtest(hits, trials).proportion_ci(method="wilson")
    assert wilson_interval(hits, trials) == pytest.approx([expected.low, expected.high], abs=1e-9)


def test_the_threshold_table_marks_the_chosen_threshold_and_its_counts_add_up():
    scores, positive = _scores()
    rows = threshold_table(scores, positive, 0.4321)
    assert [row["threshold"] for row in rows if row["chosen"]] == [0.4321]
    point = at_threshold(scores, positive, 0.4321)
    assert sum(point["counts"].values()) == len(scores)
    row = next(row for row in rows if row["threshold"] == 0.5)
    assert row["sensitivity"] == at_threshold(scores, positive, 0.5)["sensitivity"]["value"]


@pytest.mark.parametrize("text", ["sensitivity=1.5", "recall=0.9", "high", "-0.2"])
def test_a_threshold_rule_that_is_not_understood_is_one_line(text):
    with pytest.raises(ImgclsError, match="--threshold .* is not understood"):
        parse_threshold(text)


def test_temperature_scaling_recovers_a_known_temperature_and_changes_no_prediction():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(20_000, 5, generator=generator) * 3
    labels = torch.multinomial((logits / 2.5).softmax(1), 1, generator=generator).squeeze(1)  # true T = 2.5
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(2.5, rel=0.05)
    assert F.cross_entropy(logits / temperature, labels) < F.cross_entropy(logits, labels)
    assert torch.equal(calibrated(logits.softmax(1), temperature).argmax(1), logits.argmax(1))
    # from probabilities alone (what a finished run keeps): the same temperature
    assert fit_temperature(log_probabilities(logits.softmax(1)), labels) == pytest.approx(temperature, rel=1e-4)


def test_too_few_validation_images_leave_the_temperature_at_one_with_a_warning(capsys):
    probs = torch.tensor([[0.9, 0.1]] * 40)
    decisions = fit_decisions({"val": (probs, torch.zeros(40, dtype=torch.long))}, True, None, 1)
    assert decisions.temperature == 1.0 and "calibration" not in decisions.record
    assert "no calibration: the val split has 40 images" in capsys.readouterr().err.replace("\n", " ")


def test_applied_decisions_report_ece_and_loss_before_and_the_operating_point():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2_000, 2, generator=generator) * 4
    labels = torch.multinomial((logits / 3).softmax(1), 1, generator=generator).squeeze(1)
    predictions = {"val": (logits[:1000].softmax(1), labels[:1000]), "test": (logits[1000:].softmax(1), labels[1000:])}
    decisions = fit_decisions(predictions, True, parse_threshold("sensitivity=0.9"), 1)
    kept, metrics = apply_decisions(predictions, decisions, ["a", "b"])
    test = metrics["test"]
    assert test["ece"]["value"] < test["ece_uncalibrated"]["value"]
    assert test["loss"]["value"] < test["loss_uncalibrated"]["value"]
    assert metrics["val"]["operating_point"]["sensitivity"]["value"] >= 0.9
    assert test["operating_point"]["threshold"] == decisions.threshold
    assert torch.equal(kept["test"][0].argmax(1), predictions["test"][0].argmax(1))


def test_a_recalibrated_threshold_keeps_every_two_class_decision():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(500, 2, generator=generator) * 3
    old, new, threshold = 1.3, 0.8, 0.2
    before = (logits / old).softmax(1)[:, 1] >= threshold
    after = (logits / new).softmax(1)[:, 1] >= moved_threshold(threshold, old, new)
    assert torch.equal(before, after)


def test_selective_accuracy_is_the_accuracy_of_the_most_confident_share():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=1000)
    labels = np.where(rng.random(1000) < probs.max(1), probs.argmax(1), (probs.argmax(1) + 1) % 4)
    result = selective_accuracy(probs, labels, resamples=300, seed=0)
    order = np.argsort(-probs.max(1), kind="stable")
    correct = probs.argmax(1) == labels
    assert result["selective_accuracy_90"]["value"] == pytest.approx(correct[order[:900]].mean())
    low, high = result["selective_accuracy_95"]["ci95"]
    assert low <= result["selective_accuracy_95"]["value"] <= high
    coverage, risk = risk_coverage(probs, labels)
    assert coverage[-1] == 1.0 and risk[-1] == pytest.approx(1 - correct.mean())
    confidence, kept, accuracy = confidence_for_accuracy(probs, labels, 0.9)
    assert accuracy >= 0.9 and correct[probs.max(1) >= confidence].mean() == pytest.approx(accuracy)
    assert kept == pytest.approx((probs.max(1) >= confidence).mean())


def test_the_decision_rule_applies_the_threshold_then_abstains():
    rule = DecisionRule(("healthy", "tb"), threshold=0.2, positive_class=1, threshold_rule="sensitivity=0.95",
                        abstain_below=0.7)
    probs = np.array([[0.75, 0.25], [0.9, 0.1], [0.6, 0.4], [0.1, 0.9]])
    assert rule.decide(probs) == ["tb", "healthy", UNCERTAIN, "tb"]
    assert "tb when its probability >= 0.2000 (sensitivity=0.95)" in rule.describe()["decision"]
    assert DecisionRule(("a", "b", "c")).decide(np.eye(3)) == ["a", "b", "c"]


@pytest.mark.parametrize("text", ["sometimes", "accuracy=2", "0"])
def test_an_abstention_that_is_not_understood_is_one_line(text):
    with pytest.raises(ImgclsError, match="--abstain-below .* is not understood"):
        parse_abstain(text)


def test_decisions_without_a_threshold_carry_none_into_the_weights():
    assert Decisions(1.5).weights_metadata(["a", "b"]) == {"temperature": 1.5, "threshold": None,
                                                           "threshold_rule": "", "positive_class": "b"}


@pytest.mark.parametrize("text", ["auto", "youden", "0.3", "sensitivity=0.95", "specificity=0.9"])
def test_a_threshold_rule_reads_back_from_its_own_text(text):
    rule = parse_threshold(text)
    assert parse_threshold(str(rule)) == rule
