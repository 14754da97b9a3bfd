"""The Scene container: cameras of both joint states and their initial point clouds."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from scene.cameras import STATES, Camera
from scene.dataset_readers import SPLITS, DatasetError, camera_extent, load_cameras
from utils.point_cloud import (
    backproject_depth,
    read_point_ply,
    visual_hull_points,
    voxel_downsample,
    write_point_ply,
)

log = logging.getLogger(__name__)


def point_cloud_path(scene_dir: str | Path, state: int) -> Path:
    return Path(scene_dir) / f"point_cloud_{STATES[state]}.ply"


def ensure_point_cloud(scene_dir: str | Path, state: int, cameras: list[Camera], voxel_size: float = 0.01) -> Path:
    """Return `point_cloud_{state}.ply`, making it first when missing.

    Made from the training depth maps (alpha > 0.5, depth > 0.1), voxel-downsampled; without depth, from random points
    inside the views' silhouettes (a visual hull), so scenes without depth still initialise sensibly.
    """
    path = point_cloud_path(scene_dir, state)
    if path.is_file():
        return path
    points, colours = backproject_depth(cameras)
    source = "depth"
    if len(points) == 0:
        points, colours = visual_hull_points(cameras)
        source = "visual hull (no depth)"
    points, colours = voxel_downsample(points, colours, voxel_size)
    if len(points) == 0:
        raise DatasetError(f"{scene_dir}: no foreground found in the {STATES[state]} training views; cannot build {path.name}")
    write_point_ply(path, points, colours)
    log.info("wrote %s: %d points from %s", path, len(points), source)
    return path


class Scene:
    """Train/test cameras of both joint states of one object, with images on `device`."""

    def __init__(
        self,
        scene_dir: str | Path,
        resolution: int = -1,
        device: torch.device | str = "cpu",
        splits: tuple[str, ...] = SPLITS,
        load_masks: bool = False,
    ) -> None:
        self.scene_dir = Path(scene_dir)
        self.cameras: dict[tuple[int, str], list[Camera]] = {}
        for state in (0, 1):
            for split in splits:
                cams = load_cameras(self.scene_dir, state, split, resolution, load_masks=load_masks)
                if split == "train":
                    ensure_point_cloud(self.scene_dir, state, cams)
                self.cameras[(state, split)] = [c.to(device) for c in cams]
        sizes = {(c.width, c.height) for cams in self.cameras.values() for c in cams}
        if len(sizes) > 1:
            raise DatasetError(f"{self.scene_dir}: views of the two states have different sizes {sorted(sizes)}")
        self.extent = camera_extent(self.train_cameras(0) + self.train_cameras(1))

    def train_cameras(self, state: int) -> list[Camera]:
        return self.cameras[(state, "train")]

    def test_cameras(self, state: int) -> list[Camera]:
        return self.cameras[(state, "test")]

    def point_cloud(self, state: int) -> tuple[np.ndarray, np.ndarray]:
        """Initial points (M, 3) and colours (M, 3) of one state."""
        return read_point_ply(point_cloud_path(self.scene_dir, state))
