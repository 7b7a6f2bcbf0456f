"""Everything a run folder shows after training or evaluation: the per-sample predictions, every figure they,
the history and (given) the model allow, and report.html."""

from __future__ import annotations

from pathlib import Path

import torch

from imgcls.data import DataBundle
from imgcls.reporting import catalog
from imgcls.reporting.explanations import LookedAt, explanation_grid
from imgcls.reporting.figures import DrawnModel, write_image_figures
from imgcls.reporting.html import build_report
from imgcls.reporting.plots import write_run_plots
from imgcls.run_files import RunFolder, SplitPredictions, save_split_predictions

Predictions = dict[str, tuple[torch.Tensor, torch.Tensor]]  # split -> (probabilities (N, K), labels (N,))


def write_figures_and_report(folder: RunFolder, bundle: DataBundle, predictions: Predictions,
                             class_names: list[str], drawn: DrawnModel | None = None, seed: int = 0,
                             title: str | None = None,
                             looked_at: LookedAt | None = None) -> Path:
    """Keep every split's per-sample predictions in `folder` (a RunFolder that already holds its metrics), draw
    every figure they, the history and (given) the model allow, and write report.html.

    `bundle` holds the decoded images; `drawn` is the model whose filters are drawn too; `looked_at` is what the
    model looked at in one split (drawn as grids, summarised in looked_at.json).
    """
    kept = save_predictions(folder, bundle, predictions, class_names)
    write_run_plots(folder, folder.read_metrics(), class_names, kept)
    shown = {split: images for split, images in bundle.splits.items() if split in kept}
    write_image_figures(folder, shown, class_names, kept, drawn, seed)
    if looked_at is not None:
        _write_looked_at(folder, looked_at)
    return build_report(folder, title)


def save_predictions(folder: RunFolder, bundle: DataBundle, predictions: Predictions,
                     class_names: list[str]) -> dict[str, SplitPredictions]:
    """Every split's probabilities, labels and files in the folder; returns them as SplitPredictions."""
    kept = {}
    for split, (probs, labels) in predictions.items():
        kept[split] = SplitPredictions(probs.numpy(), labels.numpy(), bundle.splits[split].paths)
        save_split_predictions(folder, split, kept[split], class_names)
    return kept


def _write_looked_at(folder: RunFolder, looked_at: LookedAt) -> None:
    for correct, items in looked_at.groups.items():
        kind = "correct images of each class" if correct else "most confident mistakes"
        which = "" if items[0].method == "rollout" else ", of the predicted class"
        explanation_grid(items, folder.plot(catalog.looked_at(looked_at.split, correct)),
                         f"what the model looked at: {kind} ({looked_at.split}, {looked_at.source}{which})")
    folder.write_looked_at(looked_at.summary())
