"""Looking before training: model names, a model's layers, recipes, and a dataset's images."""

from __future__ import annotations

from pathlib import Path

import timm

from imgcls.atomic import check_replaceable
from imgcls.config import DataConfig
from imgcls.data import build_dataset, native_image_size
from imgcls.data.problems import warn_about_data
from imgcls.errors import ImgclsError
from imgcls.models import builtin_names
from imgcls.models import list_models as model_names
from imgcls.models.defaults import DEFAULT_INPUT_SIZE
from imgcls.models.registry import name_pattern
from imgcls.models.summary import summarize
from imgcls.recipe_book import list_recipes
from imgcls.reporting.figures import sample_grid
from imgcls.run_files import default_run_name


def list_models(pattern: str | None = None, pretrained: bool = False) -> list[tuple[str, str]]:
    """(name, "built-in" | "pretrained" | "") for every model matching `pattern` (shell-style, or a word
    found anywhere in the name); "pretrained" marks timm models with hub weights."""
    names = model_names(pattern, pretrained=pretrained)
    if not names:
        raise ImgclsError(f"no model matches '{pattern}'; try a shorter word or a wider pattern "
                          f"('imgcls models' lists them all)")
    builtins = set(builtin_names())
    with_weights = {tagged.split(".")[0] for tagged in timm.list_models(name_pattern(pattern), pretrained=True)}
    return [(name, "built-in" if name in builtins else "pretrained" if name.split(".")[0] in with_weights else "")
            for name in names]


def summary(model: str, num_classes: int = 1000, in_chans: int = 3, img_size: int | None = None,
            depth: int = 3) -> str:
    """torchinfo's layer table, parameters and multiply-adds of `model` (at its own input size by default)."""
    return summarize(model, num_classes, in_chans, img_size, depth)


def recipes() -> dict[str, dict]:
    """The shipped recipes: {name: {"file", "description", "tutorial", "fixes", "expected"}}."""
    return list_recipes()


def show_data(source: str, out: str | Path | None = None, split: str = "train", per_class: int = 8,
              img_size: int | None = None, data_root: str | None = None, seed: int = 0) -> Path:
    """Write a PNG grid of `per_class` random images of every class of `split` (imgcls data show)."""
    path = Path(out).expanduser() if out else Path(f"{default_run_name(source, 'samples')}.png")
    check_replaceable(path, "--out")
    data_cfg = DataConfig(source=source, data_root=data_root, max_per_class=per_class)
    size = img_size or native_image_size(source) or DEFAULT_INPUT_SIZE
    bundle = build_dataset(data_cfg, seed, size)
    warn_about_data(bundle)
    if split not in bundle.splits:
        raise ImgclsError(f"{source} has no '{split}' split; choose one of {', '.join(bundle.splits)}")
    chosen = bundle.splits[split]
    return sample_grid(chosen.images, chosen.labels.numpy(), bundle.class_names, path,
                       f"{Path(source).name or source}: {split} split, {len(bundle.class_names)} classes",
                       per_class=per_class, seed=seed)
