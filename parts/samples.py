"""One state's surface on the shared voxel grid: voxel-averaged samples and the full-resolution surface they summarise.

Stage 3 reasons on samples (one per occupied voxel) and tests landings against the full-resolution surface, whose
precision sets the landing tolerance (`measured_tolerance`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from parts.motion import Side
from parts.observation import Observation
from utils.neighbours import query
from utils.voxel_grid import VoxelGrid
from utils.voxel_keys import unique_rows


@dataclass
class Samples:
    """One state's surface averaged per voxel of the shared grid: points (S, 3), voxel indices (S, 3), their tree;
    and the full-resolution surface points (N, 3) with their tree and the sample each falls in (N,)."""

    points: np.ndarray
    voxels: np.ndarray
    tree: cKDTree
    surface: Side
    of_point: np.ndarray
    sides: np.ndarray  # (S, 3) the side the state's cameras see each sample from (zero: unseen)
    observation: Observation  # the state's own surface and views

    @classmethod
    def of(cls, observation: Observation, grid: VoxelGrid) -> "Samples":
        points = observation.points
        voxels, inverse, counts = unique_rows(grid.indices(points))
        means = np.stack([np.bincount(inverse, weights=points[:, d]) for d in range(3)], axis=1) / counts[:, None]
        sides = np.stack([np.bincount(inverse, weights=observation.sides[:, d]) for d in range(3)], axis=1)
        sides /= np.maximum(np.linalg.norm(sides, axis=1, keepdims=True), 1e-12)
        return cls(means, voxels, cKDTree(means), Side(points, observation.tree), inverse, sides, observation)

    def landing(self, points: np.ndarray, tolerance: float, sides: np.ndarray | None = None) -> np.ndarray:
        """(N,) the sample whose surface each of `points` (N, 3) seen from `sides` (N, 3) lands on (within
        `tolerance` of a surface point seen from that side), -1 where it lands on none."""
        dist, nearest = self.observation.near_same_side(points, sides, tolerance)
        hit = np.isfinite(dist)
        return np.where(hit, self.of_point[np.where(hit, nearest, 0)], -1)


def measured_tolerance(samples: np.ndarray, surface: cKDTree, voxel_size: float) -> float:
    """The landing tolerance: three times the median distance from the canonical samples (N, 3) to the other
    state's surface among those within a voxel of it (the static body, where both states coincide: how closely two
    renderings of one surface agree), kept within [0.4, 1.5] voxels."""
    dist = query(surface, samples, distance_upper_bound=voxel_size)[0]
    near = dist[np.isfinite(dist)]
    spread = float(np.median(near)) if len(near) else voxel_size / 3
    return float(np.clip(3 * spread, 0.4 * voxel_size, 1.5 * voxel_size))
