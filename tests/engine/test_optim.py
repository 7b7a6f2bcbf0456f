import pytest
import torch

from imgcls.engine import optim as optim_module
from imgcls.engine.optim import build_optimizer, build_scheduler
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


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_optimizers_run_fused_and_update_as_the_reference_loop(name, monkeypatch):
    """The fused kernel on CPU parameters: the same updates as torch's per-parameter loop."""
    torch.manual_seed(0)
    fused_model, loop_model = torch.nn.Linear(8, 3), torch.nn.Linear(8, 3)
    loop_model.load_state_dict(fused_model.state_dict())
    plan = plan_for(optimizer=name, lr=0.05, weight_decay=0.01)
    groups = lambda model: [{"params": list(model.parameters()), "weight_decay": 0.01}]  # noqa: E731
    fused = build_optimizer(groups(fused_model), plan)
    monkeypatch.setattr(optim_module, "_fusable", lambda groups: False)
    loop = build_optimizer(groups(loop_model), plan)
    assert fused.defaults["fused"] is True and not loop.defaults["fused"]
    for _ in range(4):
        batch = torch.randn(5, 8)
        for model, optimizer in ((fused_model, fused), (loop_model, loop)):
            model(batch).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()
    for a, b in zip(fused_model.parameters(), loop_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert fused.state_dict()["state"].keys() == loop.state_dict()["state"].keys()
