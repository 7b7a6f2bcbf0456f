"""imgcls: from a folder of images to a trained, evaluated and deployable image classifier.

The public API is imported lazily so that `import imgcls` (and `imgcls --help`) stays fast.
"""

from imgcls.errors import ImgclsError

__version__ = "0.1.0"  # the one definition (pyproject.toml reads it)

_WORKFLOWS = ("train", "evaluate", "predict", "load", "load_pretrained", "explain", "export", "compare", "report",
              "show_data", "summary", "recipes", "TrainOutcome", "LoadedModel")
_MODELS = ("create_model", "register")
__all__ = ["ImgclsError", "RunFolder", "TrainPlan", "list_models", *_WORKFLOWS, *_MODELS]


def __getattr__(name: str):
    if name in _WORKFLOWS or name == "list_models":
        from imgcls import workflows

        return getattr(workflows, name)
    if name in _MODELS:
        from imgcls import models

        return getattr(models, name)
    if name == "RunFolder":
        from imgcls.run_files import RunFolder

        return RunFolder
    if name == "TrainPlan":
        from imgcls.plan import TrainPlan

        return TrainPlan
    raise AttributeError(f"module 'imgcls' has no attribute '{name}'")
