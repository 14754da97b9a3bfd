"""Readers for two-state articulated-object scenes (PARIS / ArtGS / GEAR_Multi layout, DESIGN.md §3).

A scene folder holds `transforms_{train,test}_{start,end}.json` and, per frame, an RGBA image, optionally a 16-bit depth
PNG in millimetres and a stage-1 mask `.npy`. Everything here validates what it reads and raises `DatasetError`
naming the offending file.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from scene.cameras import STATES, Camera
from utils.graphics_utils import blender_c2w_to_opencv_w2c, fov_to_focal
from utils.io_utils import read_json

SPLITS = ("train", "test")


class DatasetError(ValueError):
    """A scene on disk is missing something or is inconsistent."""


def transforms_path(scene_dir: Path, state: int, split: str) -> Path:
    return Path(scene_dir) / f"transforms_{split}_{STATES[state]}.json"


def companion_path(image_path: Path, kind: str, suffix: str) -> Path:
    """Path of the depth/mask/part file that belongs to an rgba image (`.../rgba/0000.png` -> `.../<kind>/0000<suffix>`)."""
    return image_path.parent.parent / kind / (image_path.stem + suffix)


def read_transforms(path: Path) -> dict:
    """Read and validate one transforms json; returns it with `frames` checked."""
    meta = read_json(path, "transforms file")
    if "camera_angle_x" not in meta:
        raise DatasetError(f"{path}: missing 'camera_angle_x'")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DatasetError(f"{path}: 'frames' must be a non-empty list")
    for i, frame in enumerate(frames):
        if "file_path" not in frame or "transform_matrix" not in frame:
            raise DatasetError(f"{path}: frame {i} needs 'file_path' and 'transform_matrix'")
        if np.asarray(frame["transform_matrix"], dtype=np.float64).shape != (4, 4):
            raise DatasetError(f"{path}: frame {i} 'transform_matrix' is not 4x4")
    return meta


def frame_image_path(scene_dir: Path, file_path: str) -> Path:
    """Resolve a frame's `file_path` (relative to the scene, extension optional) to an existing image."""
    path = Path(scene_dir) / file_path
    if path.suffix == "":
        path = path.with_suffix(".png")
    return path


def read_rgba(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) float32 RGB and (H, W) float32 alpha in [0, 1]; images without alpha count as all foreground."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DatasetError(f"cannot read image {path}")
    scale = np.float32(65535.0 if img.dtype == np.uint16 else 255.0)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    data = np.divide(img, scale, dtype=np.float32)  # channel order converted on the integers: half the time
    alpha = data[..., 3] if data.shape[2] == 4 else np.ones(data.shape[:2], np.float32)
    return np.ascontiguousarray(data[..., :3]), alpha


def read_depth_png(path: Path) -> np.ndarray:
    """(H, W) float32 depth in scene units from a 16-bit PNG in millimetres (0 = unknown)."""
    depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if depth is None:
        raise DatasetError(f"cannot read depth image {path}")
    if depth.ndim != 2 or depth.dtype != np.uint16:
        raise DatasetError(f"depth image {path} must be a single-channel 16-bit PNG (got {depth.dtype}, shape {depth.shape})")
    return depth.astype(np.float32) / 1000.0


def read_mask(path: Path) -> np.ndarray:
    """(H, W) int32 region labels written by stage 1."""
    try:
        mask = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DatasetError(f"cannot read mask {path}: {err}") from err
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise DatasetError(f"mask {path} must be a 2-D integer array (got {mask.dtype}, shape {mask.shape})")
    return mask.astype(np.int32)


def target_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """Output size for the 3DGS-style `--resolution` option: -1 or 1 keep, 2/4/8 divide, larger values set the width."""
    if resolution in (-1, 1):
        return width, height
    if resolution in (2, 4, 8):
        return round(width / resolution), round(height / resolution)
    if resolution <= 0:
        raise ValueError(f"--resolution must be -1, 1, 2, 4, 8 or a target width in pixels, got {resolution}")
    return resolution, round(height * resolution / width)


def _resize(array: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    if (array.shape[1], array.shape[0]) == size:
        return array
    return cv2.resize(array, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def _check_size(path: Path, array: np.ndarray, expected: tuple[int, int], what: str) -> None:
    if array.shape[:2] != expected:
        raise DatasetError(f"{what} {path} has size {array.shape[1]}x{array.shape[0]}, expected {expected[1]}x{expected[0]}")


def load_cameras(
    scene_dir: str | Path,
    state: int,
    split: str,
    resolution: int = -1,
    load_images: bool = True,
    load_depth: bool = True,
    load_masks: bool = True,
) -> list[Camera]:
    """Cameras (with images, depth and masks when present) of one state and split, on the CPU."""
    scene_dir = Path(scene_dir)
    if not scene_dir.is_dir():
        raise DatasetError(f"scene folder {scene_dir} does not exist")
    tpath = transforms_path(scene_dir, state, split)
    meta = read_transforms(tpath)
    cameras: list[Camera] = []
    native: tuple[int, int] | None = None
    for uid, frame in enumerate(meta["frames"]):
        img_path = frame_image_path(scene_dir, frame["file_path"])
        if not img_path.is_file():
            raise DatasetError(f"{tpath}: frame {uid} image {img_path} is missing")
        rgb, alpha = read_rgba(img_path)
        if native is None:
            native = rgb.shape[:2]
        elif rgb.shape[:2] != native:
            raise DatasetError(
                f"{img_path} has size {rgb.shape[1]}x{rgb.shape[0]} but earlier images of {tpath.name} are {native[1]}x{native[0]}"
            )
        h0, w0 = native
        width, height = target_size(w0, h0, resolution)
        fovx = float(meta["camera_angle_x"])
        fx = fov_to_focal(fovx, w0) * width / w0
        fy = fov_to_focal(float(meta["camera_angle_y"]), h0) * height / h0 if "camera_angle_y" in meta else fx
        w2c = blender_c2w_to_opencv_w2c(np.asarray(frame["transform_matrix"], dtype=np.float64))
        cam = Camera(
            uid=uid, state=state, split=split, image_name=img_path.stem, width=width, height=height,
            fx=fx, fy=fy, cx=width / 2.0, cy=height / 2.0,
            world_to_cam=torch.from_numpy(w2c).float(),
        )
        if load_images:
            rgb = _resize(rgb, (width, height), nearest=False)
            alpha = _resize(alpha, (width, height), nearest=False)
            cam.image = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
            cam.alpha = torch.from_numpy(alpha)[None]
        depth_path = companion_path(img_path, "depth", ".png")
        if load_depth and depth_path.is_file():
            depth = read_depth_png(depth_path)
            _check_size(depth_path, depth, native, "depth image")
            cam.depth = torch.from_numpy(_resize(depth, (width, height), nearest=True))[None]
        mask_path = companion_path(img_path, "mask", ".npy")
        if load_masks and mask_path.is_file():
            mask = read_mask(mask_path)
            _check_size(mask_path, mask, native, "mask")
            cam.mask = torch.from_numpy(_resize(mask, (width, height), nearest=True))
        cameras.append(cam)
    return cameras


def camera_extent(cameras: list[Camera]) -> float:
    """3DGS's scene scale: 1.1 x the largest distance of a camera centre from the centres' mean."""
    centres = torch.stack([c.camera_center for c in cameras])
    return 1.1 * float((centres - centres.mean(0)).norm(dim=1).max())

