"""fastcnn: a compact convolutional net for small images that trains fast on a CPU.

A 3x3 stem, then stages of conv -> max-pool -> batch norm -> ReLU (-> conv -> BN -> ReLU ...), a global
max-pool and a linear classifier. Pooling *before* the normalization and activation (as in Keller
Jordan's airbench) runs those memory-bound steps, and their backward passes, on a quarter of the pixels:
on a 2-core CPU they, not the convolutions, dominate a small net's training step. The Fashion-MNIST
recipe (src/imgcls/recipe_book/fashion-mnist.yaml) is built on it.
"""

from __future__ import annotations

from torch import nn

from imgcls.errors import ImgclsError
from imgcls.models.registry import register


def _conv(in_chans: int, out_chans: int) -> nn.Conv2d:
    return nn.Conv2d(in_chans, out_chans, 3, padding=1, bias=False)


def _norm_act(chans: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(chans), nn.ReLU(inplace=True)]


class FastCNN(nn.Module):
    def __init__(self, num_classes: int, in_chans: int, stem: int, widths: list[int], depth: int, drop_rate: float):
        super().__init__()
        layers = [_conv(in_chans, stem), *_norm_act(stem)] if stem else []
        chans = stem or in_chans
        for width in widths:
            layers += [_conv(chans, width), nn.MaxPool2d(2), *_norm_act(width)]
            for _ in range(depth - 1):
                layers += [_conv(width, width), *_norm_act(width)]
            chans = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.drop = nn.Dropout(drop_rate)
        self.num_features = chans
        self.fc: nn.Module = nn.Linear(chans, num_classes)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """A new Linear for `num_classes`, or Identity for 0 (pooled features out, for linear probing)."""
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x):
        return self.pool(self.features(x))

    def forward(self, x):
        return self.fc(self.drop(self.forward_features(x)))


@register("fastcnn", input_size=28)
def fastcnn(num_classes: int = 10, in_chans: int = 1, img_size: int | None = None, stem: int = 16,
            widths: list[int] | tuple[int, ...] = (32, 64, 128), depth: int = 2, drop_rate: float = 0.0) -> nn.Module:
    """A stem conv of `stem` channels (0: none, the first stage sees the pixels), one stage per entry of
    `widths` (each halves the resolution), `depth` convs per stage; 292,666 parameters with the defaults on
    1x28x28 and 10 classes. Inputs of at least 2**len(widths) pixels."""
    if not widths or depth < 1 or stem < 0:
        raise ImgclsError("fastcnn needs at least one stage width, depth >= 1 and stem >= 0: fix --model-option")
    model = FastCNN(num_classes, in_chans, int(stem), [int(width) for width in widths], int(depth), drop_rate)
    return model
