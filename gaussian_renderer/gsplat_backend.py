"""CUDA backend: one `gsplat.rasterization_2dgs` call renders colour, feature channels, depth, normals and distortion.

SH colours are evaluated with gsplat's fused kernel (the same one `rasterization_2dgs` uses when given SH), feature
channels are appended to them, and gsplat appends the centre depth as the last channel ("RGB+ED"), so everything
comes out of one rasterization pass. gsplat pads the channel count to a power of two internally and keeps depth last.
The wrapper adds no host synchronisation: only views, a few element-wise kernels and the SH evaluation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from gsplat import rasterization_2dgs, spherical_harmonics
from torch import Tensor

from gaussian_renderer.reference import camera_centers, depth_to_normal, mix_depth

_INFO_KEYS = ("radii", "means2d", "depths", "gradient_2dgs", "gaussian_ids", "width", "height", "n_cameras")


def render_gsplat(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    sh: Tensor,
    sh_degree: int,
    features: Tensor | None,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    backgrounds: Tensor,
    depth_ratio: float,
    near_plane: float,
    far_plane: float,
) -> dict:
    """Render N surfels into C cameras with gsplat (float32 CUDA tensors; same contract as `render_reference`).

    means (N, 3), quats (N, 4), scales (N, 3) linear, opacities (N,), sh (N, K, 3), features (N, F) or None,
    viewmats (C, 4, 4), Ks (C, 3, 3), backgrounds (C, 3). Images come back channel-first (C, X, H, W) as views,
    split (not sliced) from gsplat's one output so that their gradients meet in a single concatenation.
    """
    if not means.is_cuda:
        raise ValueError("the gsplat backend renders CUDA tensors only; use backend='reference' on the CPU")
    C = len(viewmats)
    dirs = means[None] - camera_centers(viewmats)[:, None]
    coeffs = sh[None] if C == 1 else sh.expand(C, -1, -1, -1)
    colors = torch.clamp_min(spherical_harmonics(sh_degree, dirs, coeffs) + 0.5, 0.0)
    if features is not None:
        colors = torch.cat([colors, features.expand(C, -1, -1)], dim=-1)
        backgrounds = F.pad(backgrounds, (0, features.shape[-1]))
    rendered, alpha, normals, surf_normals, distortion, median, meta = rasterization_2dgs(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, backgrounds=backgrounds,
        render_mode="RGB+ED", distloss=True, depth_mode="median" if depth_ratio == 1.0 else "expected",
    )
    num_features = 0 if features is None else features.shape[-1]
    rgb, feature_maps, expected = rendered.permute(0, 3, 1, 2).split([3, num_features, 1], dim=1)
    median = median.permute(0, 3, 1, 2)
    depth = mix_depth(expected, median, depth_ratio)
    if depth_ratio in (0.0, 1.0):
        surf_normal = surf_normals.reshape(C, height, width, 3).permute(0, 3, 1, 2)
    else:
        surf_normal = depth_to_normal(depth, viewmats, Ks)
    return {
        "render": rgb,
        "features": feature_maps if features is not None else None,
        "alpha": alpha.permute(0, 3, 1, 2),
        "depth": depth,
        "depth_expected": expected,
        "depth_median": median,
        "rend_normal": normals.permute(0, 3, 1, 2),
        "surf_normal": surf_normal,
        "rend_dist": distortion.permute(0, 3, 1, 2),
        "radii": meta["radii"],
        "info": {key: meta[key] for key in _INFO_KEYS},
    }
