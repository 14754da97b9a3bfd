"""CPU ray casting of a posed articulated object with Open3D: anti-aliased RGBA, z-depth and part ids per view.

Every pixel casts `supersample`^2 rays on a regular sub-pixel grid (odd counts, so one ray goes through the pixel
centre at (u + 0.5, v + 0.5)). Colour and alpha average the sub-rays (straight alpha = coverage); depth and part id
come from the centre ray alone, so they stay exactly on the surface. Shading is Lambert with the object's directional
light plus ambient (`data_tools.lighting`), two-sided (normals face the camera). Albedo comes from each part's
texture evaluated at the hit point mapped back to the part's closed configuration, so the texture moves with the part.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import open3d as o3d

from data_tools.lighting import FIXED_LIGHTING, Lighting
from data_tools.textures import Texture
from utils.graphics_utils import GL_TO_CV

MAX_DEPTH_MM = np.iinfo(np.uint16).max
MAX_PARTS = np.iinfo(np.uint8).max - 1  # part image ids 1..255


@dataclass(frozen=True)
class RenderedView:
    """One view: rgba (H, W, 4) uint8 with straight alpha, depth (H, W) uint16 z-depth in mm (0 = none), part (H, W)
    uint8 ids (0 = background, k + 1 = part k)."""

    rgba: np.ndarray
    depth_mm: np.ndarray
    part: np.ndarray


class StateScene:
    """The parts of one joint state in one Open3D ray-casting scene; geometry id k is part k (part image id k + 1)."""

    def __init__(self, vertices: list[np.ndarray], faces: list[np.ndarray], poses: np.ndarray,
                 textures: list[Texture], lighting: Lighting = FIXED_LIGHTING) -> None:
        """`vertices[k]` (V, 3) and `faces[k]` (F, 3) of part k as posed by `poses[k]` (4, 4) from its closed frame,
        lit by `lighting`."""
        if not (len(vertices) == len(faces) == len(poses) == len(textures)):
            raise ValueError("vertices, faces, poses and textures need one entry per part")
        if len(vertices) > MAX_PARTS:
            raise ValueError(f"{len(vertices)} parts do not fit 8-bit part images (at most {MAX_PARTS})")
        self.raycaster = o3d.t.geometry.RaycastingScene()
        for k, (verts, tris) in enumerate(zip(vertices, faces)):
            gid = self.raycaster.add_triangles(
                o3d.core.Tensor(np.ascontiguousarray(verts, dtype=np.float32)),
                o3d.core.Tensor(np.ascontiguousarray(tris, dtype=np.uint32)),
            )
            if gid != k:
                raise RuntimeError(f"Open3D gave geometry id {gid} to part {k}")
        self.to_closed = np.linalg.inv(poses)
        self.textures = textures
        self.lighting = lighting


def check_supersample(supersample: int) -> None:
    """Raise ValueError unless `supersample` is a positive odd number (one sub-ray must hit the pixel centre)."""
    if supersample < 1 or supersample % 2 == 0:
        raise ValueError(f"supersample must be a positive odd number (one sub-ray on the centre), got {supersample}")


@functools.lru_cache(maxsize=4)
def camera_directions(fx: float, fy: float, cx: float, cy: float, res: int, supersample: int) -> np.ndarray:
    """(3, res * res * s * s) float32 camera-frame (OpenCV) ray directions with z = 1, ordered (row, column,
    sub-row, sub-column). Stored transposed so rotating them is one fast matrix product; cached per camera."""
    offsets = (np.arange(supersample) + 0.5) / supersample
    v, u, sv, su = np.meshgrid(np.arange(res), np.arange(res), offsets, offsets, indexing="ij")
    directions = np.stack([(u + su - cx) / fx, (v + sv - cy) / fy, np.ones(u.shape)]).reshape(3, -1)
    directions = directions.astype(np.float32)
    directions.flags.writeable = False
    return directions


def pixel_rays(c2w_gl: np.ndarray, K: np.ndarray, res: int, supersample: int) -> np.ndarray:
    """(res * res * s * s, 6) float32 world rays (origin, direction) of every sub-pixel sample of one view.

    Directions are not normalised: their camera-frame z is 1, so a hit's `t` is its z-depth.
    """
    directions = camera_directions(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), res, supersample)
    c2w = np.asarray(c2w_gl, dtype=np.float64) @ GL_TO_CV
    rays = np.empty((directions.shape[1], 6), dtype=np.float32)
    rays[:, :3] = c2w[:3, 3]
    rays[:, 3:] = (c2w[:3, :3].astype(np.float32) @ directions).T
    return rays


def part_albedo(scene: StateScene, part_index: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 3) albedo at world hit points (N, 3) on parts `part_index` (N,), from each part's closed-frame texture."""
    albedo = np.zeros((len(points), 3))
    for k, texture in enumerate(scene.textures):
        on_part = part_index == k
        if on_part.any():
            to_closed = scene.to_closed[k]
            local = (to_closed[:3, :3] @ points[on_part].T).T + to_closed[:3, 3]  # BLAS-friendly layout
            albedo[on_part] = texture.albedo(local)
    return albedo


def shade(albedo: np.ndarray, normals: np.ndarray, ray_dirs: np.ndarray, lighting: Lighting) -> np.ndarray:
    """Two-sided Lambert + ambient: (N, 3) colour from albedo (N, 3), unit normals (N, 3) and ray directions (N, 3)."""
    facing = np.where((np.einsum("ij,ij->i", normals, ray_dirs) > 0)[:, None], -normals, normals)
    lambert = np.clip(facing @ np.asarray(lighting.direction), 0.0, None)
    return albedo * (lighting.ambient + lighting.diffuse * lambert)[:, None]


def render_view(scene: StateScene, c2w_gl: np.ndarray, K: np.ndarray, res: int, supersample: int = 3) -> RenderedView:
    """Render one square view of `scene` from the OpenGL camera-to-world pose `c2w_gl` (4, 4), intrinsics K (3, 3)."""
    check_supersample(supersample)
    n_sub, n_pixels = supersample * supersample, res * res
    rays = pixel_rays(c2w_gl, K, res, supersample)
    hits = scene.raycaster.cast_rays(o3d.core.Tensor(rays))
    t_hit, part_index = hits["t_hit"].numpy(), hits["geometry_ids"].numpy()

    idx = np.flatnonzero(np.isfinite(t_hit))
    points = rays[idx, :3] + t_hit[idx, None] * rays[idx, 3:]
    albedo = part_albedo(scene, part_index[idx], points)
    colour = shade(albedo, hits["primitive_normals"].numpy()[idx], rays[idx, 3:], scene.lighting)
    pixel = idx // n_sub
    count = np.bincount(pixel, minlength=n_pixels)
    rgb = np.stack([np.bincount(pixel, colour[:, c], minlength=n_pixels) for c in range(3)], axis=1)
    rgba = np.concatenate([rgb / np.maximum(count, 1)[:, None], (count / n_sub)[:, None]], axis=1)
    rgba = np.round(255.0 * np.clip(rgba, 0.0, 1.0)).astype(np.uint8).reshape(res, res, 4)

    centre_t, centre_part = t_hit[n_sub // 2::n_sub], part_index[n_sub // 2::n_sub]
    centre_hit = np.isfinite(centre_t)
    depth_mm = np.round(1000.0 * np.where(centre_hit, centre_t, 0.0))
    if depth_mm.max() > MAX_DEPTH_MM:
        raise ValueError(f"depth {depth_mm.max() / 1000:.2f} exceeds what a 16-bit millimetre PNG can hold")
    part = np.where(centre_hit, centre_part.astype(np.int64) + 1, 0)
    return RenderedView(rgba=rgba, depth_mm=depth_mm.astype(np.uint16).reshape(res, res),
                        part=part.astype(np.uint8).reshape(res, res))
