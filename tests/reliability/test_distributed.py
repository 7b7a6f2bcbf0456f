"""Multi-process runs on the existing engine: `torchrun --nproc_per_node 2 -m imgcls ...` on CPU (gloo); rows
T24-T26 of ../shared/reliability.md.

Tests that need to look inside the processes (weights on each rank, a failure on one rank, an interruption)
put a `sitecustomize.py` on the processes' PYTHONPATH: Python runs it at start-up in every rank, and it
wraps one engine function. The product has no test hooks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import imgcls
from imgcls.run_files import RunFolder
from tests.helpers import interrupt_in_epoch, make_class_folders

pytestmark = pytest.mark.slow
TORCHRUN = shutil.which("torchrun")
HOOKS = '''
import os

hook = os.environ.get("IMGCLS_TEST_HOOK", "")
if hook:
    import imgcls.engine.trainer as trainer

if hook == "weights":  # record a digest of every rank's weights at the end of every epoch
    save_state = trainer.save_training_state

    def recording(accelerator, run, state):
        import hashlib
        model = accelerator.unwrap_model(accelerator._models[0])
        digest = hashlib.sha256(b"".join(t.detach().cpu().contiguous().numpy().tobytes()
                                         for t in model.state_dict().values())).hexdigest()
        folder = os.environ["IMGCLS_TEST_OUT"]
        with open(os.path.join(folder, f"weights-rank{os.environ['RANK']}-epoch{state.epoch}.txt"), "w") as f:
            f.write(digest)
        return save_state(accelerator, run, state)

    trainer.save_training_state = recording

if hook == "fail-rank-1":  # one process finds a problem the others do not
    train_epoch = trainer.train_one_epoch

    def failing(*args, **kwargs):
        if os.environ.get("RANK") == "1":
            from imgcls.errors import ImgclsError
            raise ImgclsError("injected failure in one process")
        return train_epoch(*args, **kwargs)

    trainer.train_one_epoch = failing

if hook == "interrupt-epoch-2":  # every process is stopped during its second epoch (Ctrl-C)
    train_epoch, calls = trainer.train_one_epoch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return train_epoch(*args, **kwargs)

    trainer.train_one_epoch = interrupted

if hook == "kill-rank-1-in-epoch-2":  # one process dies (kill -9) in the middle of its second epoch
    train_epoch, calls = trainer.train_one_epoch, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2 and os.environ.get("RANK") == "1":
            os.kill(os.getpid(), 9)
        return train_epoch(*args, **kwargs)

    trainer.train_one_epoch = dying

if hook == "kill-rank-1-in-save-2":  # one process dies (kill -9) while the second epoch's state is being saved
    save_state, saves = trainer.save_training_state, []

    def dying_in_save(accelerator, run, state):
        saves.append(1)
        if len(saves) == 2 and os.environ.get("RANK") == "1":
            accelerator.save_state(str(run.last_staging), safe_serialization=True)  # half of the save done
            os.kill(os.getpid(), 9)
        return save_state(accelerator, run, state)

    trainer.save_training_state = dying_in_save
'''


def torchrun(*args: str, tmp_path: Path, hook: str = "", processes: int = 2, timeout: int = 300):
    """`torchrun --standalone --nproc_per_node N -m imgcls ARGS`, with an optional hook in every process."""
    if TORCHRUN is None:
        pytest.skip("torchrun is not on PATH")
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(HOOKS)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hooks), *sys.path]), IMGCLS_TEST_HOOK=hook,
               IMGCLS_TEST_OUT=str(tmp_path), OMP_NUM_THREADS="1")
    return subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node", str(processes), "-m", "imgcls", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory):
    """A small trained run (1 process) on three classes of real photos, and its data folder."""
    root = tmp_path_factory.mktemp("distributed")
    data = make_class_folders(root / "photos", per_class=12, size=40)
    outcome = imgcls.train(str(data), model="multilayer_cnn", img_size=28, epochs=1, workers=0, batch_size=8,
                           runs_dir=str(root / "runs"), name="base", precision="fp32", report=False)
    return outcome.run_dir, data


def _val_folder(source: Path, root: Path, count: int) -> Path:
    """train/ (every photo) and val/ with `count` of them, classes unevenly filled: sizes that leave a ragged
    last batch on every process."""
    folder = root / f"val{count}"
    files = sorted(p for p in source.rglob("*") if p.is_file())
    for path in files:
        (folder / "train" / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / "train" / path.parent.name / path.name)
    for path in files[::3][:count]:
        (folder / "val" / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / "val" / path.parent.name / path.name)
    return folder


# on 2 processes, 5 images in batches of 2: 3 each (one of them padding), the last batch ragged; 11: 6 each, the
# padding in a full batch
@pytest.mark.parametrize("count, batch", [(5, 2), (7, 3), (11, 2)])
def test_t24_two_process_eval_counts_every_image_once_and_matches_one_process(photo_run, tmp_path, count, batch):
    run, photos = photo_run
    data = _val_folder(photos, tmp_path, count)
    alone = imgcls.evaluate(run, str(data), split="val", batch_size=batch, precision="fp32")
    folder = RunFolder(alone["written_to"])
    alone_predictions = np.load(folder.predictions_file("val"))
    alone_probs, alone_paths = alone_predictions["probs"].copy(), alone_predictions["paths"].tolist()
    shutil.rmtree(folder.path)
    result = torchrun("eval", str(run), str(data), "--split", "val", "--batch-size", str(batch), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("metrics, predictions, plots and report.html written") == 1  # one process prints
    together = folder.read_metrics()["val"]
    assert together["num_samples"] == alone["num_samples"] == count  # no padding counted
    assert together["confusion_matrix"] == alone["confusion_matrix"]
    for name in ("accuracy", "loss", "mcc", "roc_auc", "f1_macro"):
        assert together[name]["value"] == pytest.approx(alone[name]["value"], abs=1e-6), name
    assert together["accuracy"]["ci95"] == pytest.approx(alone["accuracy"]["ci95"], abs=1e-6)
    gathered = np.load(folder.predictions_file("val"))
    assert gathered["paths"].tolist() == alone_paths  # the same images, in the same order, once each
    np.testing.assert_allclose(gathered["probs"], alone_probs, atol=1e-6)


def test_t26_two_process_training_keeps_the_ranks_identical_and_writes_one_run(photo_run, tmp_path):
    _, photos = photo_run
    result = torchrun("train", str(photos), "--model", "multilayer_cnn", "--img-size", "28", "--epochs", "2",
                      "--batch-size", "8", "--workers", "0", "--precision", "fp32", "--runs-dir",
                      str(tmp_path / "runs"), "--name", "ddp", "--cache", "ram", "--cache-dir", str(tmp_path / "cache"),
                      tmp_path=tmp_path, hook="weights")
    assert result.returncode == 0, result.stderr[-3000:]
    # the decoded images are made once (by the main process) and mapped by both, not held twice in RAM
    assert (result.stdout + result.stderr).count("decoding 36 images once") == 1
    assert len(list((tmp_path / "cache" / "decoded").glob("*.u8"))) == 1
    for epoch in (1, 2):
        digests = {(tmp_path / f"weights-rank{rank}-epoch{epoch}.txt").read_text() for rank in (0, 1)}
        assert len(digests) == 1, f"the two processes' weights differ after epoch {epoch}"
    assert result.stdout.count("run folder:") == 1 and "error" not in result.stderr.lower()
    assert [path.name for path in (tmp_path / "runs").iterdir()] == ["ddp"]  # one run folder
    run = RunFolder(tmp_path / "runs" / "ddp")
    assert run.report_file.is_file()
    assert (run.path / "model.onnx").is_file()  # exported by a plain child process, without torchrun's variables
    plan = run.read_plan()
    assert plan["world_size"] == 2 and plan["batch_size"] == 8 and plan["global_batch_size"] == 16
    summary = run.read_summary()
    assert summary["num_processes"] == 2 and summary["global_batch_size"] == 16
    assert summary["image_cache"] == "disk, shared by 2 processes"
    recorded = run.read_metrics()["val"]
    evaluated = imgcls.evaluate(run.path, split="val", precision="fp32")  # the saved best weights, one process
    assert evaluated["num_samples"] == recorded["num_samples"]
    assert evaluated["accuracy"]["value"] == pytest.approx(recorded["accuracy"]["value"], abs=1e-6)


def test_t25_a_failure_in_one_process_ends_the_job_with_its_message(photo_run, tmp_path):
    _, photos = photo_run
    started = time.monotonic()
    result = torchrun("train", str(photos), "--model", "multilayer_cnn", "--img-size", "28", "--epochs", "2",
                      "--workers", "0", "--runs-dir", str(tmp_path / "runs"), "--name", "failing",
                      tmp_path=tmp_path, hook="fail-rank-1", timeout=240)
    assert result.returncode != 0
    assert "imgcls train: error (process 1): injected failure in one process" in result.stderr
    assert time.monotonic() - started < 120  # the other process was ended, not left waiting for the timeout


@pytest.mark.parametrize("hook", ["kill-rank-1-in-epoch-2", "kill-rank-1-in-save-2"])
def test_t25_a_process_killed_mid_epoch_or_mid_save_ends_the_job_and_leaves_epoch_1_complete(photo_run, tmp_path,
                                                                                              hook):
    from imgcls.engine.checkpoint import checkpoint_problem

    _, photos = photo_run
    started = time.monotonic()
    result = torchrun("train", str(photos), "--model", "multilayer_cnn", "--img-size", "28", "--epochs", "2",
                      "--batch-size", "4", "--workers", "0", "--runs-dir", str(tmp_path / "runs"), "--name", "killed",
                      tmp_path=tmp_path, hook=hook, timeout=240)
    assert result.returncode != 0
    assert time.monotonic() - started < 120  # the survivor was ended, not left waiting in a collective
    run = RunFolder(tmp_path / "runs" / "killed")
    complete = [folder for folder in (run.last_dir, run.last_retired) if folder.is_dir()
                and checkpoint_problem(folder) is None]
    assert complete and all(json.loads((folder / "trainer_state.json").read_text())["epoch"] >= 1
                            for folder in complete)
    epoch = json.loads((complete[0] / "trainer_state.json").read_text())["epoch"]
    assert epoch == 1  # epoch 2's state never became last/: the survivor did not promote a partial save
    resumed = imgcls.train(resume=run.path)  # and the job goes on from there, on one process
    assert _history_epochs(run.path) == ["1", "2"] and resumed.metrics["val"]["num_samples"] > 0


def _history_epochs(run: Path) -> list[str]:
    return [row["epoch"] for row in RunFolder(run).read_history()]


def test_a_two_process_run_resumes_in_one_process(photo_run, tmp_path):
    _, photos = photo_run
    result = torchrun("train", str(photos), "--model", "multilayer_cnn", "--img-size", "28", "--epochs", "2",
                      "--batch-size", "8", "--workers", "0", "--runs-dir", str(tmp_path / "runs"), "--name", "two",
                      tmp_path=tmp_path, hook="interrupt-epoch-2")
    assert result.returncode != 0 and "interrupted" in result.stderr
    run = tmp_path / "runs" / "two"
    assert _history_epochs(run) == ["1"]
    resumed = imgcls.train(resume=run)
    assert _history_epochs(run) == ["1", "2"] and resumed.metrics["val"]["num_samples"] > 0
    plan = RunFolder(run).read_plan()
    assert (plan["world_size"], plan["batch_size"], plan["global_batch_size"]) == (1, 16, 16)
    assert "resumed on 1 process(es) after 2" in plan["notes"]["world_size"]


def test_a_one_process_run_resumes_on_two_processes(photo_run, tmp_path, monkeypatch):
    _, photos = photo_run
    interrupt_in_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        imgcls.train(str(photos), model="multilayer_cnn", img_size=28, epochs=2, batch_size=16, workers=0,
                     runs_dir=str(tmp_path / "runs"), name="one", report=False)
    run = tmp_path / "runs" / "one"
    assert _history_epochs(run) == ["1"]
    result = torchrun("train", "--resume", str(run), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _history_epochs(run) == ["1", "2"]
    plan = RunFolder(run).read_plan()
    assert (plan["world_size"], plan["batch_size"], plan["global_batch_size"]) == (2, 8, 16)


def test_cross_validation_on_two_processes_holds_every_image_out_once(photo_run, tmp_path):
    _, photos = photo_run
    result = torchrun("train", str(photos), "--model", "multilayer_cnn", "--img-size", "28", "--epochs", "1",
                      "--batch-size", "4", "--workers", "0", "--precision", "fp32", "--folds", "3", "--final",
                      "--runs-dir", str(tmp_path / "runs"), "--name", "cv", "--cache-dir", str(tmp_path / "cache"),
                      tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = RunFolder(tmp_path / "runs" / "cv")
    rows = (run.path / "out_of_fold.csv").read_text().splitlines()[1:]
    assert len(rows) == 36 and len({row.split(",")[0] for row in rows}) == 36
    assert result.stdout.count("pooled out-of-fold metrics") == 1 and result.stdout.count("fold-2 of 3") == 1
    assert sorted(path.name for path in run.path.iterdir() if path.is_dir()) == \
        ["final", "fold-1", "fold-2", "fold-3", "plots", "predictions"]
    assert RunFolder(run.path / "fold-2").read_plan()["world_size"] == 2
    assert (run.path / "final" / "best.safetensors").is_file()
