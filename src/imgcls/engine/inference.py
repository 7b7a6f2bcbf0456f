"""The one batched inference path: a model over batches of images, plain or with test-time augmentation, in
the run's precision. Evaluation (gathered across processes), prediction on files and, later, export parity
and serving all go through it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from imgcls.data.build import DecodedImages
from imgcls.data.transforms import normalize_batch
from imgcls.engine.inference_setting import InferenceSetting
from imgcls.engine.precision import choose_precision


def inference_precision(requested: str, pinned_auto: str | None = None, decided: str = "") -> str:
    """The precision to infer in: as asked; for 'auto' (unless pinned) what the run `decided` at the end of its
    training (engine/inference_setting), else bf16/fp16 on GPUs and fp32 on CPUs."""
    if requested == "auto" and pinned_auto is None and decided and not torch.cuda.is_available():
        return decided
    return choose_precision(requested, pinned_auto=pinned_auto)[0]


def model_outputs(model: nn.Module, images: DecodedImages, mean: tuple[float, ...], std: tuple[float, ...],
                  setting: InferenceSetting) -> torch.Tensor:
    """The model's float32 outputs (logits, or a headless backbone's features) of (N, C, H, W) uint8 images, batch
    by batch in the setting's precision and layout; `model` must be in that layout (setting.prepare)."""
    device = next(model.parameters()).device
    outputs = []
    with torch.inference_mode(), setting.autocast(device.type):
        for start in range(0, len(images), setting.batch_size):
            batch = normalize_batch(images[start : start + setting.batch_size], mean, std).to(device)
            outputs.append(model(batch.contiguous(memory_format=setting.memory_format)).float().cpu())
    return torch.cat(outputs) if outputs else torch.empty(0)


def precision_agreement(model: nn.Module, images: DecodedImages, mean: tuple[float, ...], std: tuple[float, ...],
                        setting: InferenceSetting, top1: torch.Tensor | None = None) -> int:
    """How many of `images` get the same top-1 class in the setting's precision as in fp32 (same layout); `top1`:
    the classes the setting's precision already gave them (the training's final evaluation), not computed again."""
    setting.prepare(model)
    fp32 = InferenceSetting("fp32", setting.channels_last, setting.batch_size)
    if top1 is None:
        top1 = model_outputs(model, images, mean, std, setting).argmax(1)
    return int((top1 == model_outputs(model, images, mean, std, fp32).argmax(1)).sum())


def tta_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Log of the mean softmax over `images` and their horizontal mirrors (test-time augmentation)."""
    probs = model(images).float().softmax(dim=1) + model(images.flip(-1)).float().softmax(dim=1)
    return (probs / 2).clamp_min(1e-12).log()


def batch_logits(model: nn.Module, images: torch.Tensor, tta: bool = False, temperature: float = 1.0) -> torch.Tensor:
    """Logits of one batch (log-probabilities with `tta`), float32, divided by the run's calibrated temperature."""
    logits = tta_logits(model, images) if tta else model(images).float()
    return logits if temperature == 1.0 else logits / temperature


def collect_logits(accelerator: Accelerator, model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
                   tta: bool = False, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, CPU; divided by `temperature`) and labels for every sample of `loader`, in order, gathered
    across processes.

    With `tta` the prediction is the mean of the probabilities for each image and its horizontal mirror,
    returned as log-probabilities (so softmax gives that mean back).
    """
    model.eval()
    all_logits, all_labels = [], []
    with torch.inference_mode(), accelerator.autocast():
        for images, labels in loader:
            logits, labels = accelerator.gather_for_metrics((batch_logits(model, images, tta, temperature), labels))
            all_logits.append(logits.cpu())
            all_labels.append(labels.cpu())
    if not all_logits:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(all_logits), torch.cat(all_labels)


def predict_probabilities(model: nn.Module, batches: Iterable[torch.Tensor], tta: bool = False,
                          precision: str = "fp32", temperature: float = 1.0) -> torch.Tensor:
    """Class probabilities (float32, CPU) of normalized image batches, one process, no gathering."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    with torch.inference_mode(), InferenceSetting(precision).autocast(device.type):
        for images in batches:
            out.append(batch_logits(model, images.to(device), tta, temperature).softmax(dim=1).cpu())
    return torch.cat(out) if out else torch.empty(0)


@dataclass
class TorchClassifier:
    """A trained model behind the interface an exported one has (OnnxClassifier): uint8 image batches as
    decoded in, class probabilities out. Prediction, serving and export parity use it."""

    model: nn.Module  # in eval mode
    class_names: list[str]
    img_size: int
    in_chans: int
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    tta: bool = False
    precision: str = "fp32"
    temperature: float = 1.0  # the run's calibration: logits / T before the softmax
    threshold: float | None = None  # two classes: the positive class from this probability on (None: argmax)
    threshold_rule: str = ""
    positive_class: int = 1
    backend: str = "torch"
    channels_last: bool = False  # the model is in NHWC memory (a conv net where the run measured it faster)

    @property
    def model_name(self) -> str:
        return str(getattr(self.model, "imgcls_name", type(self.model).__name__))

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(N, K) float32 numpy probabilities of a (N, C, S, S) uint8 numpy batch."""
        batch = normalize_batch(torch.from_numpy(images), self.mean, self.std)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return predict_probabilities(self.model, [batch], self.tta, self.precision, self.temperature).numpy()
