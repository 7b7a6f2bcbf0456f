"""Rows T1-T8 of ../shared/reliability.md: checkpoints and resuming. Killing a run and resuming it continues
exactly where the uninterrupted run would have been; no crash, full disk or damaged file loses the last good state."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import imgcls
from tests.helpers import interrupt_in_epoch


def _history(run):
    timing = {"epoch_time_s", "train_time_s", "data_time_s", "step_time_s", "train_images_per_s"}
    rows = csv.DictReader((run / "history.csv").open())
    return [{k: v if k == "kept_weights" else float(v) for k, v in row.items() if k not in timing} for row in rows]


def _config(fmnist_root, runs_dir, name, epochs, precision, workers=0):
    return dict(source="fashion-mnist", data_root=str(fmnist_root), model="multilayer_cnn", max_per_class=60,
                epochs=epochs, batch_size=32, workers=workers, runs_dir=str(runs_dir), name=name, augment="light",
                precision=precision, report=False)


# Bit-for-bit comparisons name their precision: each is exact within itself, and both must be.
@pytest.mark.parametrize("precision, workers", [("fp32", 0), pytest.param("bf16", 0, marks=pytest.mark.slow),
                                                pytest.param("fp32", 2, marks=pytest.mark.slow)])
def test_t01_resume_reproduces_the_uninterrupted_run_bit_for_bit(fmnist_root, tmp_path, monkeypatch, precision,
                                                                 workers):
    straight = imgcls.train(**_config(fmnist_root, tmp_path, "straight", 3, precision, workers))

    interrupt_in_epoch(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        imgcls.train(**_config(fmnist_root, tmp_path, "interrupted", 3, precision, workers))
    monkeypatch.undo()
    assert len(_history(tmp_path / "interrupted")) == 2
    resumed = imgcls.train(resume=tmp_path / "interrupted")
    assert _history(resumed.run_dir) == _history(straight.run_dir)
    assert resumed.metrics["test"]["accuracy"] == straight.metrics["test"]["accuracy"]
    assert json.loads((resumed.run_dir / "run.json").read_text())["precision"] == precision
    for name in ("best.safetensors", "last/model.safetensors"):  # weights, bit for bit
        assert _tensors(resumed.run_dir / name) == _tensors(straight.run_dir / name)
    for name in ("optimizer.bin", "scheduler.bin"):  # the optimizer's moments and step, the schedule's position
        assert _pickled(resumed.run_dir / "last" / name) == _pickled(straight.run_dir / "last" / name)


def _tensors(path):
    return {key: value.numpy().tobytes() for key, value in load_file(str(path)).items()}


def _pickled(path):
    """A saved state with every tensor as bytes, comparable with ==."""
    def plain(value):
        if isinstance(value, torch.Tensor):
            return value.numpy().tobytes()
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        return value
    return plain(torch.load(str(path), weights_only=True))


@pytest.mark.slow  # three trainings: the quick subset keeps its 3-minute budget
def test_t01_the_weights_average_resumes_exactly_and_the_better_weights_are_kept(fmnist_root, tmp_path, monkeypatch):
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
def test_t04_killed_process_resumes_from_the_last_saved_epoch(fmnist_root, tmp_path):
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


# --- the saved state itself: a small model's last/, saved and damaged in every way the rows name ---

def _saving(tmp_path, width: int = 256):
    """An Accelerator with a model, optimizer and schedule prepared (one step taken), and a run folder."""
    from accelerate import Accelerator

    from imgcls.run_files import RunFolder

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(width, width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    model(torch.randn(2, width)).sum().backward()
    optimizer.step()
    scheduler.step()
    run = RunFolder(tmp_path / "run")
    run.path.mkdir(parents=True, exist_ok=True)
    return accelerator, run


def _save(accelerator, run, epoch: int) -> None:
    from imgcls.engine.checkpoint import LoopState, save_training_state

    save_training_state(accelerator, run, LoopState(epoch=epoch, history=[{"epoch": e} for e in range(1, epoch + 1)]))


def _load(accelerator, run) -> int:
    from imgcls.engine.checkpoint import load_training_state

    return load_training_state(accelerator, run).epoch


def test_t03_resume_refuses_changed_data_and_names_what_changed(tmp_path, class_folders):
    config = dict(model="fastcnn", img_size=32, epochs=2, batch_size=8, workers=0, runs_dir=str(tmp_path),
                  report=False, precision="fp32")
    interrupt_in_epoch_at = pytest.MonkeyPatch()
    interrupt_in_epoch(interrupt_in_epoch_at, 2)
    with pytest.raises(KeyboardInterrupt):
        imgcls.train(str(class_folders), name="changing", **config)
    interrupt_in_epoch_at.undo()
    run = tmp_path / "changing"
    first = sorted((class_folders / "cat").iterdir())[0]
    moved = class_folders / "coffee" / f"moved_{first.name}"
    first.rename(moved)  # the same number of images, one in another class
    with pytest.raises(imgcls.ImgclsError, match=r"changed since the run started \(split \w+ holds other files"):
        imgcls.train(resume=run)
    moved.rename(first)
    (class_folders / "bird").mkdir()
    for source in sorted((class_folders / "cat").iterdir())[:8]:
        (class_folders / "bird" / source.name).write_bytes(source.read_bytes())
    with pytest.raises(imgcls.ImgclsError, match="the classes are bird, cat, coffee, rocket; they were cat, coffee, rocket"):
        imgcls.train(resume=run)
    assert json.loads((run / "last" / "trainer_state.json").read_text())["epoch"] == 1  # untouched


def test_t04_a_save_killed_at_any_moment_leaves_a_complete_state(tmp_path):
    """kill -9 a real (forked) process while it saves over and over; after every kill the newest complete state
    loads, and no partial folder is ever taken for one."""
    import multiprocessing
    import random

    accelerator, run = _saving(tmp_path, width=1024)  # 4 MB of weights, 8 MB of optimizer moments
    _save(accelerator, run, 1)
    context, rng, killed_mid_save = multiprocessing.get_context("fork"), random.Random(0), 0
    for attempt in range(12):
        child = context.Process(target=_save_forever, args=(accelerator, run, 10 * (attempt + 1)))
        child.start()
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        killed_mid_save += run.last_staging.exists() or run.last_retired.exists()
        epoch = _load(accelerator, run)
        assert epoch == 1 or epoch >= 10  # the first state, or a complete one a child saved
        assert {p.name for p in run.path.iterdir()} <= {"last", "last.old", "last.saving"}
    assert killed_mid_save >= 3  # the kills did land inside saves
    _save(accelerator, run, 999)  # the next save clears what the kills left
    assert sorted(p.name for p in run.path.iterdir()) == ["last"] and _load(accelerator, run) == 999


def _save_forever(accelerator, run, first_epoch: int) -> None:
    torch.set_num_threads(1)
    epoch = first_epoch
    while True:
        _save(accelerator, run, epoch)
        epoch += 1


def _mount_tmpfs(folder, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def test_t05_a_full_disk_names_the_path_and_keeps_the_previous_state(tmp_path):
    """A real tmpfs with room for one saved state but not two (the new one is staged beside the old)."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "2500k"):
        pytest.skip("this machine does not let the tests mount a tmpfs; the injected ENOSPC test still runs")
    try:
        accelerator, run = _saving(disk, width=384)  # 0.6 MB of weights, 1.2 MB of moments: one fits, two do not
        _save(accelerator, run, 1)
        with pytest.raises(imgcls.ImgclsError, match=r"no space left on the device writing .*last\.saving"):
            _save(accelerator, run, 2)
        assert not run.last_staging.exists()  # the partial state is removed
        assert _load(accelerator, run) == 1
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_t05_injected_enospc_and_a_tiny_tmpdir(tmp_path, monkeypatch):
    import errno
    import tempfile

    accelerator, run = _saving(tmp_path)
    _save(accelerator, run, 1)
    real = accelerator.save_state

    def full(folder, **kwargs):
        real(folder, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(accelerator, "save_state", full)
    with pytest.raises(imgcls.ImgclsError, match="no space left on the device writing"):
        _save(accelerator, run, 2)
    monkeypatch.undo()
    assert not run.last_staging.exists() and _load(accelerator, run) == 1
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-tmp"))  # staging never uses $TMPDIR
    _save(accelerator, run, 3)
    assert _load(accelerator, run) == 3


@pytest.mark.parametrize("damage", ["truncated", "zero-byte", "random bytes", "missing"])
def test_t06_t07_a_damaged_last_state_falls_back_to_the_previous_complete_one(tmp_path, damage):
    accelerator, run = _saving(tmp_path)
    _save(accelerator, run, 2)
    shutil.copytree(run.last_dir, tmp_path / "kept")
    _save(accelerator, run, 3)
    shutil.copytree(tmp_path / "kept", run.last_retired)  # as a crash before the old state's removal leaves it
    victim = run.last_dir / ("optimizer.bin" if damage == "missing" else "model.safetensors")
    data = victim.read_bytes()
    if damage == "missing":
        victim.unlink()
    else:
        victim.write_bytes({"truncated": data[: len(data) // 2], "zero-byte": b"",
                            "random bytes": os.urandom(len(data))}[damage])
    assert _load(accelerator, run) == 2  # last.old, said on the console
    shutil.rmtree(run.last_retired)
    with pytest.raises(imgcls.ImgclsError, match=r"checkpoint is (corrupt|incomplete): .*last"):
        _load(accelerator, run)


def test_t07_a_state_folder_without_its_completion_marker_is_never_loaded(tmp_path):
    accelerator, run = _saving(tmp_path)
    accelerator.save_state(str(run.last_dir), safe_serialization=True)  # weights and all, but no marker
    with pytest.raises(imgcls.ImgclsError, match=r"checkpoint is incomplete: .*no trainer_state.json"):
        _load(accelerator, run)


def test_t08_a_crash_between_writing_the_new_state_and_removing_the_old_keeps_both_complete(tmp_path, monkeypatch):
    from imgcls.engine import checkpoint

    accelerator, run = _saving(tmp_path)
    _save(accelerator, run, 1)
    real_rmtree = shutil.rmtree

    def crash_on_the_old(path, *args, **kwargs):
        if Path(path).name == "last.old":
            raise KeyboardInterrupt  # as if killed right there
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.shutil, "rmtree", crash_on_the_old)
    with pytest.raises(KeyboardInterrupt):
        _save(accelerator, run, 2)
    monkeypatch.undo()
    assert sorted(p.name for p in run.path.iterdir()) == ["last", "last.old"]  # at most K + 1 = 2
    assert _load(accelerator, run) == 2
    real_rename, calls = Path.rename, []

    def crash_after_first_rename(self, target):
        calls.append(target)
        result = real_rename(self, target)
        if len(calls) == 1:
            raise KeyboardInterrupt  # last/ moved away, the new one not yet in place
        return result

    monkeypatch.setattr(Path, "rename", crash_after_first_rename)
    with pytest.raises(KeyboardInterrupt):
        _save(accelerator, run, 3)
    monkeypatch.undo()
    assert not run.last_dir.exists() and _load(accelerator, run) == 2  # the retired complete state
    _save(accelerator, run, 4)
    assert sorted(p.name for p in run.path.iterdir()) == ["last"] and _load(accelerator, run) == 4


def test_t08_best_weights_record_their_epoch(fmnist_root, tmp_path):
    from imgcls.engine.checkpoint import read_metadata

    run = imgcls.train(**_config(fmnist_root, tmp_path, "best", 3, "fp32"))
    best_epoch = json.loads((run.run_dir / "last" / "trainer_state.json").read_text())["best_epoch"]
    assert read_metadata(run.run_dir / "best.safetensors")["epoch"] == best_epoch == run.best_epoch
