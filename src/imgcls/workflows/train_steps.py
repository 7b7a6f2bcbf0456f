"""The steps of one training run, in the order they run: read the data, build the model, plan, record, train,
decide (calibration, threshold), finish. Reads like torchvision's reference script; each step is a call into a
lower layer (config, data, models, plan, engine, run_files, reporting). `imgcls train` (workflows/train) and each
fold of a cross-validation (workflows/cross_validate) run them through `train_in`."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import set_seed
from torch import nn

from imgcls.config import (
    Config,
    auto_precision_override,
    cache_dir_of,
)
from imgcls.console import get_console, warn
from imgcls.data import DataBundle, build_dataset, native_image_size
from imgcls.data.problems import warn_about_data
from imgcls.data.fingerprints import fingerprint_changes, split_fingerprints
from imgcls.engine.accelerator import process_state, share_from_main
from imgcls.engine.batch_size import fitting_batch_size
from imgcls.engine.checkpoint import BestWeights, update_metadata, weights_metadata
from imgcls.engine.decisions import Predictions, apply_decisions, fit_decisions
from imgcls.engine.inference import precision_agreement
from imgcls.engine.inference_setting import MIN_AGREEMENT, InferenceSetting, fastest_setting
from imgcls.engine.loaders import make_loaders, with_measured_splits
from imgcls.engine.precision import agreed_precision, probe_batch, to_channels_last, unfuse_cpu_attention
from imgcls.engine.probe import train_linear_probe
from imgcls.engine.trainer import FitResult, fit
from imgcls.errors import ImgclsError
from imgcls.metrics import positive_index
from imgcls.metrics.operating_point import parse_threshold
from imgcls.models import create_model
from imgcls.models.defaults import ModelDefaults
from imgcls.models.input_size import check_input_sizes
from imgcls.models.registry import model_defaults
from imgcls.models.transfer import backbone_parameters, classifier_of, param_groups
from imgcls.plan import TrainPlan, for_world_size, input_size, make_plan
from imgcls.reporting.run_report import save_predictions, write_figures_and_report
from imgcls.reporting.tables import print_metrics
from imgcls.run_files import RunFolder
from imgcls.run_files.summary import training_summary
from imgcls.workflows.export import end_export_for_predict, start_export_for_predict, stop_export_for_predict
from imgcls.workflows.looked_at import explain_held_out, say_if_untrusted
from imgcls.workflows.predict import load


@dataclass
class TrainOutcome:
    run_dir: Path
    metrics: dict[str, dict[str, Any]]  # split -> metrics
    best_epoch: int | None
    epochs_run: int
    wall_time_s: float
    plan: TrainPlan


def train_in(run: RunFolder, config: Config, resumed: bool, state: PartialState, started: float,
             data: TrainingData | None = None, decide_on: Predictions | None = None) -> TrainOutcome:
    """The steps of a training run, in order; `data` is given when it is already read (a fold of a
    cross-validation), `decide_on` when the temperature and threshold are fitted on other held-out predictions
    than the run's val split (the final model of a cross-validation: its out-of-fold predictions)."""
    is_main = state.is_main_process
    defaults, bundle, size_note = data or load_training_data(config, state.num_processes)
    model = _build_model(config, bundle)
    plan = _plan_run(config, bundle, defaults, size_note, model, state.num_processes, run if resumed else None)
    if plan.epoch_sizes:  # before anything is written to the run folder
        check_input_sizes(model, plan.model, plan.channels, plan.epoch_sizes,
                          f"it takes {plan.img_size} px only: drop --progressive")
    if is_main:
        _record_start(run, config, plan, bundle, resumed)
    result = _run_training(model, bundle, config, plan, run, resumed)
    if is_main:
        _decide(run, config, plan, result, decide_on)
        _finish(run, config, bundle, model, plan, result, started)
    return TrainOutcome(run.path, result.final_metrics, result.best_epoch, len(result.history), result.wall_time_s,
                        plan)


# --- the steps ---

TrainingData = tuple[ModelDefaults, DataBundle, str]  # the model's input defaults, the data, why this image size


def load_training_data(config: Config, processes: int, whole: bool = False) -> TrainingData:
    """The model's input defaults, the decoded, split dataset at the size they and the config decide, and why
    that size; `whole`: a class-per-folder dataset as one split "all" (cross-validation splits it)."""
    defaults = model_defaults(config.model.name)
    img_size, note = input_size(config.data, defaults, native_image_size(config.data.source), config.model.name)
    with process_state().main_process_first():  # it decodes; the others then map the one memory-mapped copy
        bundle = build_dataset(config.data, config.train.seed, img_size, interpolation=defaults.interpolation,
                               whole=whole, processes=processes)
    if whole:
        return defaults, bundle, note
    if "train" not in bundle.splits or len(bundle.splits["train"]) == 0:
        example = f" (e.g. {bundle.skipped[0][0]}: {bundle.skipped[0][1]})" if bundle.skipped else ""
        raise ImgclsError(f"no readable training images in {config.data.source}{example}; "
                          f"check that the files are intact images")
    if "val" not in bundle.splits:
        warn("no validation split (--val-split 0 and no val/ folder): the last epoch is kept as best")
    # a wrong --positive-class or --threshold fails now, not after the model is built and its precision timed
    positive_index(list(bundle.class_names), config.train.positive_class)
    check_threshold(config, bundle.class_names, "val" in bundle.splits)
    return defaults, bundle, note


def _build_model(config: Config, bundle: DataBundle) -> nn.Module:
    """The model for the data's classes and channels, proven to run one forward pass at the image size."""
    set_seed(config.train.seed)  # before the model is built: its initialization draws random numbers
    model_cfg = config.model
    model = create_model(model_cfg.name, num_classes=len(bundle.class_names), in_chans=bundle.channels,
                         img_size=bundle.img_size, pretrained=model_cfg.pretrained, weights=model_cfg.weights,
                         weights_map=model_cfg.weights_map, drop_rate=model_cfg.drop_rate,
                         drop_path_rate=model_cfg.drop_path_rate, **model_cfg.options)
    check_input_sizes(model, model_cfg.name, bundle.channels, [bundle.img_size],
                      "use a larger --img-size (e.g. 32 or 224) or another --model")
    return model


def _plan_run(config: Config, bundle: DataBundle, defaults: ModelDefaults, size_note: str, model: nn.Module,
              world_size: int, resumed: RunFolder | None) -> TrainPlan:
    """Freeze the run's values. A resumed run keeps its saved plan (its precision, batch and learning rate)."""
    saved = resumed.read_plan() if resumed is not None else None
    if resumed is not None and saved is not None:
        plan = for_world_size(TrainPlan.from_dict(saved), world_size)
        _check_same_data(resumed, plan, bundle)
        if plan.channels_last:
            to_channels_last(model)
        unfuse_cpu_attention(model, plan.precision)
        return plan
    timings = cache_dir_of(config.data) / "precision.json"
    batch_note = ""
    if config.train.auto_batch_size and not config.model.linear_probe:
        config, batch_note = _fitting_batch(config, model, bundle)
    if config.model.linear_probe:  # the head trains on cached features; the backbone only infers, once
        extraction = share_from_main(fastest_setting(model, (bundle.channels, bundle.img_size, bundle.img_size),
                                                     config.train.precision, timings, auto_precision_override())
                                     if process_state().is_main_process else None)
        head_precision = ("fp32", "linear probe: the head trains on float32 features") \
            if config.train.precision == "auto" else (config.train.precision, "asked for")
        plan = extraction.in_plan(make_plan(config, bundle, defaults, head_precision, False, world_size, size_note,
                                            gpu=torch.cuda.is_available()))
        layout = ", channels_last" if extraction.channels_last else ""
        return replace(plan, notes={**plan.notes, "features": f"extracted in {extraction.precision}{layout}, batch "
                                                              f"{extraction.batch_size} ({extraction.reason})"})
    channels_last = config.train.channels_last and to_channels_last(model)
    input_shape = (probe_batch(config.train.batch_size, bundle.img_size), bundle.channels, bundle.img_size,
                   bundle.img_size)
    precision = agreed_precision(config.train.precision, model, input_shape, timings, channels_last,
                                 auto_precision_override())
    unfuse_cpu_attention(model, precision[0])
    plan = make_plan(config, bundle, defaults, precision, channels_last, world_size, size_note,
                     gpu=torch.cuda.is_available())
    return replace(plan, notes={**plan.notes, "batch_size": batch_note}) if batch_note else plan


def _fitting_batch(config: Config, model: nn.Module, bundle: DataBundle) -> tuple[Config, str]:
    """--auto-batch-size: the config with the largest batch, from the asked one down by halves, whose training
    step fits in memory, and how it was found; every process takes the main process's answer."""
    asked = config.train.batch_size
    precision = config.train.precision if config.train.precision in ("bf16", "fp16") else "fp32"
    state = process_state()
    shape = (bundle.channels, bundle.img_size, bundle.img_size)
    size, refused = share_from_main(fitting_batch_size(model, shape, asked, precision, state.device)
                                    if state.is_main_process else None)
    note = f"auto: {', '.join(map(str, refused))} ran out of memory, {size} fits" if refused else \
        f"auto: {asked} fits"
    if refused:
        warn(f"--auto-batch-size: batches of {size} (out of memory at {', '.join(map(str, refused))})")
    return replace(config, train=replace(config.train, batch_size=size)), note


def _check_same_data(run: RunFolder, plan: TrainPlan, bundle: DataBundle) -> None:
    """A run resumes on the data it started with: the classes, image size and every split's files and labels."""
    changes = []
    if plan.class_names != tuple(bundle.class_names):
        changes.append(f"the classes are {', '.join(bundle.class_names)}; they were {', '.join(plan.class_names)}")
    if plan.img_size != bundle.img_size:
        changes.append(f"the image size is {bundle.img_size}, it was {plan.img_size}")
    saved = run.read_data_fingerprint()
    if saved is not None:
        changes += fingerprint_changes(saved, split_fingerprints(bundle.splits, bundle.class_names))
    if changes:
        raise ImgclsError(f"the data of {run.path} changed since the run started ({'; '.join(changes)}); resume "
                          f"with the same data, or start a new run from its weights with --weights "
                          f"{run.weights_file}")


def _record_start(run: RunFolder, config: Config, plan: TrainPlan, bundle: DataBundle, resumed: bool) -> None:
    """The data's problems (unreadable files listed in skipped.txt); for a new run config.yaml (as asked),
    plan.json (as decided), classes.json and the summary on the console."""
    if bundle.skipped:
        run.write_skipped(bundle.skipped)
    if bundle.dropped_copies:
        run.write_deduped(bundle.dropped_copies)
    warn_about_data(bundle, run.skipped_file if bundle.skipped else None)
    if resumed:
        if run.read_plan() != plan.to_dict():
            run.write_plan(plan.to_dict())  # continued on another number of processes
        return
    run.write_config(config.to_dict())
    run.write_plan(plan.to_dict())
    run.write_classes(list(plan.class_names))
    run.write_data_fingerprint(split_fingerprints(bundle.splits, bundle.class_names))
    _warn_about(plan.notes)
    _print_data_summary(bundle, plan, run)


def _run_training(model: nn.Module, bundle: DataBundle, config: Config, plan: TrainPlan, run: RunFolder,
                  resume: bool) -> FitResult:
    """The engine's loop (or the linear probe) over loaders built from the plan."""
    metadata = weights_metadata(plan, config.model.options)
    if plan.linear_probe:  # the head is fit apart; the whole model is written with `metadata` at the end
        return train_linear_probe(model, bundle, config.model, plan, run, metadata,
                                  cache_dir_of(config.data) / "features", resume)
    loaders = make_loaders(bundle, plan)
    groups = param_groups(model, plan.lr, plan.weight_decay, plan.backbone_lr_scale)
    frozen = backbone_parameters(model) if plan.freeze_epochs else None
    return fit(model, loaders, plan, run, BestWeights(run.weights_file, metadata), groups, frozen, resume=resume)


def _decide(run: RunFolder, config: Config, plan: TrainPlan, result: FitResult,
            decide_on: Predictions | None = None) -> None:
    """Calibrate the probabilities and choose the operating point on the validation predictions (or on
    `decide_on`); the metrics and predictions become the calibrated ones, and the weights file carries both."""
    rule = parse_threshold(config.train.threshold)
    held_out = decide_on or result.predictions
    if not (config.train.calibrate or rule) or not held_out:
        return
    decisions = fit_decisions(held_out, config.train.calibrate, rule, plan.positive_class,
                              next(iter(decide_on)) if decide_on else "val")
    if decisions.temperature == 1.0 and decisions.threshold is None:
        return
    result.predictions, result.final_metrics = apply_decisions(result.predictions, decisions,
                                                               list(plan.class_names), plan.seed)
    update_metadata(run.weights_file, decisions.weights_metadata(list(plan.class_names)))
    run.write_decisions(decisions.record)


def _finish(run: RunFolder, config: Config, bundle: DataBundle, model: nn.Module, plan: TrainPlan,
            result: FitResult, started: float) -> None:
    """metrics.json and run.json, the metrics on the console, then (unless the config's `report` is off) every
    figure and report.html beside the ONNX export, then how eval and predict will run the model here; the
    per-sample predictions are kept either way."""
    report = config.train.report
    if "train" in result.final_metrics and plan.train_metrics_images < len(bundle.splits["train"]):
        result.final_metrics["train"]["sample_of"] = len(bundle.splits["train"])
    run.write_metrics(result.final_metrics)
    run.write_summary(training_summary(bundle, plan, result, _parameter_counts(model, plan.linear_probe),
                                       time.perf_counter() - started))
    measured = with_measured_splits(bundle, plan)  # what the predictions refer to
    if result.final_metrics:  # the answer first; the figures and the report follow
        kept = "the last epoch" if plan.monitor == "last" else "the best epoch"
        print_metrics(result.final_metrics, title=f"metrics of {kept} ({result.best_epoch})")
    if not report:
        save_predictions(run, measured, result.predictions, list(plan.class_names))
        get_console().print(f"run folder: [bold]{run.path}[/bold]   (no report: --no-report)")
        _decide_inference(run, config, plan, bundle, load(run.path).model, result.predictions)
        return
    loaded = load(run.path)  # the best weights, whole (a linear probe's head included)
    exporting = start_export_for_predict(run, plan.model, sum(p.numel() for p in loaded.model.parameters()))
    try:
        looked = explain_held_out(loaded, measured, result.predictions)
        write_figures_and_report(run, measured, result.predictions, list(plan.class_names), loaded, plan.seed,
                                 looked_at=looked)
        say_if_untrusted(looked)
        get_console().print(f"run folder: [bold]{run.path}[/bold]   report: {run.report_file}")
        _decide_inference(run, config, plan, bundle, loaded.model, result.predictions)
    except BaseException:  # failed or interrupted: stop the export too
        stop_export_for_predict(exporting)
        raise
    end_export_for_predict(exporting)


def _decide_inference(run: RunFolder, config: Config, plan: TrainPlan, bundle: DataBundle, model: nn.Module,
                      predictions: Predictions) -> None:
    """How eval, predict and serve run the trained model here (plan.json's inference_*): the fastest setting
    measured (a linear probe's is the one its features were extracted in), with a measured bf16 kept only when
    the validation split's top-1 agrees with fp32 on MIN_AGREEMENT of its images (bf16's top-1 is the final
    evaluation's when the run trained in bf16)."""
    shape = (plan.channels, plan.img_size, plan.img_size)
    timings = cache_dir_of(config.data) / "precision.json"
    measured = config.train.precision == "auto" and auto_precision_override() is None
    extracted = InferenceSetting.of_plan(plan) if plan.linear_probe else None  # else measured on the trained model
    setting = extracted or fastest_setting(model, shape, config.train.precision, timings, auto_precision_override())
    if measured and setting.precision == "bf16" and not torch.cuda.is_available():
        val = bundle.splits.get("val")
        known = predictions["val"][0].argmax(1) if "val" in predictions and plan.precision == setting.precision \
            and not plan.linear_probe and not plan.tta else None
        agreed = precision_agreement(model, val.images, plan.mean, plan.std, setting, known) if val is not None else 0
        total = len(val) if val is not None else 0
        if total and agreed >= MIN_AGREEMENT * total:
            setting = replace(setting, reason=f"{setting.reason}; val top-1 agrees with fp32 on {agreed}/{total}")
        else:
            checked = f"val top-1 agreed with fp32 on {agreed}/{total} only" if total else "no val split to check it on"
            fallback = fastest_setting(model, shape, "auto", timings, allow_bf16=False)
            setting = replace(fallback, reason=f"{fallback.reason}; bf16 was faster, but {checked}")
        model.to(memory_format=torch.contiguous_format)
    run.write_plan(setting.in_plan(plan).to_dict())
    get_console().print(f"inference (eval, predict, serve): {setting.precision}"
                        f"{', channels_last' if setting.channels_last else ''}, batch {setting.batch_size} "
                        f"({setting.reason})")


# --- helpers ---

def _parameter_counts(model: nn.Module, linear_probe: bool) -> tuple[int, int]:
    """(all parameters, trained parameters): a linear probe trains its classifier only."""
    trained = classifier_of(model).parameters() if linear_probe else \
        (p for p in model.parameters() if p.requires_grad)
    return sum(p.numel() for p in model.parameters()), sum(p.numel() for p in trained)


def _print_data_summary(bundle: DataBundle, plan: TrainPlan, run: RunFolder) -> None:
    """One paragraph: what is trained on what, where it goes."""
    sizes = ", ".join(f"{split} {len(data)}" for split, data in bundle.splits.items())
    get_console().print(
        f"data: {bundle.source} — {len(bundle.class_names)} classes, {sizes} images, "
        f"{plan.img_size}px, {plan.channels} channel(s), decoded images in {bundle.cache}\n"
        f"model: {plan.model}   run: {run.path}"
    )


def check_threshold(config: Config, class_names: list[str], has_val: bool) -> None:
    """--threshold needs two classes, and a validation split unless it is a fixed number."""
    rule = parse_threshold(config.train.threshold)
    if rule is None:
        return
    if len(class_names) != 2:
        raise ImgclsError(f"--threshold {config.train.threshold} (given, or set by the recipe) is for two classes; "
                          f"this data has {len(class_names)}: add --threshold argmax (per-class thresholds are out "
                          f"of scope: multi-class runs predict the most probable class)")
    if rule.kind != "fixed" and not has_val:
        raise ImgclsError(f"--threshold {rule} is chosen on the validation split, and there is none; give "
                          f"--val-split or a fixed threshold such as --threshold 0.3")


def _warn_about(notes: dict[str, str]) -> None:
    """Decisions of the plan that overrule what the user asked."""
    if notes.get("tta", "").startswith("off"):
        warn(f"--tta is {notes['tta']}")
