"""Rigid fits between point sets: 4x4 helpers, Kabsch, and trimmed ICP (full rigid or translation only).

Transforms are (4, 4) float64 matrices acting on column vectors, x' = R x + t.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from utils.neighbours import query


def make_transform(R: np.ndarray | None = None, t: np.ndarray | None = None) -> np.ndarray:
    """(4, 4) transform of a rotation (3, 3) and a translation (3,) (identity for the missing ones)."""
    T = np.eye(4)
    if R is not None:
        T[:3, :3] = R
    if t is not None:
        T[:3, 3] = t
    return T


def apply_transform(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (N, 3) moved by the (4, 4) transform `T`."""
    return points @ T[:3, :3].T + T[:3, 3]


def rotation_about_line(origin: np.ndarray, direction: np.ndarray, angle: float) -> np.ndarray:
    """(4, 4) rotation by `angle` radians about the line through `origin` (3,) along `direction` (3,)."""
    R = Rotation.from_rotvec(np.asarray(direction, float) / np.linalg.norm(direction) * angle).as_matrix()
    return make_transform(R, origin - R @ origin)


def rotation_angle(T: np.ndarray) -> float:
    """Rotation angle (radians, in [0, pi]) of a (4, 4) rigid transform."""
    return float(np.arccos(np.clip((np.trace(T[:3, :3]) - 1.0) / 2.0, -1.0, 1.0)))


def kabsch(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(4, 4) rigid transform minimising sum |T(source_i) - target_i|^2 over paired points (N, 3), N >= 3."""
    mu_s, mu_t = source.mean(axis=0), target.mean(axis=0)
    H = (source - mu_s).T @ (target - mu_t)
    U, _, Vt = np.linalg.svd(H)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    R = Vt.T @ D @ U.T
    return make_transform(R, mu_t - R @ mu_s)


def icp(source: np.ndarray, target_tree: cKDTree, init: np.ndarray, *, max_distance: float = np.inf,
        keep_fraction: float = 1.0, min_distance: float = 0.0, translation_only: bool = False,
        direction: np.ndarray | None = None, iterations: int = 20, tolerance: float = 1e-5) -> np.ndarray:
    """Trimmed point-to-point ICP of `source` (N, 3) onto the points of `target_tree`, starting from `init` (4, 4).

    Each iteration pairs every moved source point with its nearest target point and refits on the pairs closer than
    the `keep_fraction` quantile of the pair distances, clipped to [min_distance, max_distance]: surfaces without a
    counterpart (e.g. hidden in the other state) do not drag the fit. Quantile trimming suits a fit that is already
    close: far from it, the far pairs are often the informative ones (a drawer's front, while its sides slide).
    `translation_only` fits the mean offset of the kept pairs instead of a rigid transform, only its component along
    the unit vector `direction` (3,) when given (a drawer of a stack slides the way the stack does). Stops when no
    matrix entry changes by more than `tolerance`. Returns the (4, 4) transform.
    """
    target = target_tree.data
    T = init.copy()
    for _ in range(iterations):
        dist, nearest = query(target_tree, apply_transform(T, source), distance_upper_bound=max_distance)
        quantile = float(np.quantile(np.minimum(dist, max_distance), keep_fraction))
        kept = dist <= min(max(quantile, min_distance), max_distance)
        if kept.sum() < 3:
            break
        if translation_only:
            offset = (target[nearest[kept]] - apply_transform(T, source[kept])).mean(axis=0)
            step = make_transform(t=offset if direction is None else direction * (offset @ direction))
            new_T = step @ T
        else:
            new_T = kabsch(source[kept], target[nearest[kept]])
        change = np.abs(new_T - T).max()
        T = new_T
        if change < tolerance:
            break
    return T
