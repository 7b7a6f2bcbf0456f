"""ONNX and TorchScript exports give eager PyTorch's answers; `imgcls predict MODEL.onnx` needs no torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import imgcls
from imgcls.engine.export import example_batch, export_module, export_onnx, export_torchscript
from tests.helpers import cli, user_error

# (model, input channels, image size, options): every built-in, and timm families users export (densenet121 is
# densenet_se's backbone)
MODELS = [
    ("mlp", 1, 28, {}), ("onecnn", 1, 28, {}), ("multilayer_cnn", 1, 28, {}), ("lenet", 1, 32, {}),
    ("fastcnn", 1, 28, {}), ("vit", 1, 28, {"patch_size": 7, "width": 32, "depth": 2, "heads": 2}),
    pytest.param("vit_keras_cifar10", 1, 36, {}, marks=pytest.mark.slow),
    pytest.param("vit", 1, 32, {"patch_size": 16, "width": 48, "depth": 2, "heads": 3, "pool": "cls"},
                 marks=pytest.mark.slow),  # vit_b16's graph (class token, patch 16) without its 86M weights
    pytest.param("densenet_se", 1, 32, {"block_config": [2, 2, 2, 2]}, marks=pytest.mark.slow),  # DenseNet-121's
    # graph (dense blocks, transitions, SE) with 2 layers a block: 121's 58 layers took 23 s to export
    ("resnet18", 1, 32, {}), pytest.param("convnext_atto", 1, 32, {}, marks=pytest.mark.slow),
    pytest.param("vit_tiny_patch16_224", 1, 32, {}, marks=pytest.mark.slow),
]


def _fmnist_batch(fmnist_root, size: int, count: int) -> torch.Tensor:
    """`count` real Fashion-MNIST test images as uint8 (N, 1, size, size)."""
    from imgcls.data.builtin import load_builtin

    images = torch.from_numpy(load_builtin("fashion-mnist", fmnist_root, train=False)[0][:count])
    if size != 28:
        images = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)
        images = images.round().clamp(0, 255).to(torch.uint8)
    return images


def _onnx_probabilities(path, images: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"images": images})[0]


@pytest.mark.parametrize("name, channels, size, options", MODELS)
def test_onnx_and_torchscript_match_eager_pytorch(name, channels, size, options, fmnist_root, tmp_path):
    torch.manual_seed(0)
    model = imgcls.create_model(name, num_classes=10, in_chans=channels, img_size=size, **options).eval()
    module = export_module(model, (0.286,), (0.353,), "uint8", tta=False)
    metadata = {"model": name, "class_names": [str(i) for i in range(10)]}
    export_onnx(module, example_batch(channels, size, "uint8"), tmp_path / "m.onnx", metadata)
    export_torchscript(module, example_batch(channels, size, "uint8"), tmp_path / "m.pt", metadata)
    scripted = torch.jit.load(str(tmp_path / "m.pt"))
    for count in (1, 7):
        images = _fmnist_batch(fmnist_root, size, count)
        with torch.no_grad():
            eager = module(images).numpy()
            traced = scripted(images).numpy()
        onnx = _onnx_probabilities(tmp_path / "m.onnx", images.numpy())
        assert onnx.shape == eager.shape == (count, 10)
        assert np.abs(onnx - eager).max() <= 1e-4 and np.abs(traced - eager).max() <= 1e-4
        assert (onnx.argmax(1) == eager.argmax(1)).all() and (traced.argmax(1) == eager.argmax(1)).all()


@pytest.mark.slow
def test_efficientnet_lite0_with_real_imagenet_weights_exports_exactly(lite0_weights, tmp_path):
    from PIL import Image
    from skimage import data

    model = imgcls.create_model("efficientnet_lite0", num_classes=1000, weights=lite0_weights).eval()
    module = export_module(model, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    export_onnx(module, example_batch(3, 224, "uint8"), tmp_path / "lite0.onnx", {"model": "efficientnet_lite0"})
    photos = [np.asarray(Image.fromarray(getattr(data, name)()).resize((224, 224))).transpose(2, 0, 1)
              for name in ("chelsea", "coffee", "astronaut", "rocket", "chelsea", "coffee", "astronaut")]
    for count in (1, 7):
        images = np.stack(photos[:count]).astype(np.uint8)
        with torch.no_grad():
            eager = module(torch.from_numpy(images)).numpy()
        onnx = _onnx_probabilities(tmp_path / "lite0.onnx", images)
        assert np.abs(onnx - eager).max() <= 1e-4 and (onnx.argmax(1) == eager.argmax(1)).all()
    assert onnx.argmax(1)[1] == 967  # coffee -> espresso, through onnxruntime


@pytest.fixture(scope="module")
def fmnist_run(fmnist_root, tmp_path_factory):
    """A fastcnn run with test-time augmentation (so the export must average the mirror too)."""
    runs = tmp_path_factory.mktemp("export_runs")
    outcome = imgcls.train("fashion-mnist", data_root=str(fmnist_root), model="fastcnn", epochs=1, max_per_class=30,
                           workers=0, runs_dir=str(runs), name="fast", tta=True,
                           options={"widths": [16, 32], "depth": 1, "stem": 8}, report=False)
    return outcome.run_dir


@pytest.fixture(scope="module")
def fmnist_pngs(fmnist_root, tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("pngs")
    for index, image in enumerate(_fmnist_batch(fmnist_root, 28, 9).numpy()):
        Image.fromarray(image[0]).save(folder / f"{index}.png")
    return folder


def test_export_cli_writes_metadata_and_predict_on_onnx_matches_the_run(fmnist_run, fmnist_pngs):
    result = cli("export", str(fmnist_run))
    assert result.returncode == 0, result.stderr
    onnx_file = fmnist_run / "model.onnx"
    import onnx

    proto = onnx.load(str(onnx_file))
    meta = {entry.key: entry.value for entry in proto.metadata_props}
    assert json.loads(meta["class_names"])[0] == "T-shirt/top" and meta["img_size"] == "28"
    assert meta["channels"] == "1" and meta["input_type"] == "uint8" and meta["tta"] == "true"
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a dynamic batch axis
    from_run = imgcls.predict(fmnist_run, [fmnist_pngs], topk=10, backend="torch", precision="fp32")
    from_onnx = imgcls.predict(onnx_file, [fmnist_pngs], topk=10)
    for ours, theirs in zip(from_run, from_onnx):
        assert ours["predictions"][0]["class"] == theirs["predictions"][0]["class"]
        probs = {guess["class"]: guess["probability"] for guess in theirs["predictions"]}
        assert all(abs(guess["probability"] - probs[guess["class"]]) <= 1e-5 for guess in ours["predictions"])
    scripted = cli("export", str(fmnist_run), "--format", "torchscript")
    assert scripted.returncode == 0 and (fmnist_run / "model.torchscript.pt").is_file()
    again = cli("export", str(fmnist_run), "--format", "torchscript")  # its own file may be replaced
    assert again.returncode == 0, again.stderr


def test_predict_on_onnx_imports_no_torch(fmnist_run, fmnist_pngs):
    onnx_file = fmnist_run / "model.onnx"
    if not onnx_file.exists():
        assert cli("export", str(fmnist_run)).returncode == 0
    for model in (onnx_file, fmnist_run):  # the file, and the run folder whose export is current
        code = (f"import sys; from imgcls import predict; r = predict({str(model)!r}, "
                f"[{str(fmnist_pngs)!r}]); print(len(r), 'torch' in sys.modules)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.stdout.split() == ["9", "False"], out.stderr
    table = subprocess.run([sys.executable, "-m", "imgcls", "predict", str(onnx_file), str(fmnist_pngs / "0.png")],
                           capture_output=True, text=True, timeout=120)
    assert table.returncode == 0 and "0.png" in table.stdout


def test_export_mistakes_are_one_line(fmnist_run, tmp_path):
    assert "does not exist" in user_error(cli("export", str(tmp_path / "nope")))
    foreign = tmp_path / "mine.onnx"
    foreign.write_bytes(b"my own notes")
    assert "was not written by imgcls" in user_error(cli("export", str(fmnist_run), "--out", str(foreign)))
    assert foreign.read_bytes() == b"my own notes"
    assert "--format must be one of" in user_error(cli("export", str(fmnist_run), "--format", "tflite"))


def test_a_model_onnx_cannot_express_is_refused_in_one_line(class_folders, tmp_path):
    from torch import nn

    class Spectral(nn.Module):  # a singular value decomposition: no ONNX operator expresses it
        def __init__(self, num_classes, in_chans):
            super().__init__()
            self.conv = nn.Conv2d(in_chans, 4, 3)
            self.head = nn.Linear(4, num_classes)

        def forward(self, x):
            features = self.conv(x).flatten(2)
            return self.head(torch.linalg.svdvals(features))

    @imgcls.register("test_spectral_net")
    def spectral(num_classes=10, in_chans=3, img_size=None):
        return Spectral(num_classes, in_chans)

    trained = cli("train", str(class_folders), "--model", "test_spectral_net", "--img-size", "16", "--epochs", "1",
                  "--workers", "0", "--runs-dir", str(tmp_path / "runs"), "--name", "svd", "--no-report")
    assert trained.returncode == 0, trained.stderr
    line = user_error(cli("export", str(tmp_path / "runs" / "svd")))
    assert "cannot be exported to ONNX" in line and "--format torchscript" in line
    assert not (tmp_path / "runs" / "svd" / "model.onnx").exists()


def test_a_run_uses_its_onnx_export_only_while_it_is_current(fmnist_run, fmnist_pngs):
    import os

    from imgcls.engine.inference import TorchClassifier
    from imgcls.engine.onnx_model import OnnxClassifier
    from imgcls.workflows.predict import classifier_for

    if not (fmnist_run / "model.onnx").exists():
        assert cli("export", str(fmnist_run)).returncode == 0
    assert isinstance(classifier_for(fmnist_run), OnnxClassifier)
    assert isinstance(classifier_for(fmnist_run, backend="torch"), TorchClassifier)
    weights = fmnist_run / "best.safetensors"
    later = (fmnist_run / "model.onnx").stat().st_mtime_ns + 10**9
    os.utime(weights, ns=(later, later))  # the weights changed after the export: it is stale
    assert isinstance(classifier_for(fmnist_run), TorchClassifier)
    image = str(fmnist_pngs / "0.png")
    assert "no current ONNX export" in user_error(cli("predict", str(fmnist_run), image, "--backend", "onnx"))
    assert cli("export", str(fmnist_run)).returncode == 0  # exported again: current again
    assert isinstance(classifier_for(fmnist_run), OnnxClassifier)


def test_training_exports_in_a_child_beside_the_figures_or_here_for_a_model_only_it_can_build(class_folders,
                                                                                               tmp_path, capsys):
    import subprocess

    from torch import nn

    from imgcls.engine.onnx_model import OnnxClassifier
    from imgcls.run_files import RunFolder
    from imgcls.workflows.predict import classifier_for
    from imgcls.workflows.export import end_export_for_predict, start_export_for_predict

    @imgcls.register("test_export_here_net")
    def here(num_classes=10, in_chans=3, img_size=None):
        return nn.Sequential(nn.Conv2d(in_chans, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))

    trained = cli("train", str(class_folders), "--model", "test_export_here_net", "--img-size", "16", "--epochs", "1",
                  "--workers", "0", "--runs-dir", str(tmp_path / "runs"), "--name", "here", "--no-report")
    assert trained.returncode == 0, trained.stderr
    run = RunFolder(tmp_path / "runs" / "here")
    assert start_export_for_predict(run, "test_export_here_net", 100) is None  # a new process could not build it
    assert isinstance(classifier_for(run.path), OnnxClassifier)  # so it was exported here, and is current
    (run.path / "model.onnx").unlink()
    assert start_export_for_predict(run, "test_export_here_net", 10**9) is None  # too large: not exported
    assert not (run.path / "model.onnx").exists()

    failing = subprocess.Popen([sys.executable, "-c", "import sys; print('imgcls export: error: net cannot be "
                                "exported to ONNX (no svd)', file=sys.stderr); sys.exit(2)"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    end_export_for_predict(failing)
    assert "no ONNX export of this run (net cannot be exported to ONNX (no svd)); predict will use PyTorch" \
        in capsys.readouterr().err.replace("\n", " ")
