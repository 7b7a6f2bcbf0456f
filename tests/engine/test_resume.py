"""Killing a run and resuming it continues exactly where the uninterrupted run would have been."""

import csv
import json
import signal
import subprocess
import sys
import time

import pytest

import imgcls
from tests.helpers import interrupt_in_epoch


def _history(run):
    timing = {"epoch_time_s", "train_time_s", "data_time_s", "step_time_s", "train_images_per_s"}
    rows = csv.DictReader((run / "history.csv").open())
    return [{k: v if k == "kept_weights" else float(v) for k, v in row.items() if k not in timing} for row in rows]


def _config(fmnist_root, runs_dir, name, epochs, precision):
    return dict(source="fashion-mnist", data_root=str(fmnist_root), model="multilayer_cnn", max_per_class=60,
                epochs=epochs, batch_size=32, workers=0, runs_dir=str(runs_dir), name=name, augment="light",
                precision=precision, report=False)


# Bit-for-bit comparisons name their precision: each is exact within itself, and both must be.
@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=pytest.mark.slow)])
def test_resume_reproduces_the_uninterrupted_run(fmnist_root, tmp_path, monkeypatch, precision):
    straight = imgcls.train(**_config(fmnist_root, tmp_path, "straight", 3, precision))

    interrupt_in_epoch(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        imgcls.train(**_config(fmnist_root, tmp_path, "interrupted", 3, precision))
    monkeypatch.undo()
    assert len(_history(tmp_path / "interrupted")) == 2
    resumed = imgcls.train(resume=tmp_path / "interrupted")
    assert _history(resumed.run_dir) == _history(straight.run_dir)
    assert resumed.metrics["test"]["accuracy"] == straight.metrics["test"]["accuracy"]
    import json

    assert json.loads((resumed.run_dir / "run.json").read_text())["precision"] == precision


@pytest.mark.slow  # three trainings: the quick subset keeps its 3-minute budget
def test_the_weights_average_resumes_exactly_and_the_better_weights_are_kept(fmnist_root, tmp_path, monkeypatch):
    """--ema: the average is saved with last/ and restored, so an interrupted run ends as the straight one; each
    epoch the better of the raw and the averaged weights on val is the candidate, and history.csv says which."""
    settings = dict(ema=0.99, lr=3e-3)
    straight = imgcls.train(**_config(fmnist_root, tmp_path, "straight", 3, "fp32"), **settings)
    interrupt_in_epoch(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        imgcls.train(**_config(fmnist_root, tmp_path, "interrupted", 3, "fp32"), **settings)
    monkeypatch.undo()
    resumed = imgcls.train(resume=tmp_path / "interrupted")
    assert _history(resumed.run_dir) == _history(straight.run_dir)
    rows = list(csv.DictReader((straight.run_dir / "history.csv").open()))
    assert all(row["kept_weights"] in ("raw", "ema") for row in rows)
    for row in rows:  # the candidate is the better of the two on val accuracy
        better = "ema" if float(row["val_accuracy_ema"]) > float(row["val_accuracy"]) else "raw"
        assert row["kept_weights"] == better
    assert resumed.plan.ema == 0.99 and "warm-up" in resumed.plan.notes["ema"]


@pytest.mark.slow
def test_killed_process_resumes_from_the_last_saved_epoch(fmnist_root, tmp_path):
    command = [sys.executable, "-m", "imgcls", "train", "fashion-mnist", "--data-root", str(fmnist_root),
               "--model", "multilayer_cnn", "--max-per-class", "300", "--epochs", "5", "--workers", "0",
               "--runs-dir", str(tmp_path), "--name", "killed", "--batch-size", "32", "--no-report"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state_file = tmp_path / "killed" / "last" / "trainer_state.json"
    deadline = time.time() + 300
    while not state_file.exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)  # now mid-way through the second epoch
    process.send_signal(signal.SIGKILL)
    process.wait()
    # last/ is the truth: a kill between history.csv's write and last/'s swap leaves history a row ahead
    kept = state_file if state_file.exists() else tmp_path / "killed" / "last.old" / "trainer_state.json"
    saved = json.loads(kept.read_text())["epoch"]
    assert 1 <= saved < 5
    result = subprocess.run([sys.executable, "-m", "imgcls", "train", "--resume", str(tmp_path / "killed")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"resuming {tmp_path / 'killed'} after epoch {saved}" in result.stdout
    epochs = [int(row["epoch"]) for row in _history(tmp_path / "killed")]
    assert epochs == list(range(1, 6))
