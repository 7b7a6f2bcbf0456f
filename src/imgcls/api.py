"""The Python API: train, evaluate, predict, load. The CLI is a thin layer over these four calls."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgcls.atomic import write_json_atomic, write_text_atomic
from imgcls.config import Config, build_config, config_from_dict, default_data_root, flat_to_sections
from imgcls.console import get_console, warn
from imgcls.errors import ImgclsError
from imgcls.metrics import positive_index
from imgcls.runs import create_run_dir, default_run_name, weights_path

__version__ = "0.1.0"


@dataclass
class TrainOutcome:
    run_dir: Path
    metrics: dict[str, dict]  # split -> metrics
    best_epoch: int | None
    epochs_run: int
    wall_time_s: float


@dataclass
class LoadedModel:
    model: Any  # torch.nn.Module in eval mode
    name: str
    class_names: list[str]
    in_chans: int
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights_file: Path
    run_dir: Path | None
    config: Config | None


# --- train ---

def train(config: Config | str | None = None, resume: str | Path | None = None, recipe: str | None = None,
          **overrides) -> TrainOutcome:
    """Train a classifier; returns the run folder and the final metrics.

    `config` is a Config, or a dataset (folder or built-in name) with flat overrides such as
    `train("fashion-mnist", model="resnet18", epochs=2)`; `recipe` starts from a named recipe (the CLI's
    `imgcls train fashion-mnist` uses the fashion-mnist recipe by default; the API only when asked).
    `resume` continues a run from its last epoch.
    """
    import time

    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    started = time.perf_counter()
    if resume is not None:
        run_dir, config = _resumable_run(Path(resume).expanduser())
    else:
        config = _as_config(config, overrides, recipe)
        from imgcls.models.registry import check_model_name

        check_model_name(config.model.name)  # fail before a run folder is made or any image decoded
    from imgcls.engine.evaluate import cpu_only

    partial_state = PartialState(cpu=cpu_only())  # cpu=True lets torchrun start multi-process CPU (gloo) runs
    if resume is None:
        default_name = default_run_name(config.data.source, config.model.name)
        chosen = [None]
        if partial_state.is_main_process:
            chosen = [str(create_run_dir(Path(config.train.runs_dir), config.train.name, default_name))]
        broadcast_object_list(chosen)
        run_dir = Path(chosen[0])
    try:
        return _train_in(run_dir, config, resume is not None, partial_state.is_main_process,
                         partial_state.num_processes, started)
    except BaseException:
        if resume is None and partial_state.is_main_process and not any(run_dir.iterdir()):
            run_dir.rmdir()  # nothing was written yet (bad input): leave no empty run folder behind
        raise


def _as_config(config: Config | str | None, overrides: dict, recipe: str | None = None) -> Config:
    if isinstance(config, Config):
        if recipe is not None:
            raise ImgclsError("pass either a Config or a recipe name, not both")
        if overrides:
            from imgcls.config import apply_overrides, validate

            config = copy.deepcopy(config)
            apply_overrides(config, flat_to_sections(overrides), "the arguments")
            validate(config)
        return config
    if config is not None:
        overrides = {"source": config, **overrides}
    return build_config(overrides=flat_to_sections(overrides), recipe=recipe)


def _resumable_run(run_dir: Path) -> tuple[Path, Config]:
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise ImgclsError(f"{run_dir} is not an imgcls run folder (no config.yaml); pass a folder made by "
                          f"'imgcls train' to --resume")
    if not (run_dir / "last").is_dir() and not (run_dir / "last.old").is_dir():
        raise ImgclsError(f"{run_dir} has no saved training state (last/): it stopped before the first epoch "
                          f"ended; start a new run instead")
    import yaml

    return run_dir, config_from_dict(yaml.safe_load(config_file.read_text()), str(config_file))


def _train_in(run_dir: Path, config: Config, resume: bool, is_main: bool, num_processes: int,
              started: float) -> TrainOutcome:
    import yaml

    from imgcls.data import build_dataset
    from imgcls.engine.trainer import fit

    console = get_console()
    data_root = Path(config.data.data_root).expanduser() if config.data.data_root else default_data_root()
    bundle = build_dataset(config.data, config.train.seed, data_root, processes=num_processes)
    positive_index(bundle.class_names, config.train.positive_class)  # a wrong name fails before training
    if "train" not in bundle.splits or len(bundle.splits["train"]) == 0:
        example = f" (e.g. {bundle.skipped[0][0]}: {bundle.skipped[0][1]})" if bundle.skipped else ""
        raise ImgclsError(f"no readable training images in {config.data.source}{example}; "
                          f"check that the files are intact images")
    if "val" not in bundle.splits:
        warn("no validation split (--val-split 0 and no val/ folder): the last epoch is kept as best")
    from accelerate.utils import set_seed

    set_seed(config.train.seed)  # before the model is built: its initialization draws random numbers
    model = _create_checked_model(config, bundle)
    mean, std = _normalization(model, bundle.channels)
    if is_main:
        _report_data_problems(bundle, run_dir)
    metadata = {"model": config.model.name, "num_classes": len(bundle.class_names), "in_chans": bundle.channels,
                "img_size": bundle.img_size, "class_names": bundle.class_names, "mean": list(mean),
                "std": list(std), "options": config.model.options, "imgcls_version": __version__}
    if not resume:
        _record_resolved_values(config, bundle)
    if is_main and not resume:
        write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
        write_json_atomic(run_dir / "classes.json", bundle.class_names)
        _print_data_summary(bundle, config, run_dir)
    from imgcls.config import cache_dir_of

    cache_dir = cache_dir_of(config.data)
    if config.model.linear_probe:
        from imgcls.probe import train_linear_probe

        result = train_linear_probe(model, bundle, config, run_dir, metadata, mean, std, cache_dir / "features",
                                    resume, is_main)
    else:
        from imgcls.engine.precision import to_channels_last

        channels_last = config.train.channels_last and to_channels_last(model)
        loaders, generator = _make_loaders(bundle, config, mean, std, num_processes, channels_last)
        groups, frozen, freeze_epochs = _transfer_setup(model, config)
        result = fit(model, loaders, config, run_dir, metadata, bundle.class_names, groups, frozen, freeze_epochs,
                     resume=resume, shuffle_generator=generator,
                     positive_class=positive_index(bundle.class_names, config.train.positive_class),
                     channels_last=channels_last, precision_cache=cache_dir / "precision.json")
    if is_main:
        write_json_atomic(run_dir / "metrics.json", result.final_metrics)
        write_json_atomic(run_dir / "run.json", _run_summary(config, bundle, model, result, started))
        from imgcls.report.tables import print_metrics

        if result.final_metrics:  # the answer first; the figures and the report follow
            print_metrics(result.final_metrics, title=f"metrics of the best epoch ({result.best_epoch})")
        _write_figures_and_report(run_dir, bundle, result, config.train.seed)
        console.print(f"run folder: [bold]{run_dir}[/bold]   report: {run_dir / 'report.html'}")
    return TrainOutcome(run_dir, result.final_metrics, result.best_epoch, len(result.history), result.wall_time_s)


def _run_summary(config: Config, bundle, model, result, started: float) -> dict:
    """run.json: what was trained, on what, for how long, on which hardware."""
    import datetime
    import time

    from imgcls.environment import hardware, versions

    trained = sum(p.numel() for p in model.get_classifier().parameters()) if config.model.linear_probe else \
        sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "data": bundle.source, "model": config.model.name, "img_size": bundle.img_size, "in_chans": bundle.channels,
        "class_counts": {split: bundle.class_counts(split) for split in bundle.splits},
        "parameters": sum(p.numel() for p in model.parameters()), "trainable_parameters": trained,
        "epochs": config.train.epochs, "epochs_run": len(result.history), "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early, "training_time_s": round(result.wall_time_s, 2),
        "wall_time_s": round(time.perf_counter() - started, 2), "precision": result.precision,
        "precision_reason": result.precision_reason, "channels_last": result.channels_last,
        "compiled": result.compiled, "image_cache": bundle.cache, "num_processes": result.num_processes,
        "device": result.device, "hardware": hardware(),
        "versions": versions(), "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def _write_figures_and_report(run_dir: Path, bundle, result, seed: int) -> None:
    """Per-sample predictions, every figure and report.html of a finished run."""
    from imgcls.report.figures import write_image_figures
    from imgcls.report.html import build_report
    from imgcls.report.plots import write_run_plots
    from imgcls.report.split_predictions import SplitPredictions, save_split_predictions

    predictions = {}
    for split, (probs, labels) in result.predictions.items():
        predictions[split] = SplitPredictions(probs.numpy(), labels.numpy(), bundle.splits[split].paths)
        save_split_predictions(run_dir, split, predictions[split], bundle.class_names)
    write_run_plots(run_dir, result.final_metrics, bundle.class_names, predictions)
    loaded = load(run_dir)  # the best weights, whole (a linear probe's head included)
    write_image_figures(run_dir, {name: split.images for name, split in bundle.splits.items()},
                        {name: split.labels.numpy() for name, split in bundle.splits.items()}, bundle.class_names,
                        predictions, loaded.model, loaded.mean, loaded.std, seed)
    build_report(run_dir)


def _transfer_setup(model, config: Config):
    """Optimizer groups, the parameters to freeze and for how many epochs."""
    from imgcls.config import resolved_lr, resolved_weight_decay
    from imgcls.models.transfer import backbone_parameters, param_groups

    model_cfg = config.model
    lr = resolved_lr(config.optim, config.train.batch_size)
    groups = param_groups(model, lr, resolved_weight_decay(config.optim), model_cfg.backbone_lr_scale)
    freeze_epochs = config.train.epochs if model_cfg.freeze_backbone else model_cfg.freeze_epochs
    frozen = backbone_parameters(model) if freeze_epochs else None
    return groups, frozen, freeze_epochs


def _record_resolved_values(config: Config, bundle) -> None:
    """Write the values chosen automatically into the config, so config.yaml reproduces the run."""
    from imgcls.config import resolved_lr, resolved_weight_decay

    config.data.img_size = bundle.img_size
    config.data.channels = bundle.channels
    if config.train.tta and not (config.data.hflip and bundle.hflip_ok):
        warn(f"--tta is off: {bundle.source} must not be mirrored (--no-hflip or digits)")
        config.train.tta = False
    config.optim.lr = resolved_lr(config.optim, config.train.batch_size)
    config.optim.weight_decay = resolved_weight_decay(config.optim)


def _report_data_problems(bundle, run_dir: Path) -> None:
    for message in bundle.warnings:
        warn(message)
    if bundle.skipped:
        lines = [f"{path}\t{reason}" for path, reason in sorted(bundle.skipped)]
        write_text_atomic(run_dir / "skipped.txt", "\n".join(lines) + "\n")
        shown = "; ".join(f"{Path(path).name} ({reason})" for path, reason in sorted(bundle.skipped)[:3])
        more = f" and {len(bundle.skipped) - 3} more" if len(bundle.skipped) > 3 else ""
        warn(f"skipped {len(bundle.skipped)} unreadable image(s): {shown}{more}; listed in {run_dir}/skipped.txt")


def _print_data_summary(bundle, config: Config, run_dir: Path) -> None:
    sizes = ", ".join(f"{split} {len(data)}" for split, data in bundle.splits.items())
    get_console().print(
        f"data: {bundle.source} — {len(bundle.class_names)} classes, {sizes} images, "
        f"{bundle.img_size}px, {bundle.channels} channel(s), decoded images in {bundle.cache}\n"
        f"model: {config.model.name}   run: {run_dir}"
    )


def _create_checked_model(config: Config, bundle):
    """Create the model and prove one forward pass works at the chosen image size."""

    from imgcls.models import create_model

    model_cfg = config.model
    model = create_model(model_cfg.name, num_classes=len(bundle.class_names), in_chans=bundle.channels,
                         img_size=bundle.img_size, pretrained=model_cfg.pretrained, weights=model_cfg.weights,
                         weights_map=model_cfg.weights_map,
                         drop_rate=model_cfg.drop_rate, drop_path_rate=model_cfg.drop_path_rate, **model_cfg.options)
    _check_input_size(model, model_cfg.name, bundle.channels, bundle.img_size)
    return model


def _check_input_size(model, name: str, channels: int, img_size: int) -> None:
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, channels, img_size, img_size))
    except (RuntimeError, ValueError, AssertionError) as error:
        first = str(error).strip().splitlines()[0][:140] if str(error).strip() else type(error).__name__
        raise ImgclsError(f"image size {img_size} does not work with {name} ({first}); use a larger --img-size "
                          f"(e.g. 32 or 224) or another --model") from None
    finally:
        model.train(was_training)


def _normalization(model, channels: int):
    from imgcls.data.transforms import default_normalization
    from imgcls.models.registry import default_normalization_of

    found = default_normalization_of(model)
    if found is None:
        return default_normalization(channels)
    mean, std = found
    if len(mean) != channels:  # a 3-channel pretrained config on 1-channel data: average it
        mean, std = (sum(mean) / len(mean),) * channels, (sum(std) / len(std),) * channels
    return tuple(mean), tuple(std)


def _make_loaders(bundle, config: Config, mean, std, num_processes: int, channels_last: bool = False):
    from imgcls.data.loader import TensorImageDataset, make_loader
    from imgcls.data.transforms import train_transform

    batch_size, workers, seed = config.train.batch_size, config.data.workers, config.train.seed
    augment = train_transform(config.data.augment, bundle.img_size, config.data.hflip and bundle.hflip_ok,
                              config.data.crop_padding)
    train_set = TensorImageDataset(bundle.splits["train"], mean, std, augment, channels_last)
    # Drop a ragged last batch (a batch of one breaks batch norm) unless that would leave a process no batch.
    drop_last = len(train_set) >= 2 * batch_size * num_processes
    train_loader = make_loader(train_set, batch_size, shuffle=True, workers=workers, seed=seed, drop_last=drop_last)
    loaders = {"train": train_loader}
    for split, source in (("train_eval", "train"), ("val", "val"), ("test", "test")):
        if source in bundle.splits and len(bundle.splits[source]):
            dataset = TensorImageDataset(bundle.splits[source], mean, std, channels_last=channels_last)
            loaders[split] = make_loader(dataset, batch_size * 2, shuffle=False, workers=min(workers, 1), seed=seed)
    return loaders, train_loader.generator


# --- load ---

def load(run: str | Path) -> LoadedModel:
    """A trained model from a run folder (or its best.safetensors), in eval mode, with its classes."""
    from imgcls.engine.checkpoint import load_weights_into, read_metadata
    from imgcls.models import create_model

    weights = weights_path(run)
    meta = read_metadata(weights)
    model = create_model(meta["model"], num_classes=meta["num_classes"], in_chans=meta["in_chans"],
                         img_size=meta["img_size"], **meta.get("options", {}))
    load_weights_into(model, weights)
    model.eval()
    run_dir = weights.parent if (weights.parent / "config.yaml").is_file() else None
    config = None
    if run_dir is not None:
        import yaml

        config = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()), str(run_dir))
    return LoadedModel(model, meta["model"], list(meta["class_names"]), int(meta["in_chans"]),
                       int(meta["img_size"]), tuple(meta["mean"]), tuple(meta["std"]), weights, run_dir, config)


def load_pretrained(name: str, weights: str | None = None, pretrained: bool = False) -> LoadedModel:
    """An ImageNet-pretrained model used as is (zero-shot), labelled with ImageNet class names."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    from imgcls.models import create_model

    if weights is None and not pretrained:
        raise ImgclsError("predicting with --model needs its weights: pass --weights FILE or --pretrained")
    probe = create_model(name, num_classes=1000)
    num_classes = getattr(probe, "num_classes", 1000)
    model = create_model(name, num_classes=num_classes, weights=weights, pretrained=pretrained)
    model.eval()
    subset = infer_imagenet_subset(model) or "imagenet-1k"
    info = ImageNetInfo(subset)
    class_names = [info.index_to_description(index) for index in range(num_classes)]
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    mean, std = _normalization(model, 3)
    img_size = int(cfg.get("input_size", (3, 224, 224))[-1])
    return LoadedModel(model, name, class_names, 3, img_size, mean, std, Path(weights) if weights else Path(name),
                       None, None)


# --- evaluate ---

def evaluate(run: str | Path, data: str | None = None, split: str | None = None, batch_size: int = 128,
             workers: int = 1, data_root: str | None = None, precision: str = "auto",
             positive_class: str | None = None) -> dict:
    """Metrics of a trained model on a split of any dataset; written to RUN/eval/<data>-<split>/metrics.json.

    With no `data`, the run's own dataset is used (test split if it has one, else val). A class-per-folder
    dataset other than the training one is evaluated whole (split "all").
    """
    from imgcls.config import DataConfig
    from imgcls.data import build_dataset
    from imgcls.data.loader import TensorImageDataset, make_loader
    from imgcls.engine.evaluate import collect_logits, make_accelerator, resolve_precision
    from imgcls.metrics import compute_metrics

    loaded = load(run)
    train_data = loaded.config.data if loaded.config is not None else DataConfig()
    data_cfg = copy.deepcopy(train_data)
    data_cfg.source = data or train_data.source
    if not data_cfg.source:
        raise ImgclsError("this checkpoint has no run folder to take the dataset from; pass DATA")
    if data_root is not None:
        data_cfg.data_root = data_root
    data_cfg.max_per_class = None if data else train_data.max_per_class
    same_data = _same_source(data_cfg.source, train_data.source)
    seed = loaded.config.train.seed if loaded.config is not None else 0
    root = Path(data_cfg.data_root).expanduser() if data_cfg.data_root else default_data_root()
    bundle = build_dataset(data_cfg, seed, root, class_names=loaded.class_names, channels=loaded.in_chans,
                           img_size=loaded.img_size, whole=not same_data or split == "all")
    for message in bundle.warnings:
        warn(message)
    if bundle.skipped:
        warn(f"skipped {len(bundle.skipped)} unreadable image(s), e.g. {bundle.skipped[0][0]}")
    available = list(bundle.splits)
    if split is None:
        split = next((name for name in ("test", "val", "all") if name in bundle.splits), available[0])
    if split not in bundle.splits:
        raise ImgclsError(f"{data_cfg.source} has no '{split}' split; choose one of {', '.join(available)}")
    dataset = TensorImageDataset(bundle.splits[split], loaded.mean, loaded.std)
    accelerator = make_accelerator(resolve_precision(precision))
    loader = accelerator.prepare(make_loader(dataset, batch_size, shuffle=False, workers=workers, seed=seed))
    model = accelerator.prepare(loaded.model)
    logits, labels = collect_logits(accelerator, model, loader, tta=bool(loaded.config and loaded.config.train.tta))
    if positive_class is None and loaded.config is not None:
        positive_class = loaded.config.train.positive_class
    metrics = compute_metrics(logits, labels, loaded.class_names, positive_index(loaded.class_names, positive_class),
                              seed=seed)
    if loaded.run_dir is not None and accelerator.is_main_process:
        out_dir = loaded.run_dir / "eval" / default_run_name(data_cfg.source, split)
        write_json_atomic(out_dir / "metrics.json", {split: metrics})
        _write_evaluation_report(out_dir, loaded, bundle, split, metrics, logits.softmax(dim=1), labels,
                                 data_cfg.source, seed)
        metrics["written_to"] = str(out_dir)
    metrics["split"] = split
    return metrics


def _write_evaluation_report(out_dir: Path, loaded: LoadedModel, bundle, split: str, metrics: dict, probs, labels,
                             source: str, seed: int) -> None:
    """predictions/, plots/ and report.html of one evaluation, beside its metrics.json."""
    import datetime

    from imgcls.environment import hardware, versions
    from imgcls.report.figures import write_image_figures
    from imgcls.report.html import build_report
    from imgcls.report.plots import write_metric_plots
    from imgcls.report.split_predictions import SplitPredictions, save_split_predictions

    predictions = {split: SplitPredictions(probs.numpy(), labels.numpy(), bundle.splits[split].paths)}
    save_split_predictions(out_dir, split, predictions[split], loaded.class_names)
    write_json_atomic(out_dir / "run.json", {
        "data": source, "split": split, "model": loaded.name, "img_size": loaded.img_size,
        "in_chans": loaded.in_chans, "parameters": sum(p.numel() for p in loaded.model.parameters()),
        "evaluated_run": str(loaded.run_dir), "hardware": hardware(), "versions": versions(),
        "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    })
    write_metric_plots(out_dir, {split: metrics}, loaded.class_names, predictions)
    write_image_figures(out_dir, {split: bundle.splits[split].images}, {split: bundle.splits[split].labels.numpy()},
                        loaded.class_names, predictions, seed=seed)
    build_report(out_dir, title=f"{loaded.run_dir.name}: evaluation on {Path(source).name or source} ({split})")


# --- data show ---

def show_data(source: str, out: str | Path | None = None, split: str = "train", per_class: int = 8,
              img_size: int | None = None, data_root: str | None = None, seed: int = 0) -> Path:
    """Write a PNG grid of `per_class` random images of every class of `split` (imgcls data show)."""
    from imgcls.atomic import check_replaceable
    from imgcls.config import DataConfig
    from imgcls.data import build_dataset
    from imgcls.data.builtin import builtin_name
    from imgcls.report.figures import sample_grid

    path = Path(out).expanduser() if out else Path(f"{default_run_name(source, 'samples')}.png")
    check_replaceable(path, "--out")
    is_folder = Path(source).expanduser().exists() or builtin_name(source) is None
    data_cfg = DataConfig(source=source, data_root=data_root, max_per_class=per_class,
                          img_size=img_size or (160 if is_folder else None))
    root = Path(data_root).expanduser() if data_root else default_data_root()
    bundle = build_dataset(data_cfg, seed, root)
    for message in bundle.warnings:
        warn(message)
    if split not in bundle.splits:
        raise ImgclsError(f"{source} has no '{split}' split; choose one of {', '.join(bundle.splits)}")
    chosen = bundle.splits[split]
    return sample_grid(chosen.images, chosen.labels.numpy(), bundle.class_names, path,
                       f"{Path(source).name or source}: {split} split, {len(bundle.class_names)} classes",
                       per_class=per_class, seed=seed)


def _same_source(a: str, b: str) -> bool:
    from imgcls.data.builtin import builtin_name

    if not b:
        return False
    path_a, path_b = Path(a).expanduser(), Path(b).expanduser()
    if path_a.exists() and path_b.exists():
        return path_a.resolve() == path_b.resolve()
    return builtin_name(a) is not None and builtin_name(a) == builtin_name(b)


# --- predict ---

def predict(run: str | Path | LoadedModel, inputs: list[str | Path], topk: int = 5, batch_size: int = 64,
            precision: str = "auto") -> list[dict]:
    """Top-k classes for every image file (folders are searched recursively); batched.

    Returns one dict per file: {"path", "predictions": [{"class", "probability"}, ...]} or {"path", "error"}.
    """
    from imgcls.engine.evaluate import resolve_precision
    from imgcls.predict import predict_files

    loaded = run if isinstance(run, LoadedModel) else load(run)
    return predict_files(loaded.model, inputs, loaded.class_names, loaded.img_size, loaded.in_chans,
                         loaded.mean, loaded.std, topk=topk, batch_size=batch_size,
                         tta=bool(loaded.config and loaded.config.train.tta), precision=resolve_precision(precision))

