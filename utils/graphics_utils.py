"""Camera geometry helpers: field of view <-> focal length, axis conventions, intrinsics, look-at poses."""
from __future__ import annotations

import math

import numpy as np

# Blender/OpenGL camera axes (x right, y up, z backward) -> OpenCV (x right, y down, z forward).
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def fov_to_focal(fov: float, pixels: int) -> float:
    """Focal length in pixels of a pinhole camera whose field of view `fov` (radians) spans `pixels`."""
    return pixels / (2.0 * math.tan(fov / 2.0))


def focal_to_fov(focal: float, pixels: int) -> float:
    """Field of view (radians) spanned by `pixels` at focal length `focal` (pixels)."""
    return 2.0 * math.atan(pixels / (2.0 * focal))


def blender_c2w_to_opencv_w2c(c2w: np.ndarray) -> np.ndarray:
    """Convert a (4, 4) camera-to-world matrix with OpenGL camera axes to an OpenCV world-to-camera matrix."""
    c2w_cv = np.asarray(c2w, dtype=np.float64) @ GL_TO_CV
    return np.linalg.inv(c2w_cv)


def intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """(3, 3) pinhole intrinsics; pixel (u, v) has its centre at (u + 0.5, v + 0.5)."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def look_at_w2c(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(4, 4) OpenCV world-to-camera matrix of a camera at `eye` looking at `target`, image up along `up`."""
    eye = np.asarray(eye, dtype=np.float64)
    forward = (np.asarray(target, dtype=np.float64) - eye) / np.linalg.norm(np.asarray(target) - eye)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    rotation = np.stack([right, np.cross(forward, right), forward])
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = rotation, -rotation @ eye
    return w2c
