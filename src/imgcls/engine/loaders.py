"""The loaders of a training run, as its plan sizes them: the augmented training loader and plain evaluation
loaders of every split (the training split, or a seeded sample of it, measured as well)."""

from __future__ import annotations

import dataclasses

import numpy as np
from torch.utils.data import DataLoader

from imgcls.data import DataBundle, ImageSplit
from imgcls.data.cache import select_images
from imgcls.data.loader import TensorImageDataset, drops_ragged_batch, make_loader
from imgcls.data.transforms import train_transform
from imgcls.plan import TrainPlan


def measured_splits(bundle: DataBundle, plan: TrainPlan) -> dict[str, ImageSplit]:
    """The splits the final metrics use: every held-out image, and the training split or its seeded sample."""
    splits = dict(bundle.splits)
    train = splits.get("train")
    if train is not None and plan.train_metrics_images and plan.train_metrics_images < len(train):
        rows = np.sort(np.random.default_rng(plan.seed).choice(len(train), plan.train_metrics_images, replace=False))
        splits["train"] = ImageSplit(select_images(train.images, rows), train.labels[rows],
                                     [train.paths[i] for i in rows] if train.paths is not None else None)
    return splits


def with_measured_splits(bundle: DataBundle, plan: TrainPlan) -> DataBundle:
    """The bundle whose splits are what the final metrics and predictions refer to (see measured_splits)."""
    return dataclasses.replace(bundle, splits=measured_splits(bundle, plan))


def make_loaders(bundle: DataBundle, plan: TrainPlan) -> dict[str, DataLoader]:
    """The augmented training loader ("train") and the plain evaluation loaders ("train_eval", "val", "test")."""
    augment = train_transform(plan.augment, plan.img_size, plan.hflip, plan.crop_padding, plan.erase)
    train_set = TensorImageDataset(bundle.splits["train"], plan.mean, plan.std, augment, plan.channels_last,
                                   seed=plan.seed)
    train_loader = make_loader(train_set, plan.batch_size, shuffle=True, workers=plan.workers, seed=plan.seed,
                               drop_last=drops_ragged_batch(len(train_set), plan.global_batch_size),
                               balanced=plan.sampler == "balanced")
    loaders = {"train": train_loader}
    measured = measured_splits(bundle, plan)
    for split, source in (("train_eval", "train"), ("val", "val"), ("test", "test")):
        if source in measured and len(measured[source]):
            dataset = TensorImageDataset(measured[source], plan.mean, plan.std, channels_last=plan.channels_last)
            loaders[split] = make_loader(dataset, plan.batch_size * 2, shuffle=False, workers=min(plan.workers, 1),
                                         seed=plan.seed)
    return loaders
