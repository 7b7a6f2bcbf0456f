"""The run folder: the only module that spells its file names, and every read and write of its small files.

```
RUN/  config.yaml plan.json classes.json history.csv metrics.json run.json best.safetensors head.safetensors
      decisions.json looked_at.json
      cross-validation: config.yaml folds.json out_of_fold.csv cross_validation.json metrics.json run.json
      predictions/out_of_fold.npz plots/ report.html fold-K/ (or repeat-R-fold-K/, each a run) final/ (a run)
      last/ (trainer_state.json + Accelerate's files)  predictions/<split>.npz, <split>_mistakes.csv
      plots/*.png  report.html  skipped.txt  deduped.txt  eval/<data>-<split>/ (the same layout for one evaluation)
```
Run folders of imgcls 0.1 (no plan.json, run.json without a schema number) are read too.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import yaml

from imgcls.atomic import write_json_atomic, write_text_atomic
from imgcls.errors import ImgclsError

CONFIG = "config.yaml"
PLAN = "plan.json"
CLASSES = "classes.json"
DATA_FINGERPRINT = "data_fingerprint.json"  # per split: image count and a digest of files and labels
HISTORY = "history.csv"
METRICS = "metrics.json"
SUMMARY = "run.json"
WEIGHTS = "best.safetensors"
HEAD_WEIGHTS = "head.safetensors"
LAST = "last"
TRAINER_STATE = "trainer_state.json"
MANIFEST = "manifest.json"  # last/: every file's size and sha256, written last (the completion marker)
REPORT = "report.html"
SKIPPED = "skipped.txt"
DEDUPED = "deduped.txt"
FOLDS = "folds.json"  # cross-validation: every image's fold in each repeat
OUT_OF_FOLD = "out_of_fold.csv"  # cross-validation: every image's held-out prediction, once per repeat
CROSS_VALIDATION = "cross_validation.json"  # cross-validation: the per-fold table, mean and sd
FINAL = "final"  # cross-validation: the model trained on all the data (--final)
DECISIONS = "decisions.json"  # the fitted temperature and the chosen threshold, with what they were fitted on
LOOKED_AT = "looked_at.json"  # the report's maps: their layer and grid, faithfulness score and warning
PLOTS = "plots"
PREDICTIONS = "predictions"
EVALUATIONS = "eval"
EXPLANATIONS = "explain"
EXPORTS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}  # `imgcls export` without --out
SUMMARY_SCHEMA = 2  # run.json: 1 = imgcls 0.1 (no "schema" key), 2 = "schema" and "kind" added


class RunFolder:
    """One run (or one evaluation of a run, under RUN/eval/<name>): its paths and its files."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    # --- paths ---
    def file(self, name: str) -> Path:
        return self.path / name

    config_file = property(lambda self: self.path / CONFIG)
    plan_file = property(lambda self: self.path / PLAN)
    history_file = property(lambda self: self.path / HISTORY)
    metrics_file = property(lambda self: self.path / METRICS)
    summary_file = property(lambda self: self.path / SUMMARY)
    weights_file = property(lambda self: self.path / WEIGHTS)
    head_weights_file = property(lambda self: self.path / HEAD_WEIGHTS)
    last_dir = property(lambda self: self.path / LAST)
    last_staging = property(lambda self: self.path / f"{LAST}.saving")
    last_retired = property(lambda self: self.path / f"{LAST}.old")
    report_file = property(lambda self: self.path / REPORT)
    plots_dir = property(lambda self: self.path / PLOTS)
    predictions_dir = property(lambda self: self.path / PREDICTIONS)

    def plot(self, name: str) -> Path:
        return self.plots_dir / name

    def predictions_file(self, split: str) -> Path:
        return self.predictions_dir / f"{split}.npz"

    def mistakes_file(self, split: str) -> Path:
        return self.predictions_dir / f"{split}_mistakes.csv"

    def export_file(self, export_format: str) -> Path:
        """Where `imgcls export --format FORMAT` writes by default."""
        return self.path / EXPORTS[export_format]

    def explanations_dir(self, method: str) -> Path:
        """Where `imgcls explain RUN ...` writes its figures without --out: RUN/explain/<method>."""
        return self.path / EXPLANATIONS / method

    def evaluation(self, name: str) -> "RunFolder":
        """The folder of one `imgcls eval` of this run: RUN/eval/<name>."""
        return RunFolder(self.path / EVALUATIONS / name)

    @property
    def evaluated_run(self) -> "RunFolder | None":
        """For an evaluation folder, the run it evaluated."""
        parent = self.path.parent
        if parent.name == EVALUATIONS and (parent.parent / METRICS).is_file():
            return RunFolder(parent.parent)
        return None

    # --- what it holds ---
    def is_run(self) -> bool:
        return self.config_file.is_file() or self.weights_file.is_file()

    def has_resume_state(self) -> bool:
        return self.last_dir.is_dir() or self.last_retired.is_dir()

    def require_finished(self) -> None:
        """A one-line error unless the folder holds the metrics of a finished run or evaluation."""
        if self.metrics_file.is_file():
            return
        if not self.path.exists():
            raise ImgclsError(f"run {self.path} does not exist; pass a folder made by 'imgcls train' "
                              f"(e.g. runs/<name>)")
        hint = f"finish it with 'imgcls train --resume {self.path}'" if self.config_file.is_file() \
            else "pass a folder made by 'imgcls train'"
        raise ImgclsError(f"{self.path} has no {METRICS}: it is not a finished imgcls run; {hint}")

    def listed_files(self) -> list[str]:
        """The files a reader may want (the report's file list), without resume state and temporary files."""
        hidden = {LAST, f"{LAST}.old", f"{LAST}.saving", REPORT, EXPLANATIONS}
        return [str(path.relative_to(self.path)) for path in sorted(self.path.rglob("*"))
                if path.is_file() and path.relative_to(self.path).parts[0] not in hidden
                and not path.name.startswith(".")]

    # --- small files ---
    def write_config(self, values: dict) -> None:
        write_text_atomic(self.config_file, yaml.safe_dump(values, sort_keys=False))

    def read_config(self) -> dict | None:
        """config.yaml as a dict (None when the folder has none)."""
        if not self.config_file.is_file():
            return None
        return yaml.safe_load(self.config_file.read_text()) or {}

    def write_plan(self, values: dict) -> None:
        write_json_atomic(self.plan_file, values)

    def read_plan(self) -> dict | None:
        """plan.json as a dict; None for runs of imgcls 0.1, which had no plan."""
        return _read_json(self.plan_file)

    def write_classes(self, class_names: list[str]) -> None:
        write_json_atomic(self.path / CLASSES, list(class_names))

    def read_classes(self) -> list[str] | None:
        return _read_json(self.path / CLASSES)

    def write_data_fingerprint(self, fingerprints: dict) -> None:
        write_json_atomic(self.path / DATA_FINGERPRINT, fingerprints)

    def read_data_fingerprint(self) -> dict | None:
        """None for a run of imgcls 0.2, which did not write one."""
        return _read_json(self.path / DATA_FINGERPRINT)

    def write_history(self, rows: list[dict]) -> None:
        """history.csv: one row per epoch, columns in first-seen order."""
        columns: list[str] = []
        for row in rows:
            columns.extend(key for key in row if key not in columns)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.history_file, buffer.getvalue())

    def read_history(self) -> list[dict[str, str]]:
        if not self.history_file.is_file():
            return []
        with self.history_file.open(newline="") as handle:
            return list(csv.DictReader(handle))

    def write_metrics(self, metrics: dict) -> None:
        write_json_atomic(self.metrics_file, metrics)

    def read_metrics(self) -> dict:
        self.require_finished()
        return json.loads(self.metrics_file.read_text())

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.summary_file, {"schema": SUMMARY_SCHEMA, **summary})

    def read_summary(self) -> dict[str, Any]:
        """run.json in the current schema (older files upgraded on reading); {} when there is none."""
        summary = _read_json(self.summary_file) or {}
        if summary and "schema" not in summary:  # imgcls 0.1: a training run, or an evaluation if it names one
            summary = {"schema": SUMMARY_SCHEMA,
                       "kind": "evaluation" if "evaluated_run" in summary else "train", **summary}
        return summary

    def write_skipped(self, skipped: list[tuple[str, str]]) -> None:
        write_text_atomic(self.path / SKIPPED, "".join(f"{path}\t{reason}\n" for path, reason in sorted(skipped)))

    @property
    def skipped_file(self) -> Path:
        return self.path / SKIPPED

    def fold(self, repeat: int, fold: int, repeats: int) -> "RunFolder":
        """The run of one fold of a cross-validation (1-based numbers in the name)."""
        name = f"fold-{fold + 1}" if repeats == 1 else f"repeat-{repeat + 1}-fold-{fold + 1}"
        return RunFolder(self.path / name)

    @property
    def final(self) -> "RunFolder":
        return RunFolder(self.path / FINAL)

    def is_cross_validation(self) -> bool:
        return (self.path / FOLDS).is_file()

    def write_folds(self, values: dict) -> None:
        write_json_atomic(self.path / FOLDS, values)

    def read_folds(self) -> dict | None:
        return _read_json(self.path / FOLDS)

    def write_cross_validation(self, values: dict) -> None:
        write_json_atomic(self.path / CROSS_VALIDATION, values)

    def read_cross_validation(self) -> dict | None:
        return _read_json(self.path / CROSS_VALIDATION)

    def write_out_of_fold(self, header: list[str], rows: list[list]) -> None:
        """out_of_fold.csv: one row per image and repeat."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        write_text_atomic(self.path / OUT_OF_FOLD, buffer.getvalue())

    def write_decisions(self, values: dict) -> None:
        write_json_atomic(self.path / DECISIONS, values)

    def read_decisions(self) -> dict:
        """decisions.json ({} for runs without calibration or a threshold, and for older runs)."""
        return _read_json(self.path / DECISIONS) or {}

    def write_looked_at(self, values: dict) -> None:
        write_json_atomic(self.path / LOOKED_AT, values)

    def read_looked_at(self) -> dict | None:
        return _read_json(self.path / LOOKED_AT)

    def write_deduped(self, dropped: list[tuple[str, str]]) -> None:
        """The val/test files --dedupe left out, each with the file of an earlier split it copies."""
        write_text_atomic(self.path / DEDUPED, "".join(f"{path}\t{twin}\n" for path, twin in sorted(dropped)))


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def default_run_name(source: str, suffix: str) -> str:
    """`<dataset>-<suffix>` (model name, or split for evaluations), made safe for a folder name."""
    dataset = Path(source.rstrip("/\\")).name or "data"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{dataset}-{suffix}")


def create_run_folder(runs_dir: Path, name: str | None, default_name: str) -> RunFolder:
    """Make a new, empty run folder; never reuses an existing one.

    An explicit --name that exists is an error (the user asked for that folder); the default name gets
    the first free suffix -2, -3, ... as in Ultralytics.
    """
    runs_dir = Path(runs_dir).expanduser()
    runs_dir.mkdir(parents=True, exist_ok=True)
    if name is not None:
        path = runs_dir / name
        try:
            path.mkdir()
        except FileExistsError:
            raise ImgclsError(f"run folder {path} already exists; choose another --name, or continue it "
                              f"with --resume {path}") from None
        return RunFolder(path)
    for index in range(1, 10_000):
        path = runs_dir / (default_name if index == 1 else f"{default_name}-{index}")
        try:
            path.mkdir()
            return RunFolder(path)
        except FileExistsError:
            continue
    raise ImgclsError(f"{runs_dir} holds 10,000 runs named {default_name}; pass --name")


def locate_weights(run: str | Path) -> tuple[Path, RunFolder | None]:
    """The weights file of a run folder (or `run` itself when it is a .safetensors file) and its run folder,
    when it is in one."""
    given = Path(run).expanduser()
    if given.is_file():
        if given.suffix != ".safetensors":
            raise ImgclsError(f"{given} is not a checkpoint; pass a run folder or its {WEIGHTS}")
        folder = RunFolder(given.parent)
        return given, folder if folder.config_file.is_file() else None
    folder = RunFolder(given)
    if not given.exists():
        raise ImgclsError(f"run {given} does not exist; pass a folder made by 'imgcls train' (e.g. runs/<name>)")
    if not folder.weights_file.is_file():
        if folder.is_cross_validation():
            final = "its final model: " + str(folder.final.path) if folder.final.weights_file.is_file() else \
                "train its final model with 'imgcls train DATA --folds K --final', or use one fold (RUN/fold-1)"
            raise ImgclsError(f"{given} is a cross-validation (one run per fold), not one model; use {final}")
        if folder.config_file.is_file():
            raise ImgclsError(f"run {given} has no {WEIGHTS} yet (training stopped before the first epoch "
                              f"ended); continue it with 'imgcls train --resume {given}'")
        raise ImgclsError(f"{given} is not an imgcls run folder (no {WEIGHTS}); pass a folder made by "
                          f"'imgcls train' (e.g. runs/<name>)")
    return folder.weights_file, folder
