"""Initial rigid-motion hypotheses between a part's voxels in two states, and the revolute/prismatic guess.

- `plane_motion`: the GEAR paper's estimate: fit a plane to each component (PCA) and rotate about the two planes'
  intersection line by the angle between them (theta or theta - pi, whichever overlaps better).
- `correlation_shifts`: the integer voxel translations that overlap the two components most (FFT cross-correlation),
  the translation estimate the paper lacks for prismatic parts.
- `guess_joint_type`: which constrained model (pure rotation or pure translation) explains a fitted pair.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.ndimage import maximum_filter
from scipy.signal import fftconvolve

from utils.rigid_fit import rotation_about_line, rotation_angle

# Planes closer to parallel than this (degrees) give no usable intersection line: the paper's identity fallback.
PARALLEL_PLANES_DEG = 5.0
# Correlation grids above this many cells are computed on voxels binned by an integer factor.
MAX_CORRELATION_CELLS = 2_000_000


def fit_plane(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (3,) and unit normal (3,) of the least-squares plane through `points` (N, 3): PCA least axis."""
    centroid = points.mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov((points - centroid).T))
    return centroid, vectors[:, 0]


def plane_motion(source: np.ndarray, target: np.ndarray, score: Callable[[np.ndarray], float],
                 min_score: float = 0.05) -> np.ndarray:
    """The paper's motion estimate (4, 4) mapping the component `source` (N, 3) onto `target` (M, 3).

    Both components get a PCA plane; the rotation about the planes' intersection line by the angle theta between
    the normals (or theta - pi: normals have no sign) maps one plane onto the other, and `score(T)` (e.g. voxel
    overlap after the move) picks between the two. Nearly parallel planes or a best score below `min_score` give
    the identity.
    """
    c_s, n_s = fit_plane(source)
    c_t, n_t = fit_plane(target)
    axis = np.cross(n_s, n_t)
    sin_theta = float(np.linalg.norm(axis))
    theta = float(np.arctan2(sin_theta, n_s @ n_t))
    if min(theta, np.pi - theta) < np.radians(PARALLEL_PLANES_DEG):
        return np.eye(4)
    axis /= sin_theta
    # the point of the intersection line closest to the centroids' midpoint along the axis
    lhs = np.stack([n_s, n_t, axis])
    rhs = np.array([n_s @ c_s, n_t @ c_t, axis @ (c_s + c_t) / 2])
    origin = np.linalg.solve(lhs, rhs)
    candidates = [rotation_about_line(origin, axis, angle) for angle in (theta, theta - np.pi)]
    scores = [score(T) for T in candidates]
    best = int(np.argmax(scores))
    return candidates[best] if scores[best] >= min_score else np.eye(4)


def _binned_mask(indices: np.ndarray, lo: np.ndarray, shape: np.ndarray, factor: int) -> np.ndarray:
    """float32 occupancy grid (0 or 1) of the voxels `indices` (M, 3) binned by `factor` from corner `lo`."""
    grid = np.zeros(tuple(shape), dtype=np.float32)
    grid[tuple(((indices - lo) // factor).T)] = 1.0
    return grid


def correlation_shifts(source: np.ndarray, target: np.ndarray, context: np.ndarray | None = None,
                       context_weight: float = 0.5, count: int = 3, separation: int = 10) -> list[np.ndarray]:
    """Up to `count` integer voxel translations (3,) that overlap the voxel sets `source` and `target` (M, 3) most,
    best first: local maxima of their cross-correlation (computed by FFT over the bounding boxes) that reach half
    the best overlap, each at least `separation` voxels from the better ones. Several peaks matter when a part fits
    more than one slot (identical drawers). Voxels of `context` (K, 3) (the rest of the other state around the
    target) count `context_weight` each: a drawer's sides, which land on the static body, then fix its sideways
    position. Large sets are binned first; the result is then accurate to the bin size, which ICP refines.
    """
    context = target if context is None else context
    lo_s = source.min(axis=0)
    lo_t = np.minimum(target.min(axis=0), context.min(axis=0))
    ext_s = source.max(axis=0) - lo_s + 1
    ext_t = np.maximum(target.max(axis=0), context.max(axis=0)) - lo_t + 1
    factor = 1
    while np.prod(np.ceil((ext_s + ext_t) / factor)) > MAX_CORRELATION_CELLS:
        factor += 1
    shape_s, shape_t = -(-ext_s // factor), -(-ext_t // factor)
    a = _binned_mask(source, lo_s, shape_s, factor)
    b = np.maximum(_binned_mask(target, lo_t, shape_t, factor),
                   context_weight * _binned_mask(context, lo_t, shape_t, factor))
    corr = fftconvolve(b, a[::-1, ::-1, ::-1], mode="full")
    peaks = np.argwhere((corr == maximum_filter(corr, size=3)) & (corr >= 0.5 * corr.max()))
    kept: list[np.ndarray] = []
    for cell in peaks[np.argsort(-corr[tuple(peaks.T)], kind="stable")]:
        if len(kept) == count:
            break
        if all(np.abs(cell - other).max() * factor >= separation for other in kept):
            kept.append(cell)
    return [(cell - (shape_s - 1)) * factor + lo_t - lo_s for cell in kept]


def guess_joint_type(rigid: np.ndarray, score_revolute: float, score_prismatic: float,
                     max_prismatic_angle_deg: float = 10.0, tolerance: float = 0.02) -> str:
    """'prismatic' or 'revolute' from how well the best pure rotation and the best pure translation explain a pair
    (`score_*`, e.g. overlap ratios, higher is better) and the rotation angle of the unconstrained fit `rigid` (4, 4).

    A translation that explains the pair about as well as the rotation (within `tolerance`) wins when the rigid fit
    rotates by less than `max_prismatic_angle_deg`; one that explains it clearly better wins whatever that angle
    (the rigid fit then sits in a wrong minimum).
    """
    small_rotation = np.degrees(rotation_angle(rigid)) < max_prismatic_angle_deg
    margin = -tolerance if small_rotation else tolerance
    return "prismatic" if score_prismatic >= score_revolute + margin else "revolute"
