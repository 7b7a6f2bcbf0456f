"""Data: sources (folders, pre-split folders, built-ins), splitting, decoding, caching, transforms, loaders.

The names below are imported when first used (PEP 562): finding and decoding image files (`data.folders`,
`data.images`) must not import torch, which `data.build` does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imgcls.data.build import DataBundle, ImageSplit, build_dataset
    from imgcls.data.builtin import native_image_size

_PUBLIC = {"DataBundle": "imgcls.data.build", "ImageSplit": "imgcls.data.build", "build_dataset": "imgcls.data.build",
           "native_image_size": "imgcls.data.builtin"}
__all__ = ["DataBundle", "ImageSplit", "build_dataset", "native_image_size"]


def __getattr__(name: str) -> object:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'imgcls.data' has no attribute '{name}'")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
