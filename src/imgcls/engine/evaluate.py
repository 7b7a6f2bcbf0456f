"""Run a model over a loader and gather logits and labels from every process."""

from __future__ import annotations


def make_accelerator(precision: str, seed: int | None = None, find_unused_parameters: bool = False):
    """An Accelerator for `precision` (fp32 / bf16 / fp16, already resolved), with seedable shuffling.

    find_unused_parameters lets DDP cope with parameters that are frozen for some epochs.
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, set_seed

    mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
    accelerator = Accelerator(
        cpu=cpu_only(),
        mixed_precision=mixed,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)],
    )
    if seed is not None:
        set_seed(seed)
    return accelerator


def cpu_only() -> bool:
    """No accelerator present; Accelerate then needs cpu=True to run several processes with gloo."""
    import torch

    return not torch.cuda.is_available() and not torch.backends.mps.is_available()


def resolve_precision(precision: str) -> str:
    """'auto' becomes bf16 on GPUs that support it (fp16 on older ones) and fp32 on CPUs.

    bf16 autocast made convolutional training slower on a Zen 5 CPU with native BF16 (see
    docs/decisions.md), so CPUs stay fp32 unless --precision bf16 is asked for.
    """
    import torch

    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def collect_logits(accelerator, model, loader):
    """Logits (float32, CPU) and labels for every sample of `loader`, in order, gathered across processes."""
    import torch

    model.eval()
    all_logits, all_labels = [], []
    with torch.inference_mode(), accelerator.autocast():
        for images, labels in loader:
            logits = model(images)
            logits, labels = accelerator.gather_for_metrics((logits.float(), labels))
            all_logits.append(logits.cpu())
            all_labels.append(labels.cpu())
    if not all_logits:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(all_logits), torch.cat(all_labels)
