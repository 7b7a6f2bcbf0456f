"""How the inference path runs a model: the measured precision, layout and batch (remembered), the bf16 agreement
check, and the decision a run records for eval and predict."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import imgcls
from imgcls.engine import inference_setting as setting_module
from imgcls.engine.inference import inference_precision, model_outputs, precision_agreement
from imgcls.engine.inference_setting import InferenceSetting, fastest_setting

CPU_ONLY = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only behaviour")


def _fake_timings(monkeypatch, per_image: dict[tuple[str, bool], float]) -> list[tuple[str, bool, int]]:
    """forward_seconds replaced by `per_image` seconds (x batch); returns the calls made."""
    calls = []
    monkeypatch.setattr(setting_module, "cpu_supports_bf16", lambda: True)

    def seconds(model, shape, precision, channels_last):
        calls.append((precision, channels_last, shape[0]))
        return per_image[(precision, channels_last)] * shape[0]

    monkeypatch.setattr(setting_module, "forward_seconds", seconds)
    return calls


@CPU_ONLY
def test_auto_takes_the_fastest_measured_setting_and_remembers_it(tmp_path, monkeypatch):
    calls = _fake_timings(monkeypatch, {("fp32", False): 0.030, ("fp32", True): 0.020, ("bf16", False): 0.010,
                                        ("bf16", True): 0.006})
    model = imgcls.create_model("fastcnn", num_classes=10, in_chans=3)
    cache = tmp_path / "precision.json"
    chosen = fastest_setting(model, (3, 64, 64), "auto", cache)
    assert (chosen.precision, chosen.channels_last) == ("bf16", True)
    assert "5.0x fp32 NCHW" in chosen.reason
    assert {(precision, layout) for precision, layout, _ in calls} == {("fp32", False), ("fp32", True),
                                                                      ("bf16", False), ("bf16", True)}
    remembered = next(iter(json.loads(cache.read_text()).values()))
    assert remembered["bf16|cl|16"] == pytest.approx(0.006)
    calls.clear()
    assert fastest_setting(model, (3, 64, 64), "auto", cache) == chosen  # remembered: nothing timed again
    assert calls == []


@CPU_ONLY
def test_bf16_must_be_clearly_faster_and_asked_precisions_are_kept(tmp_path, monkeypatch):
    _fake_timings(monkeypatch, {("fp32", False): 0.010, ("fp32", True): 0.012, ("bf16", False): 0.0095,
                                ("bf16", True): 0.0096})
    model = imgcls.create_model("fastcnn", num_classes=10, in_chans=3)
    assert fastest_setting(model, (3, 64, 64), "auto", tmp_path / "a.json").precision == "fp32"  # 1.05x only
    asked = fastest_setting(model, (3, 64, 64), "bf16", tmp_path / "b.json")
    assert asked.precision == "bf16" and "asked for" in asked.reason
    assert fastest_setting(model, (3, 64, 64), "auto", tmp_path / "c.json", allow_bf16=False).precision == "fp32"


def test_pinned_auto_and_tiny_models_are_not_timed(tmp_path, monkeypatch):
    monkeypatch.setattr(setting_module, "forward_seconds", lambda *args: pytest.fail("timed"))
    model = imgcls.create_model("fastcnn", num_classes=10, in_chans=1)
    pinned = fastest_setting(model, (1, 28, 28), "auto", tmp_path / "p.json", pinned_auto="bf16")
    assert (pinned.precision, pinned.channels_last) == ("bf16", True) and "pinned" in pinned.reason
    if not torch.cuda.is_available():
        assert inference_precision("auto", None, "bf16") == "bf16"  # what the run decided
    assert inference_precision("fp32", None, "bf16") == "fp32"  # asked for wins over what the run decided
    assert inference_precision("auto", "fp32", "bf16") == "fp32"  # and so does the tests' pin


@CPU_ONLY
def test_a_tiny_forward_stays_fp32(tmp_path):
    head = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    chosen = fastest_setting(head, (1, 4, 4), "auto", tmp_path / "p.json")
    assert chosen == InferenceSetting("fp32", False, setting_module.DEFAULT_BATCH, chosen.reason)
    assert "too short" in chosen.reason


def test_outputs_are_the_same_in_any_batch_size_and_layout():
    torch.manual_seed(0)
    model = imgcls.create_model("fastcnn", num_classes=10, in_chans=1).eval()
    images = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8)
    plain = model_outputs(model, images, (0.5,), (0.25,), InferenceSetting("fp32", False, 64))
    nhwc = InferenceSetting("fp32", True, 7)
    other = model_outputs(nhwc.prepare(model), images, (0.5,), (0.25,), nhwc)
    assert plain.shape == (20, 10) and torch.allclose(plain, other, atol=1e-5)


class _NearTie(nn.Module):
    """Two logits 1e-4 apart at a scale where bf16 (8 bits of mantissa) cannot tell them apart."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1, 2)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[1.0], [1.0001]]))
            self.linear.bias.zero_()

    def forward(self, images):
        return self.linear(images.flatten(1).mean(1, keepdim=True) + 100.0)


def test_agreement_counts_top1_equal_to_fp32():
    images = torch.randint(0, 256, (12, 1, 2, 2), dtype=torch.uint8)
    model = imgcls.create_model("fastcnn", num_classes=10, in_chans=1)
    assert precision_agreement(model.eval(), torch.randint(0, 256, (12, 1, 28, 28), dtype=torch.uint8), (0.5,),
                               (0.25,), InferenceSetting("fp32")) == 12
    tie = _NearTie().eval()
    assert precision_agreement(tie, images, (0.0,), (1.0,), InferenceSetting("bf16")) < 12  # bf16 flips the tie


def test_a_run_records_how_eval_and_predict_run_it(fmnist_root, tmp_path):
    outcome = imgcls.train("fashion-mnist", data_root=str(fmnist_root), model="fastcnn", epochs=1, max_per_class=20,
                           workers=0, runs_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"),
                           report=False, recipe=None)
    plan = json.loads((outcome.run_dir / "plan.json").read_text())
    assert plan["inference_precision"] in ("fp32", "bf16") and plan["inference_reason"]
    assert plan["inference_batch_size"] in setting_module.BATCH_SIZES
    loaded = imgcls.load(outcome.run_dir)
    assert InferenceSetting.of_plan(loaded.plan) is not None
    evaluated = imgcls.evaluate(outcome.run_dir)  # auto: as the run decided
    assert evaluated["accuracy"]["value"] == pytest.approx(outcome.metrics["test"]["accuracy"]["value"], abs=0.05)
