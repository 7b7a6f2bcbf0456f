"""Decode one image file of any common format and mode into a square uint8 array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from PIL import Image as _Image

from imgcls.errors import describe

# What PIL raises for a file that is not a readable image (a decompression bomb included).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, MemoryError, _Image.DecompressionBombError)


class ImageTooLarge(ValueError):
    """More pixels than the caller allows (a decompression bomb: a few KB that decode to gigabytes)."""
RESAMPLING = ("bilinear", "bicubic")  # how images are resized to the model's input size
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def is_image_file(path: Path) -> bool:
    """A visible file with an image extension, in any case."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def read_mode(path: Path) -> str:
    """The image's PIL mode from its header alone; raises on files that are not images."""
    with Image.open(path) as image:
        return image.mode


def _high_bit_depth_to_8bit(image):
    """16-bit, 32-bit integer and float images scaled to 0..255 (PIL's own convert clips instead)."""
    array = np.asarray(image)
    if image.mode.startswith("I;16"):
        scaled = array.astype(np.float32) / 257.0
    elif image.mode == "F" and 0.0 <= float(array.min()) and float(array.max()) <= 1.0:
        scaled = array.astype(np.float32) * 255.0
    elif image.mode == "I" and 0 <= int(array.min()) and int(array.max()) <= 255:
        scaled = array.astype(np.float32)
    else:  # arbitrary range: stretch to the full 8-bit range
        low, high = float(array.min()), float(array.max())
        scaled = (array.astype(np.float32) - low) * (255.0 / max(high - low, 1e-12))
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def _flatten_alpha(image):
    """Composite transparent images onto white, as a viewer would show them."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_channels(image, channels: int):
    """Convert a PIL image of any mode to 'L' (channels=1) or 'RGB' (channels=3)."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        image = _high_bit_depth_to_8bit(image)
    elif mode in ("RGBA", "LA", "La", "RGBa", "PA") or (mode == "P" and "transparency" in image.info):
        image = _flatten_alpha(image)
    target = "L" if channels == 1 else "RGB"
    return image if image.mode == target else image.convert(target)


def decode_image(path, size: int, channels: int, interpolation: str = "bilinear", formats: list[str] | None = None,
                 max_pixels: int | None = None) -> np.ndarray:
    """Decode, apply EXIF orientation, convert mode, resize the short side to `size` (with `interpolation`)
    and center-crop. `path` may be a file object; `formats` limits the decoders PIL may use (None: all);
    an image of more than `max_pixels` is refused before it is decoded (ImageTooLarge).

    Returns a (channels, size, size) uint8 array. Raises one of DECODE_ERRORS on broken files.
    """
    with Image.open(path, formats=formats) as opened:
        image: Image.Image = opened
        if max_pixels is not None and image.width * image.height > max_pixels:
            raise ImageTooLarge(f"{image.width}x{image.height} pixels is more than the {max_pixels:,} allowed")
        if image.format == "JPEG" and image.mode in ("RGB", "L"):
            image.draft(image.mode, (size, size))  # let libjpeg decode at a reduced scale: much faster
        image = ImageOps.exif_transpose(image)
        image = to_channels(image, channels)
        width, height = image.size
        side = min(width, height)
        box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
        # reducing_gap: shrink by an integer factor first (fast), then resample with antialiasing
        resample = Image.Resampling.BICUBIC if interpolation == "bicubic" else Image.Resampling.BILINEAR
        image = image.resize((size, size), resample, box=box, reducing_gap=3.0)
        array = np.array(image, dtype=np.uint8)  # a writable copy (torch warns on read-only arrays)
    if array.ndim == 2:
        array = array[None]
    else:
        array = array.transpose(2, 0, 1)
    return np.ascontiguousarray(array)


def decode_files(paths: list[Path], size: int, channels: int, interpolation: str = "bilinear"):
    """Decode image files for prediction: a (n, C, S, S) uint8 array of the readable ones, their positions in
    `paths`, and {position: "Type: reason"} for the others. (NumPy only: ONNX prediction imports no torch.)"""
    decoded, positions, errors = [], [], {}
    for position, path in enumerate(paths):
        try:
            decoded.append(decode_image(path, size, channels, interpolation))
            positions.append(position)
        except DECODE_ERRORS as error:
            errors[position] = describe(error)
    images = np.stack(decoded) if decoded else np.empty((0, channels, size, size), dtype=np.uint8)
    return images, positions, errors
