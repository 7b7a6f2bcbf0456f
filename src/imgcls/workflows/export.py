"""`imgcls export`: a trained run as one ONNX or TorchScript file that gives `imgcls predict`'s answers."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

from imgcls import __version__
from imgcls.atomic import check_replaceable
from imgcls.config import plain_process_environment
from imgcls.console import info
from imgcls.engine.export import example_batch, export_module, export_onnx, export_torchscript, is_our_torchscript
from imgcls.errors import ImgclsError
from imgcls.models.registry import buildable_by_name
from imgcls.run_files import RunFolder
from imgcls.workflows.predict import LoadedModel, load

FORMATS = ("onnx", "torchscript")
INPUT_TYPES = ("uint8", "float")


def export(run: str | Path, export_format: str = "onnx", out: str | Path | None = None, dynamic_batch: bool = True,
           opset: int | None = None, input_type: str = "uint8") -> Path:
    """Write the run's best model as `export_format`; returns the file (default RUN/model.onnx or
    RUN/model.torchscript.pt).

    The file takes a (N, C, S, S) batch of images resized and center-cropped to the run's size, uint8 (0-255,
    normalised inside) or, with input_type="float", already normalised with the run's mean and std; it
    returns (N, classes) probabilities. Its metadata names the classes, size, channels, mean/std and resampling.
    """
    if export_format not in FORMATS:
        raise ImgclsError(f"--format must be one of {', '.join(FORMATS)}, got '{export_format}'")
    if input_type not in INPUT_TYPES:
        raise ImgclsError(f"--input-type must be one of {', '.join(INPUT_TYPES)}, got '{input_type}'")
    loaded = load(run)
    path = _output_path(loaded, export_format, out)
    module = export_module(loaded.model, loaded.mean, loaded.std, input_type, loaded.tta, loaded.temperature)
    example = example_batch(loaded.in_chans, loaded.img_size, input_type)
    metadata = export_metadata(loaded, input_type, dynamic_batch)
    if export_format == "onnx":
        export_onnx(module, example, path, metadata, dynamic_batch, opset)
    else:
        export_torchscript(module, example, path, metadata)
    return path


def export_metadata(loaded: LoadedModel, input_type: str, dynamic_batch: bool) -> dict:
    """What a consumer of the file needs to prepare its input and read its output."""
    return {"imgcls_version": __version__, "model": loaded.name, "class_names": list(loaded.class_names),
            "img_size": loaded.img_size, "channels": loaded.in_chans, "mean": list(loaded.mean),
            "std": list(loaded.std), "interpolation": loaded.interpolation, "input_type": input_type,
            "tta": loaded.tta, "dynamic_batch": dynamic_batch, "temperature": loaded.temperature,
            "threshold": loaded.threshold, "threshold_rule": loaded.threshold_rule,
            "positive_index": loaded.positive_index,
            "input": f"images: {'uint8 0-255' if input_type == 'uint8' else 'float32, normalised'} "
                     f"[N, {loaded.in_chans}, {loaded.img_size}, {loaded.img_size}], short side resized "
                     f"({loaded.interpolation}) and center-cropped",
            "output": "probabilities: float32 [N, classes], in class_names order"}


def _output_path(loaded: LoadedModel, export_format: str, out: str | Path | None) -> Path:
    if out is None:
        if loaded.run is None:
            raise ImgclsError("a bare weights file has no run folder to export into; pass --out FILE")
        return loaded.run.export_file(export_format)
    path = Path(out).expanduser()
    if path.is_dir():
        raise ImgclsError(f"--out {path} is a folder; pass a file name such as {path / 'model.onnx'}")
    if not (export_format == "torchscript" and path.is_file() and is_our_torchscript(path)):
        check_replaceable(path, "--out")
    return path


AUTO_EXPORT_MAX_PARAMETERS = 30_000_000  # bigger models take long to export: `imgcls export` when wanted
EXPORT_NICENESS = 19  # the end-of-training export yields the CPU to the report (it is not waited for until later)


def start_export_for_predict(run: RunFolder, model_name: str, parameters: int) -> subprocess.Popen[str] | None:
    """Start writing RUN/model.onnx at the end of training (so `imgcls predict RUN` and `imgcls serve RUN` start in
    well under a second: onnxruntime, no torch import) in a child `imgcls export`, beside the figures: both are
    mostly one-core Python, and one after the other they made the tail twice as long. The child runs at the
    lowest priority, so the report (and its two-thread Grad-CAM) is not slowed by it. None for models too large
    to export by default, and for models only this process can build (exported here and now)."""
    if parameters > AUTO_EXPORT_MAX_PARAMETERS:
        return None
    if not buildable_by_name(model_name):
        _export_here(run)
        return None
    environment = plain_process_environment()
    environment["OMP_NUM_THREADS"] = "1"  # tracing needs no threads; the figures' Grad-CAM and filters use them
    child = subprocess.Popen([sys.executable, "-m", "imgcls", "export", str(run.path)], env=environment,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if hasattr(os, "setpriority"):  # the report first: the export takes the core the figures leave idle
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, child.pid, EXPORT_NICENESS)
    return child


def end_export_for_predict(exporting: subprocess.Popen[str] | None) -> None:
    """Wait for start_export_for_predict's child; a model ONNX cannot express is said in one line (predict then
    uses PyTorch)."""
    if exporting is None:
        return
    _, errors = exporting.communicate()
    if exporting.returncode != 0:
        lines = [line for line in errors.splitlines() if line.strip()] or [f"exit status {exporting.returncode}"]
        info(f"no ONNX export of this run ({lines[-1].split('error: ', 1)[-1]}); predict will use PyTorch")


def stop_export_for_predict(exporting: subprocess.Popen[str] | None) -> None:
    """Kill the child (the run failed or was interrupted); it writes atomically, so no partial file is left."""
    if exporting is not None:
        exporting.kill()
        exporting.wait()


def _export_here(run: RunFolder) -> None:
    try:
        export(run.path, "onnx")
    except ImgclsError as error:
        info(f"no ONNX export of this run ({error}); predict will use PyTorch")
