"""report.html: one self-contained page per run (or evaluation), built from the files in its folder.

Images are inlined as data: URIs and the page has no scripts, fonts or links to fetch, so it opens offline
and can be mailed as one file.
"""

from __future__ import annotations

import base64
import datetime
from pathlib import Path

import jinja2

from imgcls import __version__
from imgcls.atomic import write_text_atomic
from imgcls.metrics import IMBALANCED, METRIC_LABELS, imbalance_ratio, metric_order
from imgcls.reporting import catalog
from imgcls.reporting.tables import format_value
from imgcls.run_files import RunFolder

SPLIT_ORDER = ("train", "val", "test", "all")
INTERVAL_NOTE = "[low, high] is the 95% percentile-bootstrap confidence interval (1,000 resamples)."


def template(name: str):
    """A jinja2 template of report/templates, HTML-escaping every value."""
    environment = jinja2.Environment(loader=jinja2.PackageLoader("imgcls.reporting", "templates"),
                                     autoescape=jinja2.select_autoescape(default=True), trim_blocks=True,
                                     lstrip_blocks=True)
    return environment.get_template(name)


def image_data_uri(path: Path) -> str:
    """A PNG file as a data: URI, so the page needs no other file."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _figures(folder: RunFolder, splits: list[str], num_classes: int) -> list[dict]:
    notes = {catalog.LOOKED_AT_SECTION: _looked_at_notes(folder.read_looked_at())}
    sections, used = [], set()
    for title, entries in catalog.SECTIONS:
        figures = []
        for name_of, caption in entries:
            for split in splits if callable(name_of) else [""]:
                name = name_of(split) if callable(name_of) else name_of
                if folder.plot(name).is_file():
                    used.add(name)
                    figures.append({"caption": caption.format(split=split), "name": name,
                                    "src": image_data_uri(folder.plot(name)),
                                    "wide": catalog.is_wide(name, num_classes)})
        if figures:
            sections.append({"title": title, "figures": figures, **notes.get(title, {})})
    others = [{"caption": path.stem.replace("_", " "), "name": path.name, "src": image_data_uri(path), "wide": False}
              for path in sorted(folder.plots_dir.glob("*.png")) if path.name not in used]
    if others:
        sections.append({"title": "Other figures", "figures": others})
    return sections


def _looked_at_notes(summary: dict | None) -> dict:
    """What the report says beside the maps: where they come from, their faithfulness and, when they should not
    be read as evidence, a warning saying why."""
    if not summary:
        return {}
    chosen = f" Method {summary['chosen_because']}." if summary.get("chosen_because") else ""
    note = (f"Maps: {summary['source']}.{chosen} Faithfulness (deletion/insertion over {summary['scored_images']} of "
            f"these images): {summary['faithfulness']:.2f}. Greying out the most highlighted pixels first should "
            f"make the predicted class's probability fall at once, and revealing them first should make it rise: "
            f"the score is the area under the second curve minus the area under the first, about 0 for random "
            f"maps and near 1 for maps that point exactly at the evidence.")
    return {"note": note, "warning": summary.get("warning")}


def metric_rows(metrics: dict, splits: list[str]) -> list[dict]:
    """Rows of (label, [value, interval text] per split) for every scalar metric present."""
    rows = []
    for key in metric_order(imbalance_ratio(metrics) >= IMBALANCED):
        label = METRIC_LABELS[key]
        if not any(key in metrics[split] for split in splits):
            continue
        cells = []
        for split in splits:
            entry = metrics[split].get(key, {})
            interval = entry.get("ci95")
            cells.append({"value": format_value(entry.get("value")),
                          "interval": f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""})
        rows.append({"label": label, "cells": cells})
    return rows


def _imbalance_note(metrics: dict) -> str:
    ratio = imbalance_ratio(metrics)
    if ratio < IMBALANCED:
        return ""
    return (f" The data is imbalanced (largest class / smallest: {ratio:.1f}): accuracy mostly measures the largest "
            f"class, so balanced accuracy and the mean sensitivity lead, and each class's sensitivity is below.")


def _per_class(metrics: dict, splits: list[str]) -> list[dict]:
    tables = []
    for split in sorted(splits, key=lambda s: (s == "train", SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 9)):
        rows = [{"name": name, "precision": format_value(stats["precision"]), "recall": format_value(stats["recall"]),
                 "specificity": format_value(stats["specificity"]), "f1": format_value(stats["f1"]),
                 "support": stats["support"]}
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
    rows.append(("images", ", ".join(f"{split} {metrics[split]['num_samples']:,}" + (
        f" (a sample of {metrics[split]['sample_of']:,})" if "sample_of" in metrics[split] else "")
        for split in splits)))
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


def _plan_rows(plan: dict | None) -> list[tuple[str, str]]:
    """What the run decided (plan.json), with the reason where one was recorded."""
    if not plan:
        return []
    notes = plan.get("notes", {})
    rows = []
    for key, value in plan.items():
        if key in ("notes", "class_names"):
            continue
        shown = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value) \
            if isinstance(value, list) else f"{value:.4g}" if isinstance(value, float) else str(value)
        rows.append((key, f"{shown} ({notes[key]})" if key in notes else shown))
    return rows


def _decisions(metrics: dict, decisions: dict, splits: list[str]) -> dict | None:
    """The report's Decisions section: the temperature and what it changed, the operating point on each held-out
    split (Wilson intervals) and the threshold table of the last held-out split."""
    calibration = decisions.get("calibration")
    points = [(split, metrics[split]["operating_point"]) for split in splits if "operating_point" in metrics[split]]
    if not calibration and not points:
        return None
    rows = [{"label": label, "cells": [_fmt(point[key]) for _, point in points]}
            for key, label in (("sensitivity", "sensitivity"), ("specificity", "specificity"),
                               ("ppv", "precision (PPV)"), ("npv", "NPV"), ("f1", "F1"))]
    last = next((split for split in reversed(splits) if "threshold_table" in metrics[split]), None)
    table = [{**row, **{key: format_value(row[key]) for key in ("sensitivity", "specificity", "ppv", "npv", "f1")}}
             for row in metrics[last]["threshold_table"]] if last else []
    return {"calibration": calibration, "point_splits": [split for split, _ in points], "point_rows": rows,
            "point": points[0][1] if points else None, "table_split": last, "table": table}


def _cross_validation(table: dict | None) -> dict | None:
    """The report's per-fold table, its last rows the mean and the standard deviation."""
    if not table:
        return None
    names = table["metrics"]
    rows = [[row["fold"], f"{row['images']:,}", *(format_value(row[name]) for name in names)]
            for row in table["per_fold"]]
    rows.append(["mean", "", *(format_value(table["mean"][name]) for name in names)])
    rows.append(["sd", "", *(format_value(table["sd"][name]) for name in names)])
    return {"folds": table["folds"], "repeats": table["repeats"], "note": table["note"], "rows": rows,
            "labels": [METRIC_LABELS.get(name, name) for name in names]}


def _fmt(entry: dict) -> dict:
    interval = entry.get("ci95")
    return {"value": format_value(entry.get("value")),
            "interval": f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""}


def build_report(folder: RunFolder, title: str | None = None) -> Path:
    """Write the folder's report.html from its metrics, summary, plan, history, config and figures."""
    metrics = folder.read_metrics()
    splits = sorted(metrics, key=lambda s: SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER))
    summary = folder.read_summary()
    page = template("report.html.j2").render(
        title=title or folder.name,
        generated=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        version=__version__,
        summary_rows=_summary_rows(summary, metrics, splits),
        splits=splits,
        num_samples={split: metrics[split]["num_samples"] for split in splits},
        metric_rows=metric_rows(metrics, splits),
        interval_note=INTERVAL_NOTE + _imbalance_note(metrics),
        class_counts=_class_counts(metrics, splits),
        per_class=_per_class(metrics, splits),
        decisions=_decisions(metrics, folder.read_decisions(), splits),
        cross_validation=_cross_validation(folder.read_cross_validation()),
        figure_sections=_figures(folder, splits, len(metrics[splits[0]]["per_class"])),
        history=_history_table(folder.read_history()),
        plan_rows=_plan_rows(folder.read_plan()),
        config_text=folder.config_file.read_text() if folder.config_file.is_file() else None,
        files=folder.listed_files(),
    )
    write_text_atomic(folder.report_file, page)
    return folder.report_file
