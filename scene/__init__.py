"""The Scene container: cameras of both joint states, and the initial point cloud of a state."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from scene.camera_points import backproject_depth, visual_hull_points
from scene.cameras import STATES, Camera
from scene.contract import shipped_point_cloud_path
from scene.dataset_readers import SPLITS, DatasetError, camera_extent, load_cameras, transforms_path
from utils.point_cloud import read_point_ply, voxel_downsample

log = logging.getLogger(__name__)


def derived_point_cloud(cameras: list[Camera], voxel_size: float) -> tuple[np.ndarray, np.ndarray, str]:
    """Points (M, 3), colours (M, 3) and their source for a state without a shipped point cloud: its training
    depth maps back-projected (alpha > 0.5, depth > 0.1), or without depth random points inside the views'
    silhouettes (a visual hull); voxel-downsampled at `voxel_size`."""
    points, colours = backproject_depth(cameras)
    source = "depth"
    if len(points) == 0:
        points, colours = visual_hull_points([cam.to("cpu") for cam in cameras])
        source = "visual hull (no depth)"
    points, colours = voxel_downsample(points, colours, voxel_size)
    return points, colours, source


class InitialPoints(NamedTuple):
    """The points (M, 3) and colours (M, 3) a state starts from, where they come from (a shipped file's path, or
    how they were made) and whether the dataset shipped them."""

    points: np.ndarray
    colours: np.ndarray
    source: str
    shipped: bool


def initial_point_cloud(scene: Scene, state: int, voxel_size: float) -> InitialPoints:
    """A state's initial point cloud: the dataset's own `point_cloud_<state>.ply` when it ships one, else
    `derived_point_cloud` of the state's training views. At least 2 finite points, else a DatasetError naming the
    file or the views."""
    shipped = shipped_point_cloud_path(scene.scene_dir, state)
    if shipped.is_file():
        try:
            points, colours = read_point_ply(shipped)
        except ValueError as err:
            raise DatasetError(str(err)) from err
        source = str(shipped)
    else:
        points, colours, source = derived_point_cloud(scene.train_cameras(state), voxel_size)
    where = shipped if shipped.is_file() else f"the {STATES[state]} training views of {scene.scene_dir}"
    if len(points) < 2:
        raise DatasetError(f"point cloud from {where} has {len(points)} point(s); at least 2 are needed")
    if not (np.isfinite(points).all() and np.isfinite(colours).all()):
        raise DatasetError(f"point cloud {where} contains NaN or infinite values")
    return InitialPoints(points, colours, source, shipped.is_file())


class Scene:
    """Train/test cameras of both joint states of one object, with images on `device`, validated on load
    (scene/dataset_readers.py); with `mask_dir` also stage 1's label maps."""

    def __init__(
        self,
        scene_dir: str | Path,
        resolution: int = -1,
        device: torch.device | str = "cpu",
        splits: tuple[str, ...] = SPLITS,
        mask_dir: str | Path | None = None,
        white_background: bool = False,
    ) -> None:
        self.scene_dir = Path(scene_dir)
        self.cameras: dict[tuple[int, str], list[Camera]] = {}
        for state in (0, 1):
            for split in splits:
                cams = load_cameras(self.scene_dir, state, split, resolution, mask_dir=mask_dir,
                                    white_background=white_background)
                if split == "train" and not any(bool((cam.alpha > 0.5).any()) for cam in cams):
                    raise DatasetError(f"{transforms_path(self.scene_dir, state, split)}: no foreground (alpha > 0.5) "
                                       "in any training view; the alpha channel must mark the object")
                self.cameras[(state, split)] = [c.to(device) for c in cams]
        sizes = {(c.width, c.height) for cams in self.cameras.values() for c in cams}
        if len(sizes) > 1:
            raise DatasetError(f"{self.scene_dir}: views of the two states have different sizes {sorted(sizes)}")
        self.extent = camera_extent(self.train_cameras(0) + self.train_cameras(1))

    def train_cameras(self, state: int) -> list[Camera]:
        return self.cameras[(state, "train")]

    def test_cameras(self, state: int) -> list[Camera]:
        return self.cameras[(state, "test")]
