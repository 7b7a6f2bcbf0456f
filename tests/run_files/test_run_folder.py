"""The run folder's one owner: its layout and schemas, and folders written by imgcls 0.1 still in use."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import imgcls
from imgcls.run_files import RunFolder, create_run_folder, locate_weights
from tests.helpers import cli, plan_for

LEGACY = Path(__file__).parents[1] / "fixtures" / "run-v0.1"  # written by imgcls 0.1 itself (see its config)


@pytest.fixture
def legacy_run(tmp_path) -> Path:
    """A copy of the imgcls 0.1 run folder (evaluations write into it)."""
    return Path(shutil.copytree(LEGACY, tmp_path / "run-v0.1"))


def test_an_imgcls_0_1_run_reads_in_the_current_schema(legacy_run):
    folder = RunFolder(legacy_run)
    summary = folder.read_summary()
    assert summary["schema"] == 2 and summary["kind"] == "train" and summary["model"] == "multilayer_cnn"
    assert folder.read_plan() is None  # 0.1 had no plan: settings come from config.yaml and the weights
    assert folder.read_config()["train"]["seed"] == 42
    assert [row["epoch"] for row in folder.read_history()] == ["1", "2"]
    assert set(folder.read_metrics()) == {"train", "val", "test"}
    loaded = imgcls.load(legacy_run)
    assert loaded.plan is None and loaded.tta is False and loaded.img_size == 28 and loaded.in_chans == 1
    assert loaded.interpolation == "bilinear" and len(loaded.class_names) == 10


def test_an_imgcls_0_1_run_evaluates_to_the_numbers_it_recorded(legacy_run, fmnist_root):
    recorded = json.loads((legacy_run / "metrics.json").read_text())["test"]
    metrics = imgcls.evaluate(legacy_run, data_root=str(fmnist_root), precision="fp32")
    assert metrics["split"] == "test" and metrics["num_samples"] == recorded["num_samples"] == 200
    assert metrics["accuracy"]["value"] == pytest.approx(recorded["accuracy"]["value"], abs=1e-6)
    assert metrics["confusion_matrix"] == recorded["confusion_matrix"]
    evaluation = RunFolder(metrics["written_to"])
    assert evaluation.report_file.is_file() and evaluation.read_summary()["kind"] == "evaluation"
    assert evaluation.evaluated_run.path == legacy_run


def test_an_imgcls_0_1_run_predicts_and_reports(legacy_run, tmp_path):
    from skimage import data

    gray = np.array(Image.fromarray(data.camera()).resize((28, 28)))
    Image.fromarray(gray).save(tmp_path / "camera.png")
    (result,) = imgcls.predict(legacy_run, [tmp_path / "camera.png"], topk=10)
    probabilities = [guess["probability"] for guess in result["predictions"]]
    assert len(probabilities) == 10 and sum(probabilities) == pytest.approx(1.0, abs=1e-5)
    loaded = imgcls.load(legacy_run)
    with torch.no_grad():
        expected = loaded.model((torch.from_numpy(gray).float()[None, None] / 255 - loaded.mean[0]) / loaded.std[0])
    assert result["predictions"][0]["class"] == loaded.class_names[int(expected.argmax())]
    redrawn = cli("report", str(legacy_run))
    assert redrawn.returncode == 0, redrawn.stderr
    page = (legacy_run / "report.html").read_text()
    assert "multilayer_cnn" in page and "confusion_test.png" in page and "roc_test.png" in page


def test_the_plan_round_trips_through_plan_json(tmp_path):
    plan = plan_for(optimizer="sgd", batch_size=32, world_size=4, epochs=3)
    folder = RunFolder(tmp_path)
    folder.write_plan(plan.to_dict())
    assert imgcls.TrainPlan.from_dict(folder.read_plan()) == plan


def test_run_folders_are_never_reused(tmp_path):
    first = create_run_folder(tmp_path, None, "data-model")
    second = create_run_folder(tmp_path, None, "data-model")
    assert (first.name, second.name) == ("data-model", "data-model-2")
    with pytest.raises(imgcls.ImgclsError, match="already exists"):
        create_run_folder(tmp_path, "data-model", "ignored")


def test_weights_are_found_from_the_folder_or_the_file(legacy_run):
    weights, folder = locate_weights(legacy_run)
    assert weights == legacy_run / "best.safetensors" and folder.path == legacy_run
    assert locate_weights(weights)[1].path == legacy_run
    with pytest.raises(imgcls.ImgclsError, match="not a checkpoint"):
        locate_weights(legacy_run / "config.yaml")
