"""Near-duplicate pairs among thumbnails: two searches propose candidate pairs, an alignment scores each
candidate pair on its own.

1. Candidates. (a) Perceptual hashes (`data.perceptual_hash`, imagehash's phash) within HASH_RADIUS bits, as
   they are or one mirrored: linear time, finds re-encoded, resized, brightened and mirrored copies, not crops.
   (b) Nearest neighbours: every image is described by its blurred 16x16 thumbnail, normalised to zero mean and
   unit length (brightness and contrast do not count); each block of query images is compared, as itself,
   mirrored, and zoomed 6 % at five places (a crop seen from the original), with every other image, and a row
   keeps its `neighbours` best. Only a block of rows is in memory (`block` x N scores), never N x N; the
   time is quadratic, so "auto" uses it up to NEIGHBOUR_LIMIT images.
2. Score. Each candidate pair is aligned (scale and shift, Lucas-Kanade: a few Gauss-Newton steps on the
   32x32 blurred thumbnails, in both directions and, when worth it, both orientations; a resized copy at
   the detail of the smaller image) and scored by the normalised cross-correlation of the aligned central
   region: 1.0 for the same pixels, 0.999 to 1.0 for a re-encoded, resized, cropped or brightened copy;
   distinct photos of near-identical products reach 0.999 (Fashion-MNIST's trousers), which is why
   DEFAULT_THRESHOLD sits there (docs/data-health.md).

A pair is reported with its own score; pairs are never chained into clusters, so A~B and B~C say nothing
about A and C.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from imgcls.data.perceptual_hash import close_pairs, phash

BLUR_SIGMA = 1.3  # pixels of the 32x32 thumbnails: 1.0 and 1.6 separated copies from look-alikes less well
DEFAULT_THRESHOLD = 0.999  # aligned similarity at which a pair is reported (docs/data-health.md: how chosen)
CANDIDATE_FLOOR = 0.8  # descriptor similarity below which a neighbour is not a candidate
ALIGN_FLOOR = 0.85  # unaligned similarity below which a neighbour is not worth aligning (5 % crops: from 0.87)
HASH_ALIGN_FLOOR = 0.99  # the same for hash candidates (re-encoded, resized, brightened, mirrored: from 0.995)
HASH_RADIUS = 4  # bits in which perceptual hashes of candidates may differ
NEIGHBOUR_LIMIT = 20_000  # "auto" searches neighbours up to this many images (quadratic), hashes beyond
_DESCRIPTOR = 16
_ZOOM_WINDOWS = ((1, 1), (0, 0), (0, 2), (2, 0), (2, 2))  # 30x30 windows of the 32x32 thumbnail
MAX_ZOOM, MAX_SHIFT = 0.07, 0.07  # how far alignment may scale and move (-1..1 units): a 5 % crop needs 0.053
DETAIL_RATIO = 1.05  # sides this far apart are compared at the smaller one's detail (a 5 % crop's are not)
_CENTRE = 0.8  # the aligned comparison ignores the outer 10 % on each side (warped borders)


@dataclass(frozen=True)
class NearPair:
    first: int
    second: int
    similarity: float
    mirrored: bool


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-offsets**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    return F.conv2d(F.conv2d(padded, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))


def _normalised(features: torch.Tensor) -> torch.Tensor:
    features = features.flatten(1)
    features = features - features.mean(dim=1, keepdim=True)
    return features / (features.norm(dim=1, keepdim=True) + 1e-6)


def _describe(blurred: torch.Tensor) -> torch.Tensor:
    return _normalised(F.adaptive_avg_pool2d(blurred, _DESCRIPTOR))


def _query_variants(blurred: torch.Tensor) -> list[torch.Tensor]:
    """Descriptors of the block as is, zoomed at five places, then the same mirrored (second half)."""
    variants = []
    for view in (blurred, blurred.flip(-1)):
        variants.append(_describe(view))
        side = view.shape[-1] - 2
        variants.extend(_describe(view[..., y:y + side, x:x + side]) for y, x in _ZOOM_WINDOWS)
    return variants


def blurred_thumbnails(thumbs: np.ndarray, batch: int = 4096) -> torch.Tensor:
    """(N, 1, S, S) float thumbnails in 0..1, blurred (BLUR_SIGMA) against re-encoding and resampling noise."""
    blurred = torch.empty((len(thumbs), 1, *thumbs.shape[1:]), dtype=torch.float32)
    for start in range(0, len(thumbs), batch):  # in batches: a convolution of all at once takes gigabytes
        chunk = torch.from_numpy(thumbs[start:start + batch]).float().unsqueeze(1) / 255.0
        blurred[start:start + batch] = _blur(chunk, BLUR_SIGMA)
    return blurred


def neighbour_pairs(blurred: torch.Tensor, eligible: np.ndarray, neighbours: int = 5, block: int = 512
                    ) -> set[tuple[int, int]]:
    """(i, j), i < j, for each eligible image's best `neighbours` among the eligible (as it is, mirrored or
    zoomed at five places)."""
    rows = np.flatnonzero(eligible)
    if len(rows) < 2:
        return set()
    base = _describe(blurred[rows])
    found: set[tuple[int, int]] = set()
    keep = min(neighbours, len(rows) - 1)
    for start in range(0, len(rows), block):
        variants = _query_variants(blurred[rows[start:start + block]])
        best = variants[0] @ base.T  # (b, N): the best over the variants, kept as they come (not V x b x N)
        for variant in variants[1:]:
            torch.maximum(best, variant @ base.T, out=best)
        own = torch.arange(best.shape[0])
        best[own, own + start] = -2.0
        top = best.topk(keep, dim=1)
        for row, (columns, values) in enumerate(zip(top.indices.tolist(), top.values.tolist())):
            for column, value in zip(columns, values):
                if value >= CANDIDATE_FLOOR:
                    i, j = int(rows[start + row]), int(rows[column])
                    found.add((min(i, j), max(i, j)))
    return found


def _sampling_grid(side: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    coords = torch.linspace(-1 + 1 / side, 1 - 1 / side, side)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    centre = ((xs.abs() < _CENTRE) & (ys.abs() < _CENTRE)).float().flatten()
    return xs.flatten(), ys.flatten(), centre


def _standardised(pixels: torch.Tensor, centre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = (pixels * centre).sum(1, keepdim=True) / centre.sum()
    centred = pixels - mean
    spread = (centred**2 * centre).sum(1, keepdim=True).sqrt() + 1e-6
    return centred / spread, spread


def _aligned_similarity(target: torch.Tensor, moving: torch.Tensor, steps: int = 8) -> torch.Tensor:
    """Correlation of `target` with `moving` warped (scale s, shift t) onto it by Gauss-Newton steps."""
    count, side = target.shape[0], target.shape[-1]
    xs, ys, centre = _sampling_grid(side)
    goal, _ = _standardised(target.flatten(1), centre)
    params = torch.tensor([1.0, 0.0, 0.0]).repeat(count, 1)  # scale, shift x, shift y (in -1..1 units)
    weight = centre.sqrt().view(1, -1)
    for step in range(steps + 1):
        theta = torch.zeros(count, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = params[:, 0]
        theta[:, 0, 2], theta[:, 1, 2] = params[:, 1], params[:, 2]
        grid = F.affine_grid(theta, [count, 1, side, side], align_corners=False)
        warped = F.grid_sample(moving, grid, mode="bilinear", padding_mode="border", align_corners=False)
        standard, spread = _standardised(warped.flatten(1), centre)
        if step == steps:
            return (standard * goal * centre).sum(1)
        grad_x = (warped.roll(-1, 3) - warped.roll(1, 3)).flatten(1) * (side / 4) / spread
        grad_y = (warped.roll(-1, 2) - warped.roll(1, 2)).flatten(1) * (side / 4) / spread
        jacobian = torch.stack([grad_x * xs + grad_y * ys, grad_x, grad_y], dim=2) * weight.unsqueeze(2)
        residual = (goal - standard) * weight
        hessian = jacobian.transpose(1, 2) @ jacobian + 1e-3 * torch.eye(3)
        update = torch.linalg.solve(hessian, jacobian.transpose(1, 2) @ residual.unsqueeze(2)).squeeze(2)
        params = params + update.clamp(-0.05, 0.05)
        params[:, 0] = params[:, 0].clamp(1 - MAX_ZOOM, 1 + MAX_ZOOM)
        params[:, 1:] = params[:, 1:].clamp(-MAX_SHIFT, MAX_SHIFT)
    raise AssertionError("unreachable")


def _unaligned_similarity(blurred: torch.Tensor, pairs: list[tuple[int, int]], batch: int = 8192) -> torch.Tensor:
    """(P, 2): correlation of each pair's centres as they are, and with the second image mirrored."""
    _, _, centre = _sampling_grid(blurred.shape[-1])
    standard, _ = _standardised(blurred.flatten(1), centre)
    standard = standard * centre  # the centre only, once, so each pair is one dot product
    mirrored, _ = _standardised(blurred.flip(-1).flatten(1), centre)
    first = torch.tensor([i for i, _ in pairs], dtype=torch.long)
    second = torch.tensor([j for _, j in pairs], dtype=torch.long)
    parts = []
    for start in range(0, len(pairs), batch):
        a, b = standard[first[start:start + batch]], second[start:start + batch]
        parts.append(torch.stack([(a * standard[b]).sum(1), (a * mirrored[b]).sum(1)], 1))
    return torch.cat(parts) if parts else torch.zeros(0, 2)


def _same_detail(first: torch.Tensor, second: torch.Tensor, first_sides: torch.Tensor, second_sides: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The pairs' thumbnails, both brought down to the detail of the smaller image and back where that image is
    smaller than a thumbnail and the two sizes differ by DETAIL_RATIO: a copy shrunk from 28 to 25 px has lost
    detail its original keeps, which would count against the pair; both go through the same resampling."""
    side = first.shape[-1]
    target = torch.minimum(first_sides, second_sides)
    apart = torch.maximum(first_sides, second_sides) >= DETAIL_RATIO * target
    first, second = first.clone(), second.clone()
    for size in torch.unique(target[apart & (target < side)]).tolist():
        rows = torch.nonzero(apart & (target == size)).flatten()
        for images in (first, second):
            smaller = F.interpolate(images[rows], size=(size, size), mode="bilinear", antialias=True)
            images[rows] = F.interpolate(smaller, size=(side, side), mode="bilinear", align_corners=False)
    return first, second


def score_pairs(blurred: torch.Tensor, candidates: dict[tuple[int, int], float], sides: torch.Tensor,
                batch: int = 4096) -> list[NearPair]:
    """Every candidate pair with its similarity: the best, over both orientations, of the pair as it is and of
    aligning either image onto the other (at the detail of the smaller, `sides` being each image's short side).
    An orientation whose unaligned similarity is under the pair's floor (`candidates[pair]`) is not aligned;
    both may be (a symmetric object matches its mirror image too)."""
    pairs = list(candidates)
    if not pairs:
        return []
    unaligned = _unaligned_similarity(blurred, pairs)
    best = {pair: (float(values.max()), bool(values.argmax())) for pair, values in zip(pairs, unaligned)}
    todo = [(pair, mirror) for pair, values in zip(pairs, unaligned.tolist())
            for mirror in (False, True) if values[mirror] >= candidates[pair]]
    for start in range(0, len(todo), batch):
        chunk = todo[start:start + batch]
        first_rows = torch.tensor([i for (i, _), _ in chunk])
        second_rows = torch.tensor([j for (_, j), _ in chunk])
        first, second = _same_detail(blurred[first_rows], blurred[second_rows], sides[first_rows], sides[second_rows])
        mirrored = torch.tensor([mirror for _, mirror in chunk]).view(-1, 1, 1, 1)
        second = torch.where(mirrored, second.flip(-1), second)
        aligned = torch.maximum(_aligned_similarity(first, second), _aligned_similarity(second, first))
        for (pair, mirror), value in zip(chunk, aligned.tolist()):
            if value > best[pair][0]:
                best[pair] = (value, mirror)
    return [NearPair(i, j, value, mirror) for (i, j), (value, mirror) in best.items()]


def near_duplicate_pairs(thumbs: np.ndarray, eligible: np.ndarray, sides: np.ndarray,
                         threshold: float = DEFAULT_THRESHOLD, search: str = "auto") -> tuple[list[NearPair], str]:
    """Pairs of eligible thumbnails (`sides`: each image's short side in pixels) whose similarity reaches
    `threshold`, most similar first, and the search used: "hash" (perceptual hashes within HASH_RADIUS bits:
    fast, misses crops), "neighbours" (that and the nearest-neighbour search, which finds crops too;
    quadratic time) or "auto" (neighbours up to NEIGHBOUR_LIMIT eligible images)."""
    if search == "auto":
        search = "neighbours" if int(eligible.sum()) <= NEIGHBOUR_LIMIT else "hash"
    with torch.inference_mode():
        blurred = blurred_thumbnails(thumbs)
        hashes, mirrored = phash(thumbs)
        candidates = dict.fromkeys(close_pairs(hashes, mirrored, HASH_RADIUS, eligible), HASH_ALIGN_FLOOR)
        if search == "neighbours":
            candidates.update(dict.fromkeys(neighbour_pairs(blurred, eligible), ALIGN_FLOOR))
        scored = score_pairs(blurred, candidates, torch.as_tensor(sides, dtype=torch.long))
    reported = sorted((pair for pair in scored if pair.similarity >= threshold), key=lambda pair: -pair.similarity)
    return reported, search
