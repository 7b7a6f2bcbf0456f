"""imgcls compare: several runs' metrics side by side (with intervals) and their validation curves overlaid,
as a terminal table and a self-contained HTML page."""

from __future__ import annotations

import base64
import datetime
import io
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.ticker import MaxNLocator
from rich.markup import escape
from rich.table import Table

from imgcls import __version__
from imgcls.atomic import check_replaceable, write_text_atomic
from imgcls.console import get_console
from imgcls.errors import ImgclsError
from imgcls.metrics import LOWER_IS_BETTER, METRIC_LABELS
from imgcls.reporting.html import template
from imgcls.reporting.plots import PNG_SOFTWARE, _pyplot
from imgcls.reporting.tables import format_value
from imgcls.run_files import RunFolder


@dataclass
class RunRecord:
    name: str
    folder: Path
    metrics: dict
    summary: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)


def read_run(path: str | Path) -> RunRecord:
    """The metrics, summary and history of a finished run."""
    folder = RunFolder(path)
    return RunRecord(folder.name, folder.path, folder.read_metrics(), folder.read_summary(), folder.read_history())


def common_split(runs: list[RunRecord], split: str | None) -> str:
    """The split every run has: `split` if given, else test, else val."""
    shared = set.intersection(*(set(run.metrics) for run in runs))
    if split is not None:
        if split not in shared:
            missing = ", ".join(run.name for run in runs if split not in run.metrics)
            raise ImgclsError(f"split '{split}' is missing in {missing}; choose one all runs have: "
                              f"{', '.join(sorted(shared)) or 'none'}")
        return split
    for candidate in ("test", "val", "train"):
        if candidate in shared:
            return candidate
    raise ImgclsError("these runs share no evaluated split; compare runs trained with a val or test split")


def unique_names(runs: list[RunRecord]) -> None:
    """Folder names label the runs; their full paths when two share a name."""
    if len({run.name for run in runs}) < len(runs):
        for run in runs:
            run.name = str(run.folder)


def _info_rows(runs: list[RunRecord]) -> list[tuple[str, list[str]]]:
    def get(run, key, fmt=str):
        return fmt(run.summary[key]) if run.summary.get(key) is not None else "n/a"

    return [
        ("model", [get(run, "model") for run in runs]),
        ("data", [get(run, "data") for run in runs]),
        ("input size (px)", [get(run, "img_size") for run in runs]),
        ("parameters", [get(run, "parameters", lambda n: f"{n:,}") for run in runs]),
        ("epochs (best)", [f"{get(run, 'epochs_run')} ({get(run, 'best_epoch')})" for run in runs]),
        ("training time", [get(run, "training_time_s", lambda s: f"{s:.0f} s") for run in runs]),
    ]


def _metric_rows(runs: list[RunRecord], split: str) -> list[dict]:
    rows = []
    for key, label in METRIC_LABELS.items():
        entries = [run.metrics[split].get(key) for run in runs]
        if all(entry is None for entry in entries):
            continue
        values = [entry.get("value") if entry else None for entry in entries]
        known = [value for value in values if value is not None]
        best = (min(known) if key in LOWER_IS_BETTER else max(known)) if known else None
        cells = []
        for entry, value in zip(entries, values):
            interval = (entry or {}).get("ci95")
            cells.append({"value": format_value(value),
                          "interval": f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "",
                          "best": value is not None and value == best and len(known) > 1})
        rows.append({"key": key, "label": label, "cells": cells})
    return rows


def print_comparison(runs: list[RunRecord], split: str) -> None:
    """The comparison as a rich table: run facts, then every metric with its interval; the best in bold."""
    table = Table(title=f"{split} metrics of {len(runs)} runs", title_justify="left",
                  caption=escape("[low, high] = 95% bootstrap interval; bold = best"), caption_justify="left")
    table.add_column("")
    for run in runs:
        table.add_column(escape(f"{run.name} ({run.metrics[split]['num_samples']})"), justify="right")
    for label, values in _info_rows(runs):
        table.add_row(label, *(escape(value) for value in values))
    table.add_section()
    for row in _metric_rows(runs, split):
        cells = []
        for cell in row["cells"]:
            text = escape(f"{cell['value']} {cell['interval']}".strip())
            cells.append(f"[bold]{text}[/bold]" if cell["best"] else text)
        table.add_row(row["label"], *cells)
    get_console().print(table)


def validation_curves_png(runs: list[RunRecord]) -> bytes | None:
    """Validation loss and accuracy per epoch of every run, overlaid, as PNG bytes (None without history)."""
    if not any(run.history and "val_loss" in run.history[0] for run in runs):
        return None
    plt = _pyplot()
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in runs:
        rows = [row for row in run.history if row.get("val_loss")]
        epochs = [int(row["epoch"]) for row in rows]
        loss_axes.plot(epochs, [float(row["val_loss"]) for row in rows], "-o", markersize=3, label=run.name)
        accuracy_axes.plot(epochs, [float(row["val_accuracy"]) for row in rows], "-o", markersize=3, label=run.name)

    for axes, label in ((loss_axes, "validation loss"), (accuracy_axes, "validation accuracy")):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.set_title(label)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": PNG_SOFTWARE})
    plt.close(figure)
    return buffer.getvalue()


def write_comparison_html(runs: list[RunRecord], split: str, path: Path) -> Path:
    """One self-contained page: the comparison table and the overlaid validation curves."""
    check_replaceable(path, "--out")
    png = validation_curves_png(runs)
    page = template("compare.html.j2").render(
        version=__version__, split=split, runs=runs,
        generated=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        info_rows=_info_rows(runs), metric_rows=_metric_rows(runs, split),
        curves_src="data:image/png;base64," + base64.b64encode(png).decode("ascii") if png else None,
    )
    write_text_atomic(path, page)
    return path
