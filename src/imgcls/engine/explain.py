"""What the model looked at: class-activation maps of CNNs and ViTs (the grad-cam library; no CAM maths of our
own), and attention rollout for ViTs (Abnar & Zuidema, 2020), each as one map per image in [0, 1]."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from imgcls.engine.precision import uses_convolutions
from imgcls.errors import ImgclsError, first_line

METHODS = ("auto", "gradcam", "gradcam++", "hirescam", "eigencam", "rollout")


def resolve_method(model, method: str, class_specific: bool = False) -> str:
    """`auto`: attention rollout for a ViT (Grad-CAM when a class is asked for: rollout cannot target one);
    Grad-CAM for a CNN that pools globally before its classifier; HiResCAM for one that flattens its last
    feature map into a linear layer (LeNet-style), where Grad-CAM's averaged gradients cancel out."""
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


def cam_layer(model, example):
    """The layer a CAM is taken at, and how to turn its output into a grid: the input of a ViT's last block's
    attention (its first norm), else the last layer whose output is still a spatial map (at least 2x2)."""
    if is_vit(model):
        return model.blocks[-1].norm1, _tokens_to_grid(model)
    outputs = []
    hooks = [module.register_forward_hook(lambda module, args, output: outputs.append((module, output)))
             for module in model.modules() if not isinstance(module, (nn.Identity, nn.Dropout))]
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for hook in hooks:
            hook.remove()
    spatial = [module for module, output in outputs
               if isinstance(output, torch.Tensor) and output.ndim == 4 and min(output.shape[-2:]) >= 2]
    if not spatial:
        raise ImgclsError(f"{getattr(model, 'imgcls_name', type(model).__name__)} has no spatial feature map to "
                          f"explain (no convolution or patch tokens); explain works on CNNs and ViTs")
    return spatial[-1], None  # forward hooks fire as modules finish: the last is the deepest map (a stage, not a part)


def explain_images(model, images, targets: list[int], method: str = "auto"):
    """(N, H, W) float32 maps in [0, 1] of `images` (normalized (N, C, H, W)) for the `targets` classes."""
    if method not in METHODS:
        raise ImgclsError(f"--method must be one of {', '.join(METHODS)}, got '{method}'")
    method = resolve_method(model, method)
    model.eval()
    if method == "rollout":
        if not is_vit(model):
            raise ImgclsError("attention rollout needs a ViT (its attention maps); use --method gradcam for CNNs")
        return attention_rollout(model, images)

    layer, reshape = cam_layer(model, images)
    cam_class = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "hirescam": HiResCAM, "eigencam": EigenCAM}[method]
    # channels_last: oneDNN's convolutions, backward included, run about 2x faster on a CPU (EfficientNet-Lite0,
    # 28 images at 224 px: 3.8 s NCHW, 1.7 s NHWC); the maps are the same to 1e-6
    layout = torch.channels_last if uses_convolutions(model) else torch.contiguous_format
    model.to(memory_format=layout)
    try:
        with cam_class(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
            maps = cam(input_tensor=images.contiguous(memory_format=layout),
                       targets=[ClassifierOutputTarget(int(t)) for t in targets])
    except RuntimeError as error:
        raise ImgclsError(f"{method} failed on this model ({first_line(error)}); try another --method") from None
    finally:
        model.to(memory_format=torch.contiguous_format)
    return np.nan_to_num(np.asarray(maps, dtype=np.float32))


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
