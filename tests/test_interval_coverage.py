"""Nominal 95 % intervals hold: many datasets are drawn from a known distribution, and the share of draws whose
interval covers the true value must be at least 90 %. The true values are exact normal probabilities, so the only
randomness is in the draws (seeded); `pytest -s` prints each share. Controls at a nominal 50 % show the check can
fail."""

import math
from typing import NamedTuple

import numpy as np
import pytest
import torch
from scipy import optimize, stats
from sklearn import metrics as skm

from imgcls.metrics.bootstrap import bootstrap_intervals, pooled_intervals
from imgcls.metrics.operating_point import wilson_interval
from imgcls.metrics.selective import selective_accuracy

DRAWS = 300  # simulated test sets per one-split check: a true coverage of 0.95 is measured as 0.95 ± 0.013
# Cross-validated intervals cover about 0.93 (2,000 draws: the learner's own variance is not in them), so they
# need more draws for a 0.90 bar to tell: 600 measure 0.93 ± 0.010.
CV_DRAWS = 600
CONTROL_DRAWS = 100
RESAMPLES = 400
REQUIRED_COVERAGE = 0.90

pytestmark = pytest.mark.slow  # a simulation of many datasets: part of the full suite, not the quick subset

# One split: a fixed model on a known population. Class 1 (the positive, 40 %) has x ~ N(1.5, 1), class 0
# x ~ N(0, 1); the model says p(positive) = sigmoid(2 (x - 0.6)), so it calls x > 0.6 positive.
POSITIVE_SHARE, SHIFT, CUT, SLOPE = 0.4, 1.5, 0.6, 2.0
TEST_SIZE = 300
SELECTIVE_COVERAGE = 0.90

# Cross-validation: linear discriminant analysis on two 2-D Gaussians with a shared covariance, classes equally
# likely, K-fold out-of-fold predictions on a dataset of TRAIN_SIZE.
CLASS_MEANS = np.array([[0.0, 0.0], [1.0, 0.6]])
SHARED_COVARIANCE = np.array([[1.0, 0.5], [0.5, 1.5]])
TRAIN_SIZE, FOLDS = 200, 5


class OneSplitDraws(NamedTuple):
    probs: np.ndarray  # (draws, n, 2)
    targets: np.ndarray  # (draws, n)


class CrossValidatedDraws(NamedTuple):
    repeats: list[np.ndarray]  # one (draws, n) out-of-fold p(positive) per repeat, each with its own folds
    targets: np.ndarray  # (draws, n)
    true_accuracy: np.ndarray  # (draws,) of the model fit on the whole dataset, on the population
    true_auc: np.ndarray  # (draws,)


def _one_split_sample(rng: np.random.Generator, draws: int, size: int) -> OneSplitDraws:
    targets = (rng.random((draws, size)) < POSITIVE_SHARE).astype(np.int64)
    scores = rng.standard_normal((draws, size)) + SHIFT * targets
    positive = 1.0 / (1.0 + np.exp(-SLOPE * (scores - CUT)))
    return OneSplitDraws(np.stack([1.0 - positive, positive], -1), targets)


def _true_one_split_values() -> dict[str, float]:
    """The model's accuracy, ROC-AUC, sensitivity and accuracy on its most confident 90 % in the population."""
    normal = stats.norm.cdf
    # confidence grows with |x - CUT|: the most confident 90 % are those with |x - CUT| > margin
    def kept_share(margin: float) -> float:
        outside = [normal(CUT - margin - mean) + 1.0 - normal(CUT + margin - mean) for mean in (0.0, SHIFT)]
        return (1 - POSITIVE_SHARE) * outside[0] + POSITIVE_SHARE * outside[1]

    margin = optimize.brentq(lambda m: kept_share(m) - SELECTIVE_COVERAGE, 0.0, 10.0)
    kept_correct = (1 - POSITIVE_SHARE) * normal(CUT - margin) + POSITIVE_SHARE * (1 - normal(CUT + margin - SHIFT))
    return {
        "accuracy": (1 - POSITIVE_SHARE) * normal(CUT) + POSITIVE_SHARE * normal(SHIFT - CUT),
        "roc_auc": normal(SHIFT / math.sqrt(2)),
        "sensitivity": normal(SHIFT - CUT),
        "selective_accuracy": kept_correct / SELECTIVE_COVERAGE,
    }


TRUE_ONE_SPLIT = _true_one_split_values()


def _fit_discriminant(features: np.ndarray, targets: np.ndarray, training: np.ndarray):
    """LDA fit on the `training` rows of each dataset at once: (weights (draws, 2), bias (draws,))."""
    is_positive = targets.astype(bool)
    in_class = [training & ~is_positive, training & is_positive]
    counts = [mask.sum(1) for mask in in_class]
    means = [(features * mask[..., None]).sum(1) / count[:, None] for mask, count in zip(in_class, counts)]
    centred = features - np.where(is_positive[..., None], means[1][:, None], means[0][:, None])
    covariance = np.einsum("dni,dnj->dij", centred * training[..., None], centred)
    covariance /= (counts[0] + counts[1] - 2)[:, None, None]
    weights = np.linalg.solve(covariance, (means[1] - means[0])[..., None])[..., 0]
    bias = -0.5 * ((means[1] + means[0]) * weights).sum(1) + np.log(counts[1] / counts[0])
    return weights, bias


def _gaussian_features(rng: np.random.Generator, targets: np.ndarray) -> np.ndarray:
    noise = rng.standard_normal((*targets.shape, 2)) @ np.linalg.cholesky(SHARED_COVARIANCE).T
    return noise + CLASS_MEANS[targets]


def _positive_probability(features: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(np.einsum("dni,di->dn", features, weights) + bias[:, None])))


def _population_accuracy_and_auc(weights: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact accuracy and ROC-AUC of each linear rule on the Gaussian population (equal class shares)."""
    spread = np.sqrt(np.einsum("di,ij,dj->d", weights, SHARED_COVARIANCE, weights))
    margins = [(weights @ mean + bias) / spread for mean in CLASS_MEANS]
    accuracy = 0.5 * stats.norm.cdf(-margins[0]) + 0.5 * stats.norm.cdf(margins[1])
    auc = stats.norm.cdf((weights @ (CLASS_MEANS[1] - CLASS_MEANS[0])) / (math.sqrt(2) * spread))
    return accuracy, auc


def _out_of_fold(features: np.ndarray, targets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    folds = np.argsort(rng.random(targets.shape), 1) % FOLDS  # a random permutation cut into equal folds
    probability = np.empty(targets.shape)
    for fold in range(FOLDS):
        held_out = folds == fold
        weights, bias = _fit_discriminant(features, targets, ~held_out)
        probability[held_out] = _positive_probability(features, weights, bias)[held_out]
    return probability


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Thousands of bootstraps of a few hundred rows: a second intra-op thread gains nothing on tensors this
    small, and on a busy machine its spin-waits made these checks 8 times slower (114 s against 14.5 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_split() -> OneSplitDraws:
    return _one_split_sample(np.random.default_rng(0), DRAWS, TEST_SIZE)


@pytest.fixture(scope="module")
def cross_validated() -> CrossValidatedDraws:
    rng = np.random.default_rng(1)
    targets = (rng.random((CV_DRAWS, TRAIN_SIZE)) < 0.5).astype(np.int64)
    features = _gaussian_features(rng, targets)
    weights, bias = _fit_discriminant(features, targets, np.ones(targets.shape, dtype=bool))
    true_accuracy, true_auc = _population_accuracy_and_auc(weights, bias)
    repeats = [_out_of_fold(features, targets, rng) for _ in range(2)]
    return CrossValidatedDraws(repeats, targets, true_accuracy, true_auc)


def _torch_pair(probs: np.ndarray, targets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(probs).float(), torch.from_numpy(targets)


def _two_columns(positive: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack([1.0 - positive, positive], -1)).float()


def _coverage(label: str, intervals: list, truths: float | np.ndarray) -> float:
    """The share of intervals (low, high) that hold their truth; printed so `pytest -s` shows it."""
    truths = np.broadcast_to(np.asarray(truths, dtype=np.float64), (len(intervals),))
    share = float(np.mean([low <= truth <= high for (low, high), truth in zip(intervals, truths)]))
    print(f"\n{label}: {share:.3f} of {len(intervals)} draws cover the true value")
    return share


def test_exact_true_values_match_a_large_sample():
    probs, targets = _one_split_sample(np.random.default_rng(2), 1, 500_000)
    probs, targets = probs[0], targets[0]
    predicted = probs.argmax(1)
    confidence_order = np.argsort(-probs.max(1), kind="stable")[: round(SELECTIVE_COVERAGE * targets.size)]
    assert (predicted == targets).mean() == pytest.approx(TRUE_ONE_SPLIT["accuracy"], abs=3e-3)
    assert skm.roc_auc_score(targets, probs[:, 1]) == pytest.approx(TRUE_ONE_SPLIT["roc_auc"], abs=3e-3)
    assert predicted[targets == 1].mean() == pytest.approx(TRUE_ONE_SPLIT["sensitivity"], abs=3e-3)
    assert (predicted == targets)[confidence_order].mean() == pytest.approx(TRUE_ONE_SPLIT["selective_accuracy"],
                                                                           abs=3e-3)

    rng = np.random.default_rng(3)
    rule = (np.array([[1.2, 0.3]]), np.array([-0.5]))
    accuracy, auc = _population_accuracy_and_auc(*rule)
    targets = (rng.random((1, 500_000)) < 0.5).astype(np.int64)
    features = _gaussian_features(rng, targets)
    positive = _positive_probability(features, *rule)[0]
    assert ((positive > 0.5) == targets[0]).mean() == pytest.approx(accuracy[0], abs=3e-3)
    assert skm.roc_auc_score(targets[0], positive) == pytest.approx(auc[0], abs=3e-3)


def test_bootstrap_intervals_on_one_split_cover_true_accuracy_and_auc(one_split):
    intervals = [bootstrap_intervals(*_torch_pair(probs, targets), resamples=RESAMPLES, seed=draw)
                 for draw, (probs, targets) in enumerate(zip(one_split.probs, one_split.targets))]
    for metric in ("accuracy", "roc_auc"):
        share = _coverage(f"one split, bootstrap 95% interval of {metric}",
                          [interval[metric] for interval in intervals], TRUE_ONE_SPLIT[metric])
        assert share >= REQUIRED_COVERAGE, f"{metric}: {share:.3f} of {DRAWS} intervals cover the true value"


def test_wilson_interval_covers_true_sensitivity(one_split):
    predicted = one_split.probs.argmax(-1)
    is_positive = one_split.targets == 1
    hits, trials = ((predicted == 1) & is_positive).sum(1), is_positive.sum(1)
    intervals = [wilson_interval(int(hit), int(trial)) for hit, trial in zip(hits, trials)]
    share = _coverage("one split, Wilson 95% interval of sensitivity", intervals, TRUE_ONE_SPLIT["sensitivity"])
    assert share >= REQUIRED_COVERAGE, f"sensitivity: {share:.3f} of {DRAWS} intervals cover the true value"


def test_selective_accuracy_interval_covers_population_value(one_split):
    key = f"selective_accuracy_{round(SELECTIVE_COVERAGE * 100)}"
    intervals = [selective_accuracy(probs, targets, coverages=(SELECTIVE_COVERAGE,), resamples=RESAMPLES,
                                    seed=draw)[key]["ci95"]
                 for draw, (probs, targets) in enumerate(zip(one_split.probs, one_split.targets))]
    share = _coverage("one split, bootstrap 95% interval of accuracy at 90% coverage", intervals,
                      TRUE_ONE_SPLIT["selective_accuracy"])
    assert share >= REQUIRED_COVERAGE, f"selective accuracy: {share:.3f} of {DRAWS} intervals cover the true value"


@pytest.mark.parametrize("repeats", [1, 2])
def test_pooled_out_of_fold_intervals_cover_the_model_fit_on_all_data(cross_validated, repeats):
    targets = torch.from_numpy(cross_validated.targets)
    intervals = [pooled_intervals([_two_columns(repeat[draw]) for repeat in cross_validated.repeats[:repeats]],
                                  targets[draw], resamples=RESAMPLES, seed=draw)
                 for draw in range(CV_DRAWS)]
    truths = {"accuracy": cross_validated.true_accuracy, "roc_auc": cross_validated.true_auc}
    for metric, truth in truths.items():
        share = _coverage(f"{FOLDS}-fold out-of-fold pooled over {repeats} repeat(s), 95% interval of {metric}",
                          [interval[metric] for interval in intervals], truth)
        assert share >= REQUIRED_COVERAGE, f"{metric}, {repeats} repeat(s): {share:.3f} of {CV_DRAWS} cover"


def test_half_level_intervals_cover_far_less_often(one_split, cross_validated):
    """The control: intervals at a nominal 50 % must fail the 90 % bar, or the checks above prove nothing."""
    one_split_intervals = [
        bootstrap_intervals(*_torch_pair(one_split.probs[draw], one_split.targets[draw]), resamples=RESAMPLES,
                            seed=draw, level=0.5)["accuracy"]
        for draw in range(CONTROL_DRAWS)]
    pooled = [pooled_intervals([_two_columns(cross_validated.repeats[0][draw])],
                               torch.from_numpy(cross_validated.targets[draw]), resamples=RESAMPLES, seed=draw,
                               level=0.5)["accuracy"]
              for draw in range(CONTROL_DRAWS)]
    one_split_share = _coverage("control: one split, 50% interval of accuracy", one_split_intervals,
                                TRUE_ONE_SPLIT["accuracy"])
    pooled_share = _coverage("control: out-of-fold pooled, 50% interval of accuracy", pooled,
                             cross_validated.true_accuracy[:CONTROL_DRAWS])
    assert one_split_share < 0.75, f"one split at 50%: {one_split_share:.3f} cover"
    assert pooled_share < 0.75, f"pooled at 50%: {pooled_share:.3f} cover"
