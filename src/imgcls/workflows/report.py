"""`imgcls report` and `imgcls compare`: pages rebuilt from run folders alone (no data, no model)."""

from __future__ import annotations

from pathlib import Path

from imgcls.errors import ImgclsError
from imgcls.reporting.compare import common_split, print_comparison, read_run, unique_names, write_comparison_html
from imgcls.reporting.html import build_report
from imgcls.reporting.plots import write_run_plots
from imgcls.run_files import RunFolder


def report(run: str | Path) -> Path:
    """Redraw the figures the run's files allow (curves, confusion matrices, ROC/PR, reliability) and rewrite
    its report.html. Figures that need the images (samples, mistakes, filters) are kept as the run drew them."""
    folder = RunFolder(run)
    metrics = folder.read_metrics()
    class_names = list(next(iter(metrics.values()))["per_class"])
    write_run_plots(folder, metrics, class_names)
    evaluated = folder.evaluated_run
    title = f"{evaluated.name}: evaluation {folder.name}" if evaluated is not None else None
    return build_report(folder, title)


def compare(runs: list[str | Path], split: str | None = None, out: str | Path | None = None) -> Path:
    """Print the runs' metrics side by side and write them, with overlaid validation curves, as one HTML page
    (default: next to the first run)."""
    if len(runs) < 2:
        raise ImgclsError("compare needs at least two run folders: imgcls compare RUN RUN ...")
    records = [read_run(run) for run in runs]
    unique_names(records)
    split = common_split(records, split)
    print_comparison(records, split)
    if out is None:
        joined = "-vs-".join(record.folder.name for record in records)
        out = records[0].folder.parent / f"compare-{joined[:150]}.html"
    return write_comparison_html(records, split, Path(out).expanduser())
