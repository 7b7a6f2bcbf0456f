"""Rows T20-T27 of ../shared/reliability.md: divergence, signals, data-loader workers, DDP and reproducibility."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import imgcls
from imgcls.engine import trainer
from imgcls.engine.checkpoint import checkpoint_problem, read_metadata
from imgcls.errors import ImgclsError, Interrupted
from imgcls.metrics.names import is_better

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


def test_t02_t22_sigterm_mid_epoch_saves_that_step_and_the_resumed_run_equals_the_straight_one(fmnist_root, tmp_path,
                                                                                           monkeypatch):
    from imgcls.data.loader import TensorImageDataset

    fetched: list[list[int]] = []  # the training batches' sample indices, in the order they were fetched
    real_fetch = TensorImageDataset.__getitems__
    monkeypatch.setattr(TensorImageDataset, "__getitems__", lambda self, indices: (
        fetched.append(list(indices)) if self.transform is not None else None) or real_fetch(self, indices))
    straight = imgcls.train(**_config(fmnist_root, tmp_path, "straight"))
    straight_batches, fetched[:] = list(fetched), []
    _signal_at(monkeypatch, signal.SIGTERM, epoch=2, step=4)
    with pytest.raises(Interrupted) as stopped:
        imgcls.train(**_config(fmnist_root, tmp_path, "stopped"))
    stopped_batches, fetched[:] = fetched[: STEPS + 4], []  # one more may have been fetched ahead, not trained on
    monkeypatch.setattr(trainer, "stop_requested", lambda accelerator: False)
    assert stopped.value.exit_code == 143 and "epoch 2, step 4" in str(stopped.value)
    last = tmp_path / "stopped" / "last"
    assert checkpoint_problem(last) is None
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["epoch"] == 1 and state["partial"]["steps"] == 4 and state["partial"]["seen"] == 64
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone with the training
    resumed = imgcls.train(resume=tmp_path / "stopped")
    assert stopped_batches + fetched == straight_batches  # the remaining samples: none twice, none skipped
    assert _history(resumed.run_dir) == _history(straight.run_dir)
    assert resumed.metrics["test"] == straight.metrics["test"]


def test_t20_a_nan_loss_stops_at_that_step_and_keeps_the_last_good_weights(fmnist_root, tmp_path, monkeypatch):
    real_forward, calls = torch.nn.CrossEntropyLoss.forward, []

    def nan_at_step_3_of_epoch_2(self, logits, labels):
        calls.append(1)
        loss = real_forward(self, logits, labels)
        return loss * float("nan") if len(calls) == STEPS + 3 else loss

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", nan_at_step_3_of_epoch_2)
    with pytest.raises(ImgclsError, match=r"diverged at epoch 2, step 3 \(the loss is nan\); the learning rate"):
        imgcls.train(**_config(fmnist_root, tmp_path, "nan"))
    run = tmp_path / "nan"
    assert json.loads((run / "last" / "trainer_state.json").read_text())["epoch"] == 1
    assert [row["epoch"] for row in _history(run)] == ["1"]
    weights = load_file(str(run / "best.safetensors"))
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())
    assert read_metadata(run / "best.safetensors")["epoch"] == 1


def test_t20_a_huge_learning_rate_is_caught_at_the_first_non_finite_step(fmnist_root, tmp_path):
    with pytest.raises(ImgclsError, match=r"diverged at epoch 1, step \d+ .*lower --lr"):
        imgcls.train(**{**_config(fmnist_root, tmp_path, "huge"), "lr": 1e6, "epochs": 1})


def test_t20_nan_never_counts_as_the_best_metric():
    assert not is_better("loss", float("nan"), 0.5) and not is_better("accuracy", float("nan"), None)
    assert is_better("loss", 0.4, float("nan")) and is_better("accuracy", 0.1, None)


@pytest.mark.parametrize("failure", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                     RuntimeError("CUDA out of memory.")])
def test_t21_out_of_memory_is_one_line_suggesting_a_smaller_batch(fmnist_root, tmp_path, monkeypatch, failure):
    real_forward = torch.nn.CrossEntropyLoss.forward

    def out_of_memory(self, logits, labels):
        if logits.shape[0] > 8:
            raise failure
        return real_forward(self, logits, labels)

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", out_of_memory)
    with pytest.raises(ImgclsError, match=r"out of memory training multilayer_cnn with batches of 16 at 28 px; "
                                          r"lower --batch-size \(e.g. 8\)"):
        imgcls.train(**_config(fmnist_root, tmp_path, "oom"))


def _worker_fault(monkeypatch, fault) -> None:
    """Make data-loading worker processes (never the main one) fail in `fault`'s way on their first batch."""
    from imgcls.data.loader import TensorImageDataset

    real = TensorImageDataset.__getitems__

    def faulty(self, indices):
        if torch.utils.data.get_worker_info() is not None:
            fault()
        return real(self, indices)

    monkeypatch.setattr(TensorImageDataset, "__getitems__", faulty)


def test_t23_a_worker_that_dies_ends_the_run_with_one_line(fmnist_root, tmp_path, monkeypatch):
    _worker_fault(monkeypatch, lambda: os._exit(3))
    with pytest.raises(ImgclsError, match=r"a data-loading worker process failed \(DataLoader worker \(pid"
                                          r".*--workers 0"):
        imgcls.train(**{**_config(fmnist_root, tmp_path, "dies"), "workers": 2})


@pytest.mark.slow
def test_t23_a_worker_that_hangs_ends_the_run_within_the_timeout(fmnist_root, tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLS_WORKER_TIMEOUT_S", "1")
    _worker_fault(monkeypatch, lambda: time.sleep(120))
    started = time.monotonic()
    with pytest.raises(ImgclsError, match=r"a data-loading worker process failed \(DataLoader timed out after 1"):
        imgcls.train(**{**_config(fmnist_root, tmp_path, "hangs"), "workers": 2})
    assert time.monotonic() - started < 60


def _start_training(fmnist_root, runs, name):
    command = [sys.executable, "-m", "imgcls", "train", "fashion-mnist", "--data-root", str(fmnist_root),
               "--model", "multilayer_cnn", "--max-per-class", "500", "--epochs", "2", "--workers", "0",
               "--runs-dir", str(runs), "--name", name, "--batch-size", "16", "--no-report", "--precision", "fp32"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = runs / name / "last" / "trainer_state.json"
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    return process, state


@pytest.mark.slow
def test_t22_sigint_to_a_real_imgcls_train_saves_the_step_exits_130_and_resumes(fmnist_root, tmp_path):
    process, state = _start_training(fmnist_root, tmp_path, "ctrl-c")
    time.sleep(0.25)  # into epoch 2's steps (an epoch of 5,000 images takes about a second or more)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert re.search(r"stopped by SIGINT at epoch 2, step \d+; the state there is saved in .*imgcls train --resume",
                     stderr), stderr
    assert "Traceback" not in stderr
    saved = json.loads(state.read_text())
    assert saved["epoch"] == 1 and saved["partial"]["steps"] > 0
    resumed = subprocess.run([sys.executable, "-m", "imgcls", "train", "--resume", str(tmp_path / "ctrl-c")],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"after epoch 1 and {saved['partial']['steps']} steps of epoch 2" in resumed.stdout
    assert [row["epoch"] for row in _history(tmp_path / "ctrl-c")] == ["1", "2"]


@pytest.mark.slow
def test_t22_a_second_sigterm_exits_at_once_and_leaves_a_complete_state(fmnist_root, tmp_path):
    process, state = _start_training(fmnist_root, tmp_path, "twice")
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    process.communicate(timeout=60)
    assert process.returncode in (-signal.SIGTERM, 143) and time.monotonic() - started < 5
    run = tmp_path / "twice"
    complete = [folder for folder in (run / "last", run / "last.old") if folder.is_dir()
                and checkpoint_problem(folder) is None]
    assert complete  # whatever the second signal interrupted, one complete state is there to resume from


def _augmented_epochs(workers: int, epochs: int = 2):
    """Per epoch, the training loader's batches as imgcls makes them (pixels as bytes), and the dataset."""
    from imgcls.data.build import ImageSplit
    from imgcls.data.loader import TensorImageDataset, make_loader, order_generator
    from imgcls.data.transforms import train_transform

    generator = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (48, 3, 24, 24), dtype=torch.uint8, generator=generator)
    dataset = TensorImageDataset(ImageSplit(images, torch.arange(48) % 3), (0.5,) * 3, (0.25,) * 3,
                                 train_transform("strong", 24, True), seed=7)
    loader = make_loader(dataset, 8, shuffle=True, workers=workers, seed=7)
    epochs_seen = []
    for epoch in range(epochs):
        order_generator(loader).manual_seed(7 * 100_003 + epoch)  # as the training loop does
        epochs_seen.append([batch.numpy().tobytes() for batch, _ in loader])
    return epochs_seen, dataset


def test_t26_t27_augmentation_is_one_stream_per_batch_whatever_the_workers_and_new_every_epoch(monkeypatch):
    from imgcls.data.loader import TensorImageDataset, batch_seed

    fetched, real = [], TensorImageDataset.__getitems__
    monkeypatch.setattr(TensorImageDataset, "__getitems__",
                        lambda self, indices: fetched.append(list(indices)) or real(self, indices))
    alone, dataset = _augmented_epochs(workers=0)
    monkeypatch.undo()
    with_workers, _ = _augmented_epochs(workers=2)
    assert alone == with_workers  # order and augmentation do not depend on the number of worker processes
    batches = [batch for epoch in alone for batch in epoch]
    assert [real(dataset, indices)[0].numpy().tobytes() for indices in fetched] == batches  # a batch's draws
    assert alone[0] != alone[1] and len(set(batches)) == len(batches)  # new every epoch, no stream twice
    shards = [batch_seed(list(range(rank, 48, 2))[:8], 7) for rank in (0, 1)]  # two processes' first batches
    assert shards[0] != shards[1] and batch_seed(list(range(8)), 7) != batch_seed(list(range(8)), 8)


def test_t27_the_same_seed_gives_the_same_run_and_another_seed_another(fmnist_root, tmp_path):
    runs = [imgcls.train(**{**_config(fmnist_root, tmp_path, name), "epochs": 1, "seed": seed})
            for name, seed in (("a", 1), ("b", 1), ("c", 2))]
    weights = [load_file(str(run.run_dir / "best.safetensors")) for run in runs]
    digests = [{key: tensor.numpy().tobytes() for key, tensor in found.items()} for found in weights]
    assert _history(runs[0].run_dir) == _history(runs[1].run_dir) and digests[0] == digests[1]
    assert _history(runs[0].run_dir) != _history(runs[2].run_dir) and digests[0] != digests[2]


def test_t21_auto_batch_size_halves_until_a_step_fits_and_says_so(fmnist_root, tmp_path, monkeypatch, capsys):
    real_conv = torch.nn.Conv2d.forward

    def small_memory(self, images):  # as Accelerate's tests fake it: a training step above 8 images runs out
        if torch.is_grad_enabled() and images.shape[0] > 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_conv(self, images)

    monkeypatch.setattr(torch.nn.Conv2d, "forward", small_memory)
    run = imgcls.train(**{**_config(fmnist_root, tmp_path, "auto"), "batch_size": 32, "epochs": 1,
                          "auto_batch_size": True})
    plan = json.loads((run.run_dir / "plan.json").read_text())
    assert plan["batch_size"] == 8 and plan["notes"]["batch_size"] == "auto: 32, 16 ran out of memory, 8 fits"
    assert plan["lr"] == 1e-3  # AdamW's rate does not follow the batch; SGD's would (linear scaling)
    assert "--auto-batch-size: batches of 8 (out of memory at 32, 16)" in capsys.readouterr().err
    import yaml

    assert yaml.safe_load((run.run_dir / "config.yaml").read_text())["train"]["batch_size"] == 32  # as asked


def test_t27_deterministic_runs_the_steps_with_deterministic_algorithms_and_restores_them(fmnist_root, tmp_path,
                                                                                          monkeypatch):
    real_forward, modes = torch.nn.CrossEntropyLoss.forward, []

    def spying(self, logits, labels):
        modes.append(torch.are_deterministic_algorithms_enabled())
        return real_forward(self, logits, labels)

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", spying)
    run = imgcls.train(**{**_config(fmnist_root, tmp_path, "exact"), "epochs": 1, "deterministic": True})
    assert modes and all(modes) and not torch.are_deterministic_algorithms_enabled()
    assert json.loads((run.run_dir / "plan.json").read_text())["deterministic"] is True
    refused = RuntimeError("adaptive_avg_pool2d_backward_cuda does not have a deterministic implementation, but you "
                           "set 'torch.use_deterministic_algorithms(True)'. You can turn off determinism ...")
    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", lambda self, logits, labels: (_ for _ in ()).throw(
        refused))
    with pytest.raises(ImgclsError, match="^adaptive_avg_pool2d_backward_cuda does not have a deterministic "
                                          "implementation; train without --deterministic on this device"):
        imgcls.train(**{**_config(fmnist_root, tmp_path, "refused"), "epochs": 1, "deterministic": True})


GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="[GPU] row: needs a CUDA device (none here)")


@GPU
def test_t21_gpu_auto_batch_size_finds_a_batch_that_fits_a_real_allocation(class_folders, tmp_path):
    total = torch.cuda.get_device_properties(0).total_memory
    asked = 1 << 20  # a million 224-px images: far past any GPU's memory
    run = imgcls.train(str(class_folders), model="resnet18", img_size=224, epochs=1, batch_size=asked,
                       auto_batch_size=True, workers=0, runs_dir=str(tmp_path), name="gpu", report=False)
    plan = json.loads((run.run_dir / "plan.json").read_text())
    assert plan["batch_size"] < asked and "ran out of memory" in plan["notes"]["batch_size"], total


@GPU
def test_t01_t27_gpu_deterministic_reruns_are_bit_exact_or_name_the_op_that_cannot_be(class_folders, tmp_path):
    """Either promise of the row: two --deterministic runs give the same weights bit for bit, or an operation
    without a deterministic CUDA version (e.g. adaptive average pooling's backward) is one clear line."""
    try:
        runs = [imgcls.train(str(class_folders), model="resnet18", img_size=64, epochs=2, batch_size=8, workers=0,
                             deterministic=True, runs_dir=str(tmp_path), name=name, report=False, precision="fp32")
                for name in ("a", "b")]
    except ImgclsError as error:
        assert "does not have a deterministic implementation; train without --deterministic" in str(error)
        return
    weights = [load_file(str(run.run_dir / "best.safetensors")) for run in runs]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
