"""ROC / PR / reliability figures: the numbers they draw agree with scikit-learn and torchmetrics."""

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from imgcls.metrics.classification import compute_metrics
from imgcls.reporting.plots import one_vs_rest_curves, reliability_bins, write_metric_plots
from imgcls.run_files import RunFolder, SplitPredictions, load_split_predictions, save_split_predictions


def _predictions(num_classes: int, size: int = 600, seed: int = 0) -> SplitPredictions:
    """Informative but imperfect scores: the true class gets a boost, so every curve is non-trivial."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size)
    logits = rng.normal(size=(size, num_classes))
    logits[np.arange(size), labels] += 1.5
    probs = torch.from_numpy(logits).float().softmax(1).numpy()
    return SplitPredictions(probs, labels, [f"img_{i}.png" for i in range(size)])


@pytest.mark.parametrize("num_classes", [2, 5])
def test_curve_areas_and_points_match_scikit_learn(num_classes):
    predictions = _predictions(num_classes)
    names = [f"c{i}" for i in range(num_classes)]
    metrics = compute_metrics(torch.log(torch.from_numpy(predictions.probs)), torch.from_numpy(predictions.labels),
                              names, resamples=0)
    roc = one_vs_rest_curves(predictions, names, metrics, "roc")
    pr = one_vs_rest_curves(predictions, names, metrics, "pr")
    classes = [1] if num_classes == 2 else range(num_classes)
    assert [name for name, *_ in roc] == [names[i] for i in classes]
    grid = np.linspace(0, 1, 101)
    for (_, fpr, tpr, auc), (_, _, _, ap), index in zip(roc, pr, classes):
        target = predictions.labels == index
        assert auc == pytest.approx(roc_auc_score(target, predictions.probs[:, index]), abs=1e-6)
        assert ap == pytest.approx(average_precision_score(target, predictions.probs[:, index]), abs=1e-6)
        sk_fpr, sk_tpr, _ = roc_curve(target, predictions.probs[:, index], drop_intermediate=False)
        np.testing.assert_allclose(np.interp(grid, fpr, tpr), np.interp(grid, sk_fpr, sk_tpr), atol=1e-6)
    if num_classes > 2:  # the legend's macro value is metrics.json's: the mean of the per-class AUCs
        assert np.mean([auc for *_, auc in roc]) == pytest.approx(metrics["roc_auc"]["value"], abs=1e-6)


def test_reliability_bins_reproduce_the_expected_calibration_error():
    predictions = _predictions(4, size=2000, seed=3)
    counts, accuracy, confidence = reliability_bins(predictions, bins=15)
    ece_from_bins = float(np.sum(counts / counts.sum() * np.abs(accuracy - confidence)))
    metrics = compute_metrics(torch.log(torch.from_numpy(predictions.probs)), torch.from_numpy(predictions.labels),
                              ["a", "b", "c", "d"], resamples=0)
    assert ece_from_bins == pytest.approx(metrics["ece"]["value"], abs=1e-5)
    top = predictions.probs.max(1)  # a plain numpy ECE as a third opinion
    manual = sum(abs((predictions.predicted == predictions.labels)[m].mean() - top[m].mean()) * m.mean()
                 for low in np.linspace(0, 1, 16)[:-1] if (m := (top >= low) & (top < low + 1 / 15)).any())
    assert ece_from_bins == pytest.approx(manual, abs=1e-6)


@pytest.mark.parametrize("num_classes", [2, 12])
def test_metric_plots_are_written_for_every_split(tmp_path, num_classes):
    names = [f"class {i}" for i in range(num_classes)]
    predictions = {"val": _predictions(num_classes, seed=1), "test": _predictions(num_classes, seed=2)}
    metrics = {split: compute_metrics(torch.log(torch.from_numpy(p.probs)), torch.from_numpy(p.labels), names,
                                      resamples=0) for split, p in predictions.items()}
    written = write_metric_plots(RunFolder(tmp_path), metrics, names, predictions)
    expected = {f"{kind}_{split}.png" for kind in ("confusion", "roc", "pr", "reliability") for split in metrics}
    assert expected <= {path.name for path in written}
    for path in written:
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 300 and image.info.get("Software") == "imgcls"


def test_predictions_round_trip_and_mistakes_are_most_confident_first(tmp_path):
    import csv

    predictions = _predictions(3, size=300)
    folder = RunFolder(tmp_path)
    save_split_predictions(folder, "val", predictions, ["a", "b", "c"])
    loaded = load_split_predictions(folder)["val"]
    np.testing.assert_array_equal(loaded.probs, predictions.probs)
    np.testing.assert_array_equal(loaded.labels, predictions.labels)
    assert loaded.paths == predictions.paths
    rows = list(csv.DictReader(folder.mistakes_file("val").open()))
    assert len(rows) == int((predictions.predicted != predictions.labels).sum())
    confidences = [float(row["probability"]) for row in rows]
    assert confidences == sorted(confidences, reverse=True)
    assert all(row["true_class"] != row["predicted_class"] for row in rows)
    assert rows[0]["path"] == predictions.paths[int(rows[0]["index"])]
