"""DenseNet-121 with squeeze-and-excitation applied to its final feature map (or a shallower or narrower DenseNet,
from scratch, for small images and small data)."""

from __future__ import annotations

from typing import cast

import timm
import torch
from timm.layers import SEModule
from timm.models.densenet import DenseNet
from torch import nn

from imgcls.errors import ImgclsError
from imgcls.models.registry import register

DENSENET121_BLOCKS = (6, 12, 24, 16)


class DenseNetSE(nn.Module):
    """DenseNet-121 features -> SE channel re-weighting -> global average pool -> classifier.

    The tutorial this comes from computes the SE output and then pools the un-weighted features,
    discarding it; here the re-weighted features are what the classifier sees.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, pretrained: bool = False, se_ratio: float = 1 / 16,
                 drop_rate: float = 0.0, block_config: tuple[int, ...] = DENSENET121_BLOCKS, growth_rate: int = 32):
        super().__init__()

        self.backbone = cast(DenseNet, timm.create_model(
            "densenet121", pretrained=pretrained, in_chans=in_chans, num_classes=0, global_pool="",
            block_config=tuple(block_config), growth_rate=growth_rate))
        channels = int(self.backbone.num_features)
        self.se = SEModule(channels, rd_ratio=se_ratio)
        self.num_features = channels
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.classifier: nn.Module = nn.Linear(channels, num_classes)
        self.pretrained_cfg = self.backbone.pretrained_cfg  # mean/std of the backbone's weights

    def get_classifier(self) -> nn.Module:
        """The final linear layer (timm's interface; used by freezing and linear probing)."""
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        """A new Linear for `num_classes`, or Identity for 0 (SE-weighted pooled features out)."""
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.se(self.backbone.forward_features(images))
        return self.classifier(self.dropout(self.pool(features).flatten(1)))


@register("densenet_se", input_size=224)
def densenet_se(num_classes: int = 1000, in_chans: int = 3, img_size: int | None = None, pretrained: bool = False,
                drop_rate: float = 0.0, block_config: list[int] | tuple[int, ...] = DENSENET121_BLOCKS,
                growth_rate: int = 32, se_ratio: float = 1 / 16) -> DenseNetSE:
    """DenseNet-121 + squeeze-and-excitation; --pretrained loads timm's ImageNet DenseNet-121 backbone.
    `block_config` (dense layers per block) and `growth_rate` (channels each layer adds) build another DenseNet,
    e.g. block_config=[2,4,8,6] for small images: from scratch only. `se_ratio`: the SE bottleneck's width as a
    fraction of the channels (the tutorial's reduction 8 is 0.125)."""
    block_config, growth_rate = tuple(int(layers) for layers in block_config), int(growth_rate)
    if not block_config or min(block_config) < 1 or growth_rate < 1:
        raise ImgclsError("densenet_se needs block_config of one or more positive layer counts and growth_rate >= 1")
    if not 0 < se_ratio <= 1:
        raise ImgclsError(f"densenet_se's se_ratio is a fraction of the channels in (0, 1], got {se_ratio}")
    if pretrained and (block_config, growth_rate) != (DENSENET121_BLOCKS, 32):
        raise ImgclsError("the pretrained weights are DenseNet-121's: drop --pretrained, or the block_config / "
                          "growth_rate options")
    return DenseNetSE(num_classes, in_chans, pretrained=pretrained, se_ratio=float(se_ratio), drop_rate=drop_rate,
                      block_config=block_config, growth_rate=growth_rate)
