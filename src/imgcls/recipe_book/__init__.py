"""Named recipes: a shipped YAML file each (`<name>.yaml`), with every setting visible, plus a description,
the tutorial it reproduces and what it fixes there (the seed recipes), and the result it reaches.
`imgcls recipes` lists them; `--recipe NAME` starts from one."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from imgcls.config import DOC_KEYS, Recipe, load_yaml
from imgcls.errors import ImgclsError

DEFAULT_RECIPES = {"fashion-mnist": "fashion-mnist"}  # dataset -> recipe used when neither --recipe nor --config


def recipe_dir() -> Path:
    """The folder of the shipped recipes."""
    return Path(__file__).parent


def list_recipes() -> dict[str, dict[str, Any]]:
    """{name: {"file", "description", "tutorial", "fixes", "expected"}} of every shipped recipe ("" where a
    recipe does not say)."""
    found = {}
    for path in sorted(recipe_dir().glob("*.yaml")):
        values = load_yaml(path, keep_docs=True)
        found[path.stem] = {"file": str(path), **{key: str(values.get(key) or "").strip() for key in DOC_KEYS}}
    return found


def load_recipe(name: str) -> Recipe:
    """The config sections of recipe `name`, or a one-line error listing the recipes there are."""
    path = recipe_dir() / f"{name}.yaml"
    if not path.is_file():
        names = sorted(list_recipes())
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"known recipes: {', '.join(names)}"
        raise ImgclsError(f"unknown recipe '{name}'; {hint} (list them with 'imgcls recipes')")
    return Recipe(name, load_yaml(path))


def default_recipe(source: str | None) -> str | None:
    """The recipe `imgcls train DATA` uses when no --recipe or --config is given (built-ins that have one)."""
    return DEFAULT_RECIPES.get((source or "").strip().lower())
