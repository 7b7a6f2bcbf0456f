"""What a model expects of its input: size, normalisation and resampling, declared by each architecture (timm's
`pretrained_cfg`; `@register(..., input_size=...)` for the built-ins), looked up without building the model."""

from __future__ import annotations

from dataclasses import dataclass

from timm.models import get_pretrained_cfg

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_INPUT_SIZE = 224  # the size of a model that declares none (and of previews of folder data)


@dataclass(frozen=True)
class ModelDefaults:
    input_size: int = DEFAULT_INPUT_SIZE  # the side the architecture (or its weights) was made for
    min_input_size: int | None = None  # the smallest side it runs at (LeNet-5: 32); None: no known limit
    mean: tuple[float, ...] = IMAGENET_MEAN  # RGB statistics its inputs are normalised with
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"  # resampling when images are resized to input_size: bilinear or bicubic

    def normalization(self, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """mean and std for `channels` input channels (RGB statistics averaged for one channel)."""
        if channels == len(self.mean):
            return tuple(self.mean), tuple(self.std)
        return (sum(self.mean) / len(self.mean),) * channels, (sum(self.std) / len(self.std),) * channels


def timm_defaults(name: str) -> ModelDefaults:
    """A timm model's defaults from its pretrained config (no weights are fetched, no model is built)."""
    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return ModelDefaults()
    minimum = cfg.min_input_size[-1] if cfg.min_input_size else None
    interpolation = cfg.interpolation if cfg.interpolation in ("bilinear", "bicubic") else "bilinear"
    return ModelDefaults(int(cfg.input_size[-1]), minimum, tuple(cfg.mean), tuple(cfg.std), interpolation)
