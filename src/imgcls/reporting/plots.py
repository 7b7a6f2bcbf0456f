"""Figures of a run as PNG files (matplotlib, Agg): training curves, confusion matrices, ROC and
precision-recall curves, reliability diagrams. Everything here is drawn from files a run keeps (its history,
metrics and predictions), so `imgcls report` can draw them again."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator
from torchmetrics.functional import classification as tmc

from imgcls.atomic import write_atomic
from imgcls.metrics import positive_index
from imgcls.metrics.selective import COVERAGES, coverage_key, risk_coverage
from imgcls.reporting import catalog
from imgcls.run_files import RunFolder, SplitPredictions, load_split_predictions


def _pyplot():
    matplotlib.use("Agg")

    return plt


PNG_SOFTWARE = "imgcls"  # written into every PNG we make, so a later run may replace its own files only


def _save(figure, path: Path) -> None:
    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight",
                                                  metadata={"Software": PNG_SOFTWARE}))
    _pyplot().close(figure)


def plot_curves(rows: list[dict], folder: RunFolder) -> list[Path]:
    """Loss and accuracy per epoch, train vs val, from the run's history rows."""
    plt = _pyplot()
    epochs = [int(row["epoch"]) for row in rows]
    written = []
    for metric, label in (("loss", "loss"), ("accuracy", "accuracy")):
        figure, axes = plt.subplots(figsize=(6, 4))
        for split, style in (("train", "-o"), ("val", "-s")):
            column = f"{split}_{metric}"
            if rows and column in rows[0] and rows[0][column] != "":
                axes.plot(epochs, [float(row[column]) for row in rows], style, label=split, markersize=4)
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.set_title(f"{label}: train vs val")
        axes.grid(alpha=0.3)
        axes.legend()
        if len(epochs) < 15:
            axes.set_xticks(epochs)
        else:
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        path = folder.plot(catalog.LOSS if metric == "loss" else catalog.ACCURACY)
        _save(figure, path)
        written.append(path)
    return written


def plot_confusion(matrix: list[list[int]], class_names: list[str], path: Path, normalized: bool, title: str) -> Path:
    """A confusion matrix (rows: true class) as counts or row-normalized; labels shrink for many classes."""
    plt = _pyplot()
    counts = np.asarray(matrix, dtype=float)
    values = counts / np.maximum(counts.sum(1, keepdims=True), 1) if normalized else counts
    size = len(class_names)
    side = min(max(5.0, 0.45 * size + 2.5), 24.0)
    figure, axes = plt.subplots(figsize=(side, side * 0.9))
    image = axes.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalized else None)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    font = max(4, min(10, int(140 / max(size, 1))))
    axes.set_xticks(range(size), labels=class_names, rotation=90 if size > 6 else 45, ha="right" if size <= 6
                    else "center", fontsize=font)
    axes.set_yticks(range(size), labels=class_names, fontsize=font)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    if size <= 30:  # numbers in the cells stay legible up to about 30 classes
        threshold = values.max() / 2 if values.max() > 0 else 0.5
        for row in range(size):
            for column in range(size):
                text = f"{values[row, column]:.2f}" if normalized else f"{int(counts[row, column])}"
                axes.text(column, row, text, ha="center", va="center", fontsize=font,
                          color="white" if values[row, column] > threshold else "black")
    _save(figure, path)
    return path


MAX_LEGEND_CLASSES = 10  # past this, per-class curves are drawn thin and unlabelled beside the macro average


def plot_roc(predictions: SplitPredictions, metrics: dict, class_names: list[str], path: Path, title: str) -> Path:
    """ROC curve of the positive class (two classes, with the operating point of the argmax decision), or
    one-vs-rest curves per class plus their macro average; AUCs in the legend."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 5.5))
    axes.plot([0, 1], [0, 1], ":", color="grey", label="chance (AUC = 0.5)")
    curves = one_vs_rest_curves(predictions, class_names, metrics, "roc")
    if len(class_names) == 2:
        (name, x, y, _), = curves
        axes.plot(x, y, lw=2, label=f"{name} vs rest, AUC = {_with_interval(metrics.get('roc_auc'))}")
        if metrics.get("sensitivity", {}).get("value") is not None:
            sens, spec = metrics["sensitivity"]["value"], metrics["specificity"]["value"]
            axes.plot([1 - spec], [sens], "o", color="black",
                      label=f"argmax decision: sensitivity {sens:.3f}, specificity {spec:.3f}")
        point = metrics.get("operating_point")
        if point is not None and point["sensitivity"]["value"] is not None:
            sens, spec = point["sensitivity"]["value"], point["specificity"]["value"]
            axes.plot([1 - spec], [sens], "*", color="tab:red", markersize=14,
                      label=(f"threshold {point['threshold']:.3f}" if point["threshold"] is not None else
                             "each fold's threshold") + f" ({point['rule']}): sensitivity {sens:.3f}, "
                            f"specificity {spec:.3f}")
    else:
        grid = np.linspace(0, 1, 501)
        mean_tpr = np.mean([np.interp(grid, x, y) for _, x, y, _ in curves], axis=0) if curves else grid
        _draw_class_curves(axes, curves, "AUC")
        axes.plot(grid, mean_tpr, color="black", lw=2.5,
                  label=f"macro average, mean AUC = {_with_interval(metrics.get('roc_auc'))}")
    axes.set_xlabel("false positive rate (1 - specificity)")
    axes.set_ylabel("true positive rate (sensitivity)")
    _finish_unit_axes(axes, title, "lower right")
    _save(figure, path)
    return path


def plot_precision_recall(predictions: SplitPredictions, metrics: dict, class_names: list[str], path: Path,
                          title: str) -> Path:
    """Precision-recall curve(s) with average precision in the legend and the prevalence as the baseline."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 5.5))
    curves = one_vs_rest_curves(predictions, class_names, metrics, "pr")
    if len(class_names) == 2:
        (name, x, y, _), = curves
        positive = class_names.index(name)
        prevalence = float(np.mean(predictions.labels == positive))
        axes.plot(x, y, lw=2, label=f"{name}, AP = {_with_interval(metrics.get('pr_auc'))}")
        axes.axhline(prevalence, ls=":", color="grey", label=f"chance (prevalence {prevalence:.3f})")
        if metrics.get("precision", {}).get("value") is not None:
            axes.plot([metrics["sensitivity"]["value"]], [metrics["precision"]["value"]], "o", color="black",
                      label="argmax decision")
    else:
        grid = np.linspace(0, 1, 501)
        # interpolated precision (the best precision at recall >= r), averaged over classes
        interpolated = [np.interp(grid, *_interpolated_precision(x, y)) for _, x, y, _ in curves]
        _draw_class_curves(axes, curves, "AP")
        if interpolated:
            axes.plot(grid, np.mean(interpolated, axis=0), color="black", lw=2.5,
                      label=f"macro average, mean AP = {_with_interval(metrics.get('pr_auc'))}")
    axes.set_xlabel("recall (sensitivity)")
    axes.set_ylabel("precision")
    _finish_unit_axes(axes, title, "lower left")
    _save(figure, path)
    return path


def _interpolated_precision(recall, precision):
    """Recall in increasing order and the best precision reached at that recall or higher."""
    order = np.argsort(recall, kind="stable")
    recall, precision = recall[order], precision[order]
    return recall, np.maximum.accumulate(precision[::-1])[::-1]


def one_vs_rest_curves(predictions: SplitPredictions, class_names: list[str], metrics: dict, kind: str):
    """(class name, x, y, area) per class with positives and negatives: ROC (fpr, tpr) or PR (recall,
    precision). For two classes only the positive class."""
    probs = torch.from_numpy(predictions.probs).float()
    labels = torch.from_numpy(predictions.labels).long()
    if len(class_names) == 2:
        classes = [positive_index(class_names, metrics.get("positive_class"))]
    else:
        classes = list(range(len(class_names)))
    curves = []
    for index in classes:
        target = (labels == index).long()
        if target.sum() == 0 or target.sum() == len(target):
            continue  # one-vs-rest is undefined without both positives and negatives
        if kind == "roc":
            x, y, _ = tmc.binary_roc(probs[:, index], target)
            area = float(tmc.binary_auroc(probs[:, index], target))
        else:
            y, x, _ = tmc.binary_precision_recall_curve(probs[:, index], target)
            area = float(tmc.binary_average_precision(probs[:, index], target))
        curves.append((class_names[index], x.numpy(), y.numpy(), area))
    return curves


def _draw_class_curves(axes, curves, area_name: str) -> None:
    labelled = len(curves) <= MAX_LEGEND_CLASSES
    for name, x, y, area in curves:
        if labelled:
            axes.plot(x, y, lw=1.2, alpha=0.85, label=f"{name} ({area_name} {area:.3f})")
        else:
            axes.plot(x, y, lw=0.6, alpha=0.35, color="tab:blue")
    if not labelled:
        axes.plot([], [], lw=0.6, alpha=0.6, color="tab:blue", label=f"{len(curves)} classes, one vs rest")


def _finish_unit_axes(axes, title: str, legend_corner: str) -> None:
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(-0.01, 1.01)
    axes.set_aspect("equal")
    axes.grid(alpha=0.3)
    axes.set_title(title)
    if len(axes.get_legend_handles_labels()[1]) <= 4:  # a few entries fit the corner a good curve avoids
        axes.legend(loc=legend_corner, fontsize=8, frameon=True, framealpha=0.9)
    else:  # many: below the axes, where they cannot hide a curve
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=7, frameon=False)


def _with_interval(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        return "n/a"
    interval = entry.get("ci95")
    text = f"{entry['value']:.3f}"
    return f"{text} [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else text


def reliability_bins(predictions: SplitPredictions, bins: int = 15, temperature: float = 1.0):
    """Count, accuracy and mean confidence of the top prediction in `bins` equal-width bins [low, high), as
    torchmetrics bins them for the ECE (a confidence of exactly 1 joins the last bin). With the run's
    `temperature`, those of the probabilities before calibration (p**T renormalised is softmax(logits))."""
    probs = predictions.probs.astype(np.float64)
    if temperature != 1.0:
        powered = np.exp(temperature * np.log(np.clip(probs, 1e-300, None)))
        probs = powered / powered.sum(1, keepdims=True)
    confidence = probs.max(1)
    correct = predictions.predicted == predictions.labels
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    accuracy = np.bincount(which, weights=correct, minlength=bins) / np.maximum(counts, 1)
    mean_conf = np.bincount(which, weights=confidence, minlength=bins) / np.maximum(counts, 1)
    return counts, accuracy, mean_conf


def plot_reliability(predictions: SplitPredictions, metrics: dict, path: Path, title: str, bins: int = 15) -> Path:
    """Reliability diagram: accuracy against confidence (the top probability) in equal-width bins, the gap
    to the diagonal shaded, and how many predictions fall in each bin below."""
    plt = _pyplot()
    counts, accuracy, mean_conf = reliability_bins(predictions, bins)
    edges = np.linspace(0, 1, bins + 1)
    centers, width = (edges[:-1] + edges[1:]) / 2, 1 / bins
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6.5), sharex=True,
                                         gridspec_kw={"height_ratios": [3, 1], "hspace": 0.08})
    used = counts > 0
    top.bar(centers[used], accuracy[used], width=width, edgecolor="black", color="tab:blue",
            label="accuracy in bin")
    top.bar(centers[used], mean_conf[used] - accuracy[used], bottom=accuracy[used], width=width, fill=False,
            edgecolor="tab:red", hatch="///", lw=0.8, label="gap to mean confidence in bin")
    top.plot(centers[used], mean_conf[used], "_", color="tab:red", markersize=14, mew=2)
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ece = metrics.get("ece", {}).get("value")
    temperature = metrics.get("calibration", {}).get("temperature", 1.0)
    if temperature != 1.0:
        counts_before, accuracy_before, confidence_before = reliability_bins(predictions, bins, temperature)
        kept = counts_before > 0
        before = metrics.get("ece_uncalibrated", {}).get("value")
        top.plot(confidence_before[kept], accuracy_before[kept], "o-", color="tab:orange", lw=1.5, markersize=4,
                 label=f"before temperature scaling (ECE {before:.4f})" if before is not None else "before")
        title += f" (calibrated, T = {temperature:.3f})"
    top.set_title(f"{title}, ECE = {ece:.4f}" if ece is not None else title)
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centers, counts, width=width, color="grey", edgecolor="black")
    bottom.set_xlabel("confidence (top predicted probability)")
    bottom.set_ylabel("predictions")
    bottom.set_xlim(0, 1)
    bottom.grid(alpha=0.3)
    _save(figure, path)
    return path


def plot_risk_coverage(predictions: SplitPredictions, metrics: dict, path: Path, title: str) -> Path:
    """Error rate of the kept predictions against the share kept, the least confident referred first; the
    accuracy at 90 / 95 / 99 % coverage marked (selective prediction)."""
    plt = _pyplot()
    coverage, risk = risk_coverage(predictions.probs, predictions.labels)
    figure, axes = plt.subplots(figsize=(6, 4.5))
    axes.plot(coverage, risk, lw=2, label="error rate of the kept predictions")
    for kept in COVERAGES:
        entry = metrics.get(coverage_key(kept))
        if entry and entry.get("value") is not None:
            axes.plot([kept], [1 - entry["value"]], "o", label=f"{kept:.0%} kept: accuracy {_with_interval(entry)}")
    axes.set_xlabel("coverage (share of images answered; the rest referred to a person)")
    axes.set_ylabel("error rate (risk)")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, max(0.05, float(risk.max()) * 1.1) if risk.size else 1)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize=8)
    axes.set_title(title)
    _save(figure, path)
    return path


def write_metric_plots(folder: RunFolder, metrics: dict, class_names: list[str],
                       predictions: dict[str, SplitPredictions]) -> list[Path]:
    """Confusion matrices for every split in `metrics`; ROC, PR and reliability for every split with
    saved predictions."""
    written = []
    for split, split_metrics in metrics.items():
        matrix = split_metrics["confusion_matrix"]
        written.append(plot_confusion(matrix, class_names, folder.plot(catalog.confusion(split)), False,
                                      f"confusion matrix ({split}, counts)"))
        written.append(plot_confusion(matrix, class_names, folder.plot(catalog.confusion(split, True)), True,
                                      f"confusion matrix ({split}, row-normalized)"))
        if split in predictions and len(predictions[split].labels):
            split_predictions = predictions[split]
            written.append(plot_roc(split_predictions, split_metrics, class_names, folder.plot(catalog.roc(split)),
                                    f"ROC ({split})"))
            written.append(plot_precision_recall(split_predictions, split_metrics, class_names,
                                                 folder.plot(catalog.precision_recall(split)),
                                                 f"precision-recall ({split})"))
            written.append(plot_reliability(split_predictions, split_metrics,
                                            folder.plot(catalog.reliability(split)), f"reliability ({split})"))
            if split != "train":
                written.append(plot_risk_coverage(split_predictions, split_metrics,
                                                  folder.plot(catalog.risk_coverage(split)),
                                                  f"risk-coverage ({split})"))
    return written


def write_run_plots(folder: RunFolder, metrics: dict, class_names: list[str],
                    predictions: dict[str, SplitPredictions] | None = None) -> list[Path]:
    """Every figure that the run's history, metrics and predictions allow."""
    written = []
    history = folder.read_history()
    if history:
        written += plot_curves(history, folder)
    if predictions is None:
        predictions = load_split_predictions(folder)
    return written + write_metric_plots(folder, metrics, class_names, predictions)
