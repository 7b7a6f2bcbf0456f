"""Data: sources (folders, pre-split folders, built-ins), splitting, decoding, caching, transforms, loaders."""

from imgcls.data.build import DataBundle, ImageSplit, build_dataset
from imgcls.data.builtin import native_image_size

__all__ = ["DataBundle", "ImageSplit", "build_dataset", "native_image_size"]
