"""Per-sample predictions of a split, kept in the run so figures and reports can be rebuilt later: the class
probabilities, the true labels and (for folders) the file of every sample, and the misclassified samples,
most confident first, as CSV."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgcls.atomic import write_atomic, write_text_atomic
from imgcls.run_files.layout import RunFolder


@dataclass
class SplitPredictions:
    probs: np.ndarray  # (N, K) float32
    labels: np.ndarray  # (N,) int64
    paths: list[str] | None = None

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(1)

    def mistakes(self) -> np.ndarray:
        """Indices of the misclassified samples, the most confident mistake first."""
        wrong = np.flatnonzero(self.predicted != self.labels)
        return wrong[np.argsort(-self.probs[wrong].max(1), kind="stable")]


def save_split_predictions(folder: RunFolder, split: str, predictions: SplitPredictions,
                           class_names: list[str]) -> None:
    """Write the split's probabilities, labels and files, and its mistakes as CSV, into the folder."""
    arrays = {"probs": predictions.probs.astype(np.float32), "labels": predictions.labels.astype(np.int64)}
    if predictions.paths is not None:
        arrays["paths"] = np.asarray(predictions.paths, dtype=str)
    write_atomic(folder.predictions_file(split), lambda tmp: _save_npz(tmp, arrays))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "path", "true_class", "predicted_class", "probability", "probability_of_true_class"])
    for index in predictions.mistakes():
        path = predictions.paths[index] if predictions.paths is not None else ""
        writer.writerow([int(index), path, class_names[predictions.labels[index]],
                         class_names[predictions.predicted[index]], f"{predictions.probs[index].max():.6f}",
                         f"{predictions.probs[index, predictions.labels[index]]:.6f}"])
    write_text_atomic(folder.mistakes_file(split), buffer.getvalue())


def _save_npz(tmp: Path, arrays: dict) -> None:
    with tmp.open("wb") as handle:  # a file object: np.savez would append ".npz" to a bare name
        np.savez_compressed(handle, **arrays)


def load_split_predictions(folder: RunFolder) -> dict[str, SplitPredictions]:
    """Every split saved in the folder, in train, val, test order."""
    found = {}
    order = {"train": 0, "val": 1, "test": 2}
    files = sorted(folder.predictions_dir.glob("*.npz"), key=lambda f: (order.get(f.stem, 3), f.stem))
    for file in files:
        with np.load(file, allow_pickle=False) as stored:
            paths = stored["paths"].tolist() if "paths" in stored else None
            found[file.stem] = SplitPredictions(stored["probs"], stored["labels"], paths)
    return found
