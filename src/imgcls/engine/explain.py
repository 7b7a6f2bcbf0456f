"""What the model looked at: class-activation maps of CNNs and ViTs (the grad-cam library; no CAM maths of our
own), and attention rollout for ViTs (Abnar & Zuidema, 2020), each as one map per image in [0, 1]."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from imgcls.engine.precision import uses_convolutions
from imgcls.errors import ImgclsError, first_line

METHODS = ("auto", "gradcam", "gradcam++", "hirescam", "eigencam", "layercam", "rollout")
CAM_CLASSES = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "hirescam": HiResCAM, "eigencam": EigenCAM,
               "layercam": LayerCAM}
CAM_CANDIDATES = ("gradcam", "hirescam", "layercam")  # what `auto` compares on a CNN (engine/map_choice)
MIN_GRID = 7  # cells a side a CNN's map needs to point at a region (resnet18's last map at 224 px)


def resolve_method(model, method: str, class_specific: bool = False) -> str:
    """`auto`: attention rollout for a ViT (Grad-CAM when a class is asked for: rollout cannot target one);
    Grad-CAM for a CNN that pools globally before its classifier (of the CAMs measured, the one whose maps
    never survived random weights: docs/explain.md); HiResCAM for one that flattens its last feature map into a
    linear layer (LeNet-style), where Grad-CAM's averaged gradients cancel out."""
    if method != "auto":
        return method

    if is_vit(model):
        return "gradcam" if class_specific else "rollout"
    pools = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
    global_pool = any(isinstance(m, pools) or type(m).__name__ == "SelectAdaptivePool2d" for m in model.modules())
    return "gradcam" if global_pool else "hirescam"


def is_vit(model) -> bool:
    """A transformer over patch tokens (imgcls's vit and timm's vit/deit families)."""
    return hasattr(model, "blocks") and hasattr(model, "patch_embed")


def _prefix_and_grid(model) -> tuple[int, tuple[int, int]]:
    """The number of class/distillation tokens before the patch tokens, and the patch grid."""
    if hasattr(model, "num_prefix_tokens"):  # timm
        return int(model.num_prefix_tokens), tuple(model.patch_embed.grid_size)
    return (1 if getattr(model, "cls_token", None) is not None else 0), (model.grid_size, model.grid_size)


def _tokens_to_grid(model):
    """grad-cam's reshape_transform for a ViT: (N, T, C) tokens -> (N, C, rows, columns) patch grid."""
    prefix, (rows, columns) = _prefix_and_grid(model)

    def reshape(tokens):
        patches = tokens[:, prefix:prefix + rows * columns]
        return patches.reshape(tokens.shape[0], rows, columns, tokens.shape[-1]).permute(0, 3, 1, 2)

    return reshape


@dataclass(frozen=True)
class CamLayer:
    """Where a map comes from: the module, its name in the model, its map's rows x columns, and how to turn
    its output into that grid (ViT tokens; None for a CNN's feature map)."""
    module: nn.Module
    name: str
    grid: tuple[int, int]
    reshape: Callable | None = None


@dataclass
class Maps:
    """One map per image ((N, H, W) float32 in [0, 1], at the input size), the method that drew them, the layer
    and grid they come from, and whether that grid is a ViT's patch grid."""
    maps: np.ndarray
    method: str
    layer: str
    grid: tuple[int, int]
    patches: bool = False

    @property
    def source(self) -> str:
        """"gradcam at layer2 (8x8)", "rollout over all 12 blocks (14x14)": what a reader of the figure needs."""
        return f"{self.method} {'over' if self.method == 'rollout' else 'at'} {self.layer} ({self.grid[0]}x{self.grid[1]})"

    @property
    def coarse(self) -> str | None:
        """Why these maps cannot point at a small region and what gives finer ones (a grid under MIN_GRID cells
        a side), else None."""
        if min(self.grid) >= MIN_GRID:
            return None
        finer = "a larger input or smaller patches give a finer grid" if self.patches else \
            "--layer NAME takes the map of an earlier, finer layer"
        return (f"the map is {self.grid[0]}x{self.grid[1]}, each cell 1/{min(self.grid)} of the image side, too "
                f"coarse to point at a small region ({finer})")


def spatial_layers(model, example) -> list[tuple[str, nn.Module, tuple[int, int]]]:
    """Every module whose output is a spatial map (N, C, H, W) of at least 2x2, as (name, module, (H, W)), in
    the order they finish: a stage comes after its blocks, so of equal maps the later is the outer module."""
    names = {module: name for name, module in model.named_modules()}
    outputs: list[tuple[nn.Module, tuple[int, int]]] = []

    def keep(module, args, output):
        if isinstance(output, torch.Tensor) and output.ndim == 4 and min(output.shape[-2:]) >= 2:
            outputs.append((module, tuple(output.shape[-2:])))

    hooks = [module.register_forward_hook(keep) for module in model.modules()
             if module is not model and not isinstance(module, (nn.Identity, nn.Dropout))]
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for hook in hooks:
            hook.remove()
    return [(names[module], module, grid) for module, grid in outputs]


def cam_layer(model, example, name: str | None = None) -> CamLayer:
    """The layer a CAM is taken at: `name` if given; for a ViT the input of its last block's attention (its
    first norm) over the patch grid; for a CNN the deepest map of at least MIN_GRID x MIN_GRID cells (the
    finest one where none is), because a deeper, coarser map cannot point at anything smaller than its cells
    (resnet18's last map is 2x2 at 64 px, so its maps come from layer2, 8x8)."""
    if is_vit(model) and name is None:
        grid = _prefix_and_grid(model)[1]
        return CamLayer(model.blocks[-1].norm1, f"blocks.{len(model.blocks) - 1}.norm1", grid, _tokens_to_grid(model))
    if name is not None:
        return _named_layer(model, example, name)
    spatial = spatial_layers(model, example)
    if not spatial:
        raise ImgclsError(f"{getattr(model, 'imgcls_name', type(model).__name__)} has no spatial feature map to "
                          f"explain (no convolution or patch tokens); explain works on CNNs and ViTs")
    fine = [layer for layer in spatial if min(layer[2]) >= MIN_GRID]
    return _stage_of(spatial, fine[-1][2] if fine else max((layer[2] for layer in spatial), key=min))


def finer_cam_layer(model, example) -> CamLayer | None:
    """The layer cam_layer's rule picks one resolution finer (a CNN's next finer stage: resnet18's layer1 where
    it picks layer2; ConvNeXt's stem where it picks stages.1), or None (a ViT, or no finer map)."""
    if is_vit(model):
        return None
    spatial = spatial_layers(model, example)
    chosen = cam_layer(model, example).grid
    finer = [grid for _, _, grid in spatial if min(grid) > min(chosen)]
    return _stage_of(spatial, min(finer, key=min)) if finer else None


def _stage_of(spatial: list[tuple[str, nn.Module, tuple[int, int]]], grid: tuple[int, int]) -> CamLayer:
    """Of the modules giving a `grid` map, the outermost (a stage, not the first conv of the next block); of
    those, the last to finish (the deepest)."""
    same = [layer for layer in spatial if layer[2] == grid]
    outermost = min(name.count(".") for name, _, _ in same)
    name, module, _ = [layer for layer in same if layer[0].count(".") == outermost][-1]
    return CamLayer(module, name, grid)


def _named_layer(model, example, name: str) -> CamLayer:
    """--layer NAME: a module of the model whose output is a spatial map (or a ViT block's tokens)."""
    modules = dict(model.named_modules())
    if is_vit(model) and name.startswith("blocks.") and name in modules:
        return CamLayer(modules[name], name, _prefix_and_grid(model)[1], _tokens_to_grid(model))
    spatial = spatial_layers(model, example)
    grids = {layer: grid for layer, _, grid in spatial}
    if name not in grids:
        problem = "is not a module of this model" if name not in modules else \
            "gives no spatial map (N, C, H, W) of at least 2x2"
        stages = {grid: layer for layer, _, grid in spatial}  # the outermost module of each resolution
        choices = ", ".join(f"{layer} ({grid[0]}x{grid[1]})" for grid, layer in stages.items())
        raise ImgclsError(f"--layer '{name}' {problem}; choose a layer with a spatial map, e.g. {choices}")
    return CamLayer(modules[name], name, grids[name])


def explain_images(model, images, targets: list[int], method: str = "auto", layer: str | None = None) -> Maps:
    """Maps of `images` (normalized (N, C, H, W)) for the `targets` classes, at `layer` (a module name; default:
    chosen by cam_layer)."""
    if method not in METHODS:
        raise ImgclsError(f"--method must be one of {', '.join(METHODS)}, got '{method}'")
    method = resolve_method(model, method)
    model.eval()
    if method == "rollout":
        if not is_vit(model):
            raise ImgclsError("attention rollout needs a ViT (its attention maps); use --method gradcam for CNNs")
        if layer is not None:
            raise ImgclsError("attention rollout uses every block, not one --layer; drop --layer or use "
                              "--method gradcam")
        return Maps(attention_rollout(model, images), method, f"all {len(model.blocks)} blocks",
                    _prefix_and_grid(model)[1], patches=True)

    chosen = cam_layer(model, images, layer)
    cam_class = CAM_CLASSES[method]
    # channels_last: oneDNN's convolutions, backward included, run about 2x faster on a CPU (EfficientNet-Lite0,
    # 28 images at 224 px: 3.8 s NCHW, 1.7 s NHWC); the maps are the same to 1e-6
    layout = torch.channels_last if uses_convolutions(model) else torch.contiguous_format
    model.to(memory_format=layout)
    try:
        with cam_class(model=model, target_layers=[chosen.module], reshape_transform=chosen.reshape) as cam:
            maps = cam(input_tensor=images.contiguous(memory_format=layout),
                       targets=[ClassifierOutputTarget(int(t)) for t in targets])
    except RuntimeError as error:
        raise ImgclsError(f"{method} failed on this model ({first_line(error)}); try another --method") from None
    finally:
        model.to(memory_format=torch.contiguous_format)
    return Maps(np.nan_to_num(np.asarray(maps, dtype=np.float32)), method, chosen.name, chosen.grid,
                patches=chosen.reshape is not None)


def attention_rollout(model, images):
    """Attention rollout: the product over blocks of (head-averaged attention + identity), row-normalised; the
    class token's row (or, without one, every token's mean) over the patches, upsampled to the image."""
    captured, saved, hooks = [], [], []
    for block in model.blocks:
        attention = block.attn
        saved.append(attention.fused_attn)
        attention.fused_attn = False  # the fused kernel never materialises the attention probabilities
        hooks.append(attention.attn_drop.register_forward_hook(lambda m, args, out: captured.append(out.detach())))
    try:
        with torch.no_grad():
            model(images)
    finally:
        for hook, block, fused in zip(hooks, model.blocks, saved):
            hook.remove()
            block.attn.fused_attn = fused
    tokens = captured[0].shape[-1]
    rollout = torch.eye(tokens).expand(images.shape[0], tokens, tokens)
    for attention in captured:
        mixed = attention.float().mean(dim=1) + torch.eye(tokens)
        rollout = (mixed / mixed.sum(dim=-1, keepdim=True)) @ rollout
    prefix, (rows, columns) = _prefix_and_grid(model)
    relevance = rollout[:, 0, prefix:] if prefix else rollout.mean(dim=1)
    grid = relevance[:, :rows * columns].reshape(-1, 1, rows, columns)
    maps = F.interpolate(grid, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    low = maps.flatten(1).min(1).values.view(-1, 1, 1)
    high = maps.flatten(1).max(1).values.view(-1, 1, 1)
    return ((maps - low) / (high - low).clamp_min(1e-12)).numpy().astype("float32")
