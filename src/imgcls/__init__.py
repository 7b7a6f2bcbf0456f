"""imgcls: from a folder of images to a trained, evaluated and deployable image classifier.

The public API is imported lazily so that `import imgcls` (and `imgcls --help`) stays fast.
"""

from imgcls.errors import ImgclsError

__version__ = "0.1.0"
__all__ = ["ImgclsError", "create_model", "evaluate", "list_models", "load", "predict", "register", "train"]


def __getattr__(name: str):
    if name in ("train", "evaluate", "predict", "load"):
        from imgcls import api

        return getattr(api, name)
    if name in ("create_model", "list_models", "register"):
        from imgcls import models

        return getattr(models, name)
    raise AttributeError(f"module 'imgcls' has no attribute '{name}'")
