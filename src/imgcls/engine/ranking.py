"""Class probabilities to ranked answers: what predict prints and serve returns (numpy only, no torch: an
ONNX export answers without it)."""

from __future__ import annotations

from typing import Any

import numpy as np


def top_classes(probabilities: Any, class_names: list[str], topk: int) -> list[list[dict[str, Any]]]:
    """For each row of (N, K) probabilities, its `topk` classes, most probable first (ties by class order)."""
    probabilities = np.asarray(probabilities)
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :min(topk, len(class_names))]
    return [[{"class": class_names[int(index)], "probability": float(row_probs[index])} for index in row]
            for row, row_probs in zip(order, probabilities)]
