"""Seeded, stratified splitting of labelled samples."""

from __future__ import annotations

import numpy as np


def stratified_split(labels: np.ndarray, fractions: list[float], seed: int) -> list[np.ndarray]:
    """Split sample indices into len(fractions)+1 parts with every class in the same proportions.

    `fractions` are the sizes of the held-out parts (e.g. [val, test]); the first returned part is the rest.
    Each class keeps at least one sample in the first part; a held-out part of a class gets at least one
    sample when its fraction is positive and the class has enough samples to spare.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for label in np.unique(labels):
        indices = np.flatnonzero(labels == label)
        indices = indices[rng.permutation(len(indices))]
        start = 0
        held_out = []
        for fraction in fractions:
            count = int(round(fraction * len(indices)))
            if fraction > 0 and count == 0:
                count = 1
            count = min(count, len(indices) - 1 - start)  # always leave one for training
            count = max(count, 0)
            held_out.append(indices[start : start + count])
            start += count
        parts[0].append(indices[start:])
        for part, chosen in zip(parts[1:], held_out):
            part.append(chosen)
    return [np.sort(np.concatenate(part)) if part else np.array([], dtype=np.int64) for part in parts]


def cap_per_class(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Indices of at most `limit` samples per class, chosen at random with `seed`, in original order."""
    rng = np.random.default_rng(seed)
    kept = []
    for label in np.unique(labels):
        indices = np.flatnonzero(labels == label)
        if len(indices) > limit:
            indices = rng.choice(indices, size=limit, replace=False)
        kept.append(indices)
    return np.sort(np.concatenate(kept)) if kept else np.array([], dtype=np.int64)
