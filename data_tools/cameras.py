"""Camera placement for synthetic captures: cameras on a sphere looking at the origin, world z up.

Poses are camera-to-world (4, 4) matrices with Blender/OpenGL camera axes (x right, y up, z backward), as stored in
the transforms json files.
"""
from __future__ import annotations

import numpy as np

from utils.graphics_utils import fov_to_focal, intrinsics

FOV_DEG = 42.0
RADIUS_RANGE = (3.0, 3.5)
ELEVATION_RANGE_DEG = (-10.0, 70.0)
WORLD_UP = np.array([0.0, 0.0, 1.0])
GOLDEN_ANGLE = np.pi * (3.0 - np.sqrt(5.0))


def look_at(eye: np.ndarray, target: np.ndarray | None = None) -> np.ndarray:
    """(4, 4) OpenGL camera-to-world pose at `eye` (3,) looking at `target` (3,, default origin), world z up."""
    target = np.zeros(3) if target is None else np.asarray(target, dtype=np.float64)
    backward = np.asarray(eye, dtype=np.float64) - target
    backward /= np.linalg.norm(backward)
    right = np.cross(WORLD_UP, backward)
    norm = np.linalg.norm(right)
    if norm < 1e-6:
        raise ValueError(f"camera at {eye} looks straight along the world up axis; its roll is undefined")
    right /= norm
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, np.cross(backward, right), backward], axis=1)
    pose[:3, 3] = eye
    return pose


def sphere_directions(n: int, rng: np.random.Generator, fibonacci: bool) -> np.ndarray:
    """(n, 3) unit directions spread over the elevation band, equal-area; a Fibonacci spiral or uniform random.

    The spiral starts at a random azimuth so two calls with different generators give different viewpoints.
    """
    lo, hi = np.sin(np.radians(ELEVATION_RANGE_DEG))
    if fibonacci:
        z = lo + (hi - lo) * (np.arange(n) + 0.5) / n
        azimuth = rng.uniform(0.0, 2.0 * np.pi) + GOLDEN_ANGLE * np.arange(n)
    else:
        z = rng.uniform(lo, hi, size=n)
        azimuth = rng.uniform(0.0, 2.0 * np.pi, size=n)
    ring = np.sqrt(1.0 - z**2)
    return np.stack([ring * np.cos(azimuth), ring * np.sin(azimuth), z], axis=1)


def sample_poses(n: int, rng: np.random.Generator, fibonacci: bool) -> np.ndarray:
    """(n, 4, 4) OpenGL camera-to-world poses around the origin, at random radii in RADIUS_RANGE."""
    directions = sphere_directions(n, rng, fibonacci)
    radii = rng.uniform(*RADIUS_RANGE, size=n)
    return np.stack([look_at(r * d) for r, d in zip(radii, directions)]) if n else np.zeros((0, 4, 4))


def square_intrinsics(res: int, fov_deg: float = FOV_DEG) -> np.ndarray:
    """(3, 3) intrinsics of a square `res` x `res` image with field of view `fov_deg`, principal point centred."""
    focal = fov_to_focal(np.radians(fov_deg), res)
    return intrinsics(focal, focal, res / 2.0, res / 2.0)
