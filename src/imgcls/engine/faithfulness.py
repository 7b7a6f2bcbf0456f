"""How far a map can be trusted: the deletion and insertion curves of Petsiuk et al. (RISE, BMVC 2018).

Deletion greys out the image's most highlighted pixels first (the image's own mean colour) and follows the
explained class's probability down; insertion starts from the grey image and reveals the most highlighted pixels
first. A map that points at the evidence makes the first curve fall and the second rise at once. The score of an
image is the area under insertion minus the area under deletion: about 0 for a random map (the two curves are
then the same in expectation), and (p(image) - p(grey)) x (1 - the evidence's share of the pixels) at best.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from imgcls.engine.precision import uses_convolutions

STEPS = 10  # pixels are removed or revealed in tenths
UNFAITHFUL = 0.1  # a run's mean score below this: its maps explain its predictions little better than random ones


@dataclass
class Faithfulness:
    """Per image: the explained class's probability as the most highlighted pixels are removed (deletion) or
    revealed (insertion), at 0, 1/STEPS, ..., 1 of the pixels; and the areas under them."""
    deletion_curves: np.ndarray  # (N, steps + 1)
    insertion_curves: np.ndarray  # (N, steps + 1)

    @property
    def deletion(self) -> np.ndarray:
        return _area(self.deletion_curves)

    @property
    def insertion(self) -> np.ndarray:
        return _area(self.insertion_curves)

    @property
    def scores(self) -> np.ndarray:
        """(N,) insertion area - deletion area: ~0 for a random map, up to ~1 for a perfect one."""
        return self.insertion - self.deletion

    @property
    def score(self) -> float:
        return float(self.scores.mean())


def _area(curves: np.ndarray) -> np.ndarray:
    steps = curves.shape[1] - 1
    return (curves[:, 1:] + curves[:, :-1]).sum(axis=1) / (2 * steps)


def deletion_insertion(model, images: torch.Tensor, maps: np.ndarray, targets: list[int], steps: int = STEPS,
                       batch_size: int = 64, seed: int = 0, blank: torch.Tensor | None = None) -> Faithfulness:
    """The deletion and insertion curves of `maps` ((N, H, W), at the size of `images`, normalized (N, C, H, W))
    for the `targets` classes. A removed pixel takes each image's mean colour, or `blank` ((C,), normalized).
    Ties in a map (flat regions) are broken at random, not in raster order."""
    count, _, height, width = images.shape
    tie_break = np.random.default_rng(seed).random(maps.shape, dtype=np.float32) * 1e-6
    order = np.argsort(-(maps.reshape(count, -1) + tie_break.reshape(count, -1)), axis=1, kind="stable")
    ranks = torch.from_numpy(np.argsort(order, axis=1).reshape(count, 1, height, width))  # 0 = most highlighted
    shown = [round(step * height * width / steps) for step in range(steps + 1)]
    curves = []
    per_pass = max(1, batch_size // (2 * len(shown)))  # images whose curves fit one forward pass
    layout = torch.channels_last if uses_convolutions(model) else torch.contiguous_format  # as explain_images
    model.eval().to(memory_format=layout)
    try:
        for start in range(0, count, per_pass):
            image, rank = images[start:start + per_pass], ranks[start:start + per_pass]
            grey = (image.mean(dim=(2, 3), keepdim=True) if blank is None else blank.view(1, -1, 1, 1)).expand_as(image)
            variants = [torch.where(rank < n, grey, image) for n in shown] + \
                       [torch.where(rank < n, image, grey) for n in shown]
            with torch.no_grad():
                batch = torch.stack(variants, dim=1).flatten(0, 1).contiguous(memory_format=layout)
                probabilities = model(batch).float().softmax(dim=1).view(len(image), len(variants), -1)
            chosen = torch.as_tensor(targets[start:start + per_pass])
            curves.append(probabilities[torch.arange(len(image)), :, chosen])
    finally:
        model.to(memory_format=torch.contiguous_format)
    picked = torch.cat(curves).numpy()
    return Faithfulness(picked[:, :steps + 1], picked[:, steps + 1:])


def random_maps(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Maps of uniform noise: the chance level a map's score is compared against."""
    return np.random.default_rng(seed).random((count, height, width), dtype=np.float32)


def trust_warning(coarse: str | None, score: float) -> str | None:
    """One line on why a set of maps should not be read as evidence (a grid too coarse, a score too low), else
    None."""
    reasons = [coarse] if coarse else []
    if score < UNFAITHFUL:
        reasons.append(f"removing their most highlighted pixels first changes the predicted class's probability "
                       f"little more than removing random pixels (deletion/insertion score {score:.2f}; random "
                       f"maps score about 0)")
    return "; ".join(reasons) if reasons else None
