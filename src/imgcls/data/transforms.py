"""Augmentation presets (torchvision transforms v2 on uint8 tensors) and batched normalization."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.transforms import v2


def train_transform(preset: str, img_size: int, hflip: bool, crop_padding: int | None = None, erase: float = 0.0):
    """The per-image training augmentation of a preset; None for 'none'.

    light: pad-and-crop (CIFAR style), plus random erasing of a rectangle in a fraction `erase` of the
    images; standard: random-resized-crop; strong: standard + TrivialAugment + random erasing. Horizontal
    flips are added unless the data forbids them (digits). `light` is applied to a whole batch at once
    (`BatchPadCropFlip`); the others image by image.
    """
    if preset == "none":
        return None
    if preset == "light":
        return BatchPadCropFlip(max(1, img_size // 8) if crop_padding is None else crop_padding, hflip, erase)
    low_scale = 0.35 if preset == "standard" else 0.25
    steps = [v2.RandomResizedCrop(img_size, scale=(low_scale, 1.0), antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if preset == "strong":
        steps.append(v2.TrivialAugmentWide())
        steps.append(v2.RandomErasing(p=0.25, value=0))
    return v2.Compose(steps)


class BatchPadCropFlip:
    """Reflect-pad by `padding`, crop back at a random offset, flip half the images and (with `erase` > 0)
    blank one random rectangle in that fraction of them, for a whole uint8 batch in a few tensor operations:
    the same distribution as v2.RandomCrop(padding, reflect) + v2.RandomHorizontalFlip + v2.RandomErasing
    (scale 0.02-0.33, ratio 0.3-3.3, value 0) per image, without a Python loop over images."""

    batched = True

    def __init__(self, padding: int, hflip: bool, erase: float = 0.0):
        self.padding, self.hflip, self.erase = padding, hflip, erase

    def __call__(self, images):
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
        out = padded[batch, channel, rows, cols]
        return erase_rectangles(out, self.erase) if self.erase else out

    def __repr__(self) -> str:
        return f"BatchPadCropFlip(padding={self.padding}, hflip={self.hflip}, erase={self.erase})"


def erase_rectangles(images, probability: float, scale=(0.02, 0.33), ratio=(0.3, 3.3)):
    """Random erasing (Zhong et al., 2020) of a whole (N, C, H, W) batch: in each image, with `probability`,
    one rectangle of `scale` x the area and aspect ratio in `ratio` (log-uniform) set to 0."""
    count, _, height, width = images.shape
    area = height * width * torch.empty(count).uniform_(*scale)
    aspect = torch.exp(torch.empty(count).uniform_(math.log(ratio[0]), math.log(ratio[1])))
    tall = (area * aspect).sqrt().round().long().clamp(1, height)
    wide = (area / aspect).sqrt().round().long().clamp(1, width)
    top = (torch.rand(count) * (height - tall + 1)).long().view(count, 1, 1, 1)
    left = (torch.rand(count) * (width - wide + 1)).long().view(count, 1, 1, 1)
    rows = torch.arange(height).view(1, 1, height, 1)
    cols = torch.arange(width).view(1, 1, 1, width)
    chosen = (torch.rand(count) < probability).view(count, 1, 1, 1)
    inside = (rows >= top) & (rows < top + tall.view(count, 1, 1, 1)) \
        & (cols >= left) & (cols < left + wide.view(count, 1, 1, 1)) & chosen
    return images.masked_fill(inside, 0)


def normalize_batch(images, mean, std):
    """uint8 (N, C, H, W) -> float32 normalized, in one batched operation."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    inv_std = 1.0 / (torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0)
    return (images.float() - mean_t) * inv_std
