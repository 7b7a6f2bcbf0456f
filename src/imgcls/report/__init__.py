"""Reports: terminal tables, figures (plots of the run's numbers, image grids), the self-contained HTML page,
and run comparison."""

from __future__ import annotations

from pathlib import Path


def write_figures_and_report(folder, bundle, predictions: dict, class_names: list[str], model=None, mean=None,
                             std=None, seed: int = 0, title: str | None = None, looked_at: dict | None = None) -> Path:
    """Keep every split's per-sample predictions in `folder` (a RunFolder that already holds its metrics), draw
    every figure they, the history and (given) the model allow, and write report.html.

    `predictions` maps a split to (probabilities, labels) tensors; `bundle` holds the decoded images;
    `looked_at` maps a split to {correct: [Explained]} (what the model looked at, drawn as grids).
    """
    from imgcls.report.figures import write_image_figures
    from imgcls.report.html import build_report
    from imgcls.report.plots import write_run_plots
    kept = save_predictions(folder, bundle, predictions, class_names)
    write_run_plots(folder, folder.read_metrics(), class_names, kept)
    shown = [split for split in bundle.splits if split in kept]
    write_image_figures(folder, {split: bundle.splits[split].images for split in shown},
                        {split: bundle.splits[split].labels.numpy() for split in shown}, class_names, kept, model,
                        mean, std, seed)
    _write_looked_at(folder, looked_at or {})
    return build_report(folder, title)


def save_predictions(folder, bundle, predictions: dict, class_names: list[str]) -> dict:
    """Every split's probabilities, labels and files in the folder; returns them as SplitPredictions."""
    from imgcls.run_files import SplitPredictions, save_split_predictions

    kept = {}
    for split, (probs, labels) in predictions.items():
        kept[split] = SplitPredictions(probs.numpy(), labels.numpy(), bundle.splits[split].paths)
        save_split_predictions(folder, split, kept[split], class_names)
    return kept


def _write_looked_at(folder, looked_at: dict) -> None:
    from imgcls.report import catalog
    from imgcls.report.explanations import explanation_grid

    for split, groups in looked_at.items():
        for correct, items in groups.items():
            kind = "correct images of each class" if correct else "most confident mistakes"
            explanation_grid(items, folder.plot(catalog.looked_at(split, correct)),
                             f"what the model looked at: {kind} ({split}, {items[0].method} of the predicted class)")
