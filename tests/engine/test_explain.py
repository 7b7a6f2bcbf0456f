"""Explanations that mean something: on data whose only cue is a small patch at a known place, the map's peak
falls in the patch; a randomly initialised model's maps do not look like the trained one's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import imgcls
from imgcls.engine.explain import explain_images
from tests.helpers import cli, user_error

SIDE = 64
PATCH = (slice(10, 24), slice(36, 50))  # rows, columns of the cue: 14 x 14 px, top right


def _image(rng, marked: bool) -> np.ndarray:
    """A smooth random grey background; the marked class has a bright square at PATCH (its only difference)."""
    coarse = rng.uniform(60, 170, size=(8, 8))
    background = np.kron(coarse, np.ones((8, 8))) + rng.normal(0, 12, size=(SIDE, SIDE))
    if marked:
        background[PATCH] = 245
    return np.clip(background, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def cue_data(tmp_path_factory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("cue")
    rng = np.random.default_rng(0)
    for split, count in (("train", 90), ("val", 20), ("test", 30)):
        for name, marked in (("marked", True), ("plain", False)):
            (root / split / name).mkdir(parents=True)
            for index in range(count):
                Image.fromarray(_image(rng, marked)).save(root / split / name / f"{index}.png")
    return root


def _peak_in_patch(maps: np.ndarray, margin: int = 2) -> float:
    """Share of maps whose maximum lies inside the cue (within `margin` px of its border)."""
    hits = 0
    for heatmap in maps:
        row, column = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
        hits += (PATCH[0].start - margin <= row < PATCH[0].stop + margin) and \
                (PATCH[1].start - margin <= column < PATCH[1].stop + margin)
    return hits / len(maps)


def _marked_test_batch(cue_data, loaded) -> torch.Tensor:
    from imgcls.data.images import decode_files
    from imgcls.data.transforms import normalize_batch

    files = sorted((cue_data / "test" / "marked").glob("*.png"))
    images, _, _ = decode_files(files, loaded.img_size, loaded.in_chans, loaded.interpolation)
    return normalize_batch(torch.from_numpy(images), loaded.mean, loaded.std)


def _train(cue_data, tmp_path_factory, model, epochs, **extra):
    runs = tmp_path_factory.mktemp(f"cue_{model}")
    outcome = imgcls.train(str(cue_data), model=model, img_size=SIDE, epochs=epochs, workers=0, batch_size=16,
                           runs_dir=str(runs), name=model, precision="fp32", hflip=False, augment="none", report=False,
                           **extra)
    assert outcome.metrics["test"]["accuracy"]["value"] >= 0.9, "the cue must be learned for the check to mean much"
    return imgcls.load(outcome.run_dir)


@pytest.fixture(scope="module")
def cnn(cue_data, tmp_path_factory):
    """fastcnn: convolutions, then global max pooling and a linear classifier (the design Grad-CAM assumes)."""
    return _train(cue_data, tmp_path_factory, "fastcnn", epochs=4, lr=3e-3,
                  options={"widths": [16, 32, 64], "depth": 1, "stem": 8})


@pytest.fixture(scope="module")
def vit(cue_data, tmp_path_factory):
    options = {"patch_size": 8, "width": 64, "depth": 3, "heads": 4, "pool": "cls"}
    return _train(cue_data, tmp_path_factory, "vit", epochs=12, lr=1e-3, options=options)


@pytest.mark.parametrize("method", ["auto", "gradcam", "gradcam++", "eigencam"])
def test_class_activation_maps_of_a_cnn_peak_on_the_cue(cnn, cue_data, method):
    batch = _marked_test_batch(cue_data, cnn)
    maps = explain_images(cnn.model, batch, [cnn.class_names.index("marked")] * len(batch), method).maps
    assert maps.shape == (30, SIDE, SIDE) and 0 <= maps.min() and maps.max() <= 1
    assert _peak_in_patch(maps) >= 0.8


def test_a_flattening_cnn_gets_hirescam_whose_maps_peak_on_the_cue(cue_data, tmp_path_factory):
    """LeNet-style nets flatten their last map into a Linear: Grad-CAM's averaged gradients cancel there,
    HiResCAM's element-wise ones do not (auto picks it)."""
    from imgcls.engine.explain import resolve_method

    flat = _train(cue_data, tmp_path_factory, "multilayer_cnn", epochs=3, lr=3e-3)
    assert resolve_method(flat.model, "auto") == "hirescam"
    batch = _marked_test_batch(cue_data, flat)
    maps = explain_images(flat.model, batch, [flat.class_names.index("marked")] * len(batch), "auto").maps
    assert _peak_in_patch(maps) >= 0.8


def test_attention_rollout_of_a_vit_peaks_on_the_cue(vit, cue_data):
    batch = _marked_test_batch(cue_data, vit)
    marked = vit.class_names.index("marked")
    maps = explain_images(vit.model, batch, [marked] * len(batch), "auto").maps  # rollout, for a ViT
    assert _peak_in_patch(maps, margin=4) >= 0.8  # a 64 px ViT with 8 px patches: maps are 8x8 upsampled
    tokens = explain_images(vit.model, batch, [marked] * len(batch), "gradcam").maps  # over the patch tokens
    assert tokens.shape == maps.shape and 0 <= tokens.min() and tokens.max() <= 1


def test_a_randomly_initialised_model_gives_other_maps(cnn, cue_data):
    """Adebayo et al.'s model-randomisation check: maps that survive random weights explain nothing."""
    batch = _marked_test_batch(cue_data, cnn)
    marked = cnn.class_names.index("marked")
    trained = explain_images(cnn.model, batch, [marked] * len(batch), "gradcam").maps
    torch.manual_seed(1)
    random_model = imgcls.create_model("fastcnn", num_classes=2, in_chans=1, img_size=SIDE, widths=[16, 32, 64],
                                       depth=1, stem=8).eval()
    randomised = explain_images(random_model, batch, [marked] * len(batch), "gradcam").maps
    correlations = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(trained, randomised)
                    if a.std() > 0 and b.std() > 0]
    assert np.mean(correlations) < 0.5
    assert _peak_in_patch(randomised) < 0.5 <= _peak_in_patch(trained)


def test_explain_cli_writes_overlays_and_a_grid(cnn, cue_data, tmp_path):
    images = cue_data / "test" / "marked"
    result = cli("explain", str(cnn.run_dir), str(images / "0.png"), str(images / "1.png"), "--out",
                 str(tmp_path / "maps"))
    assert result.returncode == 0, result.stderr
    written = sorted(path.name for path in (tmp_path / "maps").glob("*.png"))
    assert written == ["000-0.png", "001-1.png", "grid.png"]
    explained = imgcls.explain(cnn.run_dir, [images / "2.png"], target="plain", out=tmp_path / "api")
    assert explained[0]["target"] == "plain" and explained[0]["map"].shape == (SIDE, SIDE)
    assert explained[0]["predicted"] == "marked" and Path(explained[0]["figure"]).is_file()


def test_explain_mistakes_are_one_line(cnn, cue_data, tmp_path, fmnist_root):
    image = str(cue_data / "test" / "marked" / "0.png")
    assert "--target 'dog'" in user_error(cli("explain", str(cnn.run_dir), image, "--target", "dog"))
    assert "needs a ViT" in user_error(cli("explain", str(cnn.run_dir), image, "--method", "rollout"))
    assert "--method must be one of" in user_error(cli("explain", str(cnn.run_dir), image, "--method", "magic"))
    mlp = imgcls.train("fashion-mnist", data_root=str(fmnist_root), model="mlp", epochs=1, max_per_class=5,
                       workers=0, runs_dir=str(tmp_path / "runs"), report=False)
    from PIL import Image

    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(tmp_path / "black.png")
    assert "no spatial feature map" in user_error(cli("explain", str(mlp.run_dir), str(tmp_path / "black.png")))


@pytest.mark.parametrize("name, size, layer, grid", [
    ("resnet18", 64, "layer2", (8, 8)),  # its last map, layer4, is 2x2 at 64 px
    ("resnet18", 224, "layer4", (7, 7)),
    ("efficientnet_lite0", 128, "blocks.4", (8, 8)),  # a stage, not the first conv of the next block
    ("convnext_atto", 64, "stages.1", (8, 8)),
    ("densenet_se", 64, "backbone.features.denseblock2", (8, 8)),
    ("fastcnn", 28, "features.17", (7, 7)),  # the Fashion-MNIST recipe's net: its last map is 3x3
])
def test_the_cam_layer_is_the_deepest_whose_map_is_at_least_7x7(name, size, layer, grid):
    from imgcls.engine.explain import cam_layer

    channels = 1 if name == "fastcnn" else 3
    model = imgcls.create_model(name, num_classes=2, in_chans=channels, img_size=size).eval()
    chosen = cam_layer(model, torch.randn(1, channels, size, size))
    assert (chosen.name, chosen.grid) == (layer, grid)


def test_maps_say_where_they_come_from_and_coarse_grids_are_flagged():
    """--layer takes any spatial module; a 2x2 map or a 2x2 ViT patch grid gets the warning, with its fix."""
    images = torch.randn(2, 3, 64, 64)
    resnet = imgcls.create_model("resnet18", num_classes=2, in_chans=3, img_size=64).eval()
    default = explain_images(resnet, images, [0, 1])
    assert default.source == "gradcam at layer2 (8x8)" and default.coarse is None
    coarse = explain_images(resnet, images, [0, 1], layer="layer4")
    assert coarse.grid == (2, 2) and "2x2" in coarse.coarse and "--layer" in coarse.coarse
    vit = imgcls.create_model("vit", num_classes=2, in_chans=3, img_size=64, patch_size=32, width=32, depth=1,
                              heads=2).eval()
    rollout = explain_images(vit, images, [0, 1])
    assert rollout.grid == (2, 2) and "smaller patches" in rollout.coarse and rollout.maps.shape == (2, 64, 64)


def test_a_wrong_layer_is_one_line_naming_the_layers_there_are(cnn, cue_data, tmp_path):
    image = str(cue_data / "test" / "marked" / "0.png")
    message = user_error(cli("explain", str(cnn.run_dir), image, "--layer", "layer9"))
    assert "--layer 'layer9' is not a module" in message and "features (8x8)" in message
    assert "no spatial map" in user_error(cli("explain", str(cnn.run_dir), image, "--layer", "fc"))
    result = cli("explain", str(cnn.run_dir), image, "--layer", "features.10", "--out", str(tmp_path / "maps"))
    assert result.returncode == 0, result.stderr
    assert "at features.10 (16x16)" in result.stdout and "faithfulness" in result.stdout


def test_a_model_that_looks_at_the_cue_scores_near_the_cue_itself(cnn, cue_data):
    """Faithfulness cross-checked on a trained model: its Grad-CAM maps score close to the cue's own mask (the
    best a map can do), random maps about 0."""
    from imgcls.engine.faithfulness import deletion_insertion, random_maps

    batch = _marked_test_batch(cue_data, cnn)
    marked = [cnn.class_names.index("marked")] * len(batch)
    mask = np.zeros((len(batch), SIDE, SIDE), dtype=np.float32)
    mask[:, PATCH[0], PATCH[1]] = 1
    best = deletion_insertion(cnn.model, batch, mask, marked).score
    found = deletion_insertion(cnn.model, batch, explain_images(cnn.model, batch, marked).maps, marked).score
    chance = deletion_insertion(cnn.model, batch, random_maps(len(batch), SIDE, SIDE), marked).score
    assert best > 0.3  # greying out the cue first takes the class away at once (measured: 0.49)
    assert found > 0.8 * best and abs(chance) < 0.15  # measured: 0.49 and 0.004


NONE_LIKE_RANDOM = [0.0] * 6


@pytest.mark.parametrize("scores, randomised, chosen", [
    ([0.50, 0.53, 0.52, 0.49, 0.51, 0.54], NONE_LIKE_RANDOM, 0),  # none 0.05 above the default: it stays
    ([0.10, 0.57, 0.69, -0.06, 0.30, 0.33], NONE_LIKE_RANDOM, 2),  # Lite0's: LayerCAM at the same layer
    ([0.09, 0.05, 0.06, 0.41, 0.40, 0.40], NONE_LIKE_RANDOM, 3),  # ConvNeXt's: the finer layer
    ([0.10, 0.57, 0.69, -0.06, 0.30, 0.33], [0, 0, 0.6, 0, 0, 0], 1),  # the best is like a random model's
    ([0.10, 0.57, 0.69, -0.06, 0.30, 0.33], [-0.07, 0.16, 0.26, 0, 0, 0], 2),  # Lite0's: less alike is no rule
    ([0.50, 0.53, 0.52, 0.49, 0.51, 0.54], [0.6] * 6, 0),  # the default is never barred
    ([0.09, 0.05, 0.06, 0.405, 0.399, 0.395], [0.15, 0.12, 0.13, 0.20, 0.04, -0.01], 5),  # ConvNeXt's near-tie
])
def test_auto_keeps_gradcam_unless_another_cam_is_measurably_more_faithful(monkeypatch, scores, randomised, chosen):
    """The default (Grad-CAM at the layer chosen by resolution) is replaced only by a candidate 0.05 more
    faithful, and not by one whose maps look like a random-weights model's (the randomisation check)."""
    from types import SimpleNamespace

    from imgcls.engine import map_choice
    from imgcls.engine.explain import Maps

    model = imgcls.create_model("resnet18", num_classes=2, in_chans=3, img_size=SIDE).eval()
    images = torch.zeros(3, 3, SIDE, SIDE)
    pairs = map_choice.candidates(model, images)
    assert pairs == [(method, layer) for layer in ("layer2", "layer1") for method in ("gradcam", "hirescam",
                                                                                          "layercam")]
    monkeypatch.setattr(map_choice, "explain_images", lambda model, images, targets, method, layer: Maps(
        np.full((len(images), 4, 4), pairs.index((method, layer)), dtype=np.float32), method, layer, (8, 8)))
    monkeypatch.setattr(map_choice, "deletion_insertion", lambda model, images, maps, targets: SimpleNamespace(
        score=scores[int(maps[0, 0, 0])]))
    monkeypatch.setattr(map_choice, "similarity", lambda trained, random: randomised[int(trained[0, 0, 0])])
    choice = map_choice.choose_method(model, images, [0, 1, 0], split="val")
    assert (choice.method, choice.layer) == pairs[chosen] and choice.images == 3
    assert list(choice.scores.values()) == scores and list(choice.scores)[0] == "gradcam at layer2"
    assert choice.reason.startswith(f"{choice.name}: ") and "on 3 val images" in choice.reason
    barred = choice.reason.partition("barred, like a random-weights model's maps: ")[2]
    assert ("layercam at layer2" in barred) == (randomised[2] > map_choice.LIKE_RANDOM)
    assert map_choice.MapChoice.of_dict(choice.to_dict()) == choice
    vit = imgcls.create_model("vit", num_classes=2, in_chans=1, img_size=SIDE, patch_size=8, width=32, depth=1,
                              heads=2).eval()
    rollout = map_choice.choose_method(vit, torch.zeros(3, 1, SIDE, SIDE), [0, 1, 0])
    assert (rollout.method, rollout.layer, rollout.scores) == ("rollout", None, {})


def test_auto_on_a_trained_cnn_measures_every_cam_and_draws_the_most_faithful(cnn, cue_data):
    from imgcls.engine.map_choice import MARGIN, choose_method

    batch = _marked_test_batch(cue_data, cnn)[:12]
    marked = [cnn.class_names.index("marked")] * len(batch)
    choice = choose_method(cnn.model, batch, marked, split="test")
    assert list(choice.scores) == [f"{method} at {layer}" for layer in ("features", "features.11")
                                   for method in ("gradcam", "hirescam", "layercam")]  # 8x8, then 16x16
    best = max(choice.scores.values())
    assert choice.scores[choice.name] == best or choice.scores["gradcam at features"] > best - MARGIN
    assert _peak_in_patch(explain_images(cnn.model, batch, marked, choice.method, choice.layer).maps) >= 0.8
    assert choice.name == "gradcam at features" or choice.randomised[choice.name] <= 0.5  # the default: 0.50
    given = imgcls.explain(cnn.run_dir, [cue_data / "test" / "marked" / "3.png"], out=cue_data.parent / "given")
    assert f"{given[0]['method']} at {given[0]['layer']}" in choice.scores
    assert "on 1 given images" in given[0]["chosen_because"]
