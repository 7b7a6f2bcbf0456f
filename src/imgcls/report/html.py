"""report.html: one self-contained page per run (or evaluation), built from the files in its folder.

Images are inlined as data: URIs and the page has no scripts, fonts or links to fetch, so it opens offline
and can be mailed as one file.
"""

from __future__ import annotations

import base64
import csv
import datetime
import json
from pathlib import Path

from imgcls.atomic import write_text_atomic
from imgcls.report.tables import METRIC_LABELS

# (section title, [(file-name pattern, caption)]); "{split}" expands to each split in the metrics
FIGURE_SECTIONS = [
    ("Training curves", [("loss.png", "Loss per epoch, train vs val"),
                         ("accuracy.png", "Accuracy per epoch, train vs val")]),
    ("Confusion matrices", [("confusion_{split}.png", "Confusion matrix, {split}, counts"),
                            ("confusion_{split}_normalized.png", "Confusion matrix, {split}, row-normalized")]),
    ("ROC and precision-recall curves", [("roc_{split}.png", "ROC, {split}"),
                                         ("pr_{split}.png", "Precision-recall, {split}")]),
    ("Calibration", [("reliability_{split}.png", "Reliability diagram, {split}")]),
    ("Most confident mistakes", [("mistakes_{split}.png", "Most confident mistakes, {split}")]),
    ("Data", [("samples.png", "Random samples of each class")]),
    ("Inside the model", [("patches.png", "ViT input as a grid of patches"),
                          ("filters.png", "First-layer convolution filters"),
                          ("filter_responses.png", "First-layer filter responses on one image")]),
]
SPLIT_ORDER = ("train", "val", "test", "all")
INTERVAL_NOTE = "[low, high] is the 95% percentile-bootstrap confidence interval (1,000 resamples)."


def template(name: str):
    """A jinja2 template of report/templates, HTML-escaping every value."""
    import jinja2

    environment = jinja2.Environment(loader=jinja2.PackageLoader("imgcls.report", "templates"),
                                     autoescape=jinja2.select_autoescape(default=True), trim_blocks=True,
                                     lstrip_blocks=True)
    return environment.get_template(name)


def image_data_uri(path: Path) -> str:
    """A PNG file as a data: URI, so the page needs no other file."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _is_wide(name: str, num_classes: int) -> bool:
    """Figures drawn across the page: image grids, and confusion matrices past 20 classes."""
    return name in ("samples.png", "patches.png", "filter_responses.png") or name.startswith("mistakes_") \
        or (name.startswith("confusion_") and num_classes > 20)


def _figures(folder: Path, splits: list[str], num_classes: int) -> list[dict]:
    plots = folder / "plots"
    sections, used = [], set()
    for title, patterns in FIGURE_SECTIONS:
        figures = []
        for pattern, caption in patterns:
            for split in splits if "{split}" in pattern else [None]:
                name = pattern.format(split=split)
                if (plots / name).is_file():
                    used.add(name)
                    figures.append({"caption": caption.format(split=split), "name": name,
                                    "src": image_data_uri(plots / name), "wide": _is_wide(name, num_classes)})
        if figures:
            sections.append({"title": title, "figures": figures})
    others = [{"caption": path.stem.replace("_", " "), "name": path.name, "src": image_data_uri(path), "wide": False}
              for path in sorted(plots.glob("*.png")) if path.name not in used]
    if others:
        sections.append({"title": "Other figures", "figures": others})
    return sections


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def metric_rows(metrics: dict, splits: list[str]) -> list[dict]:
    """Rows of (label, [value, interval text] per split) for every scalar metric present."""
    rows = []
    for key, label in METRIC_LABELS.items():
        if not any(key in metrics[split] for split in splits):
            continue
        cells = []
        for split in splits:
            entry = metrics[split].get(key, {})
            interval = entry.get("ci95")
            cells.append({"value": _fmt(entry.get("value")),
                          "interval": f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""})
        rows.append({"label": label, "cells": cells})
    return rows


def _per_class(metrics: dict, splits: list[str]) -> list[dict]:
    tables = []
    for split in sorted(splits, key=lambda s: (s == "train", SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 9)):
        rows = [{"name": name, "precision": _fmt(stats["precision"]), "recall": _fmt(stats["recall"]),
                 "specificity": _fmt(stats["specificity"]), "f1": _fmt(stats["f1"]), "support": stats["support"]}
                for name, stats in metrics[split]["per_class"].items()]
        tables.append({"split": split, "rows": rows})
    return tables


def _class_counts(metrics: dict, splits: list[str]) -> list[dict]:
    names = list(next(iter(metrics.values()))["per_class"])
    return [{"name": name, "counts": [metrics[split]["per_class"][name]["support"] for split in splits]}
            for name in names]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


def _summary_rows(summary: dict, metrics: dict, splits: list[str]) -> list[tuple[str, str]]:
    rows = []
    if "data" in summary:
        rows.append(("data", str(summary["data"])))
    first = metrics[splits[0]]
    rows.append(("classes", f"{len(first['per_class'])}: {', '.join(list(first['per_class'])[:12])}"
                 + (" …" if len(first["per_class"]) > 12 else "")))
    rows.append(("images", ", ".join(f"{split} {metrics[split]['num_samples']:,}" for split in splits)))
    if "positive_class" in first:
        rows.append(("positive class", first["positive_class"]))
    for key, label in (("model", "model"), ("img_size", "input size (px)"), ("in_chans", "input channels")):
        if key in summary:
            rows.append((label, str(summary[key])))
    if "parameters" in summary:
        rows.append(("parameters", f"{summary['parameters']:,} ({summary.get('trainable_parameters', 0):,} trained)"))
    if "epochs_run" in summary:
        best = summary.get("best_epoch")
        stop = ", stopped early" if summary.get("stopped_early") else ""
        rows.append(("epochs", f"{summary['epochs_run']} of {summary.get('epochs', '?')} (best: {best}{stop})"))
    if "training_time_s" in summary:
        rows.append(("training time", _duration(summary["training_time_s"])))
    if "wall_time_s" in summary:
        rows.append(("wall time (start to final metrics)", _duration(summary["wall_time_s"])))
    hardware = summary.get("hardware", {})
    if hardware:
        gpus = ", ".join(hardware.get("gpus", [])) or "none"
        rows.append(("hardware", f"{hardware.get('cpu', '?')}, {hardware.get('cpu_cores', '?')} cores; GPU: {gpus}"))
    if "precision" in summary:
        rows.append(("precision / processes", f"{summary['precision']} / {summary.get('num_processes', 1)}"))
    if "versions" in summary:
        rows.append(("versions", ", ".join(f"{name} {value}" for name, value in summary["versions"].items())))
    for key, label in (("finished", "finished"), ("evaluated_run", "model from run"), ("split", "split")):
        if key in summary:
            rows.append((label, str(summary[key])))
    return rows


def _history(folder: Path) -> list[dict]:
    history_file = folder / "history.csv"
    return list(csv.DictReader(history_file.open())) if history_file.is_file() else []


def _history_table(history: list[dict]) -> dict | None:
    if not history:
        return None
    columns = [name for name in history[0] if history[0][name] != ""]
    rows = []
    for row in history:
        cells = []
        for name in columns:
            value = row.get(name, "")
            try:
                number = float(value)
                cells.append(str(int(number)) if name == "epoch" else f"{number:.2e}" if name == "lr"
                             else f"{number:.1f}" if name.endswith("time_s") else f"{number:.4f}")
            except ValueError:
                cells.append(value)
        rows.append(cells)
    return {"columns": columns, "rows": rows}


def _listed_files(folder: Path) -> list[str]:
    """The run's files a reader may want, without the resume state and temporary files."""
    listed = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and relative.parts[0] not in ("last", "last.old", "report.html") \
                and not path.name.startswith("."):
            listed.append(str(relative))
    return listed


def build_report(folder: Path, title: str | None = None) -> Path:
    """Write folder/report.html from metrics.json, run.json, history.csv, config.yaml and plots/*.png."""
    from imgcls import __version__
    from imgcls.errors import ImgclsError

    folder = Path(folder)
    metrics_file = folder / "metrics.json"
    if not metrics_file.is_file():
        raise ImgclsError(f"{folder} has no metrics.json (the run has not finished); finish it with "
                          f"'imgcls train --resume {folder}' first")
    metrics = json.loads(metrics_file.read_text())
    splits = sorted(metrics, key=lambda s: SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER))
    summary_file = folder / "run.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    config_file = folder / "config.yaml"
    history = _history(folder)
    page = template("report.html.j2").render(
        title=title or folder.name,
        generated=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        version=__version__,
        summary_rows=_summary_rows(summary, metrics, splits),
        splits=splits,
        num_samples={split: metrics[split]["num_samples"] for split in splits},
        metric_rows=metric_rows(metrics, splits),
        interval_note=INTERVAL_NOTE,
        class_counts=_class_counts(metrics, splits),
        per_class=_per_class(metrics, splits),
        figure_sections=_figures(folder, splits, len(metrics[splits[0]]["per_class"])),
        history=_history_table(history),
        config_text=config_file.read_text() if config_file.is_file() else None,
        files=_listed_files(folder),
    )
    path = folder / "report.html"
    write_text_atomic(path, page)
    return path


def rebuild_report(folder: Path) -> Path:
    """`imgcls report RUN`: redraw what the run's files allow, then write report.html. Figures that need the
    images (sample grid, mistakes, filters) are kept as the run wrote them."""
    import json

    from imgcls.errors import ImgclsError
    from imgcls.report.plots import write_run_plots

    folder = Path(folder)
    if not folder.is_dir():
        raise ImgclsError(f"run {folder} does not exist; pass a folder made by 'imgcls train' (e.g. runs/<name>)")
    if not (folder / "metrics.json").is_file():
        hint = f"finish it with 'imgcls train --resume {folder}'" if (folder / "config.yaml").is_file() \
            else "pass a folder made by 'imgcls train'"
        raise ImgclsError(f"{folder} has no metrics.json; {hint}")
    metrics = json.loads((folder / "metrics.json").read_text())
    class_names = list(next(iter(metrics.values()))["per_class"])
    write_run_plots(folder, metrics, class_names)
    title = None
    if folder.parent.name == "eval" and (folder.parent.parent / "metrics.json").is_file():
        title = f"{folder.parent.parent.name}: evaluation {folder.name}"
    return build_report(folder, title)
