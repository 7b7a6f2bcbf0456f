"""imgcls: from a folder of images to a trained, evaluated and deployable image classifier.

The public API is imported lazily so that `import imgcls` (and `imgcls --help`) stays fast: `imgcls.train`
imports the train workflow (and torch) when it is first used. The package's own subpackages are named apart
from the public names (`reporting`, `serving`, `recipe_book`), so importing one never hides a public function.
"""

import importlib

from imgcls.errors import ImgclsError

__version__ = "0.2.0"  # the one definition (pyproject.toml reads it)

# public name -> the module that defines it
_PUBLIC = {
    "train": "imgcls.workflows.train", "TrainOutcome": "imgcls.workflows.train",
    "evaluate": "imgcls.workflows.evaluate", "calibrate": "imgcls.workflows.calibrate",
    "predict": "imgcls.workflows.predict", "load": "imgcls.workflows.predict",
    "load_pretrained": "imgcls.workflows.predict", "LoadedModel": "imgcls.workflows.predict",
    "explain": "imgcls.workflows.explain", "export": "imgcls.workflows.export",
    "serve": "imgcls.workflows.serve", "ServeSettings": "imgcls.serving.app",
    "report": "imgcls.workflows.report", "compare": "imgcls.workflows.report",
    "list_models": "imgcls.workflows.inspect", "summary": "imgcls.workflows.inspect",
    "recipes": "imgcls.workflows.inspect", "show_data": "imgcls.workflows.inspect",
    "check_data": "imgcls.workflows.check_data",
    "create_model": "imgcls.models", "register": "imgcls.models",
    "RunFolder": "imgcls.run_files", "TrainPlan": "imgcls.plan",
}
__all__ = ["ImgclsError", *_PUBLIC]


def __getattr__(name: str) -> object:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'imgcls' has no attribute '{name}'")
    return getattr(importlib.import_module(_PUBLIC[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
