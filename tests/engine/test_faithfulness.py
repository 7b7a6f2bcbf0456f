"""The deletion/insertion score where the answer is known: a model that reads one fixed patch and nothing else.
Greying out the patch first (its exact mask as the map) gives the best score there is; random maps score about
0; the mask turned upside down scores as far below 0 as the mask scores above it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from imgcls.engine.faithfulness import STEPS, UNFAITHFUL, deletion_insertion, random_maps, trust_warning

SIDE = 64
PATCH = (slice(10, 24), slice(36, 50))  # 196 px: 4.8 % of the image, all gone within the first tenth


class PatchReader(nn.Module):
    """Two logits from the mean brightness inside PATCH: the class is decided there and nowhere else."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        brightness = images[:, :, PATCH[0], PATCH[1]].mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(brightness), 20 * (brightness - 0.5)], dim=1)


def _images(count: int = 16) -> torch.Tensor:
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.uniform(0.2, 0.5, size=(count, 3, SIDE, SIDE)).astype(np.float32))
    images[:, :, PATCH[0], PATCH[1]] = 0.95
    return images


def _best_possible(model, images: torch.Tensor) -> np.ndarray:
    """(1 - 1/STEPS) x (p(image) - p(grey image)): both curves jump within the first step and stay."""
    grey = images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    with torch.no_grad():
        full, blank = (model(batch).softmax(1)[:, 1].numpy() for batch in (images, grey))
    return (1 - 1 / STEPS) * (full - blank)


def _mask(count: int) -> np.ndarray:
    mask = np.zeros((count, SIDE, SIDE), dtype=np.float32)
    mask[:, PATCH[0], PATCH[1]] = 1
    return mask


def test_the_evidence_itself_as_the_map_scores_the_best_possible():
    images, model = _images(), PatchReader()
    result = deletion_insertion(model, images, _mask(len(images)), [1] * len(images))
    best = _best_possible(model, images)
    assert best.min() > 0.8  # the patch decides: ~1 with it, ~0.1 without
    np.testing.assert_allclose(result.scores, best, atol=1e-5)
    np.testing.assert_allclose(result.deletion_curves[:, 1:], result.deletion_curves[:, -1:].repeat(STEPS, 1))
    np.testing.assert_allclose(result.insertion_curves[:, 1:], result.insertion_curves[:, -1:].repeat(STEPS, 1))
    assert trust_warning(None, result.score) is None


def test_random_maps_score_about_zero_and_the_reversed_mask_scores_the_worst():
    images, model = _images(), PatchReader()
    targets = [1] * len(images)
    chance = deletion_insertion(model, images, random_maps(len(images), SIDE, SIDE, seed=3), targets)
    assert abs(chance.score) < 0.05 < UNFAITHFUL
    assert "random pixels" in trust_warning(None, chance.score)
    reversed_mask = deletion_insertion(model, images, 1 - _mask(len(images)), targets)
    np.testing.assert_allclose(reversed_mask.scores, -_best_possible(model, images), atol=1e-5)


def test_curves_are_the_explained_class_probabilities_at_each_fraction():
    """Deletion starts at the image's own probability and ends at the grey image's; insertion the other way."""
    images, model = _images(4), PatchReader()
    result = deletion_insertion(model, images, random_maps(4, SIDE, SIDE), [0, 1, 0, 1], batch_size=7)
    with torch.no_grad():
        full = model(images).softmax(1).numpy()
    np.testing.assert_allclose(result.deletion_curves[:, 0], full[np.arange(4), [0, 1, 0, 1]], rtol=1e-5)
    np.testing.assert_allclose(result.insertion_curves[:, -1], full[np.arange(4), [0, 1, 0, 1]], rtol=1e-5)
    np.testing.assert_allclose(result.deletion_curves[:, -1], result.insertion_curves[:, 0], rtol=1e-5)
    assert result.deletion_curves.shape == (4, STEPS + 1)
    black = torch.zeros(3)  # removed pixels take this colour instead of each image's mean
    darkened = deletion_insertion(model, images, random_maps(4, SIDE, SIDE), [0, 1, 0, 1], blank=black)
    with torch.no_grad():
        blank = model(torch.zeros_like(images)).softmax(1).numpy()
    np.testing.assert_allclose(darkened.deletion_curves[:, -1], blank[np.arange(4), [0, 1, 0, 1]], rtol=1e-5)
