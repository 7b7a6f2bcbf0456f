"""The plan: every resolved value decided once, with its reason; config.yaml stays what the user asked."""

import pytest

from imgcls.config import DataConfig
from imgcls.errors import ImgclsError
from imgcls.models.defaults import ModelDefaults
from imgcls.plan import input_size
import numpy as np

from tests.helpers import plan_for


def test_the_learning_rate_rule_is_explicit_and_scales_sgd_with_the_global_batch():
    one = plan_for(optimizer="sgd", batch_size=64)
    four = plan_for(optimizer="sgd", batch_size=64, world_size=4)
    assert (one.global_batch_size, four.global_batch_size) == (64, 256)
    assert one.lr == pytest.approx(0.025) and four.lr == pytest.approx(0.1)
    assert "linear scaling" in four.notes["lr"]
    assert plan_for(optimizer="adamw", world_size=4).lr == 1e-3  # Adam(W): no scaling
    asked = plan_for(optimizer="sgd", lr=0.3, world_size=4)
    assert asked.lr == 0.3 and "asked for" in asked.notes["lr"]
    assert plan_for(optimizer="adamw").weight_decay == 0.05 and plan_for(optimizer="sgd").weight_decay == 5e-4


def test_the_image_size_comes_from_the_flag_the_dataset_or_the_model():
    lenet = ModelDefaults(input_size=32, min_input_size=32)
    assert input_size(DataConfig(img_size=64), lenet, 28, "lenet") == (64, "asked for")
    size, why = input_size(DataConfig(), lenet, 28, "lenet")
    assert size == 32 and "resized up" in why  # Fashion-MNIST's 28 px is too small for LeNet-5
    assert input_size(DataConfig(), ModelDefaults(input_size=176), None, "resnet10t")[0] == 176  # a folder
    assert input_size(DataConfig(), ModelDefaults(input_size=176), 28, "resnet10t")[0] == 28  # a built-in
    with pytest.raises(ImgclsError, match="image size 16 .*--img-size 32"):
        input_size(DataConfig(img_size=16), lenet, None, "lenet")


def test_tta_off_where_the_data_must_not_be_mirrored_says_why():
    plan = plan_for(tta=True, hflip=False)
    assert plan.tta is False and plan.hflip is False and "must not be mirrored" in plan.notes["tta"]
    assert plan_for(tta=True).tta is True


def test_other_resolved_values():
    plan = plan_for(class_names=("healthy", "tb"), positive_class="healthy", freeze_backbone=True, epochs=7,
                    img_size=64, splits=("train",))
    assert plan.positive_class == 0 and plan.freeze_epochs == 7 and plan.monitor is None
    assert plan.crop_padding == 8 and plan.mean == pytest.approx((0.449,) * 1, abs=1e-3)
    with pytest.raises(ImgclsError, match="--positive-class 'dog'"):
        plan_for(class_names=("cat", "cow"), positive_class="dog")


def test_the_training_split_is_measured_on_a_seeded_sample_when_large(class_folders):
    import dataclasses

    from imgcls.config import DataConfig
    from imgcls.data import build_dataset
    from imgcls.engine.loaders import measured_splits

    big = plan_for(splits={"train": range(57_000), "val": range(3_000)})
    assert big.train_metrics_images == 10_000 and "sample of 10,000 of the 57,000" in big.notes["train_metrics_images"]
    assert plan_for(splits={"train": range(1_600)}).train_metrics_images == 1_600  # small data: all of it
    bundle = build_dataset(DataConfig(source=str(class_folders), img_size=16), seed=0, img_size=16)
    plan = dataclasses.replace(plan_for(), train_metrics_images=10)
    measured = measured_splits(bundle, plan)
    train = bundle.splits["train"]
    assert len(measured["train"]) == 10 and measured["val"] is bundle.splits["val"]
    rows = [train.paths.index(path) for path in measured["train"].paths]
    assert rows == sorted(rows) and (train.labels[rows] == measured["train"].labels).all()
    assert measured_splits(bundle, plan)["train"].paths == measured["train"].paths  # seeded: the same sample


def test_loader_workers_stay_out_of_a_cpu_step_when_batches_are_cheap():
    from imgcls.plan import loader_workers

    assert loader_workers(None, "ram", "light")[0] == 0 and loader_workers(None, "disk", "none")[0] == 0
    assert loader_workers(None, "none", "light")[0] == 2  # decoding every epoch needs the processes
    assert loader_workers(None, "ram", "standard")[0] == 2  # per-image augmentation too
    assert loader_workers(None, "ram", "light", gpu=True)[0] == 2
    assert loader_workers(3, "ram", "light") == (3, "asked for")
    assert plan_for().workers == 0 and plan_for(workers=1).workers == 1


def test_class_weights_auto_are_scikit_learns_balanced_weights():
    from sklearn.utils.class_weight import compute_class_weight

    plan = plan_for(class_names=("common", "rare"), splits={"train": range(110), "val": range(20)}, counts=[100, 10],
                    class_weights="auto", sampler="balanced")
    labels = np.repeat([0, 1], [100, 10])
    expected = compute_class_weight("balanced", classes=np.array([0, 1]), y=labels)
    assert np.allclose(plan.class_weights, expected, atol=1e-6)
    assert plan.sampler == "balanced" and plan.notes["class_weights"].startswith("auto")
    assert plan_for(counts=[100, 10, 5]).class_weights == ()
