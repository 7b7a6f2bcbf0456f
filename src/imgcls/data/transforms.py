"""Augmentation presets (torchvision transforms v2 on uint8 tensors) and batched normalization."""

from __future__ import annotations

def train_transform(preset: str, img_size: int, hflip: bool, crop_padding: int | None = None):
    """The per-image training augmentation of a preset; None for 'none'.

    light: pad-and-crop (CIFAR style); standard: random-resized-crop; strong: standard + TrivialAugment
    + random erasing. Horizontal flips are added unless the data forbids them (digits). `light` is
    applied to a whole batch at once (`BatchPadCropFlip`); the others image by image.
    """
    from torchvision.transforms import v2

    if preset == "none":
        return None
    if preset == "light":
        return BatchPadCropFlip(max(1, img_size // 8) if crop_padding is None else crop_padding, hflip)
    low_scale = 0.35 if preset == "standard" else 0.25
    steps = [v2.RandomResizedCrop(img_size, scale=(low_scale, 1.0), antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if preset == "strong":
        steps.append(v2.TrivialAugmentWide())
        steps.append(v2.RandomErasing(p=0.25, value=0))
    return v2.Compose(steps)


class BatchPadCropFlip:
    """Reflect-pad by `padding`, crop back at a random offset and flip half the images, for a whole uint8
    batch in a few tensor operations (the same distribution as v2.RandomCrop(padding, reflect) +
    v2.RandomHorizontalFlip per image, without a Python loop over images)."""

    batched = True

    def __init__(self, padding: int, hflip: bool):
        self.padding, self.hflip = padding, hflip

    def __call__(self, images):
        import torch
        import torch.nn.functional as F

        count, channels, height, width = images.shape
        pad = min(self.padding, height - 1, width - 1)  # reflect padding must be smaller than the image
        padded = F.pad(images, (pad, pad, pad, pad), mode="reflect") if pad else images
        top = torch.randint(0, 2 * pad + 1, (count, 1, 1, 1))
        left = torch.randint(0, 2 * pad + 1, (count, 1, 1, 1))
        rows = top + torch.arange(height).view(1, 1, height, 1)
        cols = left + torch.arange(width).view(1, 1, 1, width)
        if self.hflip:
            flip = torch.rand(count, 1, 1, 1) < 0.5
            cols = torch.where(flip, left + torch.arange(width - 1, -1, -1).view(1, 1, 1, width), cols)
        batch = torch.arange(count).view(count, 1, 1, 1)
        channel = torch.arange(channels).view(1, channels, 1, 1)
        return padded[batch, channel, rows, cols]

    def __repr__(self) -> str:
        return f"BatchPadCropFlip(padding={self.padding}, hflip={self.hflip})"


def normalize_batch(images, mean, std):
    """uint8 (N, C, H, W) -> float32 normalized, in one batched operation."""
    import torch

    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    inv_std = 1.0 / (torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0)
    return (images.float() - mean_t) * inv_std
