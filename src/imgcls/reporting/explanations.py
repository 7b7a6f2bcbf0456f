"""Figures of what the model looked at: each image beside its class-activation (or rollout) map laid over it,
one PNG per image and grids of many (the report's mistakes and correct examples)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pytorch_grad_cam.utils.image import show_cam_on_image

from imgcls.reporting.plots import _pyplot, _save


@dataclass
class Explained:
    image: np.ndarray  # (C, H, W) uint8, as the model saw it
    heatmap: np.ndarray  # (H, W) float32 in [0, 1]
    title: str  # predicted and target class with probabilities, and where the image came from
    method: str = "gradcam"  # which map it is


@dataclass
class LookedAt:
    """The report's maps of one split: {correct: [Explained]}, where they come from ("gradcam at layer2 (8x8)"),
    their mean deletion/insertion score over `scored` images, and why not to trust them (None: no reason)."""
    split: str
    groups: dict[bool, list[Explained]]
    source: str
    faithfulness: float
    scored: int
    warning: str | None
    choice: dict = field(default_factory=dict)  # engine/map_choice.MapChoice.to_dict(): how the method was chosen
    chosen_because: str = ""  # the same in words

    def summary(self) -> dict:
        """What the report states about the maps (the run folder's looked_at.json)."""
        return {"split": self.split, "source": self.source, "faithfulness": round(self.faithfulness, 4),
                "scored_images": self.scored, "warning": self.warning, "choice": self.choice,
                "chosen_because": self.chosen_because}


def overlay(image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """The heat map laid over the image (grad-cam's show_cam_on_image, jet colour map), (H, W, 3) uint8."""
    rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image
    return show_cam_on_image(rgb.transpose(1, 2, 0).astype(np.float32) / 255, heatmap, use_rgb=True,
                             image_weight=0.55)


def explanation_figure(item: Explained, path: Path, method: str) -> Path:
    """One image: the input, and the map over it, titled with the predicted and target classes."""
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(8, 4.4), layout="constrained")
    gray = item.image.shape[0] == 1
    left.imshow(item.image[0] if gray else item.image.transpose(1, 2, 0), cmap="gray" if gray else None,
                vmin=0, vmax=255)
    left.set_title("input", fontsize=9)
    right.imshow(overlay(item.image, item.heatmap))
    right.set_title(f"{method}", fontsize=9)
    for axes in (left, right):
        axes.set_xticks([])
        axes.set_yticks([])
    figure.suptitle(item.title, fontsize=10)
    _save(figure, path)
    return path


def explanation_grid(items: list[Explained], path: Path, title: str, columns: int = 4) -> Path:
    """Many overlays in a grid, each with its short title."""
    plt = _pyplot()
    columns = max(1, min(columns, len(items)))
    rows = int(np.ceil(len(items) / columns))
    figure, grid = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.9 * rows + 0.4), squeeze=False,
                                layout="constrained")
    for axes in grid.flat:
        axes.set_xticks([])
        axes.set_yticks([])
        axes.axis("off")
    for axes, item in zip(grid.flat, items):
        axes.axis("on")
        axes.imshow(overlay(item.image, item.heatmap))
        axes.set_title(item.title, fontsize=7, loc="left")
    figure.suptitle(title)
    _save(figure, path)
    return path
