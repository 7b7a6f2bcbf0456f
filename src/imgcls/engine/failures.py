"""How training fails when the cause is outside imgcls: a non-finite loss, memory, a data-loading worker. Each is
one line naming where and what to do; last/ and the best weights stay the last good epoch's."""

from __future__ import annotations

import torch

from imgcls.errors import first_line
from imgcls.plan import TrainPlan


def runtime_failure(error: RuntimeError, plan: TrainPlan) -> str | None:
    """A failure of the machine rather than of imgcls, as one line with what to do; None for anything else.
    last/ and the best weights are the last complete epoch's: `imgcls train --resume RUN` after the fix."""
    text = str(error)
    if isinstance(error, torch.OutOfMemoryError) or "out of memory" in text.lower():
        return (f"out of memory training {plan.model} with batches of {plan.batch_size} at {plan.img_size} px; "
                f"lower --batch-size (e.g. {max(1, plan.batch_size // 2)}) or --img-size")
    if "does not have a deterministic implementation" in text:
        return (f"{first_line(error).split(', but you set')[0]}; train without --deterministic on this device "
                f"(CPU runs are reproducible without it)")
    if "DataLoader worker" in text or "DataLoader timed out" in text:
        return (f"a data-loading worker process failed ({first_line(error)}); run with --workers 0 to see the "
                f"error in the main process")
    return None


def diverged(loss: torch.Tensor, images: torch.Tensor, epoch: int, step: int) -> str:
    """Why training stopped at a non-finite loss, and where; last/ and the best weights are the last good ones."""
    cause = ("the batch holds non-finite pixel values: check the data" if not torch.isfinite(images).all()
             else "the learning rate is likely too high: start again with a lower --lr")
    return (f"training diverged at epoch {epoch + 1}, step {step + 1} (the loss is {float(loss.detach())}); {cause}; "
            f"last/ and the best weights keep the last good epoch")
