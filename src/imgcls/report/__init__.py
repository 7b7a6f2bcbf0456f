"""Reports: terminal tables, figures (plots of the run's numbers, image grids), the self-contained HTML page,
and run comparison."""

from __future__ import annotations

from pathlib import Path


def write_figures_and_report(folder, bundle, predictions: dict, class_names: list[str], model=None, mean=None,
                             std=None, seed: int = 0, title: str | None = None) -> Path:
    """Keep every split's per-sample predictions in `folder` (a RunFolder that already holds its metrics), draw
    every figure they, the history and (given) the model allow, and write report.html.

    `predictions` maps a split to (probabilities, labels) tensors; `bundle` holds the decoded images.
    """
    from imgcls.report.figures import write_image_figures
    from imgcls.report.html import build_report
    from imgcls.report.plots import write_run_plots
    from imgcls.run_files import SplitPredictions, save_split_predictions

    kept = {}
    for split, (probs, labels) in predictions.items():
        kept[split] = SplitPredictions(probs.numpy(), labels.numpy(), bundle.splits[split].paths)
        save_split_predictions(folder, split, kept[split], class_names)
    write_run_plots(folder, folder.read_metrics(), class_names, kept)
    shown = [split for split in bundle.splits if split in kept]
    write_image_figures(folder, {split: bundle.splits[split].images for split in shown},
                        {split: bundle.splits[split].labels.numpy() for split in shown}, class_names, kept, model,
                        mean, std, seed)
    return build_report(folder, title)
