"""Datasets over decoded uint8 tensors, fetched a whole batch at a time."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, WeightedRandomSampler

from imgcls.config.variables import worker_timeout_s
from imgcls.data.build import ImageSplit
from imgcls.data.transforms import normalize_batch


class _BatchDataset(Dataset, ABC):
    """A dataset whose DataLoader fetches whole batches through `__getitems__` (labels in self.labels)."""

    labels: torch.Tensor

    @abstractmethod
    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of `indices` and its labels."""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int):
        return self.__getitems__([index])


class TensorImageDataset(_BatchDataset):
    """Indexable decoded images; `__getitems__` returns a normalized float batch and its labels."""

    def __init__(self, split: ImageSplit, mean, std, transform=None, channels_last: bool = False, seed: int = 0):
        self.images = split.images  # a uint8 tensor, MappedImages or LazyImages (imgcls.data.cache)
        self.labels = split.labels
        self.mean, self.std = tuple(mean), tuple(std)
        self.transform = transform
        self.channels_last = channels_last
        self.seed = seed

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def __getitems__(self, indices: list[int]):
        index = torch.as_tensor(indices, dtype=torch.long)
        images = self.images[index]
        if self.transform is not None:
            with torch.random.fork_rng(devices=[]):  # the process's own random stream is left as it was
                torch.random.default_generator.manual_seed(batch_seed(indices, self.seed))
                images = self._augment(images)
        batch = normalize_batch(images, self.mean, self.std)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch, self.labels[index]


    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        if getattr(self.transform, "batched", False):
            return self.transform(images)
        return torch.stack([self.transform(image) for image in images])


def batch_seed(indices: list[int], seed: int) -> int:
    """The augmentation seed of a batch: a function of its images and the run's seed alone, so the draws are the
    same whichever worker or process fetches the batch and whenever (a resumed epoch, a prefetched batch). Each
    epoch's shuffle makes new batches, hence new draws for every image."""
    digest = hashlib.blake2b(np.asarray(indices, dtype=np.int64).tobytes(), digest_size=8,
                             key=int(seed).to_bytes(8, "little", signed=True))
    return int.from_bytes(digest.digest(), "little") >> 1


class FeatureDataset(_BatchDataset):
    """Pre-computed feature vectors and labels, fetched a whole batch at a time."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        self.features, self.labels = features, labels

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.features.shape[1:])

    def __getitems__(self, indices: list[int]):
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.features[index], self.labels[index]


def drops_ragged_batch(train_images: int, global_batch_size: int) -> bool:
    """Whether training drops a ragged last batch (a batch of one breaks batch norm): unless that would leave a
    process no batch."""
    return train_images >= 2 * global_batch_size


def _batch_as_is(batch):
    """The dataset already returns a collated batch."""
    return batch


def make_loader(dataset: _BatchDataset, batch_size: int, shuffle: bool, workers: int, seed: int,
                drop_last: bool = False, balanced: bool = False) -> DataLoader:
    """A DataLoader that fetches whole batches from `dataset` (workers run the augmentation); `balanced` draws
    every class equally often, with replacement, as many images per epoch as the dataset has.

    The order comes from the sampler's own generator (`order_generator`), which the training loop seeds each
    epoch; the DataLoader's generator only seeds the worker processes. Shared, the two would tie the order to the
    number of workers: a new worker pool draws from the generator, a persistent one does not."""
    order = torch.Generator()
    order.manual_seed(seed)
    sampler: Sampler | None = None
    if balanced:
        labels = dataset.labels
        per_class = torch.bincount(labels).double()
        weights = (1.0 / per_class)[labels].tolist()
        sampler = WeightedRandomSampler(weights, len(weights), replacement=True, generator=order)
    elif shuffle:
        sampler = RandomSampler(dataset, generator=order)
    workers_seed = torch.Generator()
    workers_seed.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=_batch_as_is,
        generator=workers_seed,
        drop_last=drop_last,
        persistent_workers=workers > 0,
        timeout=worker_timeout_s() if workers > 0 else 0,  # a hung worker fails the run instead of hanging it
        pin_memory=torch.cuda.is_available(),
    )


def order_generator(loader: DataLoader) -> torch.Generator | None:
    """The generator that orders `loader`'s samples (None when it keeps the dataset's order)."""
    return getattr(loader.sampler, "generator", None)
