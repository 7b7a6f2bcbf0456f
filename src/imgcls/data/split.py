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


def grouped_stratified_split(labels: np.ndarray, groups: np.ndarray, fractions: list[float], seed: int
                             ) -> list[np.ndarray]:
    """As `stratified_split`, but every group (same id in `groups`) lands whole in one part.

    Greedy, largest groups first (ties in seeded random order): each group goes to the part whose per-class
    counts it brings closest to that part's share. A class missing from the first part afterwards gets its
    smallest group moved there. When every group is a single sample this is `stratified_split` itself.
    """
    if len(np.unique(groups)) == len(groups):
        return stratified_split(labels, fractions, seed)
    classes = np.unique(labels)
    class_index = np.searchsorted(classes, labels)
    shares = np.asarray([1.0 - sum(fractions), *fractions])
    targets = shares[:, None] * np.bincount(class_index, minlength=len(classes))[None, :]
    members = [np.flatnonzero(groups == group) for group in np.unique(groups)]
    histograms = [np.bincount(class_index[rows], minlength=len(classes)) for rows in members]
    order = np.random.default_rng(seed).permutation(len(members))
    order = order[np.argsort([-len(members[g]) for g in order], kind="stable")]
    current = np.zeros_like(targets)
    part_of = np.zeros(len(members), dtype=np.int64)
    for group in order:
        added = histograms[group][None, :]
        cost = ((current + added - targets) ** 2 - (current - targets) ** 2).sum(axis=1)
        cost[shares <= 0] = np.inf
        part_of[group] = int(np.argmin(cost))
        current[part_of[group]] += histograms[group]
    for c in np.flatnonzero(current[0] == 0):  # every class keeps a training sample
        holders = [g for g in range(len(members)) if histograms[g][c] and part_of[g] != 0]
        smallest = min(holders, key=lambda g: len(members[g]))
        current[part_of[smallest]] -= histograms[smallest]
        current[0] += histograms[smallest]
        part_of[smallest] = 0
    return [np.sort(np.concatenate([members[g] for g in np.flatnonzero(part_of == part)] or [np.array([], int)]))
            .astype(np.int64) for part in range(len(shares))]
