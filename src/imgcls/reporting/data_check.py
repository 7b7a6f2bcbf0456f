"""The data check's outputs: data_check.json (schema in docs/data-health.md), a self-contained data_check.html
with picture grids of the top pairs, and the terminal summary."""

from __future__ import annotations

import base64
import datetime
import io
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from rich.markup import escape
from rich.table import Table

from imgcls import __version__
from imgcls.atomic import write_json_atomic, write_text_atomic
from imgcls.console import get_console
from imgcls.data.health import DataHealth, LabelIssue, Pair
from imgcls.reporting.html import template

SCHEMA_VERSION = 1
JSON_NAME, HTML_NAME = "data_check.json", "data_check.html"
PAIRS_SHOWN = 48  # picture rows in the HTML
LISTED = 200  # files listed per finding in the HTML (all of them are in the JSON)
PICTURE_SIDE = 112

Picture = Callable[[int], Image.Image]  # image index -> the image as a user would see it


def _pair_record(health: DataHealth, pair: Pair) -> dict:
    images = health.images
    return {"first": images.names[pair.first], "second": images.names[pair.second],
            "first_split": images.splits[pair.first], "second_split": images.splits[pair.second],
            "first_label": images.class_names[int(images.labels[pair.first])],
            "second_label": images.class_names[int(images.labels[pair.second])],
            "kind": pair.kind, "similarity": round(pair.similarity, 6), "mirrored": pair.mirrored,
            "leak": pair.crosses(images), "conflict": pair.conflicts(images)}


def health_record(health: DataHealth, source: str) -> dict:
    """Everything the check found, as JSON (the schema is documented in docs/data-health.md)."""
    names = health.images.names

    def listed(indices: list[int]) -> list[str]:
        return [names[index] for index in indices]

    return {
        "schema": SCHEMA_VERSION, "imgcls": __version__, "source": source,
        "classes": health.images.class_names, "counts": health.counts,
        "imbalance_ratio": None if math.isinf(health.imbalance_ratio) else round(health.imbalance_ratio, 4),
        "imbalanced": health.imbalanced, "missing_classes": health.missing,
        "images": len(names), "modes": health.modes, "notes": health.notes,
        "unreadable": {names[index]: reason for index, reason in health.unreadable.items()},
        "tiny": listed(health.tiny), "extreme_aspect": listed(health.extreme_aspect),
        "exif_rotated": listed(health.exif_rotated), "near_constant": listed(health.flat),
        "near_duplicate_threshold": health.threshold, "near_duplicate_search": health.search,
        "groups_across_splits": health.groups_across,
        "label_issues_checked": health.label_checked,
        "label_issues": [_issue_record(health, issue) for issue in health.label_issues],
        "exact_duplicate_sets": [listed(group) for group in health.exact_groups],
        "pairs": [_pair_record(health, pair) for pair in health.pairs],
        "summary": summary_counts(health),
    }


def _issue_record(health: DataHealth, issue: LabelIssue) -> dict:
    images = health.images
    return {"file": images.names[issue.index], "split": images.splits[issue.index],
            "label": images.class_names[int(images.labels[issue.index])],
            "suggested": images.class_names[issue.suggested],
            "self_confidence": round(issue.self_confidence, 6), "run": issue.run}


def summary_counts(health: DataHealth) -> dict[str, int]:
    """How many of each finding (the numbers the terminal and the page lead with)."""
    exact = [pair for pair in health.pairs if pair.kind == "exact"]
    near = [pair for pair in health.pairs if pair.kind == "near"]
    return {"unreadable": len(health.unreadable), "tiny": len(health.tiny),
            "extreme_aspect": len(health.extreme_aspect), "exif_rotated": len(health.exif_rotated),
            "near_constant": len(health.flat), "exact_pairs": len(exact), "near_pairs": len(near),
            "leaks": len(health.leaks()), "conflicts": len(health.conflicts()),
            "label_issues": len(health.label_issues)}


def _data_uri(image: Image.Image) -> str:
    image = image.copy()
    image.thumbnail((PICTURE_SIDE, PICTURE_SIDE))
    if image.width < PICTURE_SIDE // 2:  # tiny images (28 px) are enlarged so a person can see them
        scale = PICTURE_SIDE // max(image.width, image.height)
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _shown_pairs(health: DataHealth) -> list[Pair]:
    """Leaks first, then conflicts, then the rest; the most similar first within each."""
    images = health.images
    order = sorted(health.pairs, key=lambda p: (not p.crosses(images), not p.conflicts(images), -p.similarity))
    return order[:PAIRS_SHOWN]


def write_data_check(folder: Path, health: DataHealth, source: str, picture: Picture) -> dict:
    """data_check.json and data_check.html in `folder` (each written atomically); returns the JSON record."""
    folder.mkdir(parents=True, exist_ok=True)
    record = health_record(health, source)
    write_json_atomic(folder / JSON_NAME, record)
    rows = [dict(_pair_record(health, pair), first_src=_data_uri(picture(pair.first)),
                 second_src=_data_uri(picture(pair.second))) for pair in _shown_pairs(health)]
    issues = [dict(_issue_record(health, issue), src=_data_uri(picture(issue.index)))
              for issue in health.label_issues[:PAIRS_SHOWN]]
    counts_rows = [[name] + [health.counts[split][c] for split in health.counts]
                   for c, name in enumerate(health.images.class_names)]
    page = template("data_check.html.j2").render(
        version=__version__, generated=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), source=source,
        record=record, findings=finding_lines(record), splits=list(health.counts), counts_rows=counts_rows,
        pairs=rows, listed=LISTED,
        pairs_total=len(health.pairs), shown=len(rows), issues=issues)
    write_text_atomic(folder / HTML_NAME, page)
    return record


def print_data_check(record: dict, folder: Path) -> None:
    """The findings in a few lines: counts per class and split, then one line per kind of problem."""
    console = get_console()
    counts = Table(title=escape(f"data check of {record['source']}: {record['images']:,} images"),
                   title_justify="left")
    counts.add_column("class")
    for split in record["counts"]:
        counts.add_column(split, justify="right")
    for c, name in enumerate(record["classes"]):
        counts.add_row(escape(name), *(f"{record['counts'][split][c]:,}" for split in record["counts"]))
    console.print(counts)
    for line in finding_lines(record):
        console.print(escape(line))
    console.print(escape(f"details: {folder / HTML_NAME} and {folder / JSON_NAME}"))


def finding_lines(record: dict) -> list[str]:
    """One line per kind of problem found (nothing when the data is clean)."""
    found, lines = record["summary"], []
    ratio = record["imbalance_ratio"]
    if record["imbalanced"]:
        lines.append(f"imbalanced: the largest class has {'all' if ratio is None else f'{ratio:.1f}x'} the "
                     f"images of the smallest; consider --class-weights auto or --sampler balanced")
    for split, classes in record["missing_classes"].items():
        lines.append(f"split {split} has no images of {', '.join(classes)}")
    labels = {"unreadable": "unreadable files", "tiny": "tiny images", "extreme_aspect": "extreme aspect ratios",
              "exif_rotated": "images turned by their EXIF orientation (imgcls applies it)",
              "near_constant": "near-constant images (never paired)",
              "exact_pairs": "exact-duplicate pairs", "near_pairs":
              f"near-duplicate pairs (aligned similarity >= {record['near_duplicate_threshold']})",
              "leaks": "pairs across splits (leakage)", "conflicts": "pairs with different labels (conflicts)",
              "label_issues": f"likely label errors among {record['label_issues_checked']:,} held-out images"}
    lines += [f"{count:,} {labels[key]}" for key, count in found.items() if count]
    lines += record["notes"] + record["groups_across_splits"]
    return lines or ["no problems found"]


def picture_from_array(array: np.ndarray) -> Image.Image:
    """A (C, H, W) uint8 array as a PIL image."""
    return Image.fromarray(array[0]) if array.shape[0] == 1 else Image.fromarray(array.transpose(1, 2, 0))
