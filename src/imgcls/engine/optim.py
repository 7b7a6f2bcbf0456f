"""Optimizer and per-step learning-rate schedule (with linear warmup)."""

from __future__ import annotations

import torch
from torch.optim import lr_scheduler

from imgcls.plan import TrainPlan


def build_optimizer(param_groups: list[dict], plan: TrainPlan):
    """AdamW / Adam / SGD (Nesterov) over prepared groups (each with its own lr and weight decay).

    The fused implementation (one vectorized kernel over all parameters) where every parameter is a floating
    point tensor on a CPU or CUDA device: on a CPU, torch's default is a Python loop over the parameters,
    several passes over memory each. Same updates, same state dict.
    """
    fused = True if _fusable(param_groups) else None  # None: torch's default (foreach where it can)
    if plan.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=plan.lr, momentum=plan.momentum, nesterov=plan.momentum > 0, fused=fused)
    if plan.optimizer == "adam":
        return torch.optim.Adam(param_groups, lr=plan.lr, fused=fused)
    return torch.optim.AdamW(param_groups, lr=plan.lr, fused=fused)


def _fusable(param_groups: list[dict]) -> bool:
    return all(param.is_floating_point() and param.device.type in ("cpu", "cuda")
               for group in param_groups for param in group["params"])


def build_scheduler(optimizer, plan: TrainPlan, steps_per_epoch: int):
    """A torch LR scheduler stepped once per optimizer step, over the whole run (each group keeps its ratio)."""
    total = max(1, steps_per_epoch * plan.epochs)
    # Warmup is capped at a quarter of the run so that short runs still spend most steps at full rate.
    warmup = min(int(round(plan.warmup_epochs * steps_per_epoch)), total // 4)
    if plan.scheduler == "onecycle":
        # One-cycle has its own warm-up phase: the first pct_start of the run.
        pct_start = warmup / total if warmup > 0 else 0.25
        peaks = [group["lr"] for group in optimizer.param_groups]
        return lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=total, pct_start=max(pct_start, 1e-3))
    after_warmup = total - warmup
    if plan.scheduler == "cosine":
        # eta_min is one number for all groups: take the smallest group's floor so no group rises at the end.
        floor = min(group["lr"] for group in optimizer.param_groups) * plan.min_lr_ratio
        main: lr_scheduler.LRScheduler = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, after_warmup),
                                                                         eta_min=floor)
    elif plan.scheduler == "step":
        main = lr_scheduler.StepLR(optimizer, step_size=max(1, plan.step_epochs * steps_per_epoch),
                                   gamma=plan.step_gamma)
    else:
        main = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup == 0:
        return main
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=0.01, end_factor=1.0, total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])
