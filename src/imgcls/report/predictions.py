"""Prediction results as a table, JSON or CSV on stdout."""

from __future__ import annotations

import csv
import json
import sys


def print_predictions(results: list[dict], output_format: str) -> None:
    """Write `results` of imgcls.predict in `output_format` (table | json | csv)."""
    if output_format == "json":
        print(json.dumps(results, indent=2))
        return
    if output_format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["path", "rank", "class", "probability", "error"])
        for result in results:
            if "error" in result:
                writer.writerow([result["path"], "", "", "", result["error"]])
            for rank, guess in enumerate(result.get("predictions", []), start=1):
                writer.writerow([result["path"], rank, guess["class"], f"{guess['probability']:.6f}", ""])
        return
    from rich.table import Table

    from imgcls.console import get_console

    table = Table()
    for column in ("image", "prediction", "probability", "runners-up"):
        table.add_column(column, justify="right" if column == "probability" else "left")
    for result in results:
        if "error" in result:
            table.add_row(result["path"], "[red]unreadable[/red]", "", result["error"])
            continue
        best, *rest = result["predictions"]
        others = ", ".join(f"{guess['class']} {guess['probability']:.3f}" for guess in rest)
        table.add_row(result["path"], best["class"], f"{best['probability']:.4f}", others)
    get_console().print(table)
