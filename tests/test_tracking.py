"""--track: live curves in TensorBoard (RUN/tb) and MLflow (a local store), read back with each library's own
reader; TensorBoard's scalars page rendered in headless Chromium; a missing extra is one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from imgcls.engine.tracking import CURVES
from tests.helpers import cli, free_port, make_shirt_folder, user_error

EPOCHS = 3
CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser")), None)


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """A 3-epoch run of real Fashion-MNIST shirts with --track all."""
    root = tmp_path_factory.mktemp("tracked")
    data = make_shirt_folder(root / "shirts", per_class=60)
    result = cli("train", str(data), "--model", "fastcnn", "--epochs", str(EPOCHS), "--img-size", "28",
                 "--runs-dir", str(root / "runs"), "--name", "shirts", "--track", "all", "--no-report")
    assert result.returncode == 0, result.stderr
    return root / "runs"


@pytest.mark.slow
def test_tensorboard_events_hold_one_value_per_epoch_of_every_curve_and_the_hyperparameters(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(tracked_run / "shirts" / "tb"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == set(CURVES.values())
    for curve in CURVES.values():
        assert [event.step for event in events.Scalars(curve)] == list(range(1, EPOCHS + 1)), curve
    history = (tracked_run / "shirts" / "history.csv").read_text().splitlines()
    header = history[0].split(",")
    last = dict(zip(header, history[-1].split(",")))
    assert events.Scalars("val/loss")[-1].value == pytest.approx(float(last["val_loss"]), rel=1e-6)

    # Accelerate writes the hyper-parameters as a session of the hparams plugin, in a sub-folder of tb/
    hparams = {}
    for folder in (tracked_run / "shirts" / "tb").iterdir():
        if folder.is_dir() and any(folder.glob("events.out.tfevents.*")):
            sub = EventAccumulator(str(folder))
            sub.Reload()
            for content in sub.PluginTagToContent("hparams").values():
                data = plugin_data_pb2.HParamsPluginData.FromString(content)
                hparams.update(data.session_start_info.hparams)
    assert hparams["plan.model"].string_value == "fastcnn"
    assert hparams["plan.epochs"].number_value == EPOCHS
    assert hparams["config.train.track"].string_value == "all"


@pytest.mark.slow
def test_the_mlflow_run_holds_the_hyperparameters_and_one_value_per_epoch_of_every_curve(tracked_run):
    from mlflow.tracking import MlflowClient

    store = tracked_run / "mlruns" / "mlflow.db"
    assert store.is_file()
    client = MlflowClient("sqlite:///" + str(store.resolve()))
    experiment = client.get_experiment_by_name("imgcls")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "shirts" and run.info.status == "FINISHED"
    assert run.data.tags["imgcls.run_folder"] == str((tracked_run / "shirts").resolve())
    assert run.data.params["plan.model"] == "fastcnn"
    assert run.data.params["config.train.epochs"] == str(EPOCHS)
    assert run.data.params["plan.class_names"] == '["shirt", "tshirt"]'
    for curve in CURVES.values():
        assert [metric.step for metric in client.get_metric_history(run.info.run_id, curve)] == \
            list(range(1, EPOCHS + 1)), curve


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium); .ci/run installs it")
def test_tensorboards_scalars_page_shows_the_curves_in_headless_chromium(tracked_run, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    port = free_port()
    board = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(tracked_run), "--host",
                              "127.0.0.1", "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for(f"http://127.0.0.1:{port}/data/runs", board)
        shot = Path(os.environ.get("IMGCLS_TEST_ARTIFACTS", tmp_path)) / "tensorboard-scalars.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/#scalars")
            page.wait_for_selector("text=tag: lr", timeout=60_000)  # the first groups' charts open by themselves
            page.click("text=val >> nth=0")  # open the val group: its loss and accuracy charts
            page.wait_for_selector("text=tag: val/loss", timeout=30_000)
            time.sleep(2)  # the charts draw after their data arrives
            page.screenshot(path=str(shot), full_page=True)
            found = {curve: page.locator(f"text=tag: {curve}").count() for curve in ("lr", "val/loss", "val/accuracy")}
            browser.close()
    finally:
        board.terminate()
        board.wait(timeout=20)
    assert all(found.values()), found
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    assert pixels.std() > 10  # a drawn page, not a blank one


def _wait_for(url: str, process: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"tensorboard exited: {process.stdout.read().decode()[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"tensorboard did not answer {url} within {seconds} s")


@pytest.mark.parametrize("tracker", ["tensorboard", "mlflow"])
def test_a_missing_tracker_is_one_line_naming_the_extra(tracker, monkeypatch, class_folders, tmp_path):
    monkeypatch.setitem(sys.modules, tracker, None)  # importlib then finds no such package: as if not installed
    result = cli("train", str(class_folders), "--model", "fastcnn", "--epochs", "1", "--runs-dir",
                 str(tmp_path / "runs"), "--track", tracker)
    message = user_error(result)
    assert f"--track {tracker} needs the {tracker} package" in message
    assert f'pip install "imgcls[{tracker}]"' in message
    assert not (tmp_path / "runs").exists()  # checked before a run folder is made


def test_without_track_neither_library_is_imported(class_folders, tmp_path):
    result = subprocess.run([sys.executable, "-c", (
        "import sys; from imgcls.cli import main; "
        f"code = main(['train', {str(class_folders)!r}, '--model', 'fastcnn', '--epochs', '1', '--no-report', "
        f"'--runs-dir', {str(tmp_path)!r}]); "
        "print(code, 'tensorboard' in sys.modules, 'mlflow' in sys.modules)")],
        capture_output=True, text=True, timeout=300)
    assert result.stdout.split()[-3:] == ["0", "False", "False"], result.stderr[-2000:]
