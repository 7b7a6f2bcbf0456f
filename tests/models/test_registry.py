import pytest
import torch

import imgcls
from imgcls.errors import ImgclsError
from imgcls.models import register
from imgcls.models.registry import buildable_by_name
from imgcls.models.weights import read_state_dict


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, in_chans, size, expected", [
    ("mlp", 1, 28, 79_510), ("onecnn", 1, 28, 52_084), ("multilayer_cnn", 1, 28, 8_490), ("lenet", 3, 32, 59_386),
])
def test_small_nets_match_the_published_parameter_counts(name, in_chans, size, expected):
    model = imgcls.create_model(name, num_classes=10, in_chans=in_chans, img_size=size)
    assert _params(model) == expected
    assert model(torch.zeros(2, in_chans, size, size)).shape == (2, 10)


def test_any_timm_model_with_any_class_count_and_channels():
    model = imgcls.create_model("resnet18", num_classes=7, in_chans=1)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 7)
    vit = imgcls.create_model("vit_tiny_patch16_224", num_classes=3, img_size=32)
    assert vit(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_unknown_model_suggests_close_names():
    with pytest.raises(ImgclsError, match="did you mean.*resnet18"):
        imgcls.create_model("resnet_18", num_classes=2)


def test_registering_a_model_is_one_decorated_function():
    @register("test_tiny_net")
    def tiny(num_classes, in_chans, img_size=None):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))

    assert ("test_tiny_net", "built-in") in imgcls.list_models("test_*")
    model = imgcls.create_model("test_tiny_net", num_classes=4)
    assert model(torch.zeros(1, 3, 4, 4)).shape == (1, 4)
    # a new process (the export after training) can build imgcls's and timm's models by name, not this one
    assert not buildable_by_name("test_tiny_net") and buildable_by_name("fastcnn") and buildable_by_name("resnet18")


def test_local_weights_load_and_head_is_replaced(tmp_path):
    source = imgcls.create_model("resnet18", num_classes=10)
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    model = imgcls.create_model("resnet18", num_classes=3, weights=str(tmp_path / "weights.pth"))
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert model.fc.out_features == 3


def test_pickled_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"weight": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(ImgclsError, match="never pickled code"):
        read_state_dict(tmp_path / "evil.pth")


def test_weights_of_another_architecture_are_refused(tmp_path):
    torch.save(imgcls.create_model("mlp", num_classes=10).state_dict(), tmp_path / "mlp.pth")
    with pytest.raises(ImgclsError, match="no tensor"):
        imgcls.create_model("resnet18", num_classes=10, weights=str(tmp_path / "mlp.pth"))


def test_pretrained_offline_suggests_weights_file(monkeypatch):
    import timm

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ImgclsError, match="--weights FILE"):
        imgcls.create_model("resnet18", num_classes=2, pretrained=True)
