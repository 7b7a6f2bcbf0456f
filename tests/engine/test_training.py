"""Training options a user relies on: early stopping, monitor choice, optimizers."""

import pytest

import imgcls
from imgcls.errors import ImgclsError


def _train(fmnist_root, tmp_path, **overrides):
    settings = dict(source="fashion-mnist", data_root=str(fmnist_root), model="multilayer_cnn", max_per_class=40,
                    batch_size=32, workers=0, runs_dir=str(tmp_path), report=False)
    settings.update(overrides)
    return imgcls.train(**settings)


@pytest.mark.slow
def test_early_stopping_stops_when_the_monitored_metric_stalls(fmnist_root, tmp_path):
    # A learning rate this small cannot change a prediction: no epoch after the first improves on it.
    outcome = _train(fmnist_root, tmp_path, epochs=6, lr=1e-12, monitor="accuracy", patience=2, warmup_epochs=0,
                     scheduler="constant")
    assert outcome.best_epoch == 1
    assert outcome.epochs_run == 3


@pytest.mark.slow
def test_sgd_with_step_schedule_and_label_smoothing_learns(fmnist_root, tmp_path):
    outcome = _train(fmnist_root, tmp_path, epochs=3, optimizer="sgd", lr=0.05, scheduler="step", step_epochs=2,
                     label_smoothing=0.1, monitor="f1_macro", max_per_class=100)
    assert outcome.metrics["test"]["accuracy"]["value"] > 0.4  # 10 classes: chance is 0.1


def test_monitor_last_keeps_the_final_epoch_and_still_measures_val(fmnist_root, tmp_path):
    from safetensors.torch import load_file

    outcome = _train(fmnist_root, tmp_path, epochs=3, lr=1e-3, monitor="last", max_per_class=20, name="last")
    assert outcome.best_epoch == 3 and outcome.epochs_run == 3
    run = tmp_path / "last"
    history = (run / "history.csv").read_text().splitlines()
    assert "val_loss" in history[0] and len(history) == 4
    kept, final = load_file(run / "best.safetensors"), load_file(run / "last" / "model.safetensors")
    assert kept.keys() == final.keys() and all(kept[key].equal(final[key]) for key in kept)


def test_progressive_resizing_feeds_the_first_epochs_smaller_images(fmnist_root, tmp_path):
    import csv

    outcome = _train(fmnist_root, tmp_path, model="fastcnn", epochs=3, progressive="16:1,20:1", monitor="last",
                     max_per_class=20, name="progressive")
    with open(tmp_path / "progressive" / "history.csv") as file:
        assert [int(row["img_size"]) for row in csv.DictReader(file)] == [16, 20, 28]
    assert outcome.metrics["test"]["accuracy"]["value"] > 0.1  # evaluated at the full 28 px


def test_progressive_resizing_names_a_model_built_for_one_size(fmnist_root, tmp_path):
    with pytest.raises(ImgclsError, match="mlp does not take 20 px inputs.*drop --progressive"):
        _train(fmnist_root, tmp_path, model="mlp", epochs=2, progressive="20:1")
    assert not list(tmp_path.iterdir())  # failed before a run folder was written
    with pytest.raises(ImgclsError, match="vit_tiny_patch16_224 does not take 16 px inputs"):  # timm asserts
        _train(fmnist_root, tmp_path, model="vit_tiny_patch16_224", img_size=32, options={"patch_size": 4},
               epochs=2, progressive="16:1")
    with pytest.raises(ImgclsError, match="--progressive size 28 px is outside 8 to 27 px"):
        _train(fmnist_root, tmp_path, model="fastcnn", epochs=2, progressive="28:1")
