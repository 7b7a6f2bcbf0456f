"""The typed configuration tree: built once from a YAML file and flags, validated, saved with the run."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from imgcls.config.variables import (
    AUTO_PRECISION_ENV,
    CACHE_DIR_ENV,
    COLLECTIVE_TIMEOUT_ENV,
    DEFAULT_COLLECTIVE_TIMEOUT_S,
    LAUNCHER_VARIABLES,
    auto_precision_override,
    collective_timeout_s,
    mlflow_tracking_uri,
    default_cache_dir,
    default_data_root,
    keep_mlflow_offline,
    plain_process_environment,
)
from imgcls.errors import ImgclsError, first_line

# re-exported: `from imgcls.config import ...`
__all__ = ["AUTO_PRECISION_ENV", "CACHE_DIR_ENV", "COLLECTIVE_TIMEOUT_ENV", "DEFAULT_COLLECTIVE_TIMEOUT_S",
           "LAUNCHER_VARIABLES", "auto_precision_override", "collective_timeout_s", "default_cache_dir",
           "default_data_root", "keep_mlflow_offline", "mlflow_tracking_uri", "plain_process_environment"]

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("cosine", "step", "onecycle", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUGMENTS = ("none", "light", "standard", "strong")
CACHES = ("auto", "ram", "disk", "none")
CLASS_WEIGHTS = ("none", "auto")
SAMPLERS = ("shuffle", "balanced")
DOC_KEYS = ("description", "tutorial", "fixes", "expected")  # documentation a config file may carry (recipes do)
TRACKS = ("none", "tensorboard", "mlflow", "all")
MONITORS = ("accuracy", "loss", "balanced_accuracy", "f1_macro", "mcc", "roc_auc", "last")


@dataclass
class DataConfig:
    source: str = ""  # a folder, or a built-in name (mnist, fashion-mnist, cifar10, cifar100)
    data_root: str | None = None  # where built-in datasets are looked for and downloaded to
    val_split: float = 0.2
    test_split: float = 0.0
    img_size: int | None = None  # None: native size for built-ins, 224 for folders
    channels: int | None = None  # None: 1 when every image is grayscale, else 3
    augment: str = "light"
    crop_padding: int | None = None  # light augmentation: shift by up to this many pixels; None: img_size // 8
    erase: float = 0.0  # light augmentation: random erasing of one rectangle in this fraction of the images
    progressive: str | None = None  # "PX:EPOCHS,...": the first epochs train on batches resized down, then img_size
    hflip: bool = True
    max_per_class: int | None = None  # cap images per class in every split (quick experiments)
    group_by: str | None = None  # REGEX on the file path, or a CSV of file,group: a group never spans two splits
    sampler: str = "shuffle"  # balanced: every class drawn equally often (with replacement) in each epoch
    dedupe: bool = False  # pre-split folders: drop val/test files byte-identical to a file of an earlier split
    workers: int | None = None  # loader processes; None: 0 where batches are cheap to make on a CPU, else 2 (plan)
    cache: str = "auto"  # decoded images: ram, disk (memory-mapped, reused across runs), none; auto: by size
    cache_dir: str | None = None  # decoded images, linear-probe features, precision timings; None: ~/.cache/imgcls
    strict: bool = False  # an unreadable image is an error naming it (default: left out, listed in skipped.txt)
    allow_empty: bool = False  # leave out class folders without a readable image (default: an error naming them)


@dataclass
class ModelConfig:
    name: str = "resnet18"
    pretrained: bool = False
    weights: str | None = None
    weights_map: str = "auto"  # how --weights tensor names are matched: auto, strip-prefix, positional
    drop_rate: float = 0.0
    drop_path_rate: float | None = None
    options: dict = field(default_factory=dict)  # architecture options, e.g. {patch_size: 4, depth: 6} for vit
    freeze_backbone: bool = False  # train the classifier head only
    freeze_epochs: int = 0  # train the head only for N epochs, then everything (fastai's fine_tune)
    backbone_lr_scale: float = 1.0  # backbone learning rate = lr * this, once it trains
    linear_probe: bool = False  # cache frozen-backbone features once, train a linear head on them


@dataclass
class OptimConfig:
    optimizer: str = "adamw"
    lr: float | None = None  # None: 1e-3 for Adam(W), 0.1 x global batch / 256 for SGD (imgcls.plan decides)
    weight_decay: float | None = None  # None: 0.05 for AdamW, 0 for Adam, 5e-4 for SGD
    momentum: float = 0.9
    scheduler: str = "cosine"
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    step_epochs: int = 10
    step_gamma: float = 0.1
    label_smoothing: float = 0.0
    class_weights: str = "none"  # auto: weight the loss by inverse class frequency (imbalanced data)


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    seed: int = 42
    precision: str = "auto"  # auto: bf16/fp16 on GPUs; on CPUs bf16 only where it measures faster than fp32
    channels_last: bool = True  # NHWC memory for convolutional models (faster oneDNN / cuDNN kernels)
    compile: bool = False  # torch.compile the model (inductor): pays a compile once, faster steps after
    deterministic: bool = False  # torch.use_deterministic_algorithms: bit-exact reruns on GPUs too (slower)
    auto_batch_size: bool = False  # halve batch_size until a training step fits in the device's memory
    tta: bool = False  # evaluate and predict on each image and its mirror, averaging the probabilities
    report: bool = True  # draw the figures and report.html at the end (off: metrics and predictions only)
    monitor: str = "accuracy"
    patience: int = 0  # early stopping after this many epochs without improvement; 0 = off
    positive_class: str | None = None  # two-class data: the class whose sensitivity etc. is reported (default 2nd)
    calibrate: bool = True  # fit a temperature on the validation split at the end (probabilities that mean it)
    threshold: str | None = None  # two classes: auto | youden | P | sensitivity=X | specificity=X; None: argmax
    ema: float | None = None  # keep an exponential moving average of the weights with this decay (e.g. 0.999)
    folds: int = 0  # K-fold cross-validation: K runs, each image held out once per repeat (0: one split)
    repeats: int = 1  # cross-validation repeated with other fold assignments
    final: bool = False  # after the folds, train the deployable model on all the data with the same plan
    track: str = "none"  # live curves: tensorboard (RUN/tb), mlflow (a local store in RUNS_DIR/mlruns), all
    runs_dir: str = "runs"
    name: str | None = None


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, as written to config.yaml."""
        return dataclasses.asdict(self)


def _section_fields(section: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(section)}


def _unknown_key(key: str, known: list[str], where: str) -> ImgclsError:
    close = difflib.get_close_matches(key, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known keys: {', '.join(known)}"
    return ImgclsError(f"unknown config key '{key}' in {where}{hint}")


def _coerce(value: Any, annotation: str, key: str) -> Any:
    """Convert YAML/flag values to the field's declared type, with a clear error on mismatch."""
    if annotation == "dict":
        if not isinstance(value, dict):
            raise ImgclsError(f"config key '{key}' must be a mapping of option names to values, got {value!r}")
        return dict(value)
    if value is None:
        if "None" in annotation:
            return None
        raise ImgclsError(f"config key '{key}' needs a value")
    try:
        if annotation.startswith("bool"):
            if isinstance(value, str):
                if value.lower() in ("true", "yes", "1"):
                    return True
                if value.lower() in ("false", "no", "0"):
                    return False
                raise ValueError
            return bool(value)
        if annotation.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if annotation.startswith("float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        kind = annotation.split(" ")[0]
        raise ImgclsError(f"config key '{key}' must be {kind}, got {value!r}") from None


def apply_overrides(config: Config, values: dict[str, dict[str, Any]], where: str) -> None:
    """Set `values` ({section: {key: value}}) on `config`, rejecting unknown sections and keys."""
    sections = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    for section_name, section_values in values.items():
        if section_name not in sections:
            raise _unknown_key(section_name, list(sections), where)
        if not isinstance(section_values, dict):
            raise ImgclsError(f"'{section_name}' in {where} must be a mapping of keys to values")
        section = sections[section_name]
        fields = _section_fields(section)
        for key, value in section_values.items():
            if key not in fields:
                raise _unknown_key(key, list(fields), f"{where} section '{section_name}'")
            setattr(section, key, _coerce(value, str(fields[key].type), f"{section_name}.{key}"))


def load_yaml(path: str | Path, keep_docs: bool = False) -> dict[str, Any]:
    """Read a config YAML file into a nested dict (without a recipe's description keys unless keep_docs)."""
    path = Path(path)
    if not path.is_file():
        raise ImgclsError(f"config file {path} does not exist; pass an existing YAML file to --config")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ImgclsError(f"config file {path} is not valid YAML ({first_line(error)}); fix the syntax") from None
    if not isinstance(values, dict):
        raise ImgclsError(f"config file {path} must hold a mapping with sections data/model/optim/train")
    if keep_docs:
        return values
    return {key: value for key, value in values.items() if key not in DOC_KEYS}


@dataclass(frozen=True)
class Recipe:
    """A named set of config sections (imgcls.recipe_book reads the shipped ones)."""

    name: str
    values: dict[str, Any]


def build_config(yaml_path: str | Path | None = None, overrides: dict[str, dict[str, Any]] | None = None,
                 recipe: Recipe | None = None) -> Config:
    """Defaults, then the recipe, then the YAML file, then flag overrides; validated.

    A recipe's architecture options belong to its model: another --model starts without them.
    """
    config = Config()
    if recipe is not None:
        apply_overrides(config, recipe.values, f"recipe {recipe.name}")
    recipe_model = config.model.name
    later = [load_yaml(yaml_path)] if yaml_path is not None else []
    later += [overrides] if overrides else []
    if recipe is not None and any(section.get("model", {}).get("name", recipe_model) != recipe_model
                                  for section in later):
        config.model.options = {}
    if yaml_path is not None:
        apply_overrides(config, later[0], str(yaml_path))
    if overrides:
        apply_overrides(config, overrides, "the command line")
    validate(config)
    return config


def _choice(value: str, choices: tuple[str, ...], flag: str) -> None:
    if value not in choices:
        raise ImgclsError(f"{flag} must be one of {', '.join(choices)}, got '{value}'")


def progressive_stages(text: str | None) -> list[tuple[int, int]]:
    """--progressive "20:6,24:5" as [(20, 6), (24, 5)]: image side and number of epochs, in training order."""
    if not text:
        return []
    stages = []
    for part in str(text).split(","):
        px, sep, epochs = part.strip().partition(":")
        if not sep or not px.strip().isdigit() or not epochs.strip().isdigit() or int(epochs) < 1:
            raise ImgclsError(f"--progressive takes PX:EPOCHS stages such as 20:6,24:5 (6 epochs at 20 px, 5 at "
                              f"24 px, the rest at the full size), got '{text}'")
        stages.append((int(px), int(epochs)))
    return stages


def _validate_progressive(config: Config) -> None:
    stages = progressive_stages(config.data.progressive)
    if stages and sum(epochs for _, epochs in stages) >= config.train.epochs:
        raise ImgclsError(f"--progressive stages take {sum(epochs for _, epochs in stages)} of the "
                          f"{config.train.epochs} epochs; leave at least the last epoch at the full size")
    if stages and config.model.linear_probe:
        raise ImgclsError("--linear-probe trains on features computed once, at one size; drop --progressive")


def validate(config: Config) -> None:
    """Reject values that cannot work, naming the flag and the accepted range."""
    _validate_data(config.data)
    _validate_progressive(config)
    _validate_optim(config.optim)
    _validate_model_and_train(config)


def _validate_data(data: DataConfig) -> None:
    if not data.source:
        raise ImgclsError("no dataset given; pass a folder of images or a built-in name such as fashion-mnist")
    if not 0.0 <= data.val_split < 1.0:
        raise ImgclsError(f"--val-split must be in [0, 1), got {data.val_split}")
    if not 0.0 <= data.test_split < 1.0:
        raise ImgclsError(f"--test-split must be in [0, 1), got {data.test_split}")
    if data.val_split + data.test_split >= 0.9:
        raise ImgclsError("--val-split plus --test-split leave under 10% of the images for training; lower them")
    if data.img_size is not None and data.img_size < 8:
        raise ImgclsError(f"--img-size must be at least 8 pixels, got {data.img_size}")
    if data.channels not in (None, 1, 3):
        raise ImgclsError(f"--channels must be 1 or 3, got {data.channels}")
    if data.max_per_class is not None and data.max_per_class < 1:
        raise ImgclsError(f"--max-per-class must be at least 1, got {data.max_per_class}")
    if data.workers is not None and data.workers < 0:
        raise ImgclsError(f"--workers must be 0 or more, got {data.workers}")
    _choice(data.augment, AUGMENTS, "--augment")
    _choice(data.cache, CACHES, "--cache")
    _choice(data.sampler, SAMPLERS, "--sampler")
    if not 0.0 <= data.erase <= 1.0:
        raise ImgclsError(f"--erase is the fraction of images to erase a rectangle in: 0 to 1, got {data.erase}")
    if data.erase and data.augment != "light":
        raise ImgclsError(f"--erase belongs to --augment light ('{data.augment}' has its own); drop it or use light")
    if data.crop_padding is not None and data.crop_padding < 0:
        raise ImgclsError(f"--crop-padding must be 0 or more, got {data.crop_padding}")


def _validate_optim(optim: OptimConfig) -> None:
    _choice(optim.optimizer, OPTIMIZERS, "--optimizer")
    _choice(optim.scheduler, SCHEDULERS, "--scheduler")
    _choice(optim.class_weights, CLASS_WEIGHTS, "--class-weights")
    if optim.lr is not None and not optim.lr > 0:
        raise ImgclsError(f"--lr must be positive, got {optim.lr}")
    if optim.weight_decay is not None and optim.weight_decay < 0:
        raise ImgclsError(f"--weight-decay must be 0 or more, got {optim.weight_decay}")
    if not 0.0 <= optim.label_smoothing < 1.0:
        raise ImgclsError(f"--label-smoothing must be in [0, 1), got {optim.label_smoothing}")
    if optim.warmup_epochs < 0:
        raise ImgclsError(f"--warmup-epochs must be 0 or more, got {optim.warmup_epochs}")
    if optim.step_epochs < 1:
        raise ImgclsError(f"--step-epochs must be at least 1, got {optim.step_epochs}")


def _validate_model_and_train(config: Config) -> None:
    model, train = config.model, config.train
    _choice(train.precision, PRECISIONS, "--precision")
    _choice(train.monitor, MONITORS, "--monitor")
    _choice(train.track, TRACKS, "--track")
    if model.freeze_epochs < 0:
        raise ImgclsError(f"--freeze-epochs must be 0 or more, got {model.freeze_epochs}")
    if not model.backbone_lr_scale > 0:
        raise ImgclsError(f"--backbone-lr-scale must be positive, got {model.backbone_lr_scale}")
    if model.linear_probe and (model.freeze_backbone or model.freeze_epochs):
        raise ImgclsError("--linear-probe already keeps the backbone frozen; drop --freeze-backbone/--freeze-epochs")
    if train.epochs < 1:
        raise ImgclsError(f"--epochs must be at least 1, got {train.epochs}")
    if train.batch_size < 1:
        raise ImgclsError(f"--batch-size must be at least 1, got {train.batch_size}")
    if train.patience < 0:
        raise ImgclsError(f"--patience must be 0 (off) or more, got {train.patience}")
    if train.patience and train.monitor == "last":
        raise ImgclsError("--patience stops when a val metric stops improving; --monitor last watches none: "
                          "pick a metric with --monitor or drop --patience")
    _validate_decisions(train)
    if train.name is not None and (not train.name or "/" in train.name or train.name in (".", "..")):
        raise ImgclsError(f"--name must be a plain folder name, got '{train.name}'")


def _validate_decisions(train: TrainConfig) -> None:
    """EMA and cross-validation (the threshold's rule is checked with the data: it needs two classes)."""
    if train.ema is not None and not 0.0 < train.ema < 1.0:
        raise ImgclsError(f"--ema is the average's decay, between 0 and 1 (e.g. 0.999), got {train.ema}")
    if train.folds == 1 or train.folds < 0:
        raise ImgclsError(f"--folds must be 2 or more (0: one split), got {train.folds}")
    if train.repeats < 1 or (train.repeats > 1 and not train.folds):
        raise ImgclsError(f"--repeats must be at least 1 and needs --folds, got {train.repeats}")
    if train.final and not train.folds:
        raise ImgclsError("--final trains on all the data after cross-validation; it needs --folds K")


FLAT_ALIASES = {"model": ("model", "name"), "name": ("train", "name")}


def flat_to_sections(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Map flat keys (`epochs=3`, `model="resnet18"`, `img_size=64`) to their config sections."""
    owners: dict[str, tuple[str, str]] = {}
    defaults = Config()
    for section in dataclasses.fields(Config):
        for option in dataclasses.fields(getattr(defaults, section.name)):
            owners.setdefault(option.name, (section.name, option.name))
    owners.update(FLAT_ALIASES)
    sections: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        if key not in owners:
            raise _unknown_key(key, sorted(owners), "the arguments")
        section_name, field_name = owners[key]
        sections.setdefault(section_name, {})[field_name] = value
    return sections


def data_root_of(data: DataConfig) -> Path:
    """Where built-in datasets are looked for: --data-root, else <cache folder>/datasets."""
    return Path(data.data_root).expanduser() if data.data_root else default_data_root()


def cache_dir_of(data: DataConfig) -> Path:
    """The cache folder a data config uses: --cache-dir, else ~/.cache/imgcls."""
    return Path(data.cache_dir).expanduser() if data.cache_dir else default_cache_dir()


def config_from_dict(values: dict[str, Any], where: str) -> Config:
    """Rebuild a Config from a saved config.yaml dict."""
    config = Config()
    apply_overrides(config, values, where)
    validate(config)
    return config
