"""Rows T20-T27 of ../shared/reliability.md: divergence, signals, data-loader workers, DDP and reproducibility."""

from __future__ import annotations

import csv
import json
import os
import signal

import pytest

import imgcls
from imgcls.engine import trainer
from imgcls.engine.checkpoint import checkpoint_problem
from imgcls.errors import Interrupted

TIMING = {"epoch_time_s", "train_time_s", "data_time_s", "step_time_s", "train_images_per_s"}


def _history(run):
    return [{key: value for key, value in row.items() if key not in TIMING}
            for row in csv.DictReader((run / "history.csv").open())]


def _config(fmnist_root, runs_dir, name, **extra):
    return dict(source="fashion-mnist", data_root=str(fmnist_root), model="multilayer_cnn", max_per_class=40,
                epochs=2, batch_size=16, workers=0, runs_dir=str(runs_dir), name=name, augment="light",
                precision="fp32", report=False, **extra)


STEPS = 25  # 400 training images in batches of 16


def _signal_at(monkeypatch, signum: int, epoch: int, step: int) -> None:
    """Send a real `signum` to this process after training step `step` (1-based) of `epoch` (1-based)."""
    real, calls = trainer.stop_requested, []

    def checked(accelerator):
        calls.append(1)  # asked at each epoch's start and after every step but its last: STEPS times an epoch
        if len(calls) == (epoch - 1) * STEPS + 1 + step:
            os.kill(os.getpid(), signum)
        return real(accelerator)

    monkeypatch.setattr(trainer, "stop_requested", checked)


def test_t22_sigterm_mid_epoch_saves_that_step_and_the_resumed_run_equals_the_straight_one(fmnist_root, tmp_path,
                                                                                           monkeypatch):
    straight = imgcls.train(**_config(fmnist_root, tmp_path, "straight"))
    _signal_at(monkeypatch, signal.SIGTERM, epoch=2, step=4)
    with pytest.raises(Interrupted) as stopped:
        imgcls.train(**_config(fmnist_root, tmp_path, "stopped"))
    monkeypatch.undo()
    assert stopped.value.exit_code == 143 and "epoch 2, step 4" in str(stopped.value)
    last = tmp_path / "stopped" / "last"
    assert checkpoint_problem(last) is None
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["epoch"] == 1 and state["partial"]["steps"] == 4 and state["partial"]["seen"] == 64
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone with the training
    resumed = imgcls.train(resume=tmp_path / "stopped")
    assert _history(resumed.run_dir) == _history(straight.run_dir)
    assert resumed.metrics["test"] == straight.metrics["test"]
