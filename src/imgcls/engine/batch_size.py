"""--auto-batch-size: the largest batch, from the one asked for down by halves, with which a training step fits in
the device's memory (Accelerate's find_executable_batch_size does the halving and the clean-up between tries)."""

from __future__ import annotations

import torch
from accelerate.utils import find_executable_batch_size
from torch import nn

from imgcls.errors import ImgclsError


def fitting_batch_size(model: nn.Module, input_shape: tuple[int, int, int], asked: int, precision: str,
                       device: torch.device) -> tuple[int, list[int]]:
    """The batch size to train with, and the sizes that ran out of memory on the way.

    One forward and backward pass of `model` on zero images at each size, in `precision`, with room for an
    optimizer's two moments per weight (Adam's) held alongside; the model's weights and statistics are restored
    afterwards, so the run starts as it would have without the probe."""
    saved = {name: value.detach().clone() for name, value in model.state_dict().items()}
    refused: list[int] = []
    model.to(device).train()

    sizes = [asked]

    def halved() -> int:
        sizes.append(sizes[-1] // 2)
        return sizes[-1]

    @find_executable_batch_size(starting_batch_size=asked, reduce_batch_size_fn=halved)
    def largest(batch_size: int) -> int:
        moments = [torch.zeros_like(parameter) for parameter in model.parameters() for _ in range(2)]
        try:
            images = torch.zeros((batch_size, *input_shape), device=device)
            with torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16,
                                enabled=precision in ("bf16", "fp16")):
                loss = model(images).float().mean()
            loss.backward()
        except Exception:
            refused.append(batch_size)
            raise
        finally:
            model.zero_grad(set_to_none=True)
            del moments
        return batch_size

    try:
        found = largest()
    except RuntimeError as error:
        if "No executable batch size found" not in str(error):
            raise
        raise ImgclsError(f"a training step does not fit in memory even with one image of {input_shape[-1]} px; "
                          f"lower --img-size or use a smaller model") from None
    finally:
        model.load_state_dict(saved)
        model.to("cpu")
    return found, refused
