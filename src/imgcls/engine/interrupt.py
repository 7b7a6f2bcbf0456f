"""Ctrl-C and SIGTERM during training: the step in progress finishes, the state is saved where it stopped, and
the process exits 130 (SIGINT) or 143 (SIGTERM); `imgcls train --resume RUN` continues at the next step.

The signal handler only sets a flag, which the training loop reads after every step (all processes agree on it
under torchrun). A second signal takes its default action at once: every save is atomic (a staging folder,
then renames), so that cannot leave a half-written state that looks complete.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from accelerate import Accelerator

from imgcls.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []  # the signal that asked training to stop, while stopping_on_signals is active


@dataclass
class EpochProgress:
    """Where an epoch's training steps are: the steps done and their running sums. A stopped epoch's progress
    is saved in last/ (LoopState.partial) and the resumed epoch starts from it."""

    epoch: int  # 0-based
    steps: int = 0
    loss_sum: float = 0.0  # the sum of loss x batch size (float32 values: they round-trip exactly)
    correct: int = 0
    seen: int = 0
    data_time_s: float = 0.0
    step_time_s: float = 0.0
    train_time_s: float = 0.0
    img_size: int | None = None  # with --progressive: the side the model was fed
    stopped: bool = False  # the loop left this epoch early because a signal asked it to


def _ask_to_stop(signum: int, frame) -> None:
    if _received:  # the second signal: its default action, now
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _received.append(signum)
    sys.stderr.write(f"\n{signal.Signals(signum).name}: stopping after this step and saving; "
                     f"send it again to stop at once\n")


@contextmanager
def stopping_on_signals() -> Iterator[None]:
    """While active, SIGINT and SIGTERM ask the training loop to stop after its current step (main thread only:
    elsewhere Python cannot install handlers, and the signals keep their usual effect)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in SIGNALS}
    _received.clear()
    for number in SIGNALS:
        signal.signal(number, _ask_to_stop)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _received.clear()


def stop_requested(accelerator: Accelerator) -> bool:
    """Whether a signal asked training to stop, in any process (a collective when there are several)."""
    asked = bool(_received)
    if accelerator.num_processes == 1:
        return asked
    flags = accelerator.reduce(torch.tensor(float(asked), device=accelerator.device), reduction="sum")
    return bool(flags > 0)


def interrupted(epoch: int, step: int, run_path) -> Interrupted:
    """The exception that ends an interrupted training, after its state was saved."""
    signum = _received[0] if _received else signal.SIGINT
    where = f"epoch {epoch + 1}, step {step}" if step else f"the end of epoch {epoch}"
    return Interrupted(signum, f"stopped by {signal.Signals(signum).name} at {where}; the state there is saved in "
                               f"{run_path}/last: continue with 'imgcls train --resume {run_path}'")
