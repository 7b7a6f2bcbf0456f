"""A Vision Transformer assembled from timm's layers, configurable, with the tutorials' presets."""

from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from imgcls.errors import ImgclsError
from imgcls.models.registry import register


class ViT(nn.Module):
    """Patch embedding + learned position embedding -> pre-norm transformer blocks -> pooling -> head.

    pool: "cls" (a class token), "mean" (average of patch tokens) or "flatten" (all patch tokens
    concatenated, as the Keras CIFAR-10 tutorial does). head_hidden: sizes of an optional MLP head.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, img_size: int = 72, patch_size: int = 6,
                 width: int = 64, depth: int = 8, heads: int = 4, mlp_ratio: float = 2.0, pool: str = "mean",
                 head_hidden: tuple[int, ...] = (), dropout: float = 0.0, head_dropout: float = 0.0,
                 drop_path_rate: float = 0.0, drop_rate: float | None = None):
        super().__init__()

        if pool not in ("cls", "mean", "flatten"):
            raise ImgclsError(f"ViT pool must be cls, mean or flatten, got '{pool}'")
        if img_size < patch_size:
            raise ImgclsError(f"image size {img_size} is smaller than the ViT patch size {patch_size}; "
                              f"use a larger --img-size")
        if width % heads:
            raise ImgclsError(f"ViT width {width} must be divisible by its {heads} heads")
        dropout = drop_rate if drop_rate is not None else dropout
        self.patch_size, self.pool = patch_size, pool
        # Non-overlapping patches, linearly projected; pixels past the last whole patch are dropped
        # (Keras' extract_patches with VALID padding), so e.g. 28 px with patch 6 gives a 4x4 grid.
        self.patch_embed = nn.Conv2d(in_chans, width, kernel_size=patch_size, stride=patch_size)
        self.grid_size = img_size // patch_size
        num_patches = self.grid_size**2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width)) if pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + (pool == "cls"), width))
        self.pos_drop = nn.Dropout(dropout)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.Sequential(*[
            Block(width, heads, mlp_ratio, qkv_bias=True, proj_drop=dropout, attn_drop=dropout, drop_path=rate)
            for rate in rates
        ])
        self.norm = nn.LayerNorm(width, eps=1e-6)
        features = width * num_patches if pool == "flatten" else width
        layers: list[nn.Module] = [nn.Dropout(head_dropout)] if head_hidden else []
        for hidden in head_hidden:
            layers += [nn.Linear(features, hidden), nn.GELU(), nn.Dropout(head_dropout)]
            features = hidden
        layers.append(nn.Linear(features, num_classes))
        self.head = nn.Sequential(*layers)
        self._head_features = features  # the final layer's width in (kept while the layer is an Identity)
        trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        self.apply(_init_linear)

    def get_classifier(self) -> nn.Module:
        """The final linear layer (timm's interface; used by freezing and linear probing)."""
        return self.head[-1]

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final layer: a new Linear, or Identity for num_classes=0 (features out)."""
        self.head[-1] = nn.Linear(self._head_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Token embeddings after the last block and the final norm: (N, tokens, width)."""
        tokens = self.patch_embed(images).flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = self.pos_drop(tokens + self.pos_embed)
        return self.norm(self.blocks(tokens))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.forward_features(images)
        if self.pool == "cls":
            pooled = tokens[:, 0]
        elif self.pool == "mean":
            pooled = tokens.mean(dim=1)
        else:
            pooled = tokens.flatten(1)
        return self.head(pooled)


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


@register("vit", input_size=72)
def vit(num_classes: int = 10, in_chans: int = 3, img_size: int | None = None, **options) -> ViT:
    """A small ViT (patch 6, width 64, 8 blocks, 4 heads, mean pooling); every option can be changed."""
    return ViT(num_classes, in_chans, img_size or 72, **options)


@register("vit_keras_cifar10", input_size=72)
def vit_keras_cifar10(num_classes: int = 10, in_chans: int = 3, img_size: int | None = None,
                      drop_rate: float | None = None, drop_path_rate: float | None = None) -> ViT:
    """The Keras CIFAR-10 tutorial's ViT: 72 px, patch 6, width 64, 8 layers, 4 heads, MLP 128,
    all patch tokens flattened into a 2048 -> 1024 GELU head with dropout 0.5."""
    return ViT(num_classes, in_chans, img_size or 72, patch_size=6, width=64, depth=8, heads=4, mlp_ratio=2.0,
               pool="flatten", head_hidden=(2048, 1024), dropout=0.1 if drop_rate is None else drop_rate,
               head_dropout=0.5, drop_path_rate=drop_path_rate or 0.0)


@register("vit_b16", input_size=224)
def vit_b16(num_classes: int = 1000, in_chans: int = 3, img_size: int | None = None,
            drop_rate: float | None = None, drop_path_rate: float | None = None) -> ViT:
    """ViT-B/16 (Dosovitskiy et al.): 224 px, patch 16, width 768, 12 layers, 12 heads, class token."""
    return ViT(num_classes, in_chans, img_size or 224, patch_size=16, width=768, depth=12, heads=12, mlp_ratio=4.0,
               pool="cls", dropout=drop_rate or 0.0, drop_path_rate=drop_path_rate or 0.0)
