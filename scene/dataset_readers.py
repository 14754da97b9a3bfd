"""Readers for two-state articulated-object scenes (the PARIS / ArtGS / GEAR_Multi layout, docs/ARCHITECTURE.md).

A scene folder holds `transforms_{train,test}_{start,end}.json` and, per frame, an RGBA image and optionally a 16-bit
depth PNG in millimetres (`<...>/depth/<name>.png` beside `<...>/rgba/<name>.png`). Every stage reads it through
`load_cameras`, which validates what it reads before anything is trained or written: finite, rigid camera poses and
a finite field of view, `file_path` entries inside the scene folder, one image size per split, an alpha channel (or
`white_background`: alpha keyed from a white background), depth maps of the image's size for every frame or none
(a warning names the missing ones) and a sane `resolution`. Errors are `DatasetError`s naming the file and frame.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import cv2
import numpy as np
import torch

from scene.cameras import Camera
from scene.contract import STATES, mask_path
from utils.graphics_utils import blender_c2w_to_opencv_w2c, fov_to_focal
from utils.io_utils import read_json

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
MIN_IMAGE_SIDE = 16  # pixels: the smallest image side a --resolution may give (a few pixels hold no object)
RIGID_TOLERANCE = 1e-3  # largest |R^T R - I| entry of a camera rotation (float32 round-trips stay far below)
# A pixel of an RGB image belongs to the object when a channel differs from the white background by more than this:
# two 8-bit steps, above quantisation and compression noise.
KEY_TOLERANCE = 2.0 / 255.0


class DatasetError(ValueError):
    """A scene on disk is missing something or is inconsistent."""


def transforms_path(scene_dir: Path, state: int, split: str) -> Path:
    return Path(scene_dir) / f"transforms_{split}_{STATES[state]}.json"


def companion_path(image_path: Path, kind: str, suffix: str) -> Path:
    """Path of the depth/part file that belongs to an rgba image (`.../rgba/0000.png` -> `.../<kind>/0000<suffix>`)."""
    return image_path.parent.parent / kind / (image_path.stem + suffix)


def _check_angle(path: Path, meta: dict, key: str) -> None:
    value = meta[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < math.pi:
        raise DatasetError(f"{path}: {key!r} must be a field of view in radians between 0 and pi, got {value!r}")


def check_pose(path: Path, index: int, matrix: object) -> np.ndarray:
    """The frame's 4x4 camera-to-world matrix, checked to be finite and rigid (rotation, translation, last row
    0 0 0 1); errors name the file and the frame."""
    try:
        pose = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DatasetError(f"{path}: frame {index} 'transform_matrix' is not a 4x4 matrix of numbers") from err
    if pose.shape != (4, 4):
        raise DatasetError(f"{path}: frame {index} 'transform_matrix' is not 4x4 (shape {pose.shape})")
    if not np.isfinite(pose).all():
        raise DatasetError(f"{path}: frame {index} 'transform_matrix' holds NaN or infinite values")
    rotation = pose[:3, :3]
    if (not np.allclose(pose[3], [0.0, 0.0, 0.0, 1.0], atol=RIGID_TOLERANCE)
            or np.abs(rotation.T @ rotation - np.eye(3)).max() > RIGID_TOLERANCE or np.linalg.det(rotation) < 0):
        raise DatasetError(f"{path}: frame {index} 'transform_matrix' is not a rigid camera pose (a rotation, a "
                           "translation and the last row 0 0 0 1)")
    return pose


def read_transforms(path: Path) -> dict:
    """Read and validate one transforms json: its fields of view and every frame's file path and pose."""
    meta = read_json(path, "transforms file")
    if not isinstance(meta, dict) or "camera_angle_x" not in meta:
        raise DatasetError(f"{path}: missing 'camera_angle_x'")
    for key in ("camera_angle_x", "camera_angle_y"):
        if key in meta:
            _check_angle(path, meta, key)
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DatasetError(f"{path}: 'frames' must be a non-empty list")
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict) or "file_path" not in frame or "transform_matrix" not in frame:
            raise DatasetError(f"{path}: frame {i} needs 'file_path' and 'transform_matrix'")
        check_pose(path, i, frame["transform_matrix"])
    return meta


def frame_image_path(scene_dir: Path, file_path: object, source: Path | None = None, index: int = 0) -> Path:
    """Resolve a frame's `file_path` (relative to the scene, extension optional) to its image path; a path that
    leaves the scene folder (absolute, or through '..') is refused. Symbolic links inside the folder are followed
    as the file system does (a dataset may link its images)."""
    where = f"{source}: frame {index}" if source is not None else "frame"
    if not isinstance(file_path, str) or not file_path:
        raise DatasetError(f"{where} 'file_path' must be a non-empty string, got {file_path!r}")
    root = os.path.normpath(Path(scene_dir))
    path = Path(os.path.normpath(os.path.join(root, file_path)))
    if Path(file_path).is_absolute() or not path.is_relative_to(root) or path == Path(root):
        raise DatasetError(f"{where} 'file_path' {file_path!r} points outside the scene folder {scene_dir}")
    return path.with_suffix(".png") if path.suffix == "" else path


def key_alpha(rgb: np.ndarray) -> np.ndarray:
    """(H, W) float32 alpha of an RGB image (H, W, 3) in [0, 1] on a white background: 1 where a channel differs
    from white by more than KEY_TOLERANCE. White parts of the object itself are lost: give RGBA images for those."""
    return (rgb.min(axis=2) < 1.0 - KEY_TOLERANCE).astype(np.float32)


def read_rgba(path: Path, white_background: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) float32 RGB and (H, W) float32 alpha in [0, 1]. An image without alpha channel is refused, unless
    `white_background`: then its alpha is keyed from the white background (`key_alpha`)."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DatasetError(f"cannot read image {path}")
    scale = np.float32(65535.0 if img.dtype == np.uint16 else 255.0)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    data = np.divide(img, scale, dtype=np.float32)  # channel order converted on the integers: half the time
    rgb = np.ascontiguousarray(data[..., :3])
    if data.shape[2] == 4:
        return rgb, data[..., 3]
    if not white_background:
        raise DatasetError(f"image {path} has no alpha channel: GEAR needs the object's silhouette. Give RGBA images, "
                           "or pass --white_background if the images show the object on a white background (the "
                           "alpha is then keyed from the white)")
    return rgb, key_alpha(rgb)


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
    except (ValueError, OSError, EOFError) as err:
        raise DatasetError(f"cannot read mask {path}: {err}") from err
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise DatasetError(f"mask {path} must be a 2-D integer array (got {mask.dtype}, shape {mask.shape})")
    return mask.astype(np.int32)


def check_resolution(resolution: int) -> None:
    """Refuse a `--resolution` that is neither -1, 1, 2, 4, 8 nor a target width of at least MIN_IMAGE_SIDE."""
    if resolution not in (-1, 1, 2, 4, 8) and resolution < MIN_IMAGE_SIDE:
        raise ValueError(f"--resolution must be -1 or 1 (native), 2, 4 or 8 (downscale) or a target width of at "
                         f"least {MIN_IMAGE_SIDE} pixels, got {resolution}")


def target_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """Output size for the 3DGS-style `--resolution` option: -1 or 1 keep, 2/4/8 divide, larger values set the width
    (at most the native width); the result must keep both sides at least MIN_IMAGE_SIDE pixels."""
    check_resolution(resolution)
    if resolution in (-1, 1):
        return width, height
    if resolution in (2, 4, 8):
        size = round(width / resolution), round(height / resolution)
    elif resolution > width:
        raise ValueError(f"--resolution {resolution} is wider than the images ({width}x{height}); use -1 for the "
                         "native size")
    else:
        size = resolution, round(height * resolution / width)
    if min(size) < MIN_IMAGE_SIDE:
        raise ValueError(f"--resolution {resolution} makes the {width}x{height} images {size[0]}x{size[1]}, below "
                         f"{MIN_IMAGE_SIDE} pixels a side")
    return size


def _resize(array: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    if (array.shape[1], array.shape[0]) == size:
        return array
    return cv2.resize(array, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def _check_size(path: Path, array: np.ndarray, expected: tuple[int, int], what: str) -> None:
    if array.shape[:2] != expected:
        raise DatasetError(f"{what} {path} has size {array.shape[1]}x{array.shape[0]}, expected {expected[1]}x{expected[0]}")


def frame_paths(scene_dir: Path, tpath: Path, meta: dict) -> list[Path]:
    """The image path of every frame of a transforms file, checked to exist, inside the scene and of distinct
    names (outputs are keyed by the image name)."""
    paths, names = [], {}
    for i, frame in enumerate(meta["frames"]):
        path = frame_image_path(scene_dir, frame["file_path"], tpath, i)
        if not path.is_file():
            raise DatasetError(f"{tpath}: frame {i} image {path} is missing")
        if path.stem in names:
            raise DatasetError(f"{tpath}: frames {names[path.stem]} and {i} have the same image name {path.stem!r}; "
                               "outputs are named after the image, so names must differ within a split")
        names[path.stem] = i
        paths.append(path)
    return paths


def depth_paths(tpath: Path, images: list[Path]) -> list[Path | None]:
    """Each frame's depth PNG, or None for all when the split has no depth; when only some frames have one, a
    warning names the missing ones and those frames go without depth."""
    paths = [companion_path(image, "depth", ".png") for image in images]
    present = [path.is_file() for path in paths]
    if any(present) and not all(present):
        missing = [str(path) for path, ok in zip(paths, present) if not ok]
        log.warning("%s: %d of %d frames have no depth map (%s%s); they are trained without depth", tpath,
                    len(missing), len(paths), ", ".join(missing[:3]), ", ..." if len(missing) > 3 else "")
    return [path if ok else None for path, ok in zip(paths, present)]


def load_cameras(
    scene_dir: str | Path,
    state: int,
    split: str,
    resolution: int = -1,
    load_images: bool = True,
    load_depth: bool = True,
    mask_dir: str | Path | None = None,
    white_background: bool = False,
) -> list[Camera]:
    """Cameras (with images and depth when present) of one state and split, on the CPU, after `read_transforms`'s
    checks; with `mask_dir` (stage 1's `masks/` folder) also the label maps found there."""
    scene_dir = Path(scene_dir)
    if not scene_dir.is_dir():
        raise DatasetError(f"scene folder {scene_dir} does not exist")
    check_resolution(resolution)
    tpath = transforms_path(scene_dir, state, split)
    meta = read_transforms(tpath)
    images = frame_paths(scene_dir, tpath, meta)
    depths = depth_paths(tpath, images) if load_depth else [None] * len(images)
    cameras: list[Camera] = []
    native: tuple[int, int] | None = None
    for uid, (frame, img_path, depth_path) in enumerate(zip(meta["frames"], images, depths)):
        try:
            rgb, alpha = read_rgba(img_path, white_background)
        except DatasetError as err:
            raise DatasetError(f"{tpath}: frame {uid}: {err}") from err
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
        if depth_path is not None:
            depth = read_depth_png(depth_path)
            _check_size(depth_path, depth, native, "depth image")
            cam.depth = torch.from_numpy(_resize(depth, (width, height), nearest=True))[None]
        if mask_dir is not None:
            label_path = mask_path(mask_dir, state, split, img_path.stem)
            if label_path.is_file():
                mask = read_mask(label_path)
                _check_size(label_path, mask, native, "mask")
                cam.mask = torch.from_numpy(_resize(mask, (width, height), nearest=True))
        cameras.append(cam)
    return cameras


def camera_extent(cameras: list[Camera]) -> float:
    """3DGS's scene scale: 1.1 x the largest distance of a camera centre from the centres' mean."""
    centres = torch.stack([c.camera_center for c in cameras])
    return 1.1 * float((centres - centres.mean(0)).norm(dim=1).max())
