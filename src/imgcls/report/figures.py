"""Figures that need the images or the model: the sample grid per class, the most confident mistakes,
the ViT patch grid and the first convolution layer's filters and responses. Written while the decoded data
is in memory (end of training, `imgcls eval`, `imgcls data show`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imgcls.report.plots import _pyplot, _save
from imgcls.report.split_predictions import SplitPredictions


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


def sample_grid(images, labels, class_names: list[str], path: Path, title: str, per_class: int = 8,
                seed: int = 0, max_rows: int = 20) -> Path:
    """Up to `per_class` random images of each class, one row per class; past `max_rows` classes, one
    image per class in a square grid so every class stays visible."""
    plt = _pyplot()
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    num_classes = len(class_names)
    chosen = []
    for index in range(num_classes):
        members = np.flatnonzero(labels == index)
        take = per_class if num_classes <= max_rows else 1
        chosen.append(rng.choice(members, size=min(take, len(members)), replace=False) if len(members) else [])
    if num_classes <= max_rows:
        columns = max(1, max(len(picked) for picked in chosen))
        figure, grid = plt.subplots(num_classes, columns, figsize=(1.3 * columns + 1.8, 1.3 * num_classes + 0.6),
                                    squeeze=False, layout="constrained")
        for row, picked in enumerate(chosen):
            for column in range(columns):
                axes = grid[row, column]
                if column < len(picked):
                    _show(axes, images[int(picked[column])])
                else:
                    axes.axis("off")
            grid[row, 0].set_ylabel(_short(f"{class_names[row]} ({int((labels == row).sum())})", 24),
                                    rotation=0, ha="right", va="center", fontsize=9)
            if not len(picked):
                grid[row, 0].axis("on")
                grid[row, 0].set_xticks([])
                grid[row, 0].set_yticks([])
                grid[row, 0].text(0.5, 0.5, "no images", ha="center", va="center", fontsize=8)
    else:
        side = int(np.ceil(np.sqrt(num_classes)))
        figure, grid = plt.subplots(side, side, figsize=(1.5 * side, 1.6 * side), squeeze=False, layout="constrained")
        for index, axes in enumerate(grid.flat):
            if index >= num_classes or not len(chosen[index]):
                axes.axis("off")
                continue
            _show(axes, images[int(chosen[index][0])])
            axes.set_title(_short(class_names[index], 16), fontsize=7)
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
    from torch import nn

    return next((module for module in model.modules() if isinstance(module, nn.Conv2d)), None)


def conv_filters(conv, path: Path, title: str, limit: int = 64) -> Path:
    """The first `limit` filters of a convolution, each scaled to its own range; RGB filters in colour."""
    plt = _pyplot()
    weights = conv.weight.detach().float().cpu().numpy()[:limit]  # (O, I, kh, kw)
    count = weights.shape[0]
    columns = min(8, count)
    rows = int(np.ceil(count / columns))
    figure, grid = plt.subplots(rows, columns, figsize=(1.2 * columns, 1.2 * rows + 0.6), squeeze=False,
                                layout="constrained")
    for index, axes in enumerate(grid.flat):
        axes.set_xticks([])
        axes.set_yticks([])
        if index >= count:
            axes.axis("off")
            continue
        kernel = weights[index]
        kernel = (kernel - kernel.min()) / max(float(kernel.max() - kernel.min()), 1e-12)
        if kernel.shape[0] == 3:
            axes.imshow(kernel.transpose(1, 2, 0), interpolation="nearest")
        else:
            axes.imshow(kernel.mean(0), cmap="gray", interpolation="nearest")
    shape = "x".join(str(size) for size in conv.weight.shape[1:])
    figure.suptitle(f"{title}\n{count} of {conv.weight.shape[0]} filters, {shape} (in x h x w), each min-max scaled",
                    fontsize=10)
    _save(figure, path)
    return path


def conv_responses(conv, image, normalized, path: Path, title: str, limit: int = 16) -> Path:
    """The input image beside the feature maps of the first `limit` filters of `conv` on it."""
    import torch

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


def write_image_figures(out_dir: Path, images_by_split: dict, labels_by_split: dict, class_names: list[str],
                        predictions: dict[str, SplitPredictions], model=None, mean=None, std=None,
                        seed: int = 0) -> list[Path]:
    """Sample grid, mistakes galleries (held-out splits) and, given the model, its patch grid and first-layer
    filters and responses, into out_dir/plots/."""
    from imgcls.data.transforms import normalize_batch

    plots = Path(out_dir) / "plots"
    written = []
    first = next(iter(images_by_split))
    written.append(sample_grid(images_by_split[first], labels_by_split[first], class_names,
                               plots / "samples.png", f"samples per class ({first} split)", seed=seed))
    for split, split_predictions in predictions.items():
        if split != "train" and split in images_by_split:
            gallery = mistakes_gallery(images_by_split[split], split_predictions, class_names,
                                       plots / f"mistakes_{split}.png", f"most confident mistakes ({split})")
            written += [gallery] if gallery is not None else []
    if model is None:
        return written
    example_split = next((split for split in ("val", "test") if split in images_by_split), first)
    example = images_by_split[example_split][0]
    patch_size = patch_size_of(model)
    if patch_size:
        written.append(patch_grid(example, patch_size, plots / "patches.png",
                                  "what the ViT sees: one image as patches"))
    conv = first_conv(model)
    if conv is not None:
        kind = "patch-embedding (first-layer convolution)" if patch_size else "first-layer convolution"
        written.append(conv_filters(conv, plots / "filters.png", f"{kind} filters"))
        normalized = normalize_batch(example.unsqueeze(0), mean, std)[0]
        written.append(conv_responses(conv, example, normalized, plots / "filter_responses.png",
                                      "first-layer filter responses on one image"))
    return written
