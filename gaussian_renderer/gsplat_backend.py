"""CUDA backend: gsplat's 2DGS primitives render colour, feature channels, depth, normals and distortion in one pass.

The pipeline is gsplat's own (`rasterization_2dgs`), composed here from its primitives: project the surfels
(`fully_fused_projection_2dgs`), bin them into tiles (`isect_tiles`, `isect_offset_encode`) and composite (gsplat's
2DGS rasterizer). Composing them ourselves spares host synchronisations: gsplat's wrapper inverts the view matrices
with `torch.linalg.inv` twice per render, and its rasterizer's backward ends with `torch.cuda.synchronize()`; each
makes the host wait for the device. The rasterizer here is gsplat's autograd function with that backward minus the
synchronise (`_Rasterize2DGS`; a private gsplat class, hence the pinned gsplat version). One synchronisation
remains: `isect_tiles` reads how many tile intersections to allocate. SH colours are evaluated with gsplat's fused
kernel, feature channels are appended, and the centre depth goes last ("RGB+ED").
"""
from __future__ import annotations

import math

import torch
from gsplat import fully_fused_projection_2dgs, isect_offset_encode, isect_tiles, spherical_harmonics
from gsplat.cuda._wrapper import _make_lazy_cuda_func, _RasterizeToPixels2DGS
from torch import Tensor

from gaussian_renderer.reference import camera_centers, mix_depth

TILE_SIZE = 16
EPS_2D = 0.3  # gsplat's default low-pass filter of the projected surfel
_SUPPORTED_CHANNELS = (1, 2, 3, 4, 8, 16, 32, 64, 128, 256, 512)


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
    ranges: list[tuple[int, int]] | None = None,
) -> dict:
    """Render N surfels into C cameras with gsplat (float32 CUDA tensors; same contract as `render_reference`: the
    keys of `gaussian_renderer`'s table except `surf_normal`, which `render_batch` adds).

    means (N, 3), quats (N, 4), scales (N, 3) linear, opacities (N,), sh (N, K, 3), features (N, F) or None,
    viewmats (C, 4, 4), Ks (C, 3, 3), backgrounds (C, 3). Images come back channel-first (C, X, H, W) as views,
    split (not sliced) from gsplat's one output so that their gradients meet in a single concatenation.
    `ranges` (C pairs [a, b)) lets camera c draw only surfels a..b-1 (several models side by side, `render_each`):
    the others' radii are zeroed before binning, and info["gradient_2dgs"] becomes one leaf (1, b - a, 2) per camera.
    """
    if not means.is_cuda:
        raise ValueError("the gsplat backend renders CUDA tensors only; use backend='reference' on the CPU")
    C, N = len(viewmats), len(means)
    radii, means2d, depths, ray_transforms, normals = fully_fused_projection_2dgs(
        means, quats, scales, viewmats, Ks, width, height, EPS_2D, near_plane, far_plane)
    if ranges is not None:
        radii = radii * _range_mask(ranges, N, means.device)[..., None]
    tiles_wide, tiles_high = math.ceil(width / TILE_SIZE), math.ceil(height / TILE_SIZE)
    _, isect_ids, flatten_ids = isect_tiles(means2d, radii, depths, TILE_SIZE, tiles_wide, tiles_high, n_images=C)
    offsets = isect_offset_encode(isect_ids, C, tiles_wide, tiles_high).view(C, tiles_high, tiles_wide)
    colors, backgrounds, num_features = _channels(means, sh, sh_degree, features, depths, viewmats, backgrounds)
    densify, gradient_2dgs = _densify_input(means2d, ranges)
    rendered, alpha, normals_cam, distortion, median = _Rasterize2DGS.apply(
        means2d.contiguous(), ray_transforms.contiguous(), colors, opacities.expand(C, N).contiguous(),
        normals.contiguous(), densify, backgrounds.contiguous(), None, width, height, TILE_SIZE, offsets,
        flatten_ids.contiguous(), False, True)
    rgb, feature_maps, _, depth_sum = rendered.permute(0, 3, 1, 2).split(
        [3, num_features, rendered.shape[-1] - 4 - num_features, 1], dim=1)
    alpha = alpha.permute(0, 3, 1, 2)
    expected = depth_sum / alpha.clamp_min(1e-10)
    median = median.permute(0, 3, 1, 2)
    depth = mix_depth(expected, median, depth_ratio)
    rotation = viewmats[:, :3, :3]  # world normal = rotationᵀ · camera normal, as a product and a sum (no cuBLAS)
    return {
        "render": rgb,
        "features": feature_maps if features is not None else None,
        "alpha": alpha,
        "depth": depth,
        "depth_expected": expected,
        "depth_median": median,
        "rend_normal": (normals_cam[..., None] * rotation[:, None, None]).sum(dim=-2).permute(0, 3, 1, 2),
        "rend_dist": distortion.permute(0, 3, 1, 2),
        "radii": radii,
        "info": {"radii": radii, "means2d": means2d, "depths": depths, "gradient_2dgs": gradient_2dgs,
                 "gaussian_ids": None, "width": width, "height": height, "n_cameras": C},
    }


def _range_mask(ranges: list[tuple[int, int]], n: int, device: torch.device) -> Tensor:
    """(C, N) int mask, row c one on surfels ranges[c][0]..ranges[c][1]-1 (slices of host ints: no copy to the GPU)."""
    mask = torch.zeros(len(ranges), n, dtype=torch.int32, device=device)
    for camera, (start, stop) in enumerate(ranges):
        mask[camera, start:stop] = 1
    return mask


def _densify_input(means2d: Tensor, ranges: list[tuple[int, int]] | None) -> tuple[Tensor, Tensor | list[Tensor]]:
    """The rasterizer's zero `densify` input (C, N, 2), whose gradient is the 2DGS densification statistic, and the
    leaf that receives it: `densify` itself, or with `ranges` one (1, b - a, 2) leaf per camera, zero-padded into
    its row (the gradient outside a camera's range is zero anyway)."""
    if ranges is None:
        densify = torch.zeros_like(means2d, requires_grad=True)
        return densify, densify
    n = means2d.shape[1]
    leaves = [means2d.new_zeros(1, stop - start, 2, requires_grad=True) for start, stop in ranges]
    rows = [torch.nn.functional.pad(leaf, (0, 0, start, n - stop)) for leaf, (start, stop) in zip(leaves, ranges)]
    return torch.cat(rows), leaves


def _channels(means: Tensor, sh: Tensor, sh_degree: int, features: Tensor | None, depths: Tensor, viewmats: Tensor,
              backgrounds: Tensor) -> tuple[Tensor, Tensor, int]:
    """Per-camera surfel channels (C, N, D) = SH colour | features | zero padding | centre depth, with backgrounds
    (C, D) to match, D a channel count gsplat's rasterizer supports (depth must stay last); and the feature count."""
    C = len(viewmats)
    dirs = means[None] - camera_centers(viewmats)[:, None]
    coeffs = sh[None] if C == 1 else sh.expand(C, -1, -1, -1)
    parts = [torch.clamp_min(spherical_harmonics(sh_degree, dirs, coeffs) + 0.5, 0.0)]
    num_features = 0 if features is None else features.shape[-1]
    if features is not None:
        parts.append(features.expand(C, -1, -1))
    channels = 3 + num_features + 1
    padding = next(size for size in _SUPPORTED_CHANNELS if size >= channels) - channels
    if padding:
        parts.append(depths.new_zeros(C, len(means), padding))
    parts.append(depths[..., None])
    backgrounds = torch.nn.functional.pad(backgrounds, (0, channels - 3 + padding))
    return torch.cat(parts, dim=-1), backgrounds, num_features


class _Rasterize2DGS(_RasterizeToPixels2DGS):
    """gsplat's 2DGS rasterizer (`rasterize_to_pixels_2dgs`' autograd function, same forward) whose backward does not
    end with a device-wide `torch.cuda.synchronize()`: its kernel runs on the current stream like everything that
    reads its gradients, so the wait only stalls the host. Called with gsplat's arguments (means2d, ray_transforms,
    colors, opacities, normals, densify, backgrounds, masks, width, height, tile_size, isect_offsets, flatten_ids,
    absgrad, distloss); channel counts must already be ones the kernels support (`_channels` pads them)."""

    @staticmethod
    def backward(ctx, v_colors: Tensor, v_alphas: Tensor, v_normals: Tensor, v_distort: Tensor,
                 v_median: Tensor) -> tuple[Tensor | None, ...]:
        (means2d, ray_transforms, colors, opacities, normals, densify, backgrounds, masks, isect_offsets, flatten_ids,
         render_colors, render_alphas, last_ids, median_ids) = ctx.saved_tensors
        v_means2d_abs, *grads = _make_lazy_cuda_func("rasterize_to_pixels_2dgs_bwd")(
            means2d, ray_transforms, colors, opacities, normals, densify, backgrounds, masks, ctx.width, ctx.height,
            ctx.tile_size, isect_offsets, flatten_ids, render_colors, render_alphas, last_ids, median_ids,
            v_colors.contiguous(), v_alphas.contiguous(), v_normals.contiguous(), v_distort.contiguous(),
            v_median.contiguous(), ctx.absgrad)
        if ctx.absgrad:
            means2d.absgrad = v_means2d_abs
        v_backgrounds = None
        if ctx.needs_input_grad[6]:
            v_backgrounds = (v_colors * (1.0 - render_alphas).float()).sum(dim=(-3, -2))
        return (*grads, v_backgrounds, *[None] * 8)
