"""Metrics as rich tables in the terminal."""

from __future__ import annotations

import csv
import json
import sys

from rich.markup import escape
from rich.table import Table

from imgcls.console import get_console
from imgcls.metrics import IMBALANCED, METRIC_LABELS, imbalance_ratio, metric_order


def format_value(value) -> str:
    """A metric value as the tables show it: four decimals, n/a when undefined."""
    return "n/a" if value is None else f"{value:.4f}"


def _fmt_with_interval(entry: dict) -> str:
    """'0.9123 [0.9010, 0.9231]' when a 95% interval is known."""
    text = format_value(entry.get("value"))
    interval = entry.get("ci95")
    return f"{text} [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else text


def print_metrics(metrics_by_split: dict[str, dict], title: str, per_class_limit: int = 30) -> None:
    """One table of scalar metrics with a column per split, then the per-class table of the last split."""
    console = get_console()
    splits = list(metrics_by_split)
    positive = next((m["positive_class"] for m in metrics_by_split.values() if "positive_class" in m), None)
    if positive is not None:
        title += f" — positive class: {positive}"

    summary = Table(title=escape(title), title_justify="left",
                    caption=escape("[low, high] = 95% bootstrap interval"), caption_justify="left")
    summary.add_column("metric")
    for split in splits:
        split_metrics = metrics_by_split[split]
        of = f" of {split_metrics['sample_of']}" if "sample_of" in split_metrics else ""
        summary.add_column(f"{split} ({split_metrics['num_samples']}{of})", justify="right")
    imbalanced = imbalance_ratio(metrics_by_split) >= IMBALANCED
    for key in metric_order(imbalanced):
        label = METRIC_LABELS[key]
        if any(key in metrics for metrics in metrics_by_split.values()):
            summary.add_row(label, *(escape(_fmt_with_interval(metrics_by_split[s].get(key, {}))) for s in splits))
    console.print(summary)
    _print_operating_points(metrics_by_split)
    last = splits[-1]
    per_class = Table(title=f"per class ({last})", title_justify="left")
    for column in ("class", "precision", "sensitivity", "specificity", "F1", "support"):
        per_class.add_column(column, justify="left" if column == "class" else "right")
    rows = list(metrics_by_split[last]["per_class"].items())
    for name, stats in rows[:per_class_limit]:
        per_class.add_row(escape(name), format_value(stats["precision"]), format_value(stats["recall"]), format_value(stats["specificity"]),
                          format_value(stats["f1"]), str(stats["support"]))
    console.print(per_class)
    if len(rows) > per_class_limit:
        console.print(f"... {len(rows) - per_class_limit} more classes in metrics.json")


def _print_operating_points(metrics_by_split: dict[str, dict]) -> None:
    """Two classes with a chosen threshold: what it gives on each held-out split, with Wilson intervals."""
    points = {split: metrics["operating_point"] for split, metrics in metrics_by_split.items()
              if "operating_point" in metrics}
    if not points:
        return
    first = next(iter(points.values()))
    where = f"at threshold {first['threshold']:.4f}" if first["threshold"] is not None else "at each fold's threshold"
    table = Table(title=escape(f"{where} ({first['rule']}, chosen on "
                               f"{first['chosen_on']})"), title_justify="left",
                  caption=escape("[low, high] = 95% Wilson interval"), caption_justify="left")
    table.add_column("metric")
    for split in points:
        table.add_column(split, justify="right")
    for key, label in (("sensitivity", "sensitivity"), ("specificity", "specificity"), ("ppv", "precision (PPV)"),
                       ("npv", "NPV"), ("f1", "F1")):
        table.add_row(label, *(escape(_fmt_with_interval(point[key])) for point in points.values()))
    get_console().print(table)


def print_cross_validation(table: dict) -> None:
    """cross_validation.json: each fold's test metrics, then their mean and standard deviation."""
    names = table["metrics"]
    shown = Table(title=f"{table['folds']}-fold cross-validation" + (f", {table['repeats']} repeats"
                                                                       if table["repeats"] > 1 else "")
                  + ": each fold's test metrics", title_justify="left")
    shown.add_column("fold")
    shown.add_column("images", justify="right")
    for name in names:
        shown.add_column(METRIC_LABELS.get(name, name), justify="right")
    for row in table["per_fold"]:
        shown.add_row(escape(row["fold"]), str(row["images"]), *(format_value(row[name]) for name in names))
    shown.add_row("mean ± sd", "", *(f"{format_value(table['mean'][name])} ± {format_value(table['sd'][name])}"
                                     for name in names))
    get_console().print(shown)


def print_predictions(results: list[dict], output_format: str) -> None:
    """Write `results` of imgcls.predict in `output_format` (table | json | csv) to stdout."""
    if output_format == "json":
        print(json.dumps(results, indent=2))
        return
    if output_format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["path", "rank", "class", "probability", "error", "decision"])
        for result in results:
            if "error" in result:
                writer.writerow([result["path"], "", "", "", result["error"], ""])
            for rank, guess in enumerate(result.get("predictions", []), start=1):
                writer.writerow([result["path"], rank, guess["class"], f"{guess['probability']:.6f}", "",
                                 result.get("decision", "")])
        return

    rules = {result["rule"] for result in results if "rule" in result}
    table = Table(caption=f"decision: {rules.pop()}" if rules else None)
    for column in ("image", "prediction", "probability", "runners-up"):
        table.add_column(column, justify="right" if column == "probability" else "left")
    for result in results:
        if "error" in result:
            table.add_row(escape(result["path"]), "[red]unreadable[/red]", "", escape(result["error"]))
            continue
        best, *rest = result["predictions"]
        others = ", ".join(f"{guess['class']} {guess['probability']:.3f}" for guess in rest)
        decision = result.get("decision", best["class"])
        shown = escape(decision) if decision == best["class"] else f"[bold]{escape(decision)}[/bold]"
        table.add_row(escape(result["path"]), shown, f"{best['probability']:.4f}", escape(others))
    get_console().print(table)
