"""Coloured point clouds: voxel downsampling and PLY I/O (x, y, z, red, green, blue)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement

from utils.io_utils import atomic_path
from utils.voxel_keys import unique_rows


def checked_points(points: np.ndarray, name: str) -> np.ndarray:
    """`points` as a finite float64 (N, 3) array with N >= 1, else ValueError naming them."""
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 3 or len(array) == 0:
        raise ValueError(f"{name} must be a non-empty (N, 3) array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def voxel_downsample(points: np.ndarray, colours: np.ndarray, voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Average the points (and colours) that fall in each voxel of edge `voxel_size`, voxels in lexicographic order of
    their (x, y, z) indices."""
    if len(points) == 0:
        return points, colours
    _, inverse, counts = unique_rows(np.floor(points / voxel_size).astype(np.int64))

    def mean(values: np.ndarray) -> np.ndarray:
        sums = [np.bincount(inverse, weights=values[:, i], minlength=len(counts)) for i in range(values.shape[1])]
        return (np.stack(sums, axis=1) / counts[:, None]).astype(np.float32)

    return mean(points), mean(colours)


def write_point_ply(path: str | Path, points: np.ndarray, colours: np.ndarray) -> None:
    """Write points (M, 3) with colours (M, 3) in [0, 1] as a binary PLY (x, y, z, red, green, blue), atomically."""
    vertex = np.empty(len(points), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    vertex["x"], vertex["y"], vertex["z"] = points[:, 0], points[:, 1], points[:, 2]
    rgb = np.clip(np.round(colours * 255.0), 0, 255).astype(np.uint8)
    vertex["red"], vertex["green"], vertex["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(vertex, "vertex")]).write(str(tmp))


def read_point_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Points (M, 3) and colours (M, 3) in [0, 1] (grey when the file has none); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"point cloud not found: {path}")
    try:
        vertex = PlyData.read(str(path))["vertex"]
    except Exception as err:  # plyfile raises several types for malformed files
        raise ValueError(f"cannot read point cloud {path}: {err}") from err
    names = vertex.data.dtype.names
    if not {"x", "y", "z"} <= set(names):
        raise ValueError(f"point cloud {path} has no x/y/z properties")
    points = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float32)
    if len(points) == 0:
        raise ValueError(f"point cloud {path} is empty")
    if {"red", "green", "blue"} <= set(names):
        colours = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1).astype(np.float32) / 255.0
    else:
        colours = np.full_like(points, 0.5)
    return points, colours
