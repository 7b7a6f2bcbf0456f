"""Real ImageNet weights saved by another library load through the key-mapping hook and predict."""

import json

import pytest
import torch
from PIL import Image

import imgcls
from imgcls.errors import ImgclsError
from imgcls.models.weights import map_keys, read_state_dict
from tests.helpers import cli


def test_lite0_port_maps_onto_timm_by_position(lite0_weights):
    state = read_state_dict(lite0_weights)
    model = imgcls.create_model("efficientnet_lite0", num_classes=1000, weights=lite0_weights)
    assert torch.equal(model.conv_stem.weight, state["_conv_stem.weight"])
    assert torch.equal(model.classifier.weight, state["_fc.weight"])
    _, mapper = map_keys(state, model.state_dict())
    assert mapper == "positional"


def test_new_head_keeps_the_pretrained_backbone(lite0_weights):
    state = read_state_dict(lite0_weights)
    model = imgcls.create_model("efficientnet_lite0", num_classes=3, weights=lite0_weights)
    own = list(model.state_dict().values())
    assert all(torch.equal(own[i], list(state.values())[i]) for i in (100, 200, 290))
    assert torch.equal(model.conv_stem.weight, state["_conv_stem.weight"])
    assert model.classifier.out_features == 3


def test_a_new_head_on_pretrained_features_starts_small_and_a_saved_head_is_kept(lite0_weights, tmp_path):
    """timm's EfficientNet head init (uniform +-1/sqrt(classes)) gives logits in the tens on pretrained features;
    a new head starts as nn.Linear does, so that a frozen backbone's head can learn (see models/registry.py)."""
    from safetensors.torch import save_file

    model = imgcls.create_model("efficientnet_lite0", num_classes=2, weights=lite0_weights)
    assert model.classifier.weight.abs().max() <= 1 / model.classifier.in_features ** 0.5
    with torch.no_grad():
        model.classifier.weight.fill_(0.5)
    saved = tmp_path / "tuned.safetensors"
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(saved))
    again = imgcls.create_model("efficientnet_lite0", num_classes=2, weights=str(saved))
    assert torch.equal(again.classifier.weight, model.classifier.weight)  # the file's head, not a fresh one


def test_positional_mapping_is_not_used_for_another_architecture(lite0_weights):
    with pytest.raises(ImgclsError, match="no tensor"):
        imgcls.create_model("resnet18", num_classes=10, weights=lite0_weights)


def test_unknown_mapper_is_named(lite0_weights):
    state = read_state_dict(lite0_weights)
    with pytest.raises(ImgclsError, match="--weights-map"):
        map_keys(state, {}, "no-such-mapper")


def test_zero_shot_chelsea_is_a_cat_and_coffee_is_espresso(lite0_weights, tmp_path):
    from skimage import data

    Image.fromarray(data.chelsea()).save(tmp_path / "chelsea.png")
    Image.fromarray(data.coffee()).save(tmp_path / "coffee.png")
    result = cli("predict", "--model", "efficientnet_lite0", "--weights", lite0_weights,
                     str(tmp_path / "chelsea.png"), str(tmp_path / "coffee.png"), "--topk", "3", "--format", "json")
    assert result.returncode == 0, result.stderr
    chelsea, coffee = json.loads(result.stdout)
    assert any("cat" in guess["class"] for guess in chelsea["predictions"])
    assert coffee["predictions"][0]["class"] == "espresso"


def test_predict_with_model_needs_weights(tmp_path):
    result = cli("predict", "--model", "efficientnet_lite0", str(tmp_path))
    assert result.returncode == 2 and "--weights FILE" in result.stderr


@pytest.mark.parametrize("content, message", [
    (b"just some text", "cannot be read as plain tensors"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}", "not a valid safetensors file"),
])
def test_unreadable_weight_files_are_one_line(tmp_path, class_folders, content, message):
    suffix = ".safetensors" if b"{" in content else ".pth"
    path = tmp_path / f"weights{suffix}"
    path.write_bytes(content)
    result = cli("train", str(class_folders), "--weights", str(path), "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_weights_map_flag_forces_a_mapper(tmp_path, class_folders, lite0_weights):
    result = cli("train", str(class_folders), "--model", "resnet18", "--weights", lite0_weights,
                     "--weights-map", "strip-prefix", "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode == 2 and "no tensor" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("torchvision_name, timm_name", [("resnet18", "resnet18"), ("mobilenet_v2", "mobilenetv2_100"),
                                                         ("vgg11", "vgg11")])
def test_torchvision_checkpoints_load_into_the_timm_model_and_give_the_same_logits(torchvision_name, timm_name,
                                                                                   tmp_path):
    """The transfer recipes' weights as the seed tutorial loads them (torchvision's .pth files): same outputs."""
    import torch
    import torchvision

    from imgcls.models import create_model

    torch.manual_seed(0)
    reference = getattr(torchvision.models, torchvision_name)().eval()
    path = tmp_path / f"{torchvision_name}.pth"
    torch.save(reference.state_dict(), path)
    model = create_model(timm_name, num_classes=1000, weights=str(path)).eval()
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model(images), reference(images), atol=1e-4)
