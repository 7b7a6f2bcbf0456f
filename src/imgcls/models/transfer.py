"""Transfer learning: which parameters are the classifier head, and which the backbone."""

from __future__ import annotations

from torch import nn

from imgcls.errors import ImgclsError


def reset_classifier(model: nn.Module, num_classes: int) -> nn.Module:
    """timm's reset_classifier (imgcls's vit, fastcnn and densenet_se implement it too): a new head for
    `num_classes`, or none for 0 (the model then returns the pooled features); returns the new head."""
    if not hasattr(model, "reset_classifier"):
        raise ImgclsError(f"{getattr(model, 'imgcls_name', type(model).__name__)} has no replaceable classifier; "
                          f"--linear-probe needs a timm model or vit / densenet_se / fastcnn")
    getattr(model, "reset_classifier")(num_classes)
    return classifier_of(model) if num_classes else nn.Identity()


def classifier_of(model: nn.Module) -> nn.Module:
    """The classifier head: timm's get_classifier() (our built-ins implement it too), else the last Linear."""
    if hasattr(model, "get_classifier"):
        head = getattr(model, "get_classifier")()
        if isinstance(head, nn.Module) and any(True for _ in head.parameters()):
            return head
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ImgclsError(f"{type(model).__name__} has no linear classifier to train on its own; "
                          f"drop --freeze-backbone/--freeze-epochs/--linear-probe")
    return linears[-1]


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter outside the classifier head."""
    head = {id(p) for p in classifier_of(model).parameters()}
    return [p for p in model.parameters() if id(p) not in head]


def norm_statistics_layers(model: nn.Module) -> list[nn.Module]:
    """The batch-norm layers (their running statistics change in train mode even when their weights are frozen)."""
    return [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]


def param_groups(model: nn.Module, lr: float, weight_decay: float, backbone_lr_scale: float = 1.0) -> list[dict]:
    """Optimizer groups: head and backbone (backbone at lr * backbone_lr_scale), each split into
    weight-decayed weights and undecayed biases / norm parameters (as timm does)."""
    head = {id(p) for p in classifier_of(model).parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        decay = parameter.ndim > 1 and not name.endswith(".bias")
        groups.setdefault((id(parameter) in head, decay), []).append(parameter)
    return [
        {"params": params, "lr": lr if is_head else lr * backbone_lr_scale,
         "weight_decay": weight_decay if decay else 0.0}
        for (is_head, decay), params in sorted(groups.items(), key=lambda item: item[0])
    ]
