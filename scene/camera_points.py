"""Coloured points made from a scene's cameras: back-projected depth, a visual hull from the silhouettes and random
points where the views look (stage 2's initial point clouds and rendered surfaces)."""
from __future__ import annotations

import numpy as np
import torch

from scene.cameras import Camera


def backproject_depth(
    cameras: list[Camera], alpha_threshold: float = 0.5, min_depth: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """World points (M, 3) and colours (M, 3) of every foreground pixel with valid depth in `cameras`."""
    points, colours = [], []
    for cam in cameras:
        if cam.depth is None or cam.image is None or cam.alpha is None:
            continue
        depth = cam.depth[0]
        valid = (cam.alpha[0] > alpha_threshold) & (depth > min_depth)
        v, u = torch.nonzero(valid, as_tuple=True)
        z = depth[v, u]
        x = (u.float() + 0.5 - cam.cx) / cam.fx * z
        y = (v.float() + 0.5 - cam.cy) / cam.fy * z
        cam_pts = torch.stack([x, y, z], dim=1)
        c2w = cam.cam_to_world
        points.append((cam_pts @ c2w[:3, :3].T + c2w[:3, 3]).cpu().numpy())
        colours.append(cam.image[:, v, u].T.cpu().numpy())
    if not points:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32)
    return np.concatenate(points).astype(np.float32), np.concatenate(colours).astype(np.float32)


def look_at_centre(cameras: list[Camera]) -> torch.Tensor:
    """(3,) least-squares point closest to every camera's optical axis (what an object-centric capture looks at), on
    the CPU whatever the cameras' device."""
    eye = torch.eye(3)
    lhs, rhs = torch.zeros(3, 3), torch.zeros(3)
    for cam in cameras:
        axis = cam.cam_to_world[:3, 2].cpu()
        proj = eye - torch.outer(axis, axis)
        lhs += proj
        rhs += proj @ cam.camera_center.cpu()
    return torch.linalg.lstsq(lhs, rhs).solution


def _look_at_box(cameras: list[Camera]) -> tuple[torch.Tensor, float]:
    """Centre (3,) and half-side of the cube the cameras look at: around their look-at centre, half the nearest
    camera's distance to it (CPU)."""
    centre = look_at_centre(cameras)
    return centre, 0.5 * float(min((cam.camera_center.cpu() - centre).norm() for cam in cameras))


def _box_samples(box: tuple[torch.Tensor, float], num_samples: int, rng: np.random.Generator) -> torch.Tensor:
    """(num_samples, 3) uniform points in the cube `box` (`_look_at_box`)."""
    centre, radius = box
    return torch.from_numpy(rng.uniform(-radius, radius, size=(num_samples, 3)).astype(np.float32)) + centre


def _pixels(cam: Camera, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel columns u (M,), rows v (M,) (clamped into the image) and whether each of `points` (M, 3, CPU) lies in
    front of `cam` and inside its frame (M,) bool."""
    world_to_cam = cam.world_to_cam.cpu()
    cam_pts = points @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    z = cam_pts[:, 2].clamp(min=1e-6)
    u = (cam_pts[:, 0] / z * cam.fx + cam.cx).floor().long()
    v = (cam_pts[:, 1] / z * cam.fy + cam.cy).floor().long()
    in_frame = (cam_pts[:, 2] > 0) & (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
    return u.clamp(0, cam.width - 1), v.clamp(0, cam.height - 1), in_frame


def _seen_by_half(seen: torch.Tensor, cameras: list[Camera]) -> torch.Tensor:
    """(M,) bool: the view counts `seen` (M,) reach half of `cameras` (and at least one)."""
    return seen >= max(1.0, 0.5 * len(cameras))


def visual_hull_points(
    cameras: list[Camera], num_samples: int = 200_000, alpha_threshold: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Random points inside the silhouettes of the views (for datasets without depth), coloured by their mean projection.

    Samples uniformly in a box around the cameras' look-at region and keeps points that project inside the alpha mask of
    every view that sees them, among points seen by at least half of the views. Cameras on the CPU.
    """
    pts = _box_samples(_look_at_box(cameras), num_samples, np.random.default_rng(seed))
    inside = torch.ones(num_samples, dtype=torch.bool)
    colour_sum = torch.zeros(num_samples, 3)
    seen = torch.zeros(num_samples)
    for cam in cameras:
        u, v, in_frame = _pixels(cam, pts)
        inside &= ~in_frame | (cam.alpha[0, v, u] > alpha_threshold)
        colour_sum += cam.image[:, v, u].T * in_frame[:, None]
        seen += in_frame.float()
    keep = inside & _seen_by_half(seen, cameras)
    colours = colour_sum[keep] / seen[keep, None]
    return pts[keep].numpy(), colours.numpy()


def random_points_in_views(cameras: list[Camera], num_points: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """3DGS's random initialisation bounded by the cameras: `num_points` points (M, 3) uniform in the look-at box
    where at least half of the views see them, with uniform random colours (M, 3). Uses only the cameras' geometry."""
    if num_points < 1:
        raise ValueError(f"num_points must be positive, got {num_points}")
    rng, box = np.random.default_rng(seed), _look_at_box(cameras)
    kept, total = [], 0
    for _ in range(16):  # the look-at box is mostly in view for object-centric captures: one or two rounds
        pts = _box_samples(box, 2 * num_points, rng)
        seen = sum(_pixels(cam, pts)[2].float() for cam in cameras)
        kept.append(pts[_seen_by_half(seen, cameras)])
        total += len(kept[-1])
        if total >= num_points:
            break
    points = torch.cat(kept)[:num_points].numpy()
    if len(points) == 0:
        raise ValueError("no point of the cameras' look-at box is seen by half of the views; check the camera poses")
    return points, rng.uniform(0.0, 1.0, size=points.shape).astype(np.float32)


