"""What one joint state shows: its surface points and, along every training camera's rays, the space it sees empty.

Stage 3 asks of a point x (a canonical point, maybe moved by a candidate motion) what the other state says about it
(`Observation.judge`):

- SUPPORTED: x lies within `tolerance` of the state's surface points, seen from the same side: the state shows that
  surface there. Every surface point carries the side its cameras saw it from (`seen_sides`: the mean direction to
  the cameras that see it); a point moved onto a surface seen from the other side (a door's inner face onto the
  closed door's outer face) is not supported by it.
- FREE: the state's cameras see through x: in at least `min_free_views` views x projects into the image in front of
  the first visible surface by more than `margin`, or onto background. The state shows empty space there, so a
  surface at x contradicts it.
- HIDDEN: neither. x lies behind what the cameras see (inside the body, behind a closed door) or outside every view:
  the state says nothing about it.

The first surface along each ray comes from the state's own points, splatted into a depth map per view at a reduced
size (`max_side` pixels) so that the points cover it without holes; a 3x3 minimum filter closes the gaps left
between samples. When a view carries its silhouette (the input alpha), background pixels are empty space whatever
the points say, and pixels inside the silhouette that no point reaches are unknown rather than empty.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from utils.neighbours import query

SUPPORTED, HIDDEN, FREE = 0, 1, 2
# Costs of a surface at a point by what the state shows there: SUPPORT_COST * (d / tolerance)^2 on its surface (d
# the distance to it), HIDDEN_COST where it hides the point (no evidence for or against: the worst landing), and
# FREE_COST where it sees empty space.
SUPPORT_COST, HIDDEN_COST, FREE_COST = 0.5, 0.5, 1.0
NEAR_PLANE = 1e-3  # scene units: points closer to a camera than this are behind it
SIDE_NEIGHBOURS = 8  # surface points within the tolerance searched for one seen from the same side


@dataclass(frozen=True)
class View:
    """One training camera of a state: intrinsics `K` (3, 3), OpenCV world-to-camera `world_to_cam` (4, 4), image
    size, and optionally its silhouette (H, W) bool (alpha > 0.5)."""

    K: np.ndarray
    world_to_cam: np.ndarray
    width: int
    height: int
    silhouette: np.ndarray | None = None

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (N, 2) (pixel (u, v) spans [u, u+1) x [v, v+1)) and depths (N,) of world points (N, 3)."""
        cam = points @ self.world_to_cam[:3, :3].T + self.world_to_cam[:3, 3]
        z = cam[:, 2]
        safe = np.where(z > NEAR_PLANE, z, np.inf)
        uv = np.stack([self.K[0, 0] * cam[:, 0] / safe + self.K[0, 2], self.K[1, 1] * cam[:, 1] / safe + self.K[1, 2]],
                      axis=1)
        return uv, z


def depth_map(view: View, points: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The view's first-surface depth (h, w) from the state's `points` (N, 3), at most `max_side` pixels on a side:
    +inf where the view sees background, NaN where it is unknown; and the scale from full-size pixels to it."""
    scale = min(1.0, max_side / max(view.width, view.height))
    w, h = max(1, int(round(view.width * scale))), max(1, int(round(view.height * scale)))
    uv, z = view.project(points)
    pix = np.floor(uv * scale).astype(np.int64)
    ok = (z > NEAR_PLANE) & (pix[:, 0] >= 0) & (pix[:, 0] < w) & (pix[:, 1] >= 0) & (pix[:, 1] < h)
    flat, z = pix[ok, 1] * w + pix[ok, 0], z[ok]
    order = np.lexsort((z, flat))
    first = np.ones(len(order), dtype=bool)
    first[1:] = flat[order][1:] != flat[order][:-1]
    depth = np.full(h * w, np.inf)
    depth[flat[order][first]] = z[order][first]
    depth = ndimage.minimum_filter(depth.reshape(h, w), size=3, mode="nearest")
    if view.silhouette is not None:
        foreground = _block_any(view.silhouette, (h, w))
        depth = np.where(foreground, np.where(np.isfinite(depth), depth, np.nan), np.inf)
    return depth, scale


def _block_any(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) bool: whether any pixel of the full-size `mask` (H, W) inside each reduced pixel is set."""
    H, W = mask.shape
    h, w = size
    rows = np.minimum((np.arange(H) * h) // H, h - 1)
    cols = np.minimum((np.arange(W) * w) // W, w - 1)
    out = np.zeros(size, dtype=bool)
    ys, xs = np.nonzero(mask)
    out[rows[ys], cols[xs]] = True
    return out


class Observation:
    """One state's surface points and free space, for `judge` (see the module docstring)."""

    def __init__(self, points: np.ndarray, views: list[View], *, tolerance: float, margin: float,
                 min_free_views: int = 2, max_side: int = 160) -> None:
        if len(points) == 0:
            raise ValueError("a state with no surface points cannot be observed")
        self.points = np.asarray(points, dtype=np.float64)
        self.tree = cKDTree(self.points)
        self.tolerance, self.margin, self.min_free_views = tolerance, margin, min_free_views
        maps = [depth_map(view, self.points, max_side) for view in views]
        # every view's pixel projection (K scaled to the reduced map) and its map, flattened one after the other
        self._projections = np.stack([np.diag([s, s, 1.0]) @ v.K @ v.world_to_cam[:3] for v, (_, s) in
                                      zip(views, maps)]) if views else np.zeros((0, 3, 4))
        self._sizes = np.array([d.shape for d, _ in maps], dtype=np.int64).reshape(-1, 2)
        self._offsets = np.concatenate([[0], np.cumsum(self._sizes.prod(axis=1))[:-1]]).astype(np.int64)
        self._depths = np.concatenate([d.ravel() for d, _ in maps]) if maps else np.zeros(0)
        self._centres = np.stack([-v.world_to_cam[:3, :3].T @ v.world_to_cam[:3, 3] for v in views]) if views \
            else np.zeros((0, 3))
        self.sides = self.seen_sides(self.points)

    def _project(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Depths (V, n) of points `x` (n, 3) in every view, the first surface's depth at their pixels (V, n) (NaN
        outside the view or behind the camera) and whether they fall inside the view (V, n)."""
        h, w = self._sizes[:, 0, None], self._sizes[:, 1, None]
        cam = np.matmul(x, self._projections[:, :, :3].transpose(0, 2, 1)) + self._projections[:, None, :, 3]
        z = cam[..., 2]
        safe = np.where(z > NEAR_PLANE, z, np.inf)
        u = np.floor(cam[..., 0] / safe).astype(np.int64)
        v = np.floor(cam[..., 1] / safe).astype(np.int64)
        inside = (z > NEAR_PLANE) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        index = np.where(inside, self._offsets[:, None] + v * w + u, 0)
        return z, np.where(inside, self._depths[index], np.nan), inside

    def seen_sides(self, points: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """(N, 3) unit mean direction from each of `points` (N, 3) to the cameras that see it (within `margin` of
        the first surface); zero where no camera sees it."""
        sides = np.zeros((len(points), 3))
        for lo in range(0, len(points), chunk):
            x = points[lo:lo + chunk]
            z, surface, _ = self._project(x)
            with np.errstate(invalid="ignore"):
                seen = np.abs(z - surface) <= self.margin
            to_cam = self._centres[:, None, :] - x[None]
            to_cam /= np.linalg.norm(to_cam, axis=2, keepdims=True)
            total = (to_cam * seen[..., None]).sum(axis=0)
            norm = np.linalg.norm(total, axis=1, keepdims=True)
            sides[lo:lo + chunk] = np.where(norm > 0, total / np.maximum(norm, 1e-12), 0.0)
        return sides

    def distance(self, points: np.ndarray, reach: float = np.inf) -> np.ndarray:
        """(N,) distance of `points` (N, 3) to the nearest surface point (inf beyond `reach`)."""
        return query(self.tree, points, distance_upper_bound=reach)[0]

    def free_views(self, points: np.ndarray, chunk: int = 8192) -> np.ndarray:
        """(N,) number of views that see through each of `points` (N, 3)."""
        count = np.zeros(len(points), dtype=np.int64)
        for lo in range(0, len(points), chunk):
            z, surface, _ = self._project(points[lo:lo + chunk])
            with np.errstate(invalid="ignore"):
                count[lo:lo + chunk] = ((surface == np.inf) | (z < surface - self.margin)).sum(axis=0)
        return count

    def near_same_side(self, points: np.ndarray, sides: np.ndarray | None, reach: float
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Distance (N,) from `points` (N, 3) to the nearest surface point within `reach` seen from the same side as
        `sides` (N, 3) (any point where a side is unknown; inf: none), and that point's index (N,) (len(self.points):
        none)."""
        dist, index = query(self.tree, points, distance_upper_bound=reach)
        if sides is None:
            return dist, index
        found = np.isfinite(dist)
        # the nearest point is the answer where it faces the same way (most points); search further only elsewhere
        redo = np.flatnonzero(found & (np.einsum("nj,nj->n", sides, self.sides[np.where(found, index, 0)]) < 0))
        if len(redo):
            dist[redo], index[redo] = self._nearest_facing(points[redo], sides[redo], reach)
        return dist, index

    def _nearest_facing(self, points: np.ndarray, sides: np.ndarray, reach: float) -> tuple[np.ndarray, np.ndarray]:
        """`near_same_side` among each point's SIDE_NEIGHBOURS nearest surface points."""
        dist, index = query(self.tree, points, k=SIDE_NEIGHBOURS, distance_upper_bound=reach)
        dist, index = dist.reshape(len(points), -1), index.reshape(len(points), -1)
        found = np.isfinite(dist)
        facing = np.einsum("nj,nkj->nk", sides, self.sides[np.where(found, index, 0)]) >= 0
        dist = np.where(found & facing, dist, np.inf)
        best = np.argmin(dist, axis=1)
        rows = np.arange(len(points))
        return dist[rows, best], np.where(np.isfinite(dist[rows, best]), index[rows, best], len(self.points))

    def judge(self, points: np.ndarray, sides: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Status (N,) int8 (SUPPORTED, HIDDEN or FREE) of `points` (N, 3) seen from `sides` (N, 3) (None: any
        side), and their distance (N,) to the surface seen from their side (inf beyond 4 tolerances)."""
        points = np.asarray(points, dtype=np.float64)
        dist = self.near_same_side(points, sides, 4 * self.tolerance)[0]
        status = np.full(len(points), SUPPORTED, dtype=np.int8)
        away = dist > self.tolerance
        if away.any():
            free = self.free_views(points[away]) >= self.min_free_views
            status[np.flatnonzero(away)] = np.where(free, FREE, HIDDEN)
        return status, dist

    def costs(self, points: np.ndarray, sides: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Cost (N,) of surfaces at `points` (N, 3) seen from `sides` (N, 3) by what this state shows there (see
        SUPPORT_COST), and which are supported (N,) bool."""
        status, dist = self.judge(points, sides)
        cost = np.where(status == SUPPORTED, SUPPORT_COST * np.minimum(dist / self.tolerance, 1.0) ** 2,
                        np.where(status == HIDDEN, HIDDEN_COST, FREE_COST))
        return cost, status == SUPPORTED
