"""The steps of `imgcls train`, in the order the train workflow calls them."""

from __future__ import annotations

import dataclasses
import time

from imgcls.config import Config, cache_dir_of
from imgcls.console import get_console, warn
from imgcls.errors import ImgclsError, first_line
from imgcls.plan import TrainPlan
from imgcls.run_files import RunFolder


def load_data(config: Config, processes: int):
    """The model's input defaults, the decoded, split dataset at the size they and the config decide, and why
    that size."""
    from imgcls.data import build_dataset, native_image_size
    from imgcls.engine.accelerator import process_state
    from imgcls.models.registry import model_defaults
    from imgcls.plan import input_size

    defaults = model_defaults(config.model.name)
    img_size, note = input_size(config.data, defaults, native_image_size(config.data.source), config.model.name)
    with process_state().main_process_first():  # it decodes; the others then map the one memory-mapped copy
        bundle = build_dataset(config.data, config.train.seed, img_size, interpolation=defaults.interpolation,
                               processes=processes)
    if "train" not in bundle.splits or len(bundle.splits["train"]) == 0:
        example = f" (e.g. {bundle.skipped[0][0]}: {bundle.skipped[0][1]})" if bundle.skipped else ""
        raise ImgclsError(f"no readable training images in {config.data.source}{example}; "
                          f"check that the files are intact images")
    if "val" not in bundle.splits:
        warn("no validation split (--val-split 0 and no val/ folder): the last epoch is kept as best")
    from imgcls.metrics import positive_index

    # a wrong --positive-class fails now, not after the model is built and its precision timed (seconds)
    positive_index(list(bundle.class_names), config.train.positive_class)
    return defaults, bundle, note


def build_model(config: Config, bundle):
    """The model for the data's classes and channels, proven to run one forward pass at the image size."""
    from accelerate.utils import set_seed

    from imgcls.models import create_model

    set_seed(config.train.seed)  # before the model is built: its initialization draws random numbers
    model_cfg = config.model
    model = create_model(model_cfg.name, num_classes=len(bundle.class_names), in_chans=bundle.channels,
                         img_size=bundle.img_size, pretrained=model_cfg.pretrained, weights=model_cfg.weights,
                         weights_map=model_cfg.weights_map, drop_rate=model_cfg.drop_rate,
                         drop_path_rate=model_cfg.drop_path_rate, **model_cfg.options)
    check_input_size(model, model_cfg.name, bundle.channels, bundle.img_size)
    return model


def check_input_size(model, name: str, channels: int, img_size: int) -> None:
    """One forward pass of a zero image, so a size the architecture cannot take fails with a clear line."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, channels, img_size, img_size))
    except (RuntimeError, ValueError, AssertionError) as error:
        raise ImgclsError(f"image size {img_size} does not work with {name} ({first_line(error, 140)}); use a "
                          f"larger --img-size (e.g. 32 or 224) or another --model") from None
    finally:
        model.train(was_training)


def plan_run(config: Config, bundle, defaults, img_size_note: str, model, world_size: int,
             resumed: RunFolder | None) -> TrainPlan:
    """Freeze the run's values. A resumed run keeps its saved plan (its precision, batch and learning rate)."""
    from imgcls.config import auto_precision_override
    from imgcls.engine.precision import agreed_precision, probe_batch, to_channels_last, unfuse_cpu_attention
    from imgcls.plan import for_world_size, make_plan

    saved = resumed.read_plan() if resumed is not None else None
    if saved is not None:
        plan = for_world_size(TrainPlan.from_dict(saved), world_size)
        if plan.class_names != tuple(bundle.class_names) or plan.img_size != bundle.img_size:
            raise ImgclsError(f"the data of {resumed.path} changed since the run started (classes or image size "
                              f"differ); resume with the same data, or start a new run")
        if plan.channels_last:
            to_channels_last(model)
        unfuse_cpu_attention(model, plan.precision)
        return plan
    channels_last = config.train.channels_last and not config.model.linear_probe and to_channels_last(model)
    input_shape = (probe_batch(config.train.batch_size, bundle.img_size), bundle.channels, bundle.img_size,
                   bundle.img_size)
    precision = agreed_precision(config.train.precision, model, input_shape,
                                 cache_dir_of(config.data) / "precision.json", channels_last,
                                 auto_precision_override())
    unfuse_cpu_attention(model, precision[0])
    import torch

    return make_plan(config, bundle, defaults, precision, channels_last, world_size, img_size_note,
                     gpu=torch.cuda.is_available())


def report_data_problems(bundle, run: RunFolder) -> None:
    """Warnings about the data, and the unreadable files (also listed in the run's skipped.txt)."""
    from pathlib import Path

    for message in bundle.warnings:
        warn(message)
    if bundle.skipped:
        run.write_skipped(bundle.skipped)
        shown = "; ".join(f"{Path(path).name} ({reason})" for path, reason in sorted(bundle.skipped)[:3])
        more = f" and {len(bundle.skipped) - 3} more" if len(bundle.skipped) > 3 else ""
        warn(f"skipped {len(bundle.skipped)} unreadable image(s): {shown}{more}; listed in {run.skipped_file}")


def record_start(run: RunFolder, config: Config, plan: TrainPlan, bundle) -> None:
    """config.yaml (as asked), plan.json (as decided), classes.json, and the summary on the console."""
    from imgcls.workflows.train import print_data_summary, warn_about

    run.write_config(config.to_dict())
    run.write_plan(plan.to_dict())
    run.write_classes(list(plan.class_names))
    warn_about(plan.notes)
    print_data_summary(bundle, plan, run)


def weights_metadata(plan: TrainPlan, options: dict) -> dict:
    """What best.safetensors carries so that the file alone is a usable model."""
    from imgcls import __version__

    return {"model": plan.model, "num_classes": len(plan.class_names), "in_chans": plan.channels,
            "img_size": plan.img_size, "class_names": list(plan.class_names), "mean": list(plan.mean),
            "std": list(plan.std), "interpolation": plan.interpolation, "options": options,
            "imgcls_version": __version__}


def run_training(model, bundle, config: Config, plan: TrainPlan, run: RunFolder, resume: bool, is_main: bool):
    """The engine's loop (or the linear probe) over loaders built from the plan."""
    metadata = weights_metadata(plan, config.model.options)
    if plan.linear_probe:
        from imgcls.engine.probe import train_linear_probe

        return train_linear_probe(model, bundle, config.model, plan, run, metadata,
                                  cache_dir_of(config.data) / "features", resume, is_main)
    from imgcls.engine.trainer import fit
    from imgcls.models.transfer import backbone_parameters, param_groups

    loaders, generator = make_loaders(bundle, plan)
    groups = param_groups(model, plan.lr, plan.weight_decay, plan.backbone_lr_scale)
    frozen = backbone_parameters(model) if plan.freeze_epochs else None
    return fit(model, loaders, plan, run, metadata, groups, frozen, resume=resume, shuffle_generator=generator)


def measured_splits(bundle, plan: TrainPlan) -> dict:
    """The splits the final metrics use: every held-out image, and the training split or its seeded sample."""
    import numpy as np

    from imgcls.data import ImageSplit
    from imgcls.data.cache import select_images

    splits = dict(bundle.splits)
    train = splits.get("train")
    if train is not None and plan.train_metrics_images and plan.train_metrics_images < len(train):
        rows = np.sort(np.random.default_rng(plan.seed).choice(len(train), plan.train_metrics_images, replace=False))
        splits["train"] = ImageSplit(select_images(train.images, rows), train.labels[rows],
                                     [train.paths[i] for i in rows] if train.paths is not None else None)
    return splits


def drops_ragged_batch(train_images: int, global_batch_size: int) -> bool:
    """Whether training drops a ragged last batch (a batch of one breaks batch norm): unless that would leave a
    process no batch."""
    return train_images >= 2 * global_batch_size


def make_loaders(bundle, plan: TrainPlan):
    """The augmented training loader and the plain evaluation loaders of every split."""
    from imgcls.data.loader import TensorImageDataset, make_loader
    from imgcls.data.transforms import train_transform

    augment = train_transform(plan.augment, plan.img_size, plan.hflip, plan.crop_padding, plan.erase)
    train_set = TensorImageDataset(bundle.splits["train"], plan.mean, plan.std, augment, plan.channels_last)
    train_loader = make_loader(train_set, plan.batch_size, shuffle=True, workers=plan.workers, seed=plan.seed,
                               drop_last=drops_ragged_batch(len(train_set), plan.global_batch_size))
    loaders = {"train": train_loader}
    measured = measured_splits(bundle, plan)
    for split, source in (("train_eval", "train"), ("val", "val"), ("test", "test")):
        if source in measured and len(measured[source]):
            dataset = TensorImageDataset(measured[source], plan.mean, plan.std, channels_last=plan.channels_last)
            loaders[split] = make_loader(dataset, plan.batch_size * 2, shuffle=False, workers=min(plan.workers, 1),
                                         seed=plan.seed)
    return loaders, train_loader.generator


def finish(run: RunFolder, bundle, model, plan: TrainPlan, result, started: float, report: bool = True) -> None:
    """metrics.json and run.json, the metrics on the console, then (unless `report` is off) every figure and
    report.html; the per-sample predictions are kept either way."""
    from imgcls.report import write_figures_and_report
    from imgcls.report.tables import print_metrics

    if "train" in result.final_metrics and plan.train_metrics_images < len(bundle.splits["train"]):
        result.final_metrics["train"]["sample_of"] = len(bundle.splits["train"])
    run.write_metrics(result.final_metrics)
    run.write_summary(run_summary(bundle, model, plan, result, started))
    bundle = dataclasses.replace(bundle, splits=measured_splits(bundle, plan))  # what the predictions refer to
    if result.final_metrics:  # the answer first; the figures and the report follow
        kept = "the last epoch" if plan.monitor == "last" else "the best epoch"
        print_metrics(result.final_metrics, title=f"metrics of {kept} ({result.best_epoch})")
    if not report:
        from imgcls.report import save_predictions

        save_predictions(run, bundle, result.predictions, list(plan.class_names))
        get_console().print(f"run folder: [bold]{run.path}[/bold]   (no report: --no-report)")
        return
    from imgcls.workflows.predict import load

    loaded = load(run.path)  # the best weights, whole (a linear probe's head included)
    exporting = start_export_for_predict(run, plan.model, sum(p.numel() for p in loaded.model.parameters()))
    try:
        looked = explain_held_out(loaded, bundle, result.predictions)
        write_figures_and_report(run, bundle, result.predictions, list(plan.class_names), loaded.model, plan.mean,
                                 plan.std, plan.seed, looked_at=looked)
    except BaseException:  # failed or interrupted: stop the export too (it writes atomically: no partial file)
        if exporting is not None:
            exporting.kill()
            exporting.wait()
        raise
    end_export_for_predict(exporting)
    get_console().print(f"run folder: [bold]{run.path}[/bold]   report: {run.report_file}")


AUTO_EXPORT_MAX_PARAMETERS = 30_000_000  # bigger models take long to export: `imgcls export` when wanted
_LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                       "MASTER_PORT")  # set by torchrun / accelerate launch: the export is one plain process


def start_export_for_predict(run: RunFolder, model_name: str, parameters: int):
    """Start writing RUN/model.onnx (so `imgcls predict RUN` and `imgcls serve RUN` start in well under a second:
    onnxruntime, no torch import) in a child `imgcls export`, beside the figures: both are mostly one-core
    Python, and one after the other they made the tail twice as long. None for models too large to export
    by default, and for models only this process can build (exported here and now)."""
    import os
    import subprocess
    import sys

    from imgcls.models.registry import buildable_by_name

    if parameters > AUTO_EXPORT_MAX_PARAMETERS:
        return None
    if not buildable_by_name(model_name):
        _export_here(run)
        return None
    environment = {name: value for name, value in os.environ.items()
                   if name not in _LAUNCHER_VARIABLES and not name.startswith("TORCHELASTIC_")}
    environment["OMP_NUM_THREADS"] = "1"  # tracing needs no threads; the figures' Grad-CAM and filters use them
    return subprocess.Popen([sys.executable, "-m", "imgcls", "export", str(run.path)], env=environment,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _export_here(run: RunFolder) -> None:
    from imgcls.console import info
    from imgcls.workflows.export import export

    try:
        export(run.path, "onnx")
    except ImgclsError as error:
        info(f"no ONNX export of this run ({error}); predict will use PyTorch")


def end_export_for_predict(exporting) -> None:
    """Wait for start_export_for_predict's child; a model ONNX cannot express is said in one line (predict then
    uses PyTorch)."""
    from imgcls.console import info

    if exporting is None:
        return
    _, errors = exporting.communicate()
    if exporting.returncode != 0:
        lines = [line for line in errors.splitlines() if line.strip()] or [f"exit status {exporting.returncode}"]
        info(f"no ONNX export of this run ({lines[-1].split('error: ', 1)[-1]}); predict will use PyTorch")


def run_summary(bundle, model, plan: TrainPlan, result, started: float) -> dict:
    """run.json: what was trained, on what, for how long, on which hardware."""
    import datetime

    from imgcls.environment import hardware, versions

    trained = sum(p.numel() for p in model.get_classifier().parameters()) if plan.linear_probe else \
        sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "kind": "train", "data": bundle.source, "model": plan.model, "img_size": plan.img_size,
        "in_chans": plan.channels, "class_counts": {split: bundle.class_counts(split) for split in bundle.splits},
        "parameters": sum(p.numel() for p in model.parameters()), "trainable_parameters": trained,
        "epochs": plan.epochs, "epochs_run": len(result.history), "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early, "training_time_s": round(result.wall_time_s, 2),
        "wall_time_s": round(time.perf_counter() - started, 2), "precision": plan.precision,
        "precision_reason": plan.precision_reason, "channels_last": plan.channels_last, "compiled": plan.compile,
        "image_cache": bundle.cache, "num_processes": result.num_processes,
        "global_batch_size": plan.global_batch_size, "device": result.device, "hardware": hardware(),
        "versions": versions(), "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def explain_held_out(loaded, bundle, predictions: dict) -> dict:
    """What the model looked at in the test split (else val): {split: {correct: [Explained]}}."""
    from imgcls.workflows.looked_at import looked_at

    split = next((name for name in ("test", "val", "all") if name in predictions), None)
    if split is None:
        return {}
    probs, labels = predictions[split]
    found = looked_at(loaded.model, bundle.splits[split].images, probs.numpy(), labels.numpy(),
                      loaded.class_names, loaded.mean, loaded.std)
    return {split: found} if found else {}
