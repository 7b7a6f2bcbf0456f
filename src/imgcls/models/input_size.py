"""The zero-image forward check: an input size an architecture cannot take fails before any work, in one line."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from imgcls.errors import ImgclsError, first_line


def check_input_sizes(model: nn.Module, name: str, channels: int, sizes: Iterable[int], fix: str) -> None:
    """One forward pass of a zero image at each size (on the model's device); the first size that fails raises
    `<name> does not take <size> px inputs (<why>); <fix>`."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    size = 0
    try:
        with torch.no_grad():
            for size in sorted(set(sizes)):
                model(torch.zeros(1, channels, size, size, device=device))
    except (RuntimeError, ValueError, AssertionError) as error:  # shape errors; timm's patch embedding asserts
        raise ImgclsError(f"{name} does not take {size} px inputs ({first_line(error, 140)}); {fix}") from None
    finally:
        model.train(was_training)
