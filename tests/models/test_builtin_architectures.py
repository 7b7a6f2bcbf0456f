"""The tutorials' architectures: correct shapes, the ViT-B/16 size, SE that changes the output, and one
CLI training epoch each on real Fashion-MNIST."""

import json

import pytest
import torch

import imgcls
from tests.helpers import cli


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_vit_b16_has_the_size_of_vit_base_patch16():
    import timm

    assert _params(imgcls.create_model("vit_b16", num_classes=1000)) == _params(
        timm.create_model("vit_base_patch16_224"))


@pytest.mark.parametrize("pool", ["cls", "mean", "flatten"])
def test_vit_is_configurable(pool):
    model = imgcls.create_model("vit", num_classes=5, in_chans=1, img_size=28, patch_size=7, width=32, depth=2,
                                heads=2, pool=pool, head_hidden=(16,), drop_path_rate=0.1)
    assert model.grid_size == 4 and len(model.blocks) == 2
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 5)
    assert (model.cls_token is not None) == (pool == "cls")


def test_keras_cifar10_preset():
    model = imgcls.create_model("vit_keras_cifar10", num_classes=10)
    assert model.grid_size == 12 and len(model.blocks) == 8 and model.pool == "flatten"
    hidden = [layer.out_features for layer in model.head if isinstance(layer, torch.nn.Linear)]
    assert hidden == [2048, 1024, 10]


def test_densenet_se_applies_the_excitation():
    torch.manual_seed(0)
    model = imgcls.create_model("densenet_se", num_classes=3).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        with_se = model(images)
        features = model.backbone.forward_features(images)
        without_se = model.classifier(model.pool(features).flatten(1))  # what the tutorial's bug computes
        reweighted = model.classifier(model.pool(model.se(features)).flatten(1))
    assert torch.allclose(with_se, reweighted)
    assert not torch.allclose(with_se, without_se, atol=1e-4)


def test_densenet_se_block_config_builds_a_smaller_densenet_from_scratch_only():
    from imgcls.errors import ImgclsError

    small = imgcls.create_model("densenet_se", num_classes=3, in_chans=1, block_config=[2, 4, 3], growth_rate=12)
    features = small.backbone.features
    assert [name for name, _ in features.named_children() if name.startswith("denseblock")] == [
        "denseblock1", "denseblock2", "denseblock3"]
    assert len(features.denseblock2) == 4 and features.denseblock1.denselayer1.conv2.out_channels == 12
    assert small(torch.zeros(2, 1, 32, 32)).shape == (2, 3)
    assert _params(small) < _params(imgcls.create_model("densenet_se", num_classes=3)) / 20
    with pytest.raises(ImgclsError, match="pretrained weights are DenseNet-121's"):
        imgcls.create_model("densenet_se", num_classes=3, pretrained=True, block_config=[2, 4, 3])


@pytest.mark.parametrize("name, options, message", [
    ("fastcnn", {"depth": 0}, "fastcnn needs at least one stage width"),
    ("densenet_se", {"block_config": [0]}, "densenet_se needs block_config of one or more positive"),
])
def test_impossible_builtin_options_are_user_errors(name, options, message):
    from imgcls.errors import ImgclsError

    with pytest.raises(ImgclsError, match=message):
        imgcls.create_model(name, num_classes=3, **options)


@pytest.mark.slow
@pytest.mark.parametrize("name, extra", [
    ("mlp", []), ("onecnn", []), ("multilayer_cnn", []), ("lenet", []),  # LeNet-5: resized to its 32 px
    ("vit", []), ("vit_keras_cifar10", ["--img-size", "36"]), ("vit_b16", ["--img-size", "32"]),
    ("densenet_se", ["--img-size", "32"]),
])
def test_every_builtin_trains_an_epoch_through_the_cli(name, extra, fmnist_root, tmp_path):
    result = cli("train", "fashion-mnist", "--data-root", str(fmnist_root), "--model", name, "--epochs", "1",
                     "--max-per-class", "6", "--batch-size", "16", "--workers", "0", "--runs-dir", str(tmp_path),
                     "--name", "run", "--no-report", *extra)
    assert result.returncode == 0, result.stderr[-1500:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test"]["num_samples"] == 60
    if name == "lenet":
        assert json.loads((tmp_path / "run" / "plan.json").read_text())["img_size"] == 32


@pytest.mark.slow
def test_vit_options_from_the_command_line_and_unknown_options(fmnist_root, tmp_path):
    result = cli("train", "fashion-mnist", "--data-root", str(fmnist_root), "--model", "vit", "--epochs", "1",
                     "--max-per-class", "4", "--workers", "0", "--runs-dir", str(tmp_path), "--name", "vit7",
                     "--model-option", "patch_size=7", "--model-option", "pool=cls",
                     "--model-option", "head_hidden=[32]", "--model-option", "depth=2", "--no-report")
    assert result.returncode == 0, result.stderr[-1500:]
    model = imgcls.load(tmp_path / "vit7").model
    assert model.grid_size == 4 and model.pool == "cls" and len(model.blocks) == 2
    bad = cli("train", "fashion-mnist", "--data-root", str(fmnist_root), "--model", "resnet18",
                  "--max-per-class", "4", "--runs-dir", str(tmp_path), "--model-option", "patch_size=7")
    assert bad.returncode == 2 and "has no option 'patch_size'" in bad.stderr and "Traceback" not in bad.stderr
