"""Decisions end to end on the X-ray stand-in (real Fashion-MNIST Shirt vs T-shirt/top, 800 each): a threshold for
95 % sensitivity chosen on validation and reported on test as scikit-learn computes it, and one calibrated
probability wherever the model answers (eval, predict in torch and on ONNX, TorchScript, the HTTP server)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_curve

import imgcls
from tests.helpers import Server, cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def screening_run(shirt_folder, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("screening")
    result = cli("train", str(shirt_folder), "--model", "fastcnn", "--epochs", "4", "--test-split", "0.2",
                 "--threshold", "sensitivity=0.95", "--positive-class", "shirt", "--runs-dir", str(runs),
                 "--name", "screen")
    assert result.returncode == 0, result.stderr[-3000:]
    return runs / "screen"


def test_a_threshold_for_95_percent_sensitivity_holds_on_val_and_test_is_scikit_learns(screening_run):
    metrics = json.loads((screening_run / "metrics.json").read_text())
    decisions = json.loads((screening_run / "decisions.json").read_text())
    threshold = decisions["threshold"]["threshold"]
    assert decisions["threshold"]["rule"] == "sensitivity=0.95" and decisions["threshold"]["chosen_on"] == "val"
    assert metrics["val"]["operating_point"]["sensitivity"]["value"] >= 0.95
    test = metrics["test"]["operating_point"]
    assert test["threshold"] == threshold
    low, high = test["sensitivity"]["ci95"]
    assert low < test["sensitivity"]["value"] < high and test["specificity"]["ci95"] is not None
    saved = np.load(screening_run / "predictions" / "test.npz")
    shirt = json.loads((screening_run / "classes.json").read_text()).index("shirt")
    fpr, tpr, thresholds = roc_curve(saved["labels"] == shirt, saved["probs"][:, shirt].astype(np.float64),
                                     drop_intermediate=False)
    at = int(np.flatnonzero(thresholds >= threshold)[-1])  # scikit-learn's point: the scores >= our threshold
    assert test["sensitivity"]["value"] == pytest.approx(tpr[at], abs=1e-12)
    assert test["specificity"]["value"] == pytest.approx(1 - fpr[at], abs=1e-12)
    report = (screening_run / "report.html").read_text()
    assert "Threshold table (test)" in report and "sensitivity=0.95" in report
    assert (screening_run / "plots" / "risk_coverage_test.png").is_file()
    assert metrics["test"]["selective_accuracy_95"]["ci95"] is not None


def test_the_calibrated_probabilities_are_the_same_wherever_the_model_answers(screening_run, shirt_folder):
    loaded = imgcls.load(screening_run)
    assert loaded.temperature != 1.0 and loaded.threshold is not None
    images = sorted((shirt_folder / "shirt").glob("*.png"))[:6] + sorted((shirt_folder / "tshirt").glob("*.png"))[:6]
    shirt = loaded.class_names.index("shirt")

    def shirt_probability(results) -> np.ndarray:
        return np.array([{g["class"]: g["probability"] for g in r["predictions"]}["shirt"] for r in results])

    torch_answers = imgcls.predict(screening_run, images, topk=2, backend="torch")
    expected = shirt_probability(torch_answers)
    assert np.abs(shirt_probability(imgcls.predict(screening_run, images, topk=2, backend="onnx")) - expected).max() \
        <= 1e-5
    evaluated = imgcls.evaluate(screening_run, str(shirt_folder), split="all")
    saved = np.load(Path(evaluated["written_to"]) / "predictions" / "all.npz")
    by_path = dict(zip(saved["paths"].tolist(), saved["probs"][:, shirt]))
    assert np.abs(np.array([by_path[str(path)] for path in images]) - expected).max() <= 1e-5
    assert cli("export", str(screening_run), "--format", "torchscript").returncode == 0
    scripted = torch.jit.load(str(screening_run / "model.torchscript.pt"))
    from imgcls.data.images import decode_files

    batch, _, _ = decode_files(images, loaded.img_size, loaded.in_chans, loaded.interpolation)
    with torch.no_grad():
        assert np.abs(scripted(torch.from_numpy(batch))[:, shirt].numpy() - expected).max() <= 1e-5
    server = Server(screening_run, "--abstain-below", "0.99")
    try:
        for path, probability, offline in zip(images, expected, torch_answers):
            answer = httpx.post(f"{server.url}/predict?topk=2", files={"file": (path.name, path.read_bytes(),
                                                                                "image/png")}, timeout=30).json()
            served = {g["class"]: g["probability"] for g in answer["predictions"]}["shirt"]
            assert abs(served - probability) <= 1e-5
            assert "shirt when its probability >=" in answer["rule"] and "uncertain below" in answer["rule"]
            assert answer["decision"] == (offline["decision"] if max(probability, 1 - probability) >= 0.99
                                          else "uncertain")
    finally:
        server.stop()
    # the run's own decision: the positive class from its threshold on, said with every answer
    for result, probability in zip(torch_answers, expected):
        assert result["decision"] == ("shirt" if probability >= loaded.threshold else "tshirt")
        assert "sensitivity=0.95" in result["rule"]


def test_calibrate_refits_on_other_data_and_keeps_the_operating_point(screening_run, shirt_folder, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(screening_run, copy)
    before = imgcls.load(copy)
    probe = sorted((shirt_folder / "shirt").glob("*.png"))[:40] + sorted((shirt_folder / "tshirt").glob("*.png"))[:40]
    decided = [r["decision"] for r in imgcls.predict(copy, probe, backend="torch")]
    fitted = imgcls.calibrate(copy, str(shirt_folder), split="test")
    after = imgcls.load(copy)
    assert after.temperature == pytest.approx(fitted["temperature"]) and after.temperature != before.temperature
    assert fitted["after"]["loss"] <= fitted["before"]["loss"]
    assert [r["decision"] for r in imgcls.predict(copy, probe, backend="torch")] == decided
    onnx = imgcls.predict(copy, probe[:4], topk=2, backend="onnx")  # the export was rewritten with the new T
    torch_now = imgcls.predict(copy, probe[:4], topk=2, backend="torch")
    assert all(abs(a["predictions"][0]["probability"] - b["predictions"][0]["probability"]) <= 1e-5
               for a, b in zip(onnx, torch_now))
