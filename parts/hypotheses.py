"""Candidate rigid motions (hypotheses) for the pieces of motion evidence of the canonical state.

Evidence is what the static body cannot explain: canonical samples lying where the other state's cameras see empty
space. Its connected pieces (and, since parts that touch form one piece, their k-means chunks at several counts) are
each matched to the other state's evidence from several starts:
- the identity (a part that moved a little);
- the best voxel translations (`correlation_shifts`: FFT cross-correlation of the voxel sets, the other state's body
  around them counting half, so that a drawer's sides pin its sideways position);
- the paper's plane estimate (`plane_motion`: a rotation about the intersection line of the two pieces' PCA planes);
and the most promising starts are refined by rigid ICP. Which of the many candidates become parts is the business of
`parts.selection`, so generating too many is cheap and missing one is costly.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.cluster.vq import kmeans2
from scipy.ndimage import maximum_filter
from scipy.signal import fftconvolve

from parts.motion import Side, fit_coarse_to_fine, moved_apart
from utils.neighbours import query
from utils.rigid_fit import apply_transform, make_transform, rotation_about_line

PARALLEL_PLANES_DEG = 5.0  # planes closer to parallel than this give no intersection line (the paper's fallback)
MAX_CORRELATION_CELLS = 2_000_000  # correlation grids above this many cells are computed on binned voxels
CHUNK_COUNTS = (2, 4, 8)  # k-means chunk counts a piece of evidence is also cut into
STARTS_PER_CHUNK = 3  # starts refined by ICP per chunk (the best by quick score), besides the identity
MAX_FIT_POINTS = 600  # points of a chunk used by ICP


def fit_plane(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (3,) and unit normal (3,) of the least-squares plane through `points` (N, 3): PCA least axis."""
    centroid = points.mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov((points - centroid).T))
    return centroid, vectors[:, 0]


def plane_motion(source: np.ndarray, target: np.ndarray) -> list[np.ndarray]:
    """The paper's rotations (4, 4) mapping the piece `source` (N, 3) onto `target` (M, 3): about the intersection
    line of their PCA planes by the angle between the normals, or that angle minus pi (normals have no sign). None
    for nearly parallel planes."""
    c_s, n_s = fit_plane(source)
    c_t, n_t = fit_plane(target)
    axis = np.cross(n_s, n_t)
    sin_theta = float(np.linalg.norm(axis))
    theta = float(np.arctan2(sin_theta, n_s @ n_t))
    if min(theta, np.pi - theta) < np.radians(PARALLEL_PLANES_DEG):
        return []
    axis /= sin_theta
    lhs = np.stack([n_s, n_t, axis])
    origin = np.linalg.solve(lhs, np.array([n_s @ c_s, n_t @ c_t, axis @ (c_s + c_t) / 2]))
    return [rotation_about_line(origin, axis, angle) for angle in (theta, theta - np.pi)]


def _binned_mask(indices: np.ndarray, lo: np.ndarray, shape: np.ndarray, factor: int) -> np.ndarray:
    """float32 occupancy grid (0 or 1) of the voxels `indices` (M, 3) binned by `factor` from corner `lo`."""
    grid = np.zeros(tuple(shape), dtype=np.float32)
    grid[tuple(((indices - lo) // factor).T)] = 1.0
    return grid


def correlation_shifts(source: np.ndarray, target: np.ndarray, context: np.ndarray, context_weight: float = 0.5,
                       count: int = 3, separation: int = 10) -> list[np.ndarray]:
    """Up to `count` integer voxel translations (3,) that overlap the voxel sets `source` and `target` (M, 3) most,
    best first: local maxima of their FFT cross-correlation reaching half the best, at least `separation` voxels
    apart (identical drawers fit several slots). Voxels of `context` (K, 3) (the other state around the target)
    count `context_weight` each. Large sets are binned first; ICP refines the result."""
    lo_s = source.min(axis=0)
    lo_t = np.minimum(target.min(axis=0), context.min(axis=0)) if len(context) else target.min(axis=0)
    hi_t = np.maximum(target.max(axis=0), context.max(axis=0)) if len(context) else target.max(axis=0)
    ext_s, ext_t = source.max(axis=0) - lo_s + 1, hi_t - lo_t + 1
    factor = 1
    while np.prod(np.ceil((ext_s + ext_t) / factor)) > MAX_CORRELATION_CELLS:
        factor += 1
    shape_s, shape_t = -(-ext_s // factor), -(-ext_t // factor)
    a = _binned_mask(source, lo_s, shape_s, factor)
    b = _binned_mask(target, lo_t, shape_t, factor)
    if len(context):
        b = np.maximum(b, context_weight * _binned_mask(context, lo_t, shape_t, factor))
    corr = fftconvolve(b, a[::-1, ::-1, ::-1], mode="full")
    peaks = np.argwhere((corr == maximum_filter(corr, size=3)) & (corr >= 0.5 * corr.max()))
    kept: list[np.ndarray] = []
    for cell in peaks[np.argsort(-corr[tuple(peaks.T)], kind="stable")]:
        if len(kept) == count:
            break
        if all(np.abs(cell - other).max() * factor >= separation for other in kept):
            kept.append(cell)
    return [(cell - (shape_s - 1)) * factor + lo_t - lo_s for cell in kept]


def chunks(points: np.ndarray, min_size: int, seed: int) -> list[np.ndarray]:
    """Index arrays into `points` (N, 3): all of them, and their k-means chunks for each count of CHUNK_COUNTS that
    leaves chunks of at least `min_size` points on average."""
    pieces = [np.arange(len(points))]
    for k in CHUNK_COUNTS:
        if len(points) < k * min_size:
            break
        _, label = kmeans2(points, k, seed=seed, minit="++")
        pieces += [np.flatnonzero(label == i) for i in range(k) if np.sum(label == i) >= min_size // 2]
    return pieces


Score = Callable[[np.ndarray, np.ndarray], float]  # (motion (4, 4), points (N, 3)) -> fraction that lands


class HypothesisMaker:
    """Makes candidate motions c -> o for canonical pieces of evidence (see the module docstring)."""

    def __init__(self, voxel_size: float, tolerance: float, other: Side, other_voxels: np.ndarray,
                 seed: int = 0) -> None:
        self.voxel_size, self.tolerance = voxel_size, tolerance
        self.other_side = other  # the other state's samples and their tree: the ICP target
        self.other_voxels = other_voxels  # (S, 3) their voxel indices
        self.rng = np.random.default_rng(seed)
        self.seed = seed

    def landed(self, T: np.ndarray, points: np.ndarray) -> float:
        """Fraction of `points` (N, 3) that T moves within the tolerance of the other state's samples."""
        dist = query(self.other_side.tree, apply_transform(T, points), distance_upper_bound=self.tolerance)[0]
        return float(np.isfinite(dist).mean())

    def _context(self, target: np.ndarray, margin: int = 10) -> np.ndarray:
        """(K, 3) the other state's sample voxels within `margin` voxels of the box of `target` (M, 3)."""
        lo, hi = target.min(axis=0) - margin, target.max(axis=0) + margin
        inside = np.all((self.other_voxels >= lo) & (self.other_voxels <= hi), axis=1)
        return self.other_voxels[inside]

    def starts(self, voxels: np.ndarray, points: np.ndarray, targets: list[tuple[np.ndarray, np.ndarray]]
               ) -> list[np.ndarray]:
        """Initial motions of a canonical piece (voxels (M, 3), points (M, 3)) onto each of `targets` (the other
        state's evidence pieces as (voxels, points)) of comparable size: voxel shifts and plane rotations."""
        found = []
        for t_voxels, t_points in targets:
            if not 0.05 <= len(voxels) / len(t_voxels) <= 20.0:
                continue
            found += [make_transform(t=s * self.voxel_size)
                      for s in correlation_shifts(voxels, t_voxels, self._context(t_voxels))]
            found += plane_motion(points, t_points)
        return found

    def for_piece(self, voxels: np.ndarray, points: np.ndarray, targets: list[tuple[np.ndarray, np.ndarray]],
                  min_size: int) -> list[np.ndarray]:
        """Refined candidate motions (4, 4) of one canonical piece of evidence and of its chunks."""
        found = []
        for index in chunks(points, min_size, self.seed):
            sample = points[index]
            if len(sample) > MAX_FIT_POINTS:
                sample = sample[self.rng.choice(len(sample), MAX_FIT_POINTS, replace=False)]
            starts = self.starts(voxels[index], points[index], targets)
            starts.sort(key=lambda T: -self.landed(T, sample))
            for T in [np.eye(4), *starts[:STARTS_PER_CHUNK]]:
                found.append(fit_coarse_to_fine(T, "rigid", Side(sample, self.other_side.tree), None, self.tolerance))
        return found


def distinct(motions: list[np.ndarray], points: np.ndarray, min_apart: float,
             kept: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """`kept` (already distinct) and the motions that move `points` (N, 3) at least `min_apart` (mean distance) away
    from where every earlier kept motion moves them: duplicates of one candidate cost time and add nothing."""
    kept = list(kept or [])
    for T in motions:
        if all(moved_apart(T, K, points) >= min_apart for K in kept):
            kept.append(T)
    return kept
