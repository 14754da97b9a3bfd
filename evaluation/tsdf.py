"""Truncated signed distance fusion of depth maps into a dense voxel grid (PyTorch, CPU or CUDA), and meshing.

Per view every voxel centre is projected into the image (nearest pixel, OpenCV camera, pixel (u, v) covering
[u, u+1) x [v, v+1)); its signed distance along the view direction is sdf = depth(pixel) - z (positive in front
of the surface). Updates are a running weighted average of tsdf = min(sdf / trunc, 1):
- a voxel in front of a valid depth sample is always updated (far in front it is carved to +1, empty space);
- a voxel behind it is updated only within `behind` (default `trunc`) of the surface, so space hidden behind a
  surface stays unobserved. The symmetric band measured best on a box + thin slab (2 and 4 voxels thick, 24
  views): mean surface error 0.2 voxel, the slab thickened by under half a voxel per side; a band of 1-1.5
  voxels left the interior too weakly negative and broke the surface into fragments;
- pixels with depth 0 or a zero `weight_mask` do not update, unless `carve_empty=True`: then those background
  pixels carve every voxel on their ray to +1. For per-part meshes render each part alone and pass its alpha
  (thresholded) as the mask with carving on: pixels where the part is absent then clear floaters and the
  other parts' space, and voxels never seen by any view stay unobserved.
`extract_mesh` runs marching cubes and keeps only triangles whose cube edges join observed voxels, so the grid
border and never-seen regions make no spurious surfaces.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import trimesh
from scipy.ndimage import map_coordinates
from skimage.measure import marching_cubes

Tensorish = torch.Tensor | np.ndarray


def default_bounds(points: Tensorish, margin: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounds `(3,), (3,)` of `(N, 3)` points, padded on every side by `margin` x the largest side."""
    pts = torch.as_tensor(points).detach().cpu().double().numpy()
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise ValueError(f"default_bounds needs a non-empty (N, 3) point array, got shape {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise ValueError("default_bounds got non-finite points")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    pad = margin * float((hi - lo).max())
    return lo - pad, hi + pad


class TSDFVolume:
    """Dense TSDF grid over `[bounds_min, bounds_max]`; voxel i sits at `bounds_min + i * voxel_size`.

    `trunc` (default 4 voxels) scales the stored distance; `behind` (default `trunc`) is how far behind an
    observed surface voxels are still updated. Integration walks the grid in slabs of about `chunk` voxels,
    so the temporary memory is bounded whatever the grid size.
    """

    def __init__(self, bounds_min: Tensorish, bounds_max: Tensorish, voxel_size: float,
                 trunc: float | None = None, behind: float | None = None,
                 device: torch.device | str = "cpu", chunk: int = 1 << 21) -> None:
        lo = np.asarray(bounds_min, dtype=np.float64).reshape(-1)
        hi = np.asarray(bounds_max, dtype=np.float64).reshape(-1)
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(hi > lo):
            raise ValueError(f"TSDF bounds must be 3 numbers each with max > min, got {lo} and {hi}")
        if not voxel_size > 0:
            raise ValueError(f"TSDF voxel_size must be positive, got {voxel_size}")
        self.voxel_size = float(voxel_size)
        self.trunc = float(trunc) if trunc is not None else 4.0 * self.voxel_size
        self.behind = float(behind) if behind is not None else self.trunc
        if not (self.trunc > 0 and self.behind > 0):
            raise ValueError(f"TSDF trunc and behind must be positive, got {self.trunc} and {self.behind}")
        self.device = torch.device(device)
        self.origin = lo
        self.shape = tuple(int(math.ceil((h - l) / self.voxel_size)) + 1 for l, h in zip(lo, hi))
        self.chunk = int(chunk)
        self.tsdf = torch.ones(self.shape, dtype=torch.float32, device=self.device)
        self.weight = torch.zeros(self.shape, dtype=torch.float32, device=self.device)
        self.color: torch.Tensor | None = None
        self.color_weight: torch.Tensor | None = None

    def _as_tensor(self, value: Tensorish) -> torch.Tensor:
        return torch.as_tensor(value).to(device=self.device, dtype=torch.float32)

    def _check_view(self, depth: torch.Tensor, K: torch.Tensor, world_to_cam: torch.Tensor,
                    weight_mask: torch.Tensor | None, color: torch.Tensor | None) -> None:
        """Shapes of one view's inputs, with an error saying which one is wrong."""
        if depth.dim() != 2:
            raise ValueError(f"TSDF depth must be (H, W), got {tuple(depth.shape)}")
        if K.shape != (3, 3) or world_to_cam.shape != (4, 4):
            raise ValueError(f"TSDF needs K (3, 3) and world_to_cam (4, 4), got {tuple(K.shape)} and "
                             f"{tuple(world_to_cam.shape)}")
        if weight_mask is not None and weight_mask.shape != depth.shape:
            raise ValueError(f"TSDF weight_mask {tuple(weight_mask.shape)} does not match depth {tuple(depth.shape)}")
        if color is not None and color.shape != (3, *depth.shape):
            raise ValueError(f"TSDF color must be (3, H, W) = (3, {depth.shape[0]}, {depth.shape[1]}), "
                             f"got {tuple(color.shape)}")
        if not torch.isfinite(depth).all():
            raise ValueError("TSDF depth has non-finite values")

    def _slab_projection(self, i0: int, i1: int, projection: torch.Tensor) -> torch.Tensor:
        """`(3, i1-i0, ny, nz)` homogeneous image coordinates (u w, v w, w) of the voxel centres with first index in
        [i0, i1), where `projection` is the (3, 4) matrix K [R | t] and w the camera z."""
        axes = [torch.arange(n, device=self.device, dtype=torch.float32) * self.voxel_size for n in self.shape]
        axes[0] = axes[0][i0:i1]
        origin = projection[:, :3] @ torch.as_tensor(self.origin, dtype=torch.float32, device=self.device)
        offset = origin + projection[:, 3]
        steps = [projection[:, k, None] * axis for k, axis in enumerate(axes)]  # each (3, n_k)
        return (offset[:, None, None, None] + steps[0][:, :, None, None] + steps[1][:, None, :, None]
                + steps[2][:, None, None, :])

    @torch.no_grad()
    def integrate(self, depth: Tensorish, K: Tensorish, world_to_cam: Tensorish,
                  weight_mask: Tensorish | None = None, color: Tensorish | None = None,
                  carve_empty: bool = False) -> None:
        """Fuse one view.

        depth `(H, W)`: z-depth in scene units, 0 = none. K `(3, 3)`, world_to_cam `(4, 4)` (OpenCV axes).
        weight_mask `(H, W)` bool or float: per-pixel update weight, 0 = masked out. color `(3, H, W)` in [0, 1].
        carve_empty: background pixels (mask 0, or depth 0 when no mask is given) mark their whole ray empty.
        """
        depth, K, w2c = self._as_tensor(depth), self._as_tensor(K), self._as_tensor(world_to_cam)
        mask = None if weight_mask is None else self._as_tensor(weight_mask)
        color = None if color is None else self._as_tensor(color)
        self._check_view(depth, K, w2c, mask, color)
        height, width = depth.shape
        pix_weight = torch.ones_like(depth) if mask is None else mask.clamp(min=0.0)
        valid = ((depth > 0) & (pix_weight > 0)).reshape(-1)
        background = ((pix_weight <= 0) if mask is not None else (depth <= 0)).reshape(-1)
        if not carve_empty:
            background = torch.zeros_like(background)
        depth_flat, pix_weight = depth.reshape(-1), pix_weight.reshape(-1)
        color_flat = None if color is None else color.reshape(3, -1).T
        if color_flat is not None and self.color is None:
            self.color = torch.zeros((*self.shape, 3), dtype=torch.float32, device=self.device)
            self.color_weight = torch.zeros(self.shape, dtype=torch.float32, device=self.device)
        tsdf, weight = self.tsdf.view(-1), self.weight.view(-1)
        plane = self.shape[1] * self.shape[2]
        slab = max(1, self.chunk // plane)
        projection = K @ w2c[:3]
        for i0 in range(0, self.shape[0], slab):
            i1 = min(i0 + slab, self.shape[0])
            uw, vw, z = self._slab_projection(i0, i1, projection).reshape(3, -1)
            z_safe = z.clamp(min=1e-8)
            col, row = torch.floor(uw / z_safe), torch.floor(vw / z_safe)
            inside = ((z > 1e-8) & (col >= 0) & (col < width) & (row >= 0) & (row < height)).nonzero().squeeze(1)
            # index_select, not x[idx]: advanced indexing is an order of magnitude slower on CPU
            pix = (row.index_select(0, inside) * width + col.index_select(0, inside)).long()
            sdf = depth_flat.index_select(0, pix) - z.index_select(0, inside)
            surface = valid.index_select(0, pix) & (sdf >= -self.behind)
            update = (surface | background.index_select(0, pix)).nonzero().squeeze(1)
            vox = inside.index_select(0, update) + i0 * plane
            pix, sdf, surface = (t.index_select(0, update) for t in (pix, sdf, surface))
            value = torch.where(surface, (sdf / self.trunc).clamp(max=1.0), torch.ones_like(sdf))
            w = torch.where(surface, pix_weight.index_select(0, pix), torch.ones_like(sdf))
            self._accumulate(tsdf, weight, vox, value, w)
            if color_flat is not None:
                band = (surface & (sdf.abs() < self.trunc)).nonzero().squeeze(1)
                pix_band = pix.index_select(0, band)
                self._accumulate(self.color.view(-1, 3), self.color_weight.view(-1), vox.index_select(0, band),
                                 color_flat.index_select(0, pix_band), pix_weight.index_select(0, pix_band))

    @staticmethod
    def _accumulate(store: torch.Tensor, weight: torch.Tensor, vox: torch.Tensor, value: torch.Tensor,
                    w: torch.Tensor) -> None:
        """Running weighted average `store[vox] <- (store w_old + value w) / (w_old + w)` on flat
        `(N,)` or `(N, C)` views; vox `(M,)` linear voxel indices, value `(M,)` or `(M, C)`, w `(M,)`."""
        old_w = weight.index_select(0, vox)
        new_w = old_w + w
        expand = (-1,) + (1,) * (value.dim() - 1)
        mixed = (store.index_select(0, vox) * old_w.view(expand) + value * w.view(expand)) / new_w.view(expand)
        store.index_copy_(0, vox, mixed)
        weight.index_copy_(0, vox, new_w)

    def observed(self) -> torch.Tensor:
        """`(nx, ny, nz)` bool: voxels updated by at least one view."""
        return self.weight > 0

    def extract_mesh(self, level: float = 0.0) -> trimesh.Trimesh:
        """Marching-cubes surface at `level` (in units of trunc) in world coordinates, with vertex colours
        when colour was integrated. Triangles on cube edges touching an unobserved voxel are dropped.
        Returns an empty mesh when the observed region has no crossing of `level`."""
        tsdf = self.tsdf.cpu().numpy()
        observed = self.observed().cpu().numpy()
        if not observed.any() or not (tsdf[observed].min() < level < tsdf[observed].max()):
            return trimesh.Trimesh()
        verts, faces, _, _ = marching_cubes(tsdf, level=level)
        lo, hi = np.floor(verts).astype(np.int64), np.ceil(verts).astype(np.int64)
        good = observed[tuple(lo.T)] & observed[tuple(hi.T)]
        mesh = trimesh.Trimesh(verts * self.voxel_size + self.origin, faces, process=False)
        if self.color is not None:
            color = self.color.cpu().numpy()
            coloured = map_coordinates((self.color_weight > 0).float().cpu().numpy(), verts.T, order=1)
            # voxels that never got a colour hold 0: interpolate among the coloured ones only
            rgb = np.stack([map_coordinates(color[..., c], verts.T, order=1) for c in range(3)], axis=1)
            rgb /= np.maximum(coloured, 1e-6)[:, None]
            mesh.visual.vertex_colors = np.round(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)
        mesh.update_faces(good[faces].all(axis=1))
        mesh.remove_unreferenced_vertices()
        return mesh


def keep_large_components(mesh: trimesh.Trimesh, min_fraction: float = 1.0) -> trimesh.Trimesh:
    """The connected components (faces joined by shared edges) of `mesh` whose area is at least `min_fraction` of
    the largest one's: the largest alone at 1.0 (a rigid part is one piece), the pieces of an articulated object that
    open apart and no floaters at a small fraction. Kept faces and vertex colours are unchanged (no hole filling);
    labelling the faces instead of splitting the mesh into sub-meshes is 4-7x faster on marching-cubes meshes."""
    if len(mesh.faces) == 0:
        return mesh
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
    area = np.bincount(labels, weights=mesh.area_faces)
    keep = area >= min_fraction * area.max()
    if keep.all():
        return mesh
    kept = mesh.copy()
    kept.update_faces(keep[labels])
    kept.remove_unreferenced_vertices()
    return kept
