"""Figures of a run as PNG files (matplotlib, Agg): training curves and confusion matrices."""

from __future__ import annotations

import csv
from pathlib import Path

from imgcls.atomic import write_atomic


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> None:
    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    _pyplot().close(figure)


def plot_curves(history_csv: Path, out_dir: Path) -> list[Path]:
    """loss.png and accuracy.png: train vs val per epoch."""
    plt = _pyplot()
    rows = list(csv.DictReader(history_csv.open()))
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
        path = out_dir / f"{metric}.png"
        _save(figure, path)
        written.append(path)
    return written


def plot_confusion(matrix: list[list[int]], class_names: list[str], path: Path, normalized: bool, title: str) -> Path:
    """A confusion matrix (rows: true class) as counts or row-normalized; labels shrink for many classes."""
    import numpy as np

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


def write_run_plots(run_dir: Path, metrics: dict, class_names: list[str]) -> list[Path]:
    """Every figure that history.csv and metrics.json allow, into RUN/plots/."""
    out_dir = run_dir / "plots"
    written = []
    if (run_dir / "history.csv").is_file():
        written += plot_curves(run_dir / "history.csv", out_dir)
    for split, split_metrics in metrics.items():
        matrix = split_metrics["confusion_matrix"]
        written.append(plot_confusion(matrix, class_names, out_dir / f"confusion_{split}.png", False,
                                      f"confusion matrix ({split}, counts)"))
        written.append(plot_confusion(matrix, class_names, out_dir / f"confusion_{split}_normalized.png", True,
                                      f"confusion matrix ({split}, row-normalized)"))
    return written
