"""`imgcls train DATA --folds K`: on the X-ray stand-in (real Fashion-MNIST Shirt vs T-shirt/top, 800 each), every
image held out exactly once, per-fold and pooled metrics, a report for the whole, a SIGKILL in fold 3 resumed
without redoing folds 1-2, and the out-of-fold predictions read by `imgcls data check --run`."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import cli, run_cli, user_error

FOLD_ARGS = ("--model", "fastcnn", "--epochs", "3", "--folds", "5", "--workers", "0", "--positive-class", "shirt")


def _killed_in_fold_3(shirt_folder: Path, runs: Path) -> Path:
    """Start a 5-fold run in a real process and SIGKILL it once fold 3 has saved its first epoch."""
    command = [sys.executable, "-m", "imgcls", "train", str(shirt_folder), *FOLD_ARGS, "--runs-dir", str(runs),
               "--name", "cv"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, COLUMNS="160"))
    state = runs / "cv" / "fold-3" / "last" / "trainer_state.json"
    deadline = time.monotonic() + 600
    while not state.is_file():
        assert process.poll() is None, f"the run ended before fold 3: {process.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "fold 3 did not finish an epoch within 10 minutes"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return runs / "cv"


@pytest.mark.slow
def test_five_folds_end_to_end_with_a_kill_in_fold_3(shirt_folder, tmp_path):
    run = _killed_in_fold_3(shirt_folder, tmp_path / "runs")
    assert not (run / "fold-3" / "metrics.json").exists() and not (run / "metrics.json").exists()
    finished = {fold: (run / fold / "best.safetensors").stat().st_mtime_ns for fold in ("fold-1", "fold-2")}

    resumed = run_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "fold-1 of 5: finished earlier, kept" in resumed.stdout
    assert "fold-2 of 5: finished earlier, kept" in resumed.stdout
    assert "fold-3 of 5" in resumed.stdout and "(resumed)" in resumed.stdout
    assert {fold: (run / fold / "best.safetensors").stat().st_mtime_ns for fold in finished} == finished

    folds = json.loads((run / "folds.json").read_text())
    with (run / "out_of_fold.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1600 and len({row["path"] for row in rows}) == 1600  # every image exactly once
    fold_of = dict(zip(folds["files"], folds["fold"][0]))
    assert all(int(row["fold"]) == fold_of[row["path"]] + 1 for row in rows)
    for fold in range(5):  # each fold's run tested on its fold and trained on none of it
        config = run / f"fold-{fold + 1}" / "metrics.json"
        tested = json.loads(config.read_text())["test"]["num_samples"]
        assert tested == sum(1 for value in folds["fold"][0] if value == fold)

    table = json.loads((run / "cross_validation.json").read_text())
    assert [row["fold"] for row in table["per_fold"]] == [f"fold-{k}" for k in range(1, 6)]
    accuracies = [row["accuracy"] for row in table["per_fold"]]
    assert table["mean"]["accuracy"] == pytest.approx(sum(accuracies) / 5) and table["sd"]["accuracy"] > 0
    pooled = json.loads((run / "metrics.json").read_text())["out_of_fold"]
    low, high = pooled["accuracy"]["ci95"]
    assert pooled["num_samples"] == 1600 and low < pooled["accuracy"]["value"] < high and pooled["accuracy"]["value"] > 0.7
    # the first of equal probabilities wins, as in torch's argmax (bf16 logits can tie exactly)
    correct = sum(("shirt", "tshirt")[int(np.argmax([float(row["p_shirt"]), float(row["p_tshirt"])]))] == row["label"]
                  for row in rows)
    assert pooled["accuracy"]["value"] == pytest.approx(correct / 1600)
    report = (run / "report.html").read_text()
    assert "Cross-validation" in report and "fold-5" in report and "out_of_fold" in report

    image = next((shirt_folder / "shirt").iterdir())
    assert "is a cross-validation (one run per fold), not one model" in user_error(cli("predict", str(run),
                                                                                      str(image)))

    checked = cli("data", "check", str(shirt_folder), "--run", str(run), "--out", str(tmp_path / "check"))
    assert checked.returncode == 0, checked.stderr[-2000:]
    found = json.loads((tmp_path / "check" / "data_check.json").read_text())
    assert found["label_issues_checked"] == 1600  # the out-of-fold predictions: every image held out


@pytest.mark.parametrize("flags, message", [
    (("--folds", "1"), "--folds must be 2 or more"),
    (("--repeats", "2"), "--repeats must be at least 1 and needs --folds"),
    (("--final",), "--final trains on all the data after cross-validation; it needs --folds K"),
    (("--folds", "3", "--test-split", "0.2"), "--test-split has no place with --folds"),
    (("--ema", "1.5"), "--ema is the average's decay"),
])
def test_cross_validation_and_ema_flags_that_cannot_work_are_one_line(class_folders, tmp_path, flags, message):
    result = cli("train", str(class_folders), "--model", "fastcnn", "--epochs", "1", "--runs-dir", str(tmp_path),
                 *flags)
    assert message in user_error(result)


def test_a_threshold_on_many_classes_is_one_line_saying_it_is_out_of_scope(class_folders, tmp_path):
    result = cli("train", str(class_folders), "--model", "fastcnn", "--epochs", "1", "--runs-dir", str(tmp_path),
                 "--threshold", "sensitivity=0.9")
    message = user_error(result)
    assert "is for two classes; this data has 3: add --threshold argmax" in message
    assert "per-class thresholds are out of scope" in message
