"""The shipped recipes: the seed tutorials' ten, each trained for one epoch on small real data; `imgcls recipes`;
an unknown name; a recipe that needs pretrained weights on a machine without them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from imgcls.config import build_config
from imgcls.recipe_book import list_recipes, load_recipe
from tests.helpers import cli, make_shirt_folder, user_error

SEED_RECIPES = ["seed000-vit-xray", "seed001-vit-cifar10", "seed002-vit-scratch", "seed003-mnist-mlp",
                "seed003-mnist-cnn", "seed003-lenet-cifar10", "seed003-transfer-vgg16", "seed003-transfer-resnet18",
                "seed003-transfer-mobilenetv2", "seed004-densenet-se"]
BUILT_IN_DATA = {"seed001-vit-cifar10", "seed003-mnist-mlp", "seed003-mnist-cnn", "seed003-lenet-cifar10"}
FULL_SIZE = "seed003-transfer-resnet18"  # trained at its own 224 px; the other 224-px recipes at 64 px
NEEDS_WEIGHTS = {"seed000-vit-xray", "seed003-transfer-vgg16", "seed003-transfer-resnet18",
                 "seed003-transfer-mobilenetv2"}


def test_every_seed_recipe_is_shipped_and_says_which_tutorial_and_what_it_fixes():
    recipes = list_recipes()
    assert set(SEED_RECIPES) <= set(recipes)
    for name in SEED_RECIPES:
        assert recipes[name]["tutorial"].startswith(f"seeds/{name[4:7]}"), name
        assert len(recipes[name]["fixes"]) > 100 and recipes[name]["description"], name
        config = build_config(overrides={"data": {"source": "somewhere"}}, recipe=load_recipe(name))
        assert config.model.pretrained == (name in NEEDS_WEIGHTS)


def test_recipe_settings_follow_their_tutorials():
    def values(name: str) -> dict:
        return yaml.safe_load((Path(list_recipes()[name]["file"])).read_text())

    assert values("seed004-densenet-se")["model"]["options"]["se_ratio"] == 0.125  # SEAttention(reduction=8)
    assert values("seed001-vit-cifar10")["train"]["batch_size"] == 256
    assert values("seed003-lenet-cifar10")["optim"] == {"optimizer": "sgd", "lr": 0.001, "momentum": 0.9,
                                                         "weight_decay": 0.0, "scheduler": "constant",
                                                         "warmup_epochs": 0}
    mobilenet = values("seed003-transfer-mobilenetv2")  # features first, then everything at a hundredth of the rate
    assert mobilenet["model"]["freeze_epochs"] == 1 and mobilenet["train"]["epochs"] == 2
    assert mobilenet["optim"]["step_epochs"] == 1 and mobilenet["optim"]["step_gamma"] == 0.01


def test_imgcls_recipes_lists_the_tutorial_and_the_fixes_of_each():
    result = cli("recipes", "seed003")
    assert result.returncode == 0
    assert result.stdout.count("\nseed003-") + result.stdout.startswith("seed003-") == 6
    assert "reproduces: seeds/003" in result.stdout and "fixes: " in result.stdout
    assert "LogSoftmax(dim=0)" in " ".join(result.stdout.split())


def test_an_unknown_recipe_lists_the_close_names(tmp_path):
    message = user_error(cli("train", "fashion-mnist", "--recipe", "seed003-mnist-cn", "--runs-dir", str(tmp_path)))
    assert "unknown recipe 'seed003-mnist-cn'; did you mean seed003-mnist-cnn" in message
    assert "imgcls recipes" in message


@pytest.fixture(scope="module")
def shirts(tmp_path_factory) -> Path:
    return make_shirt_folder(tmp_path_factory.mktemp("recipes") / "shirts", per_class=24)


def _random_pretrained_weights(name: str, folder: Path) -> Path:
    """A stand-in for the ImageNet weights no offline machine has: the architecture's own state dict, saved."""
    import timm
    from safetensors.torch import save_file

    path = folder / f"{name}.safetensors"
    if not path.is_file():
        model = timm.create_model(name, pretrained=False)
        save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(path))
    return path


@pytest.mark.slow
def test_a_recipe_that_needs_weights_says_so_in_one_line_when_offline(shirts, tmp_path):
    message = user_error(cli("train", str(shirts), "--recipe", "seed003-transfer-resnet18", "--runs-dir",
                             str(tmp_path)))
    assert "pass the weights as a local file with --weights FILE" in message


@pytest.mark.slow
@pytest.mark.parametrize("name", SEED_RECIPES)
def test_every_seed_recipe_trains_one_epoch_on_real_images(name, shirts, tmp_path):
    data = ["fashion-mnist", "--max-per-class", "6"] if name in BUILT_IN_DATA else [str(shirts)]
    extra = []
    if name in NEEDS_WEIGHTS:
        model = load_recipe(name).values["model"]["name"]
        extra = ["--weights", str(_random_pretrained_weights(model, tmp_path.parent))]
    recipe = load_recipe(name).values
    size = recipe["data"]["img_size"]
    if size > 100 and name != FULL_SIZE:  # the architecture and every setting, at a smaller input: suite time
        size = 64
    result = cli("train", *data, "--recipe", name, "--epochs", "1", "--no-report", "--runs-dir", str(tmp_path),
                 "--name", "run", "--img-size", str(size), "--precision", "fp32", *extra)  # no timing probe: suite time
    assert result.returncode == 0, result.stderr[-3000:]
    plan = yaml.safe_load((tmp_path / "run" / "plan.json").read_text())
    assert plan["model"] == recipe["model"]["name"] and plan["img_size"] == size
    assert plan["batch_size"] == recipe["train"]["batch_size"] and plan["optimizer"] == recipe["optim"]["optimizer"]
    assert (tmp_path / "run" / "metrics.json").is_file() and (tmp_path / "run" / "best.safetensors").is_file()
