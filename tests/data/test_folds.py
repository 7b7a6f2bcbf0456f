"""Cross-validation folds: stratified, near-equal, every group and every set of byte-identical files in one fold,
a validation part inside each fold's training part kept apart the same way."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from imgcls.data.folds import assign_folds, file_groups, fold_parts
from imgcls.errors import ImgclsError
from imgcls.metrics.cross_validation import fold_table, pooled_metrics


def _patients(count: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images of `count` patients with 1-8 images each, a label per patient (60 % healthy)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 9, count)
    groups = np.repeat(np.arange(count), sizes)
    labels = np.repeat((rng.random(count) < 0.4).astype(np.int64), sizes)
    return labels, groups


def test_no_patient_spans_two_folds_and_the_folds_are_stratified_and_near_equal():
    labels, groups = _patients()
    fold_of = assign_folds(labels, groups, 5, seed=1)
    assert all(len(set(fold_of[groups == group])) == 1 for group in np.unique(groups))
    sizes = np.bincount(fold_of, minlength=5)
    assert sizes.min() > 0.8 * len(labels) / 5 and sizes.max() < 1.2 * len(labels) / 5
    shares = [labels[fold_of == fold].mean() for fold in range(5)]
    assert max(shares) - min(shares) < 0.1
    for fold in range(5):
        parts = fold_parts(labels, groups, fold_of, fold, 0.2, seed=1)
        assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(len(labels)))
        assert set(groups[parts["val"]]).isdisjoint(groups[parts["train"]])
        assert set(groups[parts["test"]]).isdisjoint(groups[parts["train"]])


def test_without_groups_folds_are_plain_stratified_k_fold():
    labels = np.array([0] * 50 + [1] * 30)
    fold_of = assign_folds(labels, np.arange(80), 5, seed=0)
    assert [int((labels[fold_of == fold] == 1).sum()) for fold in range(5)] == [6] * 5


def test_byte_identical_files_share_a_group(class_folders):
    first = sorted((class_folders / "cat").iterdir())[0]
    shutil.copy(first, class_folders / "coffee" / f"copy{first.suffix}")
    paths = sorted(path for path in class_folders.rglob("*") if path.is_file())
    groups, _ = file_groups(paths, class_folders, None, 2)
    copy = paths.index(class_folders / "coffee" / f"copy{first.suffix}")
    assert groups[copy] == groups[paths.index(first)]
    assert len(np.unique(groups)) == len(paths) - 1


def test_more_folds_than_images_of_a_class_is_one_line():
    with pytest.raises(ImgclsError, match="--folds 5 needs at least 5 images of every class"):
        assign_folds(np.array([0] * 20 + [1] * 3), np.arange(23), 5, seed=0)


def test_repeats_pool_to_the_mean_with_an_interval_and_the_fold_table_has_mean_and_sd():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (300,), generator=generator)
    repeats = [(torch.randn(300, 2, generator=generator) + torch.nn.functional.one_hot(labels) * 1.5).softmax(1)
               for _ in range(2)]
    pooled = pooled_metrics(repeats, labels, ["a", "b"], resamples=200)
    each = [float((probs.argmax(1) == labels).float().mean()) for probs in repeats]
    assert pooled["accuracy"]["value"] == pytest.approx(sum(each) / 2) and pooled["repeats"] == 2
    low, high = pooled["accuracy"]["ci95"]
    assert low < pooled["accuracy"]["value"] < high
    table = fold_table([("fold-1", {"num_samples": 10, "accuracy": {"value": 0.8}}),
                        ("fold-2", {"num_samples": 10, "accuracy": {"value": 0.6}})], 2, 1)
    assert table["mean"]["accuracy"] == pytest.approx(0.7) and table["sd"]["accuracy"] == pytest.approx(0.1414, 1e-3)
