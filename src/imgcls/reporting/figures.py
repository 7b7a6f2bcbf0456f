"""Figures that need the images or the model: the sample grid per class, the most confident mistakes,
the ViT patch grid and the first convolution layer's filters and responses. Written while the decoded data
is in memory (end of training, `imgcls eval`, `imgcls data show`)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from imgcls.data import ImageSplit
from imgcls.data.transforms import normalize_batch
from imgcls.reporting import catalog
from imgcls.reporting.plots import _pyplot, _save
from imgcls.run_files import RunFolder, SplitPredictions


def _as_display(image) -> tuple[np.ndarray, str | None]:
    """A (C, H, W) uint8 image as something imshow draws, and the colormap it needs."""
    array = np.asarray(image)
    if array.shape[0] == 1:
        return array[0], "gray"
    return array.transpose(1, 2, 0), None


def _show(axes, image) -> None:
    array, cmap = _as_display(image)
    axes.imshow(array, cmap=cmap, vmin=0, vmax=255, interpolation="nearest" if array.shape[0] <= 64 else "antialiased")
    axes.set_xticks([])
    axes.set_yticks([])


def _short(text: str, width: int) -> str:
    """`text` cut to `width` characters, an ellipsis marking the cut."""
    return text if len(text) <= width else text[:width - 1] + "…"


def mosaic(tiles: list, rows: int, columns: int, gap: int = 2, fill: float = 255) -> np.ndarray:
    """(C, H, W) tiles of one size laid out row by row, `gap` pixels apart, as one (H', W'[, 3]) image that
    matplotlib draws in a single imshow (one axes instead of one per tile: ten times faster to render).
    None tiles stay blank."""
    sample = next(np.asarray(tile) for tile in tiles if tile is not None)
    channels, height, width = sample.shape
    canvas = np.full((channels, rows * (height + gap) - gap, columns * (width + gap) - gap), fill,
                     dtype=sample.dtype)
    for index, tile in enumerate(tiles):
        if tile is None:
            continue
        top, left = (index // columns) * (height + gap), (index % columns) * (width + gap)
        canvas[:, top:top + height, left:left + width] = np.asarray(tile)
    return canvas[0] if channels == 1 else canvas.transpose(1, 2, 0)


def _draw_mosaic(axes, canvas: np.ndarray) -> None:
    gray = canvas.ndim == 2
    axes.imshow(canvas, cmap="gray" if gray else None, vmin=0, vmax=255, interpolation="antialiased")
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_visible(False)


def sample_grid(images, labels, class_names: list[str], path: Path, title: str, per_class: int = 8,
                seed: int = 0, max_rows: int = 20) -> Path:
    """Up to `per_class` random images of each class, one row per class; past `max_rows` classes, one
    image per class in a square grid so every class stays visible."""
    plt = _pyplot()
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    num_classes = len(class_names)
    take = per_class if num_classes <= max_rows else 1
    chosen = []
    for index in range(num_classes):
        members = np.flatnonzero(labels == index)
        chosen.append(np.sort(rng.choice(members, size=min(take, len(members)), replace=False)) if len(members)
                      else np.zeros(0, dtype=np.int64))
    picked = np.concatenate(chosen).astype(np.int64)
    fetched = iter(np.asarray(images[picked]) if len(picked) else [])
    side = images.shape[-1]
    gap = max(2, side // 14)
    if num_classes <= max_rows:
        columns = max(1, max(len(rows) for rows in chosen))
        tiles = []
        for rows in chosen:
            tiles += [next(fetched) for _ in rows] + [None] * (columns - len(rows))
        canvas = mosaic(tiles, num_classes, columns, gap)
        figure, axes = plt.subplots(figsize=(1.3 * columns + 1.8, 1.3 * num_classes + 0.6), layout="constrained")
        _draw_mosaic(axes, canvas)
        centers = [row * (side + gap) + side / 2 for row in range(num_classes)]
        labels_text = [_short(f"{name} ({int((labels == row).sum())})", 24) + ("" if len(chosen[row]) else
                       " — no images") for row, name in enumerate(class_names)]
        axes.set_yticks(centers, labels=labels_text, fontsize=9)
        axes.tick_params(axis="y", length=0)
    else:
        grid_side = int(np.ceil(np.sqrt(num_classes)))
        tiles = [next(fetched) if len(rows) else None for rows in chosen]
        canvas = mosaic(tiles, grid_side, grid_side, gap=max(gap, side // 3))
        figure, axes = plt.subplots(figsize=(1.5 * grid_side, 1.6 * grid_side), layout="constrained")
        _draw_mosaic(axes, canvas)
        step = side + max(gap, side // 3)
        for index, name in enumerate(class_names):
            axes.text((index % grid_side) * step + side / 2, (index // grid_side) * step + side + 1,
                      _short(name, 16), ha="center", va="top", fontsize=7)
    figure.suptitle(title)
    _save(figure, path)
    return path


def mistakes_gallery(images, predictions: SplitPredictions, class_names: list[str], path: Path, title: str,
                     count: int = 16) -> Path | None:
    """The most confident mistakes: each image with its true class, predicted class and probability.
    None when there are no mistakes."""
    order = predictions.mistakes()[:count]
    if not len(order):
        return None
    plt = _pyplot()
    columns = min(4, len(order))
    rows = int(np.ceil(len(order) / columns))
    figure, grid = plt.subplots(rows, columns, figsize=(2.3 * columns, 3.0 * rows), squeeze=False,
                                layout="constrained")
    for axes, index in zip(grid.flat, order):
        _show(axes, images[int(index)])
        true_name = _short(class_names[predictions.labels[index]], 22)
        predicted = int(predictions.predicted[index])
        lines = [f"true: {true_name}",
                 f"pred: {_short(class_names[predicted], 22)} ({predictions.probs[index, predicted]:.2f})"]
        if predictions.paths is not None:
            lines.append(_short(Path(predictions.paths[index]).name, 26))
        else:
            lines.append(f"#{int(index)}")
        axes.set_title("\n".join(lines), fontsize=8, loc="left")
    for axes in list(grid.flat)[len(order):]:
        axes.axis("off")
    figure.suptitle(title)
    _save(figure, path)
    return path


def patch_size_of(model) -> int | None:
    """The patch size of a ViT-like model (built-in vit or a timm model with a patch embedding)."""
    embed = getattr(model, "patch_embed", None)
    size = getattr(model, "patch_size", None) or getattr(embed, "patch_size", None)
    if size is None:
        return None
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def patch_grid(image, patch_size: int, path: Path, title: str) -> Path:
    """The image as the model sees it, cut into patch_size x patch_size patches: the image with the grid
    drawn on it, and the patches pulled apart in reading order (the token sequence)."""
    plt = _pyplot()
    array = np.asarray(image)
    grid_size = array.shape[-1] // patch_size
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 5.4), layout="constrained")
    _show(left, array)
    for line in range(grid_size + 1):
        left.axhline(line * patch_size - 0.5, color="yellow", lw=0.8)
        left.axvline(line * patch_size - 0.5, color="yellow", lw=0.8)
    left.set_title(f"input {array.shape[-1]}x{array.shape[-2]} px, {patch_size}px patches")
    gap = max(1, patch_size // 6)
    step = patch_size + gap
    canvas = np.full((array.shape[0], grid_size * step - gap, grid_size * step - gap), 255, dtype=np.uint8)
    for row in range(grid_size):
        for column in range(grid_size):
            canvas[:, row * step:row * step + patch_size, column * step:column * step + patch_size] = \
                array[:, row * patch_size:(row + 1) * patch_size, column * patch_size:(column + 1) * patch_size]
    _show(right, canvas)
    if grid_size <= 14:  # token numbers stay legible up to 196 patches
        for row in range(grid_size):
            for column in range(grid_size):
                right.text(column * step + 1, row * step + 1, str(row * grid_size + column + 1), color="yellow",
                           fontsize=max(5, 11 - grid_size // 2), va="top", ha="left",
                           bbox={"facecolor": "black", "alpha": 0.5, "pad": 0.5, "lw": 0})
    right.set_title(f"{grid_size * grid_size} patches = tokens, in sequence order")
    figure.suptitle(title)
    _save(figure, path)
    return path


def first_conv(model):
    """The first 2-d convolution the model applies (its stem, or a ViT's patch embedding)."""
    return next((module for module in model.modules() if isinstance(module, nn.Conv2d)), None)


def conv_filters(conv, path: Path, title: str, limit: int = 64) -> Path:
    """The first `limit` filters of a convolution, each scaled to its own range; RGB filters in colour."""
    plt = _pyplot()
    weights = conv.weight.detach().float().cpu().numpy()[:limit]  # (O, I, kh, kw)
    count = weights.shape[0]
    columns = min(8, count)
    rows = int(np.ceil(count / columns))
    low = weights.min(axis=(1, 2, 3), keepdims=True)
    scaled = (weights - low) / np.maximum(weights.max(axis=(1, 2, 3), keepdims=True) - low, 1e-12)
    if weights.shape[1] != 3:
        scaled = scaled.mean(1, keepdims=True)
    tiles = list(np.round(scaled * 255).astype(np.uint8))
    # each filter is a few pixels: repeat them so the nearest-neighbour blocks stay crisp at any size
    zoom = max(1, 24 // max(weights.shape[-2:]))
    tiles = [tile.repeat(zoom, 1).repeat(zoom, 2) for tile in tiles]
    canvas = mosaic(tiles, rows, columns, gap=max(2, zoom))
    figure, axes = plt.subplots(figsize=(1.2 * columns, 1.2 * rows + 0.6), layout="constrained")
    _draw_mosaic(axes, canvas)
    shape = "x".join(str(size) for size in conv.weight.shape[1:])
    figure.suptitle(f"{title}\n{count} of {conv.weight.shape[0]} filters, {shape} (in x h x w), each min-max scaled",
                    fontsize=10)
    _save(figure, path)
    return path


def conv_responses(conv, image, normalized, path: Path, title: str, limit: int = 16) -> Path:
    """The input image beside the feature maps of the first `limit` filters of `conv` on it."""
    plt = _pyplot()
    with torch.no_grad():
        maps = conv(normalized.unsqueeze(0).to(conv.weight.dtype))[0, :limit].float().cpu().numpy()
    rows = int(np.ceil((len(maps) + 1) / 6))
    columns = int(np.ceil((len(maps) + 1) / rows))
    figure, grid = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.0 * rows + 0.4), squeeze=False,
                                layout="constrained")
    _show(grid[0, 0], image)
    grid[0, 0].set_title("input", fontsize=8)
    for index, axes in enumerate(list(grid.flat)[1:]):
        axes.set_xticks([])
        axes.set_yticks([])
        if index >= len(maps):
            axes.axis("off")
            continue
        axes.imshow(maps[index], cmap="viridis")
        axes.set_title(f"filter {index + 1}", fontsize=8)
    figure.suptitle(f"{title} (output {maps.shape[-2]}x{maps.shape[-1]})", fontsize=10)
    _save(figure, path)
    return path


class DrawnModel(Protocol):
    """The trained model whose filters are drawn, with its normalisation (a workflow's LoadedModel)."""

    @property
    def model(self) -> nn.Module: ...

    @property
    def mean(self) -> tuple[float, ...]: ...

    @property
    def std(self) -> tuple[float, ...]: ...


def write_image_figures(folder: RunFolder, splits: dict[str, ImageSplit], class_names: list[str],
                        predictions: dict[str, SplitPredictions], drawn: DrawnModel | None = None,
                        seed: int = 0) -> list[Path]:
    """Sample grid, mistakes galleries (held-out splits) and, given the model, its patch grid and first-layer
    filters and responses."""
    images_by_split = {split: images.images for split, images in splits.items()}
    labels_by_split = {split: images.labels.numpy() for split, images in splits.items()}
    written = []
    first = next(iter(images_by_split))
    written.append(sample_grid(images_by_split[first], labels_by_split[first], class_names,
                               folder.plot(catalog.SAMPLES), f"samples per class ({first} split)", seed=seed))
    for split, split_predictions in predictions.items():
        if split != "train" and split in images_by_split:
            gallery = mistakes_gallery(images_by_split[split], split_predictions, class_names,
                                       folder.plot(catalog.mistakes(split)), f"most confident mistakes ({split})")
            written += [gallery] if gallery is not None else []
    if drawn is not None:
        example_split = next((split for split in ("val", "test") if split in images_by_split), first)
        written += _model_figures(folder, drawn.model, images_by_split[example_split][0], drawn.mean, drawn.std)
    return written


def _model_figures(folder: RunFolder, model, example, mean, std) -> list[Path]:
    """The ViT patch grid, and the first convolution's filters and their responses to `example`."""
    written = []
    patch_size = patch_size_of(model)
    if patch_size:
        written.append(patch_grid(example, patch_size, folder.plot(catalog.PATCHES),
                                  "what the ViT sees: one image as patches"))
    conv = first_conv(model)
    if conv is not None:
        kind = "patch-embedding (first-layer convolution)" if patch_size else "first-layer convolution"
        written.append(conv_filters(conv, folder.plot(catalog.FILTERS), f"{kind} filters"))
        normalized = normalize_batch(example.unsqueeze(0), mean, std)[0]
        written.append(conv_responses(conv, example, normalized, folder.plot(catalog.FILTER_RESPONSES),
                                      "first-layer filter responses on one image"))
    return written
