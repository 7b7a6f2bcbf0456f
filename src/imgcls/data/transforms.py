"""Augmentation presets (torchvision transforms v2 on uint8 tensors) and batched normalization."""

from __future__ import annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_normalization(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet statistics, averaged over RGB for one-channel data."""
    if channels == 1:
        return (sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,)
    return IMAGENET_MEAN, IMAGENET_STD


def train_transform(preset: str, img_size: int, hflip: bool):
    """The per-image training augmentation of a preset; None for 'none'.

    light: pad-and-crop (CIFAR style); standard: random-resized-crop; strong: standard + TrivialAugment
    + random erasing. Horizontal flips are added unless the data forbids them (digits).
    """
    from torchvision.transforms import v2

    if preset == "none":
        return None
    steps = []
    if preset == "light":
        steps.append(v2.RandomCrop(img_size, padding=max(1, img_size // 8), padding_mode="reflect"))
    else:
        low_scale = 0.35 if preset == "standard" else 0.25
        steps.append(v2.RandomResizedCrop(img_size, scale=(low_scale, 1.0), antialias=True))
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if preset == "strong":
        steps.append(v2.TrivialAugmentWide())
        steps.append(v2.RandomErasing(p=0.25, value=0))
    return v2.Compose(steps)


def normalize_batch(images, mean, std):
    """uint8 (N, C, H, W) -> float32 normalized, in one batched operation."""
    import torch

    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    inv_std = 1.0 / (torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0)
    return (images.float() - mean_t) * inv_std
