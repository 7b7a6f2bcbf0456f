"""What went wrong reading a dataset, said once on the console (training, evaluation and `data show` alike)."""

from __future__ import annotations

from pathlib import Path

from imgcls.console import warn
from imgcls.data.build import DataBundle
from imgcls.data.health import IMBALANCED
from imgcls.data.screening import LEFT_OUT_CLASS

NAMED_SKIPPED = 3  # unreadable files named on the console; the rest are counted


def warn_about_data(bundle: DataBundle, listed_in: Path | None = None) -> None:
    """The data's warnings, then its unreadable files: a few named, all counted (and where they are listed)."""
    for message in bundle.warnings:
        warn(message)
    for message in imbalance_warning(bundle):
        warn(message)
    unreadable = sorted(item for item in bundle.skipped if item[1] != LEFT_OUT_CLASS)  # files, not class folders
    if not unreadable:
        return
    named = unreadable[:NAMED_SKIPPED]
    shown = "; ".join(f"{Path(path).name} ({reason})" for path, reason in named)
    more = f" and {len(unreadable) - len(named)} more" if len(unreadable) > len(named) else ""
    where = f"; listed in {listed_in}" if listed_in is not None else ""
    warn(f"skipped {len(unreadable)} unreadable image(s): {shown}{more}{where}")


def imbalance_warning(bundle: DataBundle) -> list[str]:
    """One line when the training split's largest class has IMBALANCED times the images of its smallest."""
    if "train" not in bundle.splits:
        return []
    counts = bundle.class_counts("train")
    if min(counts) and max(counts) < IMBALANCED * min(counts):
        return []
    ratio = (f"largest class {max(counts) / min(counts):.1f}x the smallest" if min(counts)
             else "a class has no training image")
    return [f"the training data is imbalanced ({ratio}): the report leads with balanced accuracy; "
            f"--class-weights auto or --sampler balanced help the rare classes"]
