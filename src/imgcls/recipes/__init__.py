"""Named recipes: a shipped YAML file each (`<name>.yaml`), with every setting visible, plus a description
and the result it reaches. `imgcls recipes` lists them; `--recipe NAME` starts from one."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from imgcls.errors import ImgclsError

RECIPE_KEYS = ("description", "expected")  # documentation keys of a recipe file, not config sections
DEFAULT_RECIPES = {"fashion-mnist": "fashion-mnist"}  # dataset -> recipe used when neither --recipe nor --config


def recipe_dir() -> Path:
    """The folder of the shipped recipes."""
    return Path(__file__).parent


def list_recipes() -> dict[str, dict[str, Any]]:
    """{name: {"file", "description", "expected"}} of every shipped recipe."""
    from imgcls.config import load_yaml

    found = {}
    for path in sorted(recipe_dir().glob("*.yaml")):
        values = load_yaml(path, keep_docs=True)
        found[path.stem] = {"file": str(path), "description": str(values.get("description", "")).strip(),
                            "expected": str(values.get("expected", "")).strip()}
    return found


def recipe_values(name: str) -> dict[str, Any]:
    """The config sections of recipe `name`, or a one-line error listing the recipes there are."""
    from imgcls.config import load_yaml

    path = recipe_dir() / f"{name}.yaml"
    if not path.is_file():
        names = sorted(list_recipes())
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"known recipes: {', '.join(names)}"
        raise ImgclsError(f"unknown recipe '{name}'; {hint} (list them with 'imgcls recipes')")
    return load_yaml(path)


def default_recipe(source: str | None) -> str | None:
    """The recipe `imgcls train DATA` uses when no --recipe or --config is given (built-ins that have one)."""
    return DEFAULT_RECIPES.get((source or "").strip().lower())
