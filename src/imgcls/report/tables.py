"""Metrics as rich tables in the terminal."""

from __future__ import annotations

from imgcls.console import get_console

METRIC_LABELS = {
    "accuracy": "accuracy", "error_rate": "error rate", "top5_accuracy": "top-5 accuracy",
    "balanced_accuracy": "balanced accuracy", "loss": "loss", "sensitivity": "sensitivity",
    "specificity": "specificity", "precision": "precision", "f1": "F1", "precision_macro": "precision (macro)",
    "recall_macro": "sensitivity / recall (macro)",
    "specificity_macro": "specificity (macro)", "f1_macro": "F1 (macro)",
    "precision_weighted": "precision (weighted)", "recall_weighted": "recall (weighted)",
    "specificity_weighted": "specificity (weighted)", "f1_weighted": "F1 (weighted)", "mcc": "MCC",
    "cohen_kappa": "Cohen's kappa", "roc_auc": "ROC-AUC", "pr_auc": "PR-AUC (average precision)",
    "ece": "calibration error (ECE)",
}


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _fmt_with_interval(entry: dict) -> str:
    """'0.9123 [0.9010, 0.9231]' when a 95% interval is known."""
    text = _fmt(entry.get("value"))
    interval = entry.get("ci95")
    return f"{text} [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else text


def print_metrics(metrics_by_split: dict[str, dict], title: str, per_class_limit: int = 30) -> None:
    """One table of scalar metrics with a column per split, then the per-class table of the last split."""
    from rich.table import Table

    console = get_console()
    splits = list(metrics_by_split)
    positive = next((m["positive_class"] for m in metrics_by_split.values() if "positive_class" in m), None)
    if positive is not None:
        title += f" — positive class: {positive}"
    from rich.markup import escape

    summary = Table(title=escape(title), title_justify="left",
                    caption=escape("[low, high] = 95% bootstrap interval"), caption_justify="left")
    summary.add_column("metric")
    for split in splits:
        summary.add_column(f"{split} ({metrics_by_split[split]['num_samples']})", justify="right")
    for key, label in METRIC_LABELS.items():
        if any(key in metrics for metrics in metrics_by_split.values()):
            summary.add_row(label, *(escape(_fmt_with_interval(metrics_by_split[s].get(key, {}))) for s in splits))
    console.print(summary)
    last = splits[-1]
    per_class = Table(title=f"per class ({last})", title_justify="left")
    for column in ("class", "precision", "sensitivity", "specificity", "F1", "support"):
        per_class.add_column(column, justify="left" if column == "class" else "right")
    rows = list(metrics_by_split[last]["per_class"].items())
    for name, stats in rows[:per_class_limit]:
        per_class.add_row(escape(name), _fmt(stats["precision"]), _fmt(stats["recall"]), _fmt(stats["specificity"]),
                          _fmt(stats["f1"]), str(stats["support"]))
    console.print(per_class)
    if len(rows) > per_class_limit:
        console.print(f"... {len(rows) - per_class_limit} more classes in metrics.json")
