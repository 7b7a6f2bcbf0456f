"""Data: sources (folders, pre-split folders, built-ins), splitting, decoding, transforms, loaders."""

from imgcls.data.build import DataBundle, ImageSplit, build_dataset

__all__ = ["DataBundle", "ImageSplit", "build_dataset"]
