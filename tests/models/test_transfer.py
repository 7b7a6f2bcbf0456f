"""Transfer learning modes with real ImageNet weights: frozen backbone, staged unfreezing, linear probe."""

import pytest
import torch

import imgcls
from imgcls.errors import ImgclsError
from imgcls.models.transfer import backbone_parameters, classifier_of, param_groups
from imgcls.models.weights import read_state_dict
from tests.helpers import cli


def _train(fmnist_root, tmp_path, lite0_weights, **extra):
    settings = dict(source="fashion-mnist", data_root=str(fmnist_root), model="efficientnet_lite0",
                    weights=lite0_weights, img_size=32, max_per_class=8, batch_size=16, workers=0,
                    runs_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"), warmup_epochs=0,
                    report=False)
    settings.update(extra)
    return imgcls.train(**settings)


def _stem(lite0_weights):
    return read_state_dict(lite0_weights)["_conv_stem.weight"].sum(1, keepdim=True)  # 1-channel data


def test_param_groups_scale_the_backbone_lr():
    model = imgcls.create_model("resnet18", num_classes=3)
    groups = param_groups(model, lr=1.0, weight_decay=0.05, backbone_lr_scale=0.1)
    head_ids = {id(p) for p in classifier_of(model).parameters()}
    for group in groups:
        is_head = all(id(p) in head_ids for p in group["params"])
        assert group["lr"] == (1.0 if is_head else pytest.approx(0.1))
        assert group["weight_decay"] in (0.0, 0.05)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert len(backbone_parameters(model)) == len(list(model.parameters())) - 2


@pytest.mark.slow
def test_freeze_backbone_trains_only_the_head(fmnist_root, tmp_path, lite0_weights):
    outcome = _train(fmnist_root, tmp_path, lite0_weights, epochs=2, freeze_backbone=True, name="frozen")
    model = imgcls.load(outcome.run_dir).model
    assert torch.allclose(model.conv_stem.weight, _stem(lite0_weights))
    assert torch.equal(model.blocks[2][0].conv_pw.weight, read_state_dict(lite0_weights)["_blocks.3._expand_conv.weight"])


@pytest.mark.slow
def test_freeze_epochs_then_the_backbone_trains(fmnist_root, tmp_path, lite0_weights):
    outcome = _train(fmnist_root, tmp_path, lite0_weights, epochs=2, freeze_epochs=1, backbone_lr_scale=0.1,
                     name="staged", monitor="last")  # the second epoch's weights, whichever scores better on 80 images
    model = imgcls.load(outcome.run_dir).model
    assert not torch.allclose(model.conv_stem.weight, _stem(lite0_weights))


@pytest.mark.slow
def test_linear_probe_caches_features_and_saves_a_whole_model(fmnist_root, tmp_path, lite0_weights):
    outcome = _train(fmnist_root, tmp_path, lite0_weights, epochs=3, linear_probe=True, name="probe")
    cached = list((tmp_path / "cache" / "features").glob("*.safetensors"))
    assert len(cached) == 1
    model = imgcls.load(outcome.run_dir).model
    assert torch.allclose(model.conv_stem.weight, _stem(lite0_weights))
    extracted = outcome.plan.inference_precision  # the plan the run started with: how its features were made
    assert outcome.plan.precision == "fp32" and extracted in ("fp32", "bf16")
    # the assembled backbone + head reproduces the probe's numbers, in the precision of its features
    evaluated = imgcls.evaluate(outcome.run_dir, precision=extracted)
    assert evaluated["accuracy"]["value"] == pytest.approx(outcome.metrics["test"]["accuracy"]["value"],
                                                           abs=1e-6 if extracted == "fp32" else 0.05)
    again = cli("train", "fashion-mnist", "--data-root", str(fmnist_root), "--model", "efficientnet_lite0",
                    "--weights", lite0_weights, "--img-size", "32", "--max-per-class", "8", "--epochs", "1",
                    "--linear-probe", "--workers", "0", "--runs-dir", str(tmp_path / "runs"), "--recipe", "none",
                    "--cache-dir", str(tmp_path / "cache"), "--no-report")
    assert again.returncode == 0, again.stderr
    assert "using cached features" in again.stderr


def test_linear_probe_with_freezing_is_refused():
    with pytest.raises(ImgclsError, match="--linear-probe"):
        imgcls.train("fashion-mnist", linear_probe=True, freeze_epochs=2)
