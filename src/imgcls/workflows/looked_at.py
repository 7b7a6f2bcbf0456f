"""The report's "what the model looked at": Grad-CAM of a held-out split's most confident mistakes and of a
few correct images per class, for the figures of a run or an evaluation, with how far the maps can be trusted
(their grid, and their deletion/insertion faithfulness)."""

from __future__ import annotations

import numpy as np
import torch

from imgcls.console import get_console
from imgcls.data import DataBundle
from imgcls.data.transforms import normalize_batch
from imgcls.engine.explain import explain_images
from imgcls.engine.faithfulness import deletion_insertion, trust_warning
from imgcls.errors import ImgclsError
from imgcls.reporting.explanations import Explained, LookedAt
from imgcls.workflows.predict import LoadedModel

MISTAKES = 8  # most confident mistakes shown
CORRECT_PER_CLASS = 2  # most confident correct images of each class ...
CLASSES_SHOWN = 12  # ... for up to this many classes
SCORED = 16  # images whose maps' faithfulness is measured (22 forward passes each)


def explain_held_out(loaded: LoadedModel, bundle: DataBundle,
                     predictions: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> LookedAt | None:
    """What the model looked at in the test split (else val, else all); None when there is nothing to explain."""
    split = next((name for name in ("test", "val", "all") if name in predictions), None)
    if split is None:
        return None
    probs, labels = predictions[split]
    return looked_at(loaded.model, bundle.splits[split].images, probs.numpy(), labels.numpy(), loaded.class_names,
                     loaded.mean, loaded.std, split)


def say_if_untrusted(looked: LookedAt | None) -> None:
    """One console line when the report's maps should not be read as evidence (the report says it too)."""
    if looked is not None and looked.warning:
        get_console().print(f"[yellow]warning:[/yellow] the report's maps ({looked.source}) are not evidence: "
                            f"{looked.warning}", markup=True, highlight=False)


def looked_at(model, images, probs: np.ndarray, labels: np.ndarray, class_names: list[str], mean, std,
              split: str) -> LookedAt | None:
    """The maps of one split's most confident mistakes and correct images, with where they come from and their
    faithfulness; None when the model has nothing to explain (an MLP) or the split has no images."""
    chosen = _chosen(probs, labels, len(class_names))
    if not any(chosen.values()):
        return None
    picked = np.concatenate([np.asarray(rows, dtype=np.int64) for rows in chosen.values()])
    batch = images[torch.as_tensor(picked)] if isinstance(images, torch.Tensor) else images[picked]
    batch = torch.as_tensor(np.asarray(batch))
    predicted = probs[picked].argmax(1)
    normalized = normalize_batch(batch, mean, std)
    try:  # CAMs of the class it predicted; a ViT's attention rollout (measured far closer to the evidence)
        maps = explain_images(model, normalized, predicted.tolist())
    except ImgclsError:
        return None
    scored = np.linspace(0, len(picked) - 1, min(SCORED, len(picked))).round().astype(int)  # mistakes and correct
    faithfulness = deletion_insertion(model, normalized[scored], maps.maps[scored], predicted[scored].tolist())
    groups, offset = {}, 0
    for correct, rows in chosen.items():
        items: list[Explained] = []
        for row in rows:
            index = offset + len(items)
            title = f"true {class_names[labels[row]][:18]}\npred {class_names[predicted[index]][:18]} " \
                    f"({probs[row, predicted[index]]:.2f})"
            items.append(Explained(batch[index].numpy(), maps.maps[index], title, maps.method))
        offset += len(rows)
        if items:
            groups[correct] = items
    return LookedAt(split, groups, maps.source, faithfulness.score, len(scored),
                    trust_warning(maps.coarse, faithfulness.score))


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
