"""Rigid transforms: 4x4 helpers and the Kabsch fit.

Transforms are (4, 4) float64 matrices acting on column vectors, x' = R x + t.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation



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


def kabsch(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(4, 4) rigid transform minimising sum |T(source_i) - target_i|^2 over paired points (N, 3), N >= 3."""
    mu_s, mu_t = source.mean(axis=0), target.mean(axis=0)
    H = (source - mu_s).T @ (target - mu_t)
    U, _, Vt = np.linalg.svd(H)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    R = Vt.T @ D @ U.T
    return make_transform(R, mu_t - R @ mu_s)


