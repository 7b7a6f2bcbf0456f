"""The shape of the code (docs/architecture.md): module and function sizes, one owner per run-file name and
per version string, layers that import only downward, no import cycle between any two modules, short
parameter lists, and a public API whose every name stays callable."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import imgcls

PACKAGE = Path(imgcls.__file__).parent
SOURCES = sorted(PACKAGE.rglob("*.py"))
ARCHITECTURE = Path(__file__).parents[1] / "docs" / "architecture.md"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _documented_exceptions() -> set[str]:
    """`module:function` names listed in docs/architecture.md's table of allowed long functions."""
    return set(re.findall(r"`(imgcls[\w.]*:\w+)`", ARCHITECTURE.read_text()))


def test_no_module_over_400_lines():
    long = {_module_name(path): n for path in SOURCES if (n := len(path.read_text().splitlines())) > 400}
    assert not long


def test_no_function_over_60_lines_unless_documented():
    allowed = _documented_exceptions()
    long = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                name = f"{_module_name(path)}:{node.name}"
                if length > 60 and name not in allowed:
                    long.append((name, length))
    assert not long


RUN_FILE_NAMES = ("config.yaml", "plan.json", "classes.json", "history.csv", "metrics.json", "best.safetensors",
                  "head.safetensors", "run.json", "report.html", "skipped.txt", "trainer_state.json")


def test_every_run_file_name_is_spelled_in_one_module():
    owners = {}
    for path in SOURCES:
        text = path.read_text()
        for name in RUN_FILE_NAMES:
            if f'"{name}"' in text or f"'{name}'" in text:
                owners.setdefault(name, set()).add(_module_name(path))
    assert set(owners) == set(RUN_FILE_NAMES)
    assert all(modules == {"imgcls.run_files.layout"} for modules in owners.values()), owners


FIGURE_NAME = re.compile(r"[\"'](?:loss|accuracy|samples|patches|filters|filter_responses)\.png[\"']"
                         r"|[\"'](?:confusion|roc|pr|reliability|mistakes)_\{")


def test_every_figure_name_is_spelled_in_the_catalog_only():
    spelled = {_module_name(path) for path in SOURCES if FIGURE_NAME.search(path.read_text())}
    assert spelled == {"imgcls.reporting.catalog"}


def test_the_version_is_defined_once():
    definitions = [path for path in SOURCES if re.search(r"^__version__\s*=", path.read_text(), re.M)]
    assert [_module_name(path) for path in definitions] == ["imgcls"]
    pyproject = (PACKAGE.parents[1] / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and "version = {attr" in pyproject


# who may import whom (docs/architecture.md); a layer not listed imports only the shared leaves
SHARED = {"imgcls", "imgcls.errors", "imgcls.console", "imgcls.atomic", "imgcls.environment"}
MAY_IMPORT = {
    "config": set(),
    "recipe_book": {"config"},
    "data": {"config"},
    "models": set(),
    "metrics": set(),
    "run_files": {"config", "plan"},
    "plan": {"config", "metrics"},
    "engine": {"config", "plan", "metrics", "run_files", "data", "models"},
    "reporting": {"metrics", "run_files", "data"},
    "serving": {"data", "engine"},
    "workflows": {"config", "plan", "data", "models", "engine", "metrics", "run_files", "reporting", "recipe_book",
                  "serving"},
    "cli": {"workflows", "reporting", "config", "recipe_book", "serving", "run_files"},
}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("imgcls") and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("imgcls"))
    return found


def test_layers_import_only_what_the_architecture_allows():
    wrong = []
    for path in SOURCES:
        module = _module_name(path)
        layer = _layer(module)
        if layer not in MAY_IMPORT:
            continue
        for imported in _imports(path):
            target = _layer(imported)
            if imported in SHARED or target == layer or target in MAY_IMPORT[layer]:
                continue
            wrong.append(f"{module} imports {imported}")
    assert not wrong


def _imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The imgcls modules `path` imports, anywhere in it: `from package import name` is the module
    package.name when there is one, else the package (whose __init__ runs)."""
    def known(name: str) -> str:
        while name not in modules and "." in name:
            name = name.rpartition(".")[0]
        return name

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("imgcls") and node.level == 0:
            found.update(known(f"{node.module}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(known(alias.name) for alias in node.names if alias.name.startswith("imgcls"))
    return found - {"imgcls"}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_any_two_modules():
    modules = {_module_name(path) for path in SOURCES}
    graph = {_module_name(path): _imported_modules(path, modules) - {_module_name(path)} for path in SOURCES}
    assert _cycles(graph) == []
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the check itself


MAX_PARAMETERS = 8
FLAT_APIS = {"imgcls.workflows.train:train"}  # train(config, resume, recipe, **overrides): every config key a flag


def test_no_public_function_takes_more_than_eight_parameters():
    long = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                arguments = node.args
                named = [a for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs
                         if a.arg not in ("self", "cls")]
                name = f"{_module_name(path)}:{node.name}"
                if len(named) > MAX_PARAMETERS and name not in FLAT_APIS:
                    long.append((name, len(named)))
    assert not long
