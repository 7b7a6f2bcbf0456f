"""The data check: what is wrong with a dataset before it is trained on. Counts and imbalance, images that are
unreadable, tiny, oddly shaped, rotated by EXIF or flat, exact and near duplicates — within a split, across
splits (leakage) and with different labels (conflicts). Nothing here touches the files; the workflow writes
the findings (`workflows/check_data.py`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from imgcls.data.fingerprints import Fingerprints
from imgcls.data.images import GRAYSCALE_MODES
from imgcls.data.near_duplicates import DEFAULT_THRESHOLD, near_duplicate_pairs

IMBALANCED = 3.0  # largest class / smallest class from which the data is called imbalanced
TINY_FRACTION = 0.25  # an image whose short side is under this share of the median short side is tiny
TINY_PIXELS = 8  # ... or under this many pixels
EXTREME_ASPECT = 4.0  # long side / short side


@dataclass(frozen=True)
class Images:
    """The images checked: one entry per image, readable or not."""

    names: list[str]  # file paths, or "train[123]" for a built-in dataset's arrays
    splits: list[str]  # "train", "val", "test" or "all"
    labels: np.ndarray  # (N,) int
    class_names: list[str]


@dataclass(frozen=True)
class Pair:
    first: int  # indices into Images
    second: int
    similarity: float  # 1.0 for the same decoded pixels
    kind: str  # "exact" or "near"
    mirrored: bool = False

    def crosses(self, images: Images) -> bool:
        return images.splits[self.first] != images.splits[self.second]

    def conflicts(self, images: Images) -> bool:
        return int(images.labels[self.first]) != int(images.labels[self.second])


@dataclass(frozen=True)
class LabelIssue:
    index: int  # into Images
    suggested: int  # the class the model is confident it is
    self_confidence: float  # the model's probability of the given label (out of sample)
    run: str  # the run whose held-out predictions flagged it


@dataclass
class DataHealth:
    images: Images
    counts: dict[str, list[int]]  # split -> images per class
    imbalance_ratio: float  # largest / smallest class of the training data (inf: a class has none)
    missing: dict[str, list[str]]  # split -> classes without an image there
    unreadable: dict[int, str]  # index -> reason
    tiny: list[int]
    extreme_aspect: list[int]
    exif_rotated: list[int]
    flat: list[int]
    modes: dict[str, int]  # PIL mode -> images
    exact_groups: list[list[int]]  # sets of images with the same decoded pixels
    pairs: list[Pair]  # exact pairs, then near pairs, each with its own similarity
    threshold: float
    search: str  # how near-duplicate candidates were found: hash or neighbours
    notes: list[str] = field(default_factory=list)
    label_issues: list[LabelIssue] = field(default_factory=list)  # with --run, least confident first
    label_checked: int = 0  # images with out-of-sample probabilities (0: no --run)
    groups_across: list[str] = field(default_factory=list)  # warnings: --group-by groups in several splits

    @property
    def imbalanced(self) -> bool:
        return self.imbalance_ratio >= IMBALANCED

    def leaks(self) -> list[Pair]:
        return [pair for pair in self.pairs if pair.crosses(self.images)]

    def conflicts(self) -> list[Pair]:
        return [pair for pair in self.pairs if pair.conflicts(self.images)]


def _counts(images: Images) -> dict[str, list[int]]:
    splits = list(dict.fromkeys(images.splits))
    split_of = np.asarray(images.splits)
    return {split: np.bincount(images.labels[split_of == split], minlength=len(images.class_names)).tolist()
            for split in splits}


def _imbalance(counts: dict[str, list[int]]) -> float:
    reference = counts.get("train") or counts.get("all") or next(iter(counts.values()))
    smallest, largest = min(reference), max(reference)
    return float("inf") if smallest == 0 else largest / smallest


def _exact_groups(prints: Fingerprints, rows: np.ndarray, flat: np.ndarray) -> list[list[int]]:
    by_digest: dict[str, list[int]] = {}
    for row, digest in enumerate(prints.pixel_digest):
        if not flat[row]:
            by_digest.setdefault(digest, []).append(int(rows[row]))
    return [members for members in by_digest.values() if len(members) > 1]


def _odd_shapes(prints: Fingerprints, rows: np.ndarray) -> tuple[list[int], list[int]]:
    short = np.minimum(prints.width, prints.height)
    long = np.maximum(prints.width, prints.height)
    tiny_side = max(TINY_PIXELS, TINY_FRACTION * float(np.median(short))) if len(short) else 0
    tiny = rows[short < tiny_side].tolist()
    extreme = rows[long >= EXTREME_ASPECT * np.maximum(short, 1)].tolist()
    return tiny, extreme


def check_images(images: Images, prints: Fingerprints, readable: list[int], unreadable: dict[int, str],
                 threshold: float = DEFAULT_THRESHOLD, search: str = "auto") -> DataHealth:
    """Every finding about `images`, whose readable ones (positions `readable`) have fingerprints `prints`."""
    rows = np.asarray(readable, dtype=np.int64)
    counts = _counts(images)
    tiny, extreme = _odd_shapes(prints, rows)
    groups = _exact_groups(prints, rows, prints.flat)
    pairs = [Pair(first, second, 1.0, "exact") for members in groups
             for n, first in enumerate(members) for second in members[n + 1:]]
    in_group = {member for members in groups for member in members[1:]}  # one of each exact set is compared
    eligible = ~prints.flat & np.asarray([int(row) not in in_group for row in rows], dtype=bool)
    sides = np.minimum(prints.width, prints.height)
    near, search = near_duplicate_pairs(prints.thumbs, eligible, sides, threshold, search)
    pairs += [Pair(int(rows[p.first]), int(rows[p.second]), p.similarity, "near", p.mirrored) for p in near]
    return DataHealth(
        images=images, counts=counts, imbalance_ratio=_imbalance(counts),
        missing={split: [images.class_names[c] for c, n in enumerate(per_class) if n == 0]
                 for split, per_class in counts.items() if 0 in per_class},
        unreadable=unreadable, tiny=tiny, extreme_aspect=extreme,
        exif_rotated=rows[prints.exif_rotated].tolist(), flat=rows[prints.flat].tolist(),
        modes=dict(Counter(prints.mode)), exact_groups=groups, pairs=pairs, threshold=threshold, search=search,
        notes=_mode_notes(Counter(prints.mode)),
    )


def _mode_notes(modes: Counter) -> list[str]:
    gray = sum(count for mode, count in modes.items() if mode in GRAYSCALE_MODES)
    if 0 < gray < sum(modes.values()):
        return [f"mixed modes: {gray} grayscale and {sum(modes.values()) - gray} colour images "
                f"({', '.join(f'{mode} {count}' for mode, count in modes.most_common())}); all are read as "
                f"colour unless every image is grayscale"]
    return []
