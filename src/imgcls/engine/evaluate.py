"""Run a model over a loader and gather logits and labels from every process."""

from __future__ import annotations


def make_accelerator(precision: str, seed: int | None = None, find_unused_parameters: bool = False,
                     compile_model: bool = False):
    """An Accelerator for `precision` (fp32 / bf16 / fp16, already resolved), with seedable shuffling.

    find_unused_parameters lets DDP cope with parameters that are frozen for some epochs; compile_model
    has `prepare` wrap the model in torch.compile (inductor).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, set_seed

    mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
    # Accelerate fixes precision and compile settings once per process (a shared state); every imgcls run
    # owns a fresh Accelerator instead, so train/evaluate/predict can follow each other in one process with
    # any settings. The process group (PartialState) is kept, so this holds under torchrun too.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    accelerator = Accelerator(
        cpu=cpu_only(),
        mixed_precision=mixed,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)],
        dynamo_backend="inductor" if compile_model else "no",
    )
    if seed is not None:
        set_seed(seed)
    return accelerator


def cpu_only() -> bool:
    """No accelerator present; Accelerate then needs cpu=True to run several processes with gloo."""
    import torch

    return not torch.cuda.is_available() and not torch.backends.mps.is_available()


def resolve_precision(precision: str) -> str:
    """The precision for inference: as asked, or for 'auto' bf16/fp16 on GPUs and fp32 on CPUs."""
    from imgcls.config import auto_precision_override
    from imgcls.engine.precision import choose_precision

    return choose_precision(precision, pinned_auto=auto_precision_override())[0]


def collect_logits(accelerator, model, loader, tta: bool = False):
    """Logits (float32, CPU) and labels for every sample of `loader`, in order, gathered across processes.

    With `tta` the prediction is the mean of the probabilities for each image and its horizontal mirror,
    returned as log-probabilities (so softmax gives that mean back).
    """
    import torch

    model.eval()
    all_logits, all_labels = [], []
    with torch.inference_mode(), accelerator.autocast():
        for images, labels in loader:
            logits = tta_logits(model, images) if tta else model(images)
            logits, labels = accelerator.gather_for_metrics((logits.float(), labels))
            all_logits.append(logits.cpu())
            all_labels.append(labels.cpu())
    if not all_logits:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(all_logits), torch.cat(all_labels)


def tta_logits(model, images):
    """Log of the mean softmax over `images` and their horizontal mirrors (test-time augmentation)."""
    probs = model(images).float().softmax(dim=1) + model(images.flip(-1)).float().softmax(dim=1)
    return (probs / 2).clamp_min(1e-12).log()
