"""End to end through the command line, as a user runs it."""

import csv
import json

import pytest
from safetensors import safe_open

from tests.helpers import cli, run_cli, user_error


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """`imgcls train DIR --model resnet18 --epochs 2 --img-size 64` on mixed PNG/JPEG/WebP/BMP photos."""
    from tests.helpers import make_class_folders

    root = tmp_path_factory.mktemp("cli")
    data = make_class_folders(root / "photos", per_class=20)
    (data / "coffee" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    result = run_cli("train", str(data), "--model", "resnet18", "--epochs", "2", "--img-size", "64",
                     "--test-split", "0.2", "--runs-dir", str(root / "runs"), "--workers", "0", cwd=root)
    assert result.returncode == 0, result.stderr
    return root / "runs" / "photos-resnet18", data, result


@pytest.mark.slow
def test_train_makes_a_complete_run_folder(trained_run):
    run, _, result = trained_run
    for name in ("config.yaml", "plan.json", "classes.json", "history.csv", "metrics.json", "best.safetensors",
                 "skipped.txt", "model.onnx"):  # model.onnx: the export predict and serve start from
        assert (run / name).is_file(), name
    assert (run / "last" / "trainer_state.json").is_file()
    assert "run folder" in result.stdout and "corrupt.jpg" in result.stderr
    assert "corrupt.jpg" in (run / "skipped.txt").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"train", "val", "test"}
    assert metrics["test"]["accuracy"]["ci95"][0] <= metrics["test"]["accuracy"]["value"]
    assert 0.0 <= metrics["test"]["accuracy"]["value"] <= 1.0
    assert set(metrics["test"]["per_class"]) == {"cat", "coffee", "rocket"}
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    with safe_open(str(run / "best.safetensors"), "pt") as handle:
        meta = json.loads(handle.metadata()["imgcls"])
    assert meta["class_names"] == ["cat", "coffee", "rocket"] and meta["img_size"] == 64
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))
    from PIL import Image

    for name in ("loss", "accuracy", "confusion_test", "confusion_test_normalized", "confusion_train"):
        with Image.open(run / "plots" / f"{name}.png") as image:
            assert image.format == "PNG" and min(image.size) > 300, name


@pytest.mark.slow
def test_eval_on_the_run_data_and_on_new_data(trained_run):
    run, data, _ = trained_run
    result = run_cli("eval", str(run))  # a real process: the end-to-end test of the verb
    assert result.returncode == 0, result.stderr
    written = json.loads((run / "eval" / "photos-test" / "metrics.json").read_text())
    assert written["test"]["accuracy"] == json.loads((run / "metrics.json").read_text())["test"]["accuracy"]
    evaluation = run / "eval" / "photos-test"
    for name in ("report.html", "predictions/test.npz", "plots/roc_test.png", "plots/mistakes_test.png"):
        assert (evaluation / name).is_file(), name
    whole = cli("eval", str(run), str(data), "--split", "all")
    assert whole.returncode == 0, whole.stderr
    assert "(60)" in whole.stdout  # all 60 readable images


@pytest.mark.slow
def test_predict_formats(trained_run):
    run, data, _ = trained_run
    result = cli("predict", str(run), str(data / "cat"), "--format", "json", "--topk", "2")
    assert result.returncode == 0, result.stderr
    predictions = json.loads(result.stdout)
    assert len(predictions) == 20
    assert all(len(p["predictions"]) == 2 for p in predictions)
    assert all(p["predictions"][0]["probability"] >= p["predictions"][1]["probability"] for p in predictions)
    table = cli("predict", str(run), str(data / "cat" / "0.png"))
    assert table.returncode == 0 and "0.png" in table.stdout
    as_csv = cli("predict", str(run), str(data / "coffee" / "corrupt.jpg"), str(data / "cat" / "0.png"),
                     "--format", "csv", "--topk", "1")
    rows = list(csv.DictReader(as_csv.stdout.splitlines()))
    assert rows[0]["error"] and rows[1]["class"] in {"cat", "coffee", "rocket"}


@pytest.mark.slow
def test_existing_run_name_is_never_overwritten(trained_run, tmp_path):
    run, data, _ = trained_run
    before = (run / "best.safetensors").read_bytes()
    result = cli("train", str(data), "--runs-dir", str(run.parent), "--name", run.name, "--epochs", "1")
    assert result.returncode == 2 and "already exists" in result.stderr
    assert (run / "best.safetensors").read_bytes() == before


def test_user_mistakes_print_one_clear_line(tmp_path, class_folders):
    runs = str(tmp_path / "runs")
    assert "does not exist" in user_error(cli("train", str(tmp_path / "nope"), "--runs-dir", runs))
    (tmp_path / "empty").mkdir()
    assert "no class subfolders" in user_error(cli("train", str(tmp_path / "empty"), "--runs-dir", runs))
    single = tmp_path / "single"
    (single / "only").mkdir(parents=True)
    (single / "only" / "a.png").write_bytes((class_folders / "cat" / "0.png").read_bytes())
    assert "only one class" in user_error(cli("train", str(single), "--runs-dir", runs))
    assert "did you mean" in user_error(cli("train", str(class_folders), "--model", "resnet_18",
                                                 "--runs-dir", runs))
    assert "--epochs" in user_error(cli("train", str(class_folders), "--epochs", "many"))
    assert "--val-split" in user_error(cli("train", str(class_folders), "--val-split", "2",
                                                "--runs-dir", runs))
    too_small = user_error(cli("train", str(class_folders), "--model", "lenet", "--img-size", "16",
                                    "--runs-dir", runs))
    assert "image size 16" in too_small and "--img-size" in too_small
    assert "not an imgcls run" in user_error(cli("predict", str(class_folders), str(class_folders)))
    assert "not an imgcls run" in user_error(cli("eval", str(class_folders)))
    assert "not an imgcls run" in user_error(cli("train", "--resume", str(class_folders)))
    assert "unknown config key" in user_error(cli("train", "--config", str(_bad_yaml(tmp_path))))
    assert not any((tmp_path / "runs").iterdir())  # failed starts leave no run folders behind


def _bad_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  source: fashion-mnist\ntrain:\n  epoch: 3\n")
    return path


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from imgcls.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_summary_reports_parameters_and_macs():
    result = cli("summary", "lenet", "--num-classes", "10")
    assert result.returncode == 0, result.stderr
    assert "Total params: 59,386" in result.stdout and "mult-adds" in result.stdout
    assert "[1, 6, 28, 28]" in result.stdout  # the first conv's output at LeNet's native 32 px
    bad = cli("summary", "lenet", "--img-size", "8")
    assert bad.returncode == 2 and "--img-size" in bad.stderr and "Traceback" not in bad.stderr


def test_models_lists_builtins_and_marks_pretrained_timm_models():
    result = cli("models", "*net*")
    lines = dict(line.split("\t") if "\t" in line else (line, "") for line in result.stdout.splitlines())
    assert lines["lenet"] == "built-in"
    assert cli("models", "multi*").stdout.splitlines()[0] == "multilayer_cnn\tbuilt-in"
    assert lines["efficientnet_lite0"] == "pretrained" and lines["resnet18"] == "pretrained"
    assert lines["resnet18d"] == "pretrained" and lines["densenet_se"] == "built-in"
    every_vit = cli("models", "vit").stdout.splitlines()  # a bare word matches anywhere in the name
    assert "vit\tbuilt-in" in every_vit and "vit_base_patch16_224\tpretrained" in every_vit
    assert "deit_small_patch16_224\tpretrained" not in every_vit and len(every_vit) > 100


def test_a_cli_piped_into_head_exits_quietly():
    import subprocess
    import sys

    piped = subprocess.run(f"{sys.executable} -m imgcls models | head -2", shell=True, capture_output=True,
                           text=True, timeout=120)
    assert len(piped.stdout.splitlines()) == 2
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr


def test_two_class_run_reports_the_chosen_positive_class_on_train_val_and_test(class_folders, tmp_path):
    import shutil

    shutil.rmtree(class_folders / "rocket")
    runs = str(tmp_path / "runs")
    result = cli("train", str(class_folders), "--model", "multilayer_cnn", "--img-size", "28", "--epochs", "1",
                     "--test-split", "0.2", "--positive-class", "cat", "--workers", "0", "--runs-dir", runs,
                     "--name", "binary", "--no-report")
    assert result.returncode == 0, result.stderr
    assert "positive class: cat" in result.stdout
    metrics = json.loads((tmp_path / "runs" / "binary" / "metrics.json").read_text())
    for split in ("train", "val", "test"):
        assert metrics[split]["positive_class"] == "cat"
        for name in ("sensitivity", "specificity", "precision", "f1", "mcc", "error_rate", "roc_auc"):
            assert name in metrics[split], name
        # intervals for held-out data only: the model was fit to the training split
        assert ("ci95" in metrics[split]["sensitivity"]) == (split != "train")
    assert len(metrics["test"]["sensitivity"]["ci95"]) == 2
    wrong = cli("train", str(class_folders), "--positive-class", "dog", "--runs-dir", runs)
    assert wrong.returncode == 2 and "--positive-class 'dog'" in wrong.stderr


@pytest.mark.slow
def test_recipes_are_listed_and_fashion_mnist_uses_its_recipe(fmnist_root, tmp_path):
    listed = cli("recipes")
    assert listed.returncode == 0 and "fashion-mnist" in listed.stdout and "fastcnn" in listed.stdout
    assert "recipe_book/fashion-mnist.yaml" in listed.stdout
    result = cli("train", "fashion-mnist", "--data-root", str(fmnist_root), "--epochs", "1",
                     "--max-per-class", "30", "--runs-dir", str(tmp_path / "runs"), "--name", "r", "--no-report",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "recipe: fashion-mnist" in result.stdout
    import yaml

    config = yaml.safe_load((tmp_path / "runs" / "r" / "config.yaml").read_text())
    assert config["model"]["name"] == "fastcnn" and config["train"]["tta"] is True
    assert config["train"]["epochs"] == 1  # a flag wins over the recipe
    summary = json.loads((tmp_path / "runs" / "r" / "run.json").read_text())
    assert summary["channels_last"] is True and summary["precision"] in ("fp32", "bf16")
    history = list(csv.DictReader((tmp_path / "runs" / "r" / "history.csv").open()))
    assert float(history[0]["data_time_s"]) >= 0 and float(history[0]["step_time_s"]) > 0
    plain = cli("train", "fashion-mnist", "--recipe", "none", "--data-root", str(fmnist_root), "--epochs", "1",
                    "--max-per-class", "10", "--model", "mlp", "--runs-dir", str(tmp_path / "runs"), "--name", "p",
                    "--no-report", cwd=tmp_path)
    assert plain.returncode == 0 and "recipe:" not in plain.stdout
    unknown = cli("train", "fashion-mnist", "--recipe", "fashion-mnst")
    assert unknown.returncode == 2 and "did you mean fashion-mnist" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
