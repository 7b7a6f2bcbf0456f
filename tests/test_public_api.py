"""The public API (`imgcls.<name>`) as a user calls it in one process: every name stays what it is after any other
call, the CLI and the API offer the same options, and evaluation in bf16 explains what the model looked at."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import imgcls
from imgcls.cli import build_parser

# every subpackage and module a public call may import: none may hide a public name of the same spelling
INTERNAL_MODULES = ("imgcls.reporting", "imgcls.reporting.run_report", "imgcls.serving", "imgcls.serving.app",
                    "imgcls.recipe_book", "imgcls.workflows.train", "imgcls.workflows.evaluate",
                    "imgcls.workflows.predict", "imgcls.workflows.explain", "imgcls.workflows.export",
                    "imgcls.workflows.serve", "imgcls.workflows.report", "imgcls.workflows.inspect", "imgcls.models",
                    "imgcls.run_files", "imgcls.plan", "imgcls.data", "imgcls.engine.trainer")


def test_every_public_name_is_callable_after_importing_every_module():
    for module in INTERNAL_MODULES:
        importlib.import_module(module)
    assert "serve" in imgcls.__all__ and "ServeSettings" in imgcls.__all__
    assert [name for name in imgcls.__all__ if not callable(getattr(imgcls, name))] == []
    assert imgcls.report.__module__ == "imgcls.workflows.report"  # the function, not a package named report


@pytest.mark.slow
def test_every_workflow_in_one_process_after_train_leaves_every_name_callable(fmnist_root, tmp_path):
    """The notebook user: train, then every other verb, in one process; then each public name still calls."""
    runs = tmp_path / "runs"
    first = imgcls.train("fashion-mnist", data_root=str(fmnist_root), model="multilayer_cnn", epochs=1,
                         max_per_class=30, workers=0, runs_dir=str(runs), name="first")
    second = imgcls.train("fashion-mnist", data_root=str(fmnist_root), model="multilayer_cnn", epochs=1,
                          max_per_class=30, workers=0, runs_dir=str(runs), name="second", report=False)
    image = tmp_path / "one.png"
    Image.fromarray(np.full((28, 28), 128, dtype=np.uint8)).save(image)
    imgcls.evaluate(first.run_dir)
    imgcls.predict(first.run_dir, [image])
    imgcls.explain(first.run_dir, [image], out=tmp_path / "maps")
    imgcls.export(first.run_dir)
    imgcls.report(first.run_dir)
    imgcls.compare([first.run_dir, second.run_dir], out=tmp_path / "compare.html")
    imgcls.show_data("fashion-mnist", out=tmp_path / "samples.png", data_root=str(fmnist_root), per_class=2)
    imgcls.summary("multilayer_cnn", num_classes=10, in_chans=1)
    imgcls.recipes()
    imgcls.list_models("lenet")
    assert imgcls.load(first.run_dir).name == "multilayer_cnn"
    importlib.import_module("imgcls.workflows.serve")  # serve itself blocks: its modules are what could shadow
    assert [name for name in imgcls.__all__ if not callable(getattr(imgcls, name))] == []


@pytest.mark.slow
def test_evaluate_explain_and_report_in_bf16_on_a_model_with_a_spatial_layer(fmnist_root, tmp_path):
    """Grad-CAM reads the activations as numpy: a bf16 evaluation must explain in fp32 (it crashed with
    'Got unsupported ScalarType BFloat16')."""
    run = imgcls.train("fashion-mnist", data_root=str(fmnist_root), model="multilayer_cnn", epochs=1,
                       max_per_class=20, workers=0, runs_dir=str(tmp_path), name="bf16", report=False).run_dir
    evaluated = imgcls.evaluate(run, precision="bf16")
    folder = imgcls.RunFolder(evaluated["written_to"])
    looked = sorted(path.name for path in folder.plots_dir.glob("looked_at_*.png"))
    assert looked, "the evaluation drew no 'what the model looked at' grid"
    image = tmp_path / "one.png"
    Image.fromarray(np.full((28, 28), 100, dtype=np.uint8)).save(image)
    explained = imgcls.explain(run, [image], out=tmp_path / "maps")
    assert explained[0]["map"].shape == (28, 28) and np.isfinite(explained[0]["map"]).all()
    assert imgcls.report(folder.path).is_file()


# the CLI's flags and the API's parameters, verb by verb: the same names, except these (CLI dest -> API name)
VERBS = {"eval": ("evaluate", {"data": "data"}), "calibrate": ("calibrate", {}), "predict": ("predict", {}), "export": ("export", {"format": "export_format"}),
         "explain": ("explain", {"images": "inputs"}), "report": ("report", {}), "compare": ("compare", {}),
         "summary": ("summary", {}), "models": ("list_models", {}), "data check": ("check_data", {}),
         "data show": ("show_data", {"data": "source"})}
CLI_ONLY = {"predict": {"items", "model", "weights", "pretrained", "format"},  # items = [RUN] IMAGE...; --model:
            "compare": set(), "summary": set(), "models": set()}                # load_pretrained; format: printing
API_ONLY = {"predict": {"run", "inputs"}, "data check": {"quiet"}}  # the CLI's items are [RUN] IMAGE...


def _cli_options(verb: str) -> set[str]:
    """The dests of a verb's flags ("data check": a verb's action)."""
    parser = build_parser()
    for word, dest in zip(verb.split(), ("command", "action")):
        subparsers = next(action for action in parser._actions if action.dest == dest)
        parser = subparsers.choices[word]
    return {action.dest for action in parser._actions if action.dest != "help"}


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_the_cli_and_the_api_offer_the_same_options(verb):
    function_name, renamed = VERBS[verb]
    api = set(inspect.signature(getattr(imgcls, function_name)).parameters)
    cli = {renamed.get(dest, dest) for dest in _cli_options(verb)} - CLI_ONLY.get(verb, set())
    assert cli == api - API_ONLY.get(verb, set())


def test_serve_takes_its_settings_as_one_record_and_the_cli_fills_every_field():
    from dataclasses import fields

    assert list(inspect.signature(imgcls.serve).parameters) == ["model", "host", "port", "settings", "insecure",
                                                                "threshold", "abstain_below"]
    settable = {field.name for field in fields(imgcls.ServeSettings)} - {"max_pixels"}  # max_pixels: API only
    assert settable <= _cli_options("serve")


def test_help_and_predict_on_onnx_import_no_torch_and_no_cycle_at_start_up():
    code = ("import sys, imgcls; from imgcls.cli import build_parser; build_parser(); imgcls.predict; "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split() == ["False"]
