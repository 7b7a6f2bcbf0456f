"""Perceptual hashes of whole batches of thumbnails, and the pairs within a few bits of each other.

The hash is imagehash's `phash` (hash_size 8): the 2-D DCT-II of the 32x32 grayscale image, its 8x8
lowest frequencies, each bit "above their median". imagehash computes it one PIL image at a time (about
0.4 ms here, 55 s for Fashion-MNIST's 70,000 images and their mirror images); the same arithmetic on a
batch is a matrix product. tests/data/test_duplicates.py checks the bits equal imagehash's on the same
thumbnails. The mirror image's hash comes from the same coefficients: mirroring flips the sign of the odd
horizontal frequencies.

Pairs within `radius` bits are found by multi-index hashing (Norouzi et al. 2012): split the 64 bits into
radius + 1 chunks; two hashes that differ in at most `radius` bits agree exactly on at least one chunk, so
only images sharing a chunk value are ever compared.
"""

from __future__ import annotations

import numpy as np

SIDE, LOW = 32, 8
BLOCK = 256  # rows of a bucket compared at once


def _dct_matrix(size: int) -> np.ndarray:
    """DCT-II (scipy's unnormalised type 2, up to a factor of 2, which the median comparison ignores)."""
    k = np.arange(size)[:, None]
    n = np.arange(size)[None, :]
    return np.cos(np.pi * k * (2 * n + 1) / (2 * size))


def _pack(bits: np.ndarray) -> np.ndarray:
    """(N, 64) bool -> (N,) uint64, first bit most significant (imagehash's hex order)."""
    return np.packbits(bits, axis=1).view(">u8").astype(np.uint64).ravel()


def phash(thumbs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """64-bit perceptual hashes of (N, 32, 32) uint8 thumbnails and of their mirror images, as uint64."""
    if thumbs.shape[1:] != (SIDE, SIDE):
        raise ValueError(f"phash needs {SIDE}x{SIDE} thumbnails, got {thumbs.shape[1:]}")
    basis = _dct_matrix(SIDE)[:LOW]
    low = np.einsum("ky,nyx,lx->nkl", basis, thumbs.astype(np.float64), basis)  # (N, 8, 8) lowest frequencies
    mirrored = low * np.where(np.arange(LOW) % 2 == 1, -1.0, 1.0)[None, None, :]
    hashes = []
    for coefficients in (low, mirrored):
        flat = coefficients.reshape(len(thumbs), -1)
        hashes.append(_pack(flat > np.median(flat, axis=1, keepdims=True)))
    return hashes[0], hashes[1]


def _chunks(radius: int) -> list[tuple[int, int]]:
    """(shift, width) of radius + 1 chunks covering 64 bits."""
    widths = [64 // (radius + 1) + (1 if i < 64 % (radius + 1) else 0) for i in range(radius + 1)]
    shifts = np.cumsum([0] + widths[:-1]).tolist()
    return list(zip(shifts, widths))


def close_pairs(hashes: np.ndarray, mirrored: np.ndarray, radius: int, eligible: np.ndarray
                ) -> dict[tuple[int, int], bool]:
    """{(i, j), i < j: mirrored} for eligible images whose hashes differ in at most `radius` bits, as they are
    or with one of them mirrored (True when only the mirrored comparison is that close)."""
    rows = np.flatnonzero(eligible)
    found: dict[tuple[int, int], bool] = {}
    both = np.concatenate([hashes[rows], mirrored[rows]])
    owner = np.concatenate([rows, rows])
    flipped = np.concatenate([np.zeros(len(rows), bool), np.ones(len(rows), bool)])
    for shift, width in _chunks(radius):
        keys = (both >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(keys, kind="stable")
        starts = np.flatnonzero(np.r_[True, keys[order][1:] != keys[order][:-1]])
        for start, end in zip(starts, np.r_[starts[1:], len(order)]):
            members = order[start:end]
            for first in range(0, len(members) - 1, BLOCK):  # a block of rows at a time: big buckets stay small
                a = np.repeat(members[first:first + BLOCK], len(members))
                b = np.tile(members, min(BLOCK, len(members) - first))
                keep = (owner[a] < owner[b]) & ~(flipped[a] & flipped[b])
                a, b = a[keep], b[keep]
                close = np.bitwise_count(both[a] ^ both[b]) <= radius
                for i, j, mirror in zip(owner[a[close]], owner[b[close]], (flipped[a] ^ flipped[b])[close]):
                    if not mirror or (int(i), int(j)) not in found:
                        found[(int(i), int(j))] = bool(mirror)
    return found
