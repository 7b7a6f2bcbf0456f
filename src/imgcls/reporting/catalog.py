"""Every figure of a run, by file name under plots/, with its caption and report section: the one place that
names them (plots and figures write them, the report reads them)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

LOSS = "loss.png"
ACCURACY = "accuracy.png"
SAMPLES = "samples.png"
PATCHES = "patches.png"
FILTERS = "filters.png"
FILTER_RESPONSES = "filter_responses.png"


def confusion(split: str, normalized: bool = False) -> str:
    return f"confusion_{split}_normalized.png" if normalized else f"confusion_{split}.png"


def roc(split: str) -> str:
    return f"roc_{split}.png"


def precision_recall(split: str) -> str:
    return f"pr_{split}.png"


def reliability(split: str) -> str:
    return f"reliability_{split}.png"


def risk_coverage(split: str) -> str:
    return f"risk_coverage_{split}.png"


def mistakes(split: str) -> str:
    return f"mistakes_{split}.png"


def looked_at(split: str, correct: bool) -> str:
    """What the model looked at: its most confident mistakes, or correct examples of each class."""
    return f"looked_at_{split}_{'correct' if correct else 'mistakes'}.png"


EXPLAIN_GRID = "grid.png"  # `imgcls explain`: every image of the call in one figure


def explained(index: int, image_name: str) -> str:
    """`imgcls explain`: the figure of the index-th image (its file stem kept, so it can be found)."""
    return f"{index:03d}-{Path(image_name).stem}.png"


LOOKED_AT_SECTION = "What the model looked at"

# (section title, [(file name, or a function of the split, caption)]); "{split}" in a caption is the split
SECTIONS: list[tuple[str, list[tuple[str | Callable[[str], str], str]]]] = [
    ("Training curves", [(LOSS, "Loss per epoch, train vs val"), (ACCURACY, "Accuracy per epoch, train vs val")]),
    ("Confusion matrices", [(confusion, "Confusion matrix, {split}, counts"),
                            (lambda split: confusion(split, True), "Confusion matrix, {split}, row-normalized")]),
    ("ROC and precision-recall curves", [(roc, "ROC, {split}"), (precision_recall, "Precision-recall, {split}")]),
    ("Calibration and selective prediction", [(reliability, "Reliability diagram, {split}"),
                                              (risk_coverage, "Risk-coverage curve, {split}")]),
    ("Most confident mistakes", [(mistakes, "Most confident mistakes, {split}")]),
    (LOOKED_AT_SECTION, [(lambda split: looked_at(split, False),
                                   "Class-activation maps of the most confident mistakes, {split}"),
                                  (lambda split: looked_at(split, True), "Class-activation maps of correct images per class, {split}")]),
    ("Data", [(SAMPLES, "Random samples of each class")]),
    ("Inside the model", [(PATCHES, "ViT input as a grid of patches"), (FILTERS, "First-layer convolution filters"),
                          (FILTER_RESPONSES, "First-layer filter responses on one image")]),
]
WIDE = {SAMPLES, PATCHES, FILTER_RESPONSES}  # image grids drawn across the report page


def is_wide(name: str, num_classes: int) -> bool:
    """Figures drawn across the page: image grids, mistakes, and confusion matrices past 20 classes."""
    return name in WIDE or name.startswith(("mistakes_", "looked_at_")) or \
        (name.startswith("confusion_") and num_classes > 20)
