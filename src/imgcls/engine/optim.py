"""Optimizer and per-step learning-rate schedule (with linear warmup)."""

from __future__ import annotations

from imgcls.config import OptimConfig


def build_optimizer(model, optim: OptimConfig, lr: float, weight_decay: float):
    """AdamW / Adam / SGD (Nesterov) via timm, with no weight decay on biases and norm layers."""
    from timm.optim import create_optimizer_v2

    opt = {"adamw": "adamw", "adam": "adam", "sgd": "sgd"}[optim.optimizer]
    extra = {"momentum": optim.momentum} if optim.optimizer == "sgd" else {}
    return create_optimizer_v2(model, opt=opt, lr=lr, weight_decay=weight_decay, **extra)


def build_scheduler(optimizer, optim: OptimConfig, steps_per_epoch: int, epochs: int, lr: float):
    """A torch LR scheduler stepped once per optimizer step, over the whole run."""
    from torch.optim import lr_scheduler

    total = max(1, steps_per_epoch * epochs)
    # Warmup is capped at a quarter of the run so that short runs still spend most steps at full rate.
    warmup = min(int(round(optim.warmup_epochs * steps_per_epoch)), total // 4)
    if optim.scheduler == "onecycle":
        # One-cycle has its own warm-up phase: the first pct_start of the run.
        pct_start = warmup / total if warmup > 0 else 0.25
        return lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total, pct_start=max(pct_start, 1e-3))
    after_warmup = total - warmup
    if optim.scheduler == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, after_warmup), eta_min=lr * optim.min_lr_ratio)
    elif optim.scheduler == "step":
        main = lr_scheduler.StepLR(optimizer, step_size=max(1, optim.step_epochs * steps_per_epoch),
                                   gamma=optim.step_gamma)
    else:
        main = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup == 0:
        return main
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=0.01, end_factor=1.0, total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])
