"""The classic small networks of an introductory computer-vision course."""

from __future__ import annotations

from torch import nn

from imgcls.models.registry import register


def _conv_out(size: int, kernel: int, pool: int = 1) -> int:
    """Spatial size after an unpadded convolution and an optional max-pool."""
    return (size - kernel + 1) // pool


@register("mlp", input_size=28)
def mlp(num_classes: int = 10, in_chans: int = 1, img_size: int | None = None, hidden: int = 100) -> nn.Module:
    """Flatten -> Linear(hidden) -> ReLU -> Linear; 79,510 parameters on 1x28x28 with 10 classes."""
    size = img_size or 28
    return nn.Sequential(
        nn.Flatten(), nn.Linear(in_chans * size * size, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes)
    )


@register("onecnn", input_size=28)
def onecnn(num_classes: int = 10, in_chans: int = 1, img_size: int | None = None) -> nn.Module:
    """One 5x5 convolution with 9 filters, then a linear classifier; 52,084 parameters on 1x28x28."""
    side = _conv_out(img_size or 28, 5)
    return nn.Sequential(
        nn.Conv2d(in_chans, 9, 5), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(9 * side * side, num_classes)
    )


@register("multilayer_cnn", input_size=28)
def multilayer_cnn(num_classes: int = 10, in_chans: int = 1, img_size: int | None = None) -> nn.Module:
    """Two conv + max-pool stages and a linear classifier; 8,490 parameters on 1x28x28."""
    side = _conv_out(_conv_out(img_size or 28, 5, 2), 5, 2)
    return nn.Sequential(
        nn.Conv2d(in_chans, 10, 5), nn.MaxPool2d(2), nn.ReLU(inplace=True),
        nn.Conv2d(10, 20, 5), nn.MaxPool2d(2), nn.ReLU(inplace=True),
        nn.Flatten(), nn.Linear(20 * side * side, num_classes),
    )


@register("lenet", input_size=32, min_input_size=32)
def lenet(num_classes: int = 10, in_chans: int = 3, img_size: int | None = None) -> nn.Module:
    """LeNet-5 as in the CIFAR-10 tutorial: 59,386 parameters on 3x32x32 with 10 classes."""
    side = _conv_out(_conv_out(_conv_out(img_size or 32, 5, 2), 5, 2), 5)
    return nn.Sequential(
        nn.Conv2d(in_chans, 6, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(16, 120, 5), nn.ReLU(inplace=True),
        nn.Flatten(), nn.Linear(120 * side * side, 64), nn.ReLU(inplace=True), nn.Linear(64, num_classes),
    )
