import pytest
import torch

from imgcls.engine.optim import build_scheduler
from tests.helpers import plan_for


def _lrs(steps_per_epoch=10, epochs=5, lr=1.0, **optim):
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=lr)
    scheduler = build_scheduler(optimizer, plan_for(epochs=epochs, lr=lr, **optim), steps_per_epoch)
    rates = []
    for _ in range(steps_per_epoch * epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_cosine_with_warmup_rises_then_decays_to_the_floor():
    rates = _lrs(scheduler="cosine", warmup_epochs=1, min_lr_ratio=0.01)
    assert rates[0] == pytest.approx(0.01)
    assert max(rates) == pytest.approx(1.0, abs=1e-6) and rates.index(max(rates)) == 10
    assert rates[-1] == pytest.approx(0.01, abs=2e-3)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))


def test_step_schedule_decays_by_gamma():
    rates = _lrs(scheduler="step", warmup_epochs=0, step_epochs=2, step_gamma=0.1)
    assert rates[0] == pytest.approx(1.0) and rates[20] == pytest.approx(0.1) and rates[40] == pytest.approx(0.01)


def test_onecycle_peaks_at_lr():
    rates = _lrs(scheduler="onecycle", warmup_epochs=1)
    assert max(rates) == pytest.approx(1.0, rel=1e-3) and rates[0] < 0.1 and rates[-1] < 1e-3
