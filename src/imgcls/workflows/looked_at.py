"""The report's "what the model looked at": Grad-CAM of a held-out split's most confident mistakes and of a
few correct images per class, for the figures of a run or an evaluation."""

from __future__ import annotations

import numpy as np
import torch

from imgcls.data import DataBundle
from imgcls.data.transforms import normalize_batch
from imgcls.engine.explain import explain_images, resolve_method
from imgcls.errors import ImgclsError
from imgcls.reporting.explanations import Explained
from imgcls.workflows.predict import LoadedModel

MISTAKES = 8  # most confident mistakes shown
CORRECT_PER_CLASS = 2  # most confident correct images of each class ...
CLASSES_SHOWN = 12  # ... for up to this many classes


def explain_held_out(loaded: LoadedModel, bundle: DataBundle,
                     predictions: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, dict[bool, list[Explained]]]:
    """What the model looked at in the test split (else val, else all): {split: {correct: [Explained]}}."""
    split = next((name for name in ("test", "val", "all") if name in predictions), None)
    if split is None:
        return {}
    probs, labels = predictions[split]
    found = looked_at(loaded.model, bundle.splits[split].images, probs.numpy(), labels.numpy(),
                      loaded.class_names, loaded.mean, loaded.std)
    return {split: found} if found else {}


def looked_at(model, images, probs: np.ndarray, labels: np.ndarray, class_names: list[str], mean, std,
              method: str = "auto") -> dict[bool, list]:
    """{False: explained mistakes, True: explained correct images} of one split; {} when the model has nothing
    to explain (an MLP) or the split has no images."""
    chosen = _chosen(probs, labels, len(class_names))
    if not any(chosen.values()):
        return {}
    picked = np.concatenate([np.asarray(rows, dtype=np.int64) for rows in chosen.values()])
    batch = images[torch.as_tensor(picked)] if isinstance(images, torch.Tensor) else images[picked]
    batch = torch.as_tensor(np.asarray(batch))
    predicted = probs[picked].argmax(1)
    method = resolve_method(model, method, class_specific=True)  # the map of the class it predicted
    try:
        maps = explain_images(model, normalize_batch(batch, mean, std), predicted.tolist(), method)
    except ImgclsError:
        return {}
    explained, offset = {}, 0
    for correct, rows in chosen.items():
        items: list[Explained] = []
        for row in rows:
            index = offset + len(items)
            title = f"true {class_names[labels[row]][:18]}\npred {class_names[predicted[index]][:18]} " \
                    f"({probs[row, predicted[index]]:.2f})"
            items.append(Explained(batch[index].numpy(), maps[index], title, method))
        offset += len(rows)
        if items:
            explained[correct] = items
    return explained


def _chosen(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[bool, list[int]]:
    """Rows to explain: the most confident mistakes, and the most confident correct images of each class."""
    predicted = probs.argmax(1)
    confidence = probs.max(1)
    wrong = np.flatnonzero(predicted != labels)
    mistakes = wrong[np.argsort(-confidence[wrong], kind="stable")][:MISTAKES].tolist()
    correct = []
    for label in range(min(num_classes, CLASSES_SHOWN)):
        right = np.flatnonzero((predicted == labels) & (labels == label))
        correct += right[np.argsort(-confidence[right], kind="stable")][:CORRECT_PER_CLASS].tolist()
    return {False: mistakes, True: correct}
