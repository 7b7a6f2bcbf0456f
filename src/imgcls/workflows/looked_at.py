"""The report's "what the model looked at": class-activation maps (the CAM measured most faithful for the
model) of a held-out split's most confident mistakes and of a few correct images per class, for the figures of a
run or an evaluation, with how far the maps can be trusted (their grid, and their deletion/insertion
faithfulness)."""

from __future__ import annotations

import numpy as np
import torch

from imgcls.console import get_console
from imgcls.data import DataBundle
from imgcls.data.transforms import normalize_batch
from imgcls.engine.explain import explain_images
from imgcls.engine.faithfulness import deletion_insertion, trust_warning
from imgcls.engine.map_choice import MapChoice, choose_method
from imgcls.errors import ImgclsError
from imgcls.reporting.explanations import Explained, LookedAt
from imgcls.workflows.predict import LoadedModel

MISTAKES = 8  # most confident mistakes shown
CORRECT_PER_CLASS = 2  # most confident correct images of each class ...
CLASSES_SHOWN = 12  # ... for up to this many classes
SCORED = 16  # images whose maps' faithfulness is measured (22 forward passes each)


def explain_held_out(loaded: LoadedModel, bundle: DataBundle,
                     predictions: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> LookedAt | None:
    """What the model looked at in the test split (else val, else all), drawn by the CAM measured most faithful
    on the val split (else the same split); None when there is nothing to explain."""
    split = next((name for name in ("test", "val", "all") if name in predictions), None)
    if split is None:
        return None
    try:
        choice = _measured_choice(loaded, bundle, predictions, "val" if "val" in predictions else split)
    except ImgclsError:  # nothing to explain: an MLP has no spatial map
        return None
    probs, labels = predictions[split]
    return looked_at(loaded, bundle.splits[split].images, probs.numpy(), labels.numpy(), split, choice)


def _measured_choice(loaded: LoadedModel, bundle: DataBundle,
                     predictions: dict[str, tuple[torch.Tensor, torch.Tensor]], split: str) -> MapChoice:
    """`auto` for this model: each candidate's maps of SCORED images spread over `split`, for the predicted
    classes, scored by deletion/insertion (engine/map_choice)."""
    probs = predictions[split][0]
    rows = np.linspace(0, len(probs) - 1, min(SCORED, len(probs))).round().astype(int)
    normalized = normalize_batch(_rows(bundle.splits[split].images, rows), loaded.mean, loaded.std)
    return choose_method(loaded.model, normalized, probs[rows].argmax(1).tolist(), split=split)


def say_if_untrusted(looked: LookedAt | None) -> None:
    """One console line when the report's maps should not be read as evidence (the report says it too)."""
    if looked is not None and looked.warning:
        get_console().print(f"[yellow]warning:[/yellow] the report's maps ({looked.source}) are not evidence: "
                            f"{looked.warning}", markup=True, highlight=False)


def looked_at(loaded: LoadedModel, images, probs: np.ndarray, labels: np.ndarray, split: str,
              choice: MapChoice) -> LookedAt | None:
    """The maps of one split's most confident mistakes and correct images, drawn with the chosen method, with
    where they come from and their faithfulness; None when the split has no images."""
    class_names = loaded.class_names
    chosen = _chosen(probs, labels, len(class_names))
    if not any(chosen.values()):
        return None
    picked = np.concatenate([np.asarray(rows, dtype=np.int64) for rows in chosen.values()])
    batch = _rows(images, picked)
    predicted = probs[picked].argmax(1)
    normalized = normalize_batch(batch, loaded.mean, loaded.std)
    maps = explain_images(loaded.model, normalized, predicted.tolist(), choice.method, choice.layer)
    scored = np.linspace(0, len(picked) - 1, min(SCORED, len(picked))).round().astype(int)  # mistakes and correct
    faithfulness = deletion_insertion(loaded.model, normalized[scored], maps.maps[scored],
                                      predicted[scored].tolist())
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
                    trust_warning(maps.coarse, faithfulness.score), choice.to_dict(), choice.reason)


def _rows(images, rows: np.ndarray) -> torch.Tensor:
    """Rows of a split's uint8 images (a tensor, or a memory-mapped array) as a tensor."""
    picked = images[torch.as_tensor(rows)] if isinstance(images, torch.Tensor) else images[rows]
    return torch.as_tensor(np.asarray(picked))


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
