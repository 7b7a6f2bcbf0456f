"""--precision: hardware checks, the measured CPU choice of auto (remembered), channels_last for conv nets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import imgcls
from imgcls.engine import precision as precision_module
from imgcls.engine.precision import choose_precision, to_channels_last, uses_convolutions
from imgcls.errors import ImgclsError


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only behaviour")
def test_fp16_on_a_cpu_is_a_clear_error():
    with pytest.raises(ImgclsError, match="fp16 needs a CUDA GPU.*bf16 or fp32"):
        choose_precision("fp16")
    assert choose_precision("fp32") == ("fp32", "asked for")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only behaviour")
def test_auto_on_a_cpu_times_both_and_remembers(tmp_path, monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_supports_bf16", lambda: True)
    timings = {False: 0.30, True: 0.10}  # bf16 three times faster
    calls = []

    def fakestep_seconds(model, shape, bf16, channels_last):
        calls.append(bf16)
        return timings[bf16]

    monkeypatch.setattr(precision_module, "step_seconds", fakestep_seconds)
    model = imgcls.create_model("fastcnn", num_classes=10, in_chans=1)
    cache = tmp_path / "precision.json"
    chosen, reason = choose_precision("auto", model, (8, 1, 28, 28), cache)
    assert chosen == "bf16" and "3.00x faster" in reason and sorted(calls) == [False, True]
    assert list(json.loads(cache.read_text()).values()) == [{"fp32_s": 0.3, "bf16_s": 0.1}]
    assert choose_precision("auto", model, (8, 1, 28, 28), cache)[0] == "bf16"
    assert len(calls) == 2  # remembered: not measured again
    timings[True] = 0.6  # another input shape, where bf16 is slower
    assert choose_precision("auto", model, (8, 1, 32, 32), cache)[0] == "fp32"


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only behaviour")
def test_real_timing_leaves_the_model_untouched(tmp_path):
    model = imgcls.create_model("fastcnn", num_classes=10, in_chans=1, widths=[8, 16])
    before = {key: value.clone() for key, value in model.state_dict().items()}
    rng_before = torch.get_rng_state()
    chosen, reason = choose_precision("auto", model, (4, 1, 28, 28), tmp_path / "p.json")
    assert torch.equal(torch.get_rng_state(), rng_before)  # a measured run draws the same numbers as a remembered one
    assert chosen in ("fp32", "bf16") and reason
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert all(parameter.grad is None for parameter in model.parameters())


def test_channels_last_only_for_convolutional_models():
    cnn = imgcls.create_model("fastcnn", num_classes=10, in_chans=1)
    vit = imgcls.create_model("vit", num_classes=10, in_chans=1, img_size=28, patch_size=7, depth=1, width=32,
                              heads=2)
    assert uses_convolutions(cnn) and not uses_convolutions(vit)
    assert to_channels_last(cnn) and not to_channels_last(vit)
    weight = cnn.features[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last)


def test_tta_averages_the_probabilities_of_each_image_and_its_mirror():
    from imgcls.engine.accelerator import make_accelerator
    from imgcls.engine.inference import collect_logits

    torch.manual_seed(0)
    model = imgcls.create_model("fastcnn", num_classes=4, in_chans=3, widths=[8, 16]).eval()
    images, labels = torch.randn(6, 3, 20, 20), torch.arange(6) % 4
    accelerator = make_accelerator("fp32")
    logits, gathered = collect_logits(accelerator, model, [(images, labels)], tta=True)
    with torch.no_grad():
        expected = (model(images).softmax(1) + model(images.flip(-1)).softmax(1)) / 2
        plain = model(images).softmax(1)
    assert torch.allclose(logits.softmax(1), expected, atol=1e-6) and torch.equal(gathered, labels)
    assert not torch.allclose(expected, plain, atol=1e-4)  # the mirror does change this model's output


def test_one_process_trains_evaluates_and_predicts_with_any_mix_of_precisions(fmnist_root, tmp_path):
    """A notebook or a sweep: train fp32 -> bf16 -> fp32, evaluate in bf16, predict in fp32, in one process."""
    from PIL import Image

    common = dict(data_root=str(fmnist_root), model="mlp", epochs=2, max_per_class=30, workers=0, lr=3e-3,
                  batch_size=32, runs_dir=str(tmp_path / "runs"), val_split=0.1, report=False)
    runs = []
    for index, precision in enumerate(("fp32", "bf16", "fp32")):
        outcome = imgcls.train("fashion-mnist", precision=precision, name=f"run{index}", **common)
        summary = json.loads((outcome.run_dir / "run.json").read_text())
        assert summary["precision"] == precision
        assert outcome.metrics["test"]["num_samples"] == 300  # 30 per class of the official test set
        assert outcome.metrics["test"]["accuracy"]["value"] > 0.3  # it learned: chance is 0.1
        runs.append(outcome)
    bf16_run, fp32_run = runs[1], runs[2]

    evaluated = imgcls.evaluate(bf16_run.run_dir, precision="bf16")
    assert evaluated["split"] == "test"
    assert evaluated["accuracy"]["value"] == bf16_run.metrics["test"]["accuracy"]["value"]

    from imgcls.data.builtin import load_builtin

    test_images = load_builtin("fashion-mnist", fmnist_root, train=False)[0][:12]
    folder = tmp_path / "pngs"
    folder.mkdir()
    for row, image in enumerate(test_images):
        Image.fromarray(image[0]).save(folder / f"{row:02d}.png")
    predictions = imgcls.predict(fp32_run.run_dir, [folder], topk=10, precision="fp32")
    loaded = imgcls.load(fp32_run.run_dir)
    assert loaded.img_size == 28 and loaded.in_chans == 1
    with torch.no_grad():
        normalized = (torch.from_numpy(test_images).float() / 255 - loaded.mean[0]) / loaded.std[0]
        expected = (loaded.model(normalized) / loaded.temperature).softmax(1).numpy()  # the run's calibration
    assert [Path(result["path"]).name for result in predictions] == [f"{row:02d}.png" for row in range(12)]
    for row, result in enumerate(predictions):
        probs = {guess["class"]: guess["probability"] for guess in result["predictions"]}
        assert np.allclose([probs[name] for name in loaded.class_names], expected[row], atol=1e-5)


def test_auto_keeps_fp32_when_a_step_is_too_short_to_time(tmp_path, monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(precision_module, "step_seconds", lambda model, shape, bf16, cl: 0.0004 if bf16 else 0.001)
    head = torch.nn.Linear(16, 3)
    assert choose_precision("auto", head, (32, 16), tmp_path / "p.json")[0] == "fp32"


FAULTS_SCRIPT = """
import resource, sys
import torch
if sys.argv[1] == "keep":  # imported only here: importing accelerate's allocations can move glibc's own threshold
    from imgcls.engine.accelerator import keep_freed_memory
    assert keep_freed_memory() and keep_freed_memory()  # idempotent
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step():  # a step's activations: 4 x 20 MB live at once, then all freed
    held = [torch.ones(5_000_000) for _ in range(4)]
    return sum(t.sum() for t in held)
for _ in range(2):
    step()
before = faults()
for _ in range(20):
    step()
print(faults() - before)
"""


@pytest.mark.skipif(not Path("/lib/x86_64-linux-gnu/libc.so.6").exists() and not Path("/lib/aarch64-linux-gnu/libc.so.6").exists(),
                    reason="glibc only (mallopt)")
def test_kept_freed_memory_reuses_pages_instead_of_faulting_them_in_anew():
    """Every run keeps freed memory in the heap (glibc mallopt): a step's activations (80 MB here), freed and
    allocated again each step, must not be page-faulted in anew (glibc alone trims the heap and refaults)."""
    import subprocess
    import sys

    counts = {mode: int(subprocess.run([sys.executable, "-c", FAULTS_SCRIPT, mode], capture_output=True, text=True,
                                       check=True).stdout.split()[-1]) for mode in ("default", "keep")}
    pages = 20 * 80_000_000 // 4096
    # glibc alone trims and refaults (seen: 180k-390k of the 390k pages; its dynamic mmap threshold keeps some)
    assert counts["default"] > pages // 8, counts
    assert counts["keep"] < counts["default"] // 4, counts  # kept: reused (seen: 0-10k)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only behaviour")
def test_bf16_on_a_cpu_runs_timm_attention_unfused_with_the_same_outputs():
    import timm

    from imgcls.engine.precision import unfuse_cpu_attention

    def fused(model):
        return {module.fused_attn for module in model.modules() if hasattr(module, "fused_attn")}

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=64, num_classes=3).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(images)
    assert fused(model) == {True}
    assert not unfuse_cpu_attention(model, "fp32") and fused(model) == {True}  # fp32: the fused kernel is faster
    assert unfuse_cpu_attention(model, "bf16") and fused(model) == {False}
    with torch.no_grad():
        torch.testing.assert_close(model(images), before, rtol=1e-4, atol=1e-5)
    many_tokens = timm.create_model("vit_tiny_patch16_224", img_size=272, num_classes=3)  # 289 patches
    assert not unfuse_cpu_attention(many_tokens, "bf16") and fused(many_tokens) == {True}
    assert not unfuse_cpu_attention(torch.nn.Linear(2, 2), "bf16")  # no attention: nothing to do


def test_auto_times_the_runs_own_batch_where_it_is_small():
    from imgcls.engine.precision import probe_batch

    assert probe_batch(256, 28) == 256  # the Fashion-MNIST recipe: bf16's gain shows at its own batch
    assert probe_batch(128, 64) == 49 and probe_batch(32, 64) == 32
    assert probe_batch(64, 224) == 16 and probe_batch(8, 224) == 8  # never more than the run's batch
