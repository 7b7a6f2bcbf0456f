"""The plan: every value a training run uses, decided once from what the user asked (the config), what the
data is (classes, channels, native size) and what the model expects (its defaults), then frozen.

config.yaml keeps what the user asked; plan.json, written beside it, keeps what was decided and why (`notes`).
Everything after planning reads the plan: nothing downstream re-derives a learning rate or an image size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sized
from dataclasses import dataclass, field
from typing import Any, Protocol

from imgcls.config import Config, DataConfig, mlflow_tracking_uri, progressive_stages
from imgcls.errors import ImgclsError
from imgcls.metrics import positive_index

TRAIN_METRICS_SAMPLE = 10_000  # the training split's final metrics use at most this many images (seeded)
SGD_REFERENCE_BATCH = 256  # SGD's default learning rate is 0.1 per 256 images of global batch (Goyal et al.)
DEFAULT_WEIGHT_DECAY = {"adamw": 0.05, "adam": 0.0, "sgd": 5e-4}
DEFAULT_WORKERS = 2  # loader processes where batches are costly to make (decoding, per-image augmentation)


@dataclass(frozen=True)
class TrainPlan:
    # data and input
    source: str
    class_names: tuple[str, ...]
    img_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    augment: str
    crop_padding: int
    hflip: bool
    workers: int
    # model
    model: str
    linear_probe: bool
    freeze_epochs: int
    backbone_lr_scale: float
    # optimisation
    epochs: int
    batch_size: int  # per process
    world_size: int  # processes (GPUs, or CPU processes under torchrun)
    global_batch_size: int  # batch_size x world_size: what one optimizer step sees
    optimizer: str
    lr: float  # peak learning rate
    weight_decay: float
    momentum: float
    scheduler: str
    warmup_epochs: float
    min_lr_ratio: float
    step_epochs: int
    step_gamma: float
    label_smoothing: float
    # the run
    precision: str
    precision_reason: str
    channels_last: bool
    compile: bool
    tta: bool
    monitor: str | None  # None without a validation split: the last epoch is kept
    patience: int
    positive_class: int  # two-class data: index of the class whose sensitivity etc. are reported
    seed: int
    train_metrics_images: int = 0  # training images the final train-split metrics use (0: all of them)
    erase: float = 0.0  # light augmentation: fraction of training images with a random rectangle erased
    class_weights: tuple[float, ...] = ()  # the loss's weight of each class (empty: all 1)
    sampler: str = "shuffle"  # balanced: every class drawn equally often
    ema: float | None = None  # decay of the weights' moving average (timm's warm-up); None: no average
    epoch_sizes: tuple[int, ...] = ()  # progressive resizing: image side of each of the first epochs (then img_size)
    track: tuple[str, ...] = ()  # live curves to: tensorboard, mlflow
    tracking_uri: str = ""  # with mlflow: the store the runs go to
    deterministic: bool = False  # torch.use_deterministic_algorithms while training
    # how eval, predict, serve and a linear probe's feature extraction run the model here (engine/inference_setting):
    # measured (the probe: before extracting; otherwise at the end of training, with bf16 checked against fp32)
    inference_precision: str = ""  # "": not decided (an older run): fp32 on CPUs
    inference_channels_last: bool = False
    inference_batch_size: int = 0
    inference_reason: str = ""
    notes: dict[str, str] = field(default_factory=dict)  # value -> how it was decided, where not simply asked

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainPlan":
        """A plan read back from plan.json (lists become tuples again)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()
                  if key in known}
        return cls(**values)


class PlannedData(Protocol):
    """What the plan reads of the data (a DataBundle; plan does not import the data layer)."""

    @property
    def source(self) -> str: ...

    @property
    def class_names(self) -> list[str]: ...

    @property
    def channels(self) -> int: ...

    @property
    def img_size(self) -> int: ...

    @property
    def hflip_ok(self) -> bool: ...

    @property
    def cache(self) -> str: ...

    @property
    def splits(self) -> Mapping[str, Sized]: ...

    def class_counts(self, split: str) -> list[int]: ...


class DeclaredInput(Protocol):
    """What the plan reads of a model's declared input (models' ModelDefaults)."""

    @property
    def input_size(self) -> int: ...

    @property
    def min_input_size(self) -> int | None: ...

    @property
    def interpolation(self) -> str: ...

    def normalization(self, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]: ...


def input_size(data: DataConfig, defaults: DeclaredInput, native_size: int | None, model: str) -> tuple[int, str]:
    """The image side a run uses, and why: --img-size, else a built-in dataset's native size, else the
    model's declared input size; never below the model's minimum (LeNet-5 needs 32)."""
    minimum = defaults.min_input_size
    if data.img_size is not None:
        if minimum and data.img_size < minimum:
            raise ImgclsError(f"image size {data.img_size} is below the {minimum} px that {model} needs; "
                              f"use --img-size {minimum} or more, or another --model")
        return data.img_size, "asked for"
    if native_size is not None:
        if minimum and native_size < minimum:
            return minimum, f"the data's {native_size} px resized up to the {minimum} px {model} needs"
        return native_size, "the dataset's native size"
    return defaults.input_size, f"{model}'s input size"


def learning_rate(optimizer: str, lr: float | None, global_batch_size: int) -> tuple[float, str]:
    """The peak learning rate and the rule that gave it: as asked; 1e-3 for Adam(W) whatever the batch; for
    SGD 0.1 x global batch / 256 (linear scaling: more processes, larger steps)."""
    if lr is not None:
        return lr, "asked for (not rescaled by the batch size)"
    if optimizer == "sgd":
        return 0.1 * global_batch_size / SGD_REFERENCE_BATCH, \
            f"0.1 x global batch {global_batch_size} / {SGD_REFERENCE_BATCH} (linear scaling)"
    return 1e-3, f"the {optimizer} default, not scaled by the batch size"


def loader_workers(requested: int | None, cache: str, augment: str, gpu: bool = False) -> tuple[int, str]:
    """Data loader worker processes, and why: as asked; none where a batch is a few tensor operations (decoded
    images in RAM or memory-mapped, batched `light` augmentation or none) and the CPU trains, since worker
    processes would take cores from the training step; else DEFAULT_WORKERS."""
    if requested is not None:
        return requested, "asked for"
    if cache != "none" and augment in ("light", "none") and not gpu:
        return 0, ("batches made in the training process: decoded images cached and batched augmentation; "
                   "worker processes would take cores from the CPU's training step")
    return DEFAULT_WORKERS, "images decoded per epoch, per-image augmentation or a GPU to keep fed"


def make_plan(config: Config, data: PlannedData, defaults: DeclaredInput, precision: tuple[str, str], channels_last: bool,
              world_size: int = 1, img_size_note: str = "asked for", gpu: bool = False) -> TrainPlan:
    """Freeze every value of a training run. `data` is the DataBundle (classes, channels, size, whether
    mirroring is allowed), `defaults` the model's ModelDefaults, `precision` (name, reason) as agreed by the
    processes."""
    data_cfg, optim, train, model = config.data, config.optim, config.train, config.model
    notes = {"img_size": img_size_note}
    global_batch = train.batch_size * world_size
    lr, notes["lr"] = learning_rate(optim.optimizer, optim.lr, global_batch)
    weight_decay = optim.weight_decay if optim.weight_decay is not None else DEFAULT_WEIGHT_DECAY[optim.optimizer]
    hflip = data_cfg.hflip and data.hflip_ok
    tta = train.tta and hflip
    if train.tta and not tta:
        notes["tta"] = f"off: {data.source} must not be mirrored (--no-hflip or digits)"
    mean, std = defaults.normalization(data.channels)
    workers, notes["workers"] = loader_workers(data_cfg.workers, data.cache, data_cfg.augment, gpu)
    train_images = len(data.splits["train"]) if data.splits.get("train") is not None else 0
    class_weights, notes["class_weights"] = loss_weights(data.class_counts("train") if train_images else [],
                                                         optim.class_weights)
    sampled = train_images > TRAIN_METRICS_SAMPLE and not model.linear_probe  # a probe's features are cheap
    if train.ema is not None:
        notes["ema"] = (f"decay {train.ema} after a warm-up (1 - (1 + step)^-3/4, timm's), so that the first "
                        f"weights fade fast; each epoch the better of raw and averaged weights on val is a candidate")
    if sampled:
        notes["train_metrics_images"] = (f"a seeded sample of {TRAIN_METRICS_SAMPLE:,} of the {train_images:,} "
                                         f"training images (the fit diagnostic; held-out splits are always whole)")
    return TrainPlan(
        source=data.source, class_names=tuple(data.class_names), img_size=data.img_size, channels=data.channels,
        mean=tuple(mean), std=tuple(std), interpolation=defaults.interpolation, augment=data_cfg.augment,
        crop_padding=max(1, data.img_size // 8) if data_cfg.crop_padding is None else data_cfg.crop_padding,
        hflip=hflip, workers=workers, model=model.name, linear_probe=model.linear_probe,
        freeze_epochs=train.epochs if model.freeze_backbone else model.freeze_epochs,
        backbone_lr_scale=model.backbone_lr_scale, epochs=train.epochs, batch_size=train.batch_size,
        world_size=world_size, global_batch_size=global_batch, optimizer=optim.optimizer, lr=lr,
        weight_decay=weight_decay, momentum=optim.momentum, scheduler=optim.scheduler,
        warmup_epochs=optim.warmup_epochs, min_lr_ratio=optim.min_lr_ratio, step_epochs=optim.step_epochs,
        step_gamma=optim.step_gamma, label_smoothing=optim.label_smoothing, precision=precision[0],
        precision_reason=precision[1], channels_last=channels_last, compile=train.compile,
        deterministic=train.deterministic, tta=tta,
        monitor=train.monitor if "val" in data.splits else None, patience=train.patience,
        positive_class=positive_index(list(data.class_names), train.positive_class), seed=train.seed,
        train_metrics_images=TRAIN_METRICS_SAMPLE if sampled else train_images, erase=data_cfg.erase,
        class_weights=class_weights, sampler=data_cfg.sampler, ema=train.ema,
        epoch_sizes=progressive_sizes(data_cfg, data.img_size, defaults.min_input_size), notes=notes,
        track=trackers(train.track), tracking_uri=mlflow_tracking_uri(train.runs_dir) if "mlflow" in
        trackers(train.track) else "",
    )


def trackers(track: str) -> tuple[str, ...]:
    """--track as the tracker names it means."""
    return {"none": (), "all": ("tensorboard", "mlflow")}.get(track, (track,))


def loss_weights(counts: list[int], mode: str) -> tuple[tuple[float, ...], str]:
    """The loss weight of each class and why: "auto" is scikit-learn's "balanced", images / (classes x class
    images), so every class weighs as much in the loss as if the data were balanced."""
    if mode == "none" or not counts:
        return (), "none: every image weighs the same"
    present = [count for count in counts if count]
    weights = tuple(round(sum(present) / (len(present) * count), 6) if count else 0.0 for count in counts)
    return weights, f"auto: images / (classes x images of the class), from {min(weights):.3g} to {max(weights):.3g}"


def progressive_sizes(data_cfg: DataConfig, img_size: int, minimum: int | None) -> tuple[int, ...]:
    """The image side of each epoch that --progressive trains below the full `img_size`."""
    sizes = tuple(px for px, epochs in progressive_stages(data_cfg.progressive) for _ in range(epochs))
    smallest = max(8, minimum or 0)
    outside = [px for px in sizes if not smallest <= px < img_size]
    if outside:
        raise ImgclsError(f"--progressive size {outside[0]} px is outside {smallest} to {img_size - 1} px (the run's "
                          f"images are {img_size} px); pick other stages or drop --progressive")
    return sizes


def for_world_size(plan: TrainPlan, world_size: int) -> TrainPlan:
    """The same run continued on another number of processes: the global batch is kept, so the steps per
    epoch, the schedule and the learning rate stay as planned; each process takes a share of the batch."""
    if world_size == plan.world_size:
        return plan
    if plan.global_batch_size % world_size:
        raise ImgclsError(f"the run's global batch of {plan.global_batch_size} images does not split evenly over "
                          f"{world_size} processes; resume it with a number of processes that divides it")
    notes = {**plan.notes, "world_size": f"resumed on {world_size} process(es) after {plan.world_size}; "
                                         f"global batch {plan.global_batch_size} kept"}
    return dataclasses.replace(plan, world_size=world_size, batch_size=plan.global_batch_size // world_size,
                               notes=notes)
