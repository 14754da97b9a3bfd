"""Reference rasterizer of 2D Gaussian surfels in plain PyTorch, a line-by-line model of gsplat's `rasterization_2dgs`.

It runs on any device and dtype (float64 for gradcheck), is differentiable by autograd, and reproduces the CUDA
kernels' decisions so that it can serve as their oracle:
- projection: the ray transform M = K [s_u t_u, s_v t_v, μ_cam] (rows M0, M1, M2), gsplat's screen-space bounding
  box (3.33 "sigmas" of the projected conic) and its culling (near/far plane, off-screen);
- tiles: a surfel is seen only by the pixels of the 16×16 tiles its bounding box touches, as in gsplat's
  intersection step, whatever its weight elsewhere (within those tiles only the pixels it can reach with
  alpha >= 1/255, an exact bound, are evaluated);
- per pixel: ray-splat intersection s = (h_u × h_v)_xy / (h_u × h_v)_z with h_u = p_x M2 - M0, h_v = p_y M2 - M1;
  the low-pass filter as the smaller exponent of the ray kernel and 2·|p - μ_2d|²; α = min(0.999, o·exp(-σ/2));
  surfels with α < 1/255 skipped; front-to-back compositing in depth order (ties by index) that stops before the
  surfel that would take the transmittance to 1e-4 or below;
- outputs: colour/feature channels over the background, alpha, camera-facing normals rotated to world,
  accumulated centre depth (gsplat renders each surfel's centre z, not the per-pixel intersection depth),
  median depth (the last surfel composited while T > 0.5), and gsplat's L1 distortion
  Σ_i 2 w_i (z_i (1 - T_i) - Σ_{j<i} w_j z_j).

Memory is bounded: candidate (surfel, pixel) pairs are found in chunks without autograd, and the differentiable pass
runs over pixel chunks, each wrapped in activation checkpointing when the pairs exceed one chunk.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from gaussian_renderer.sh import eval_sh
from utils.rotations import quat_to_matrix

ALPHA_MIN = 1.0 / 255.0  # surfels fainter than this at a pixel are skipped
ALPHA_MAX = 0.999  # per-surfel alpha clamp
TRANSMITTANCE_MIN = 1e-4  # compositing stops before transmittance would fall to this
FILTER_INV_SQUARE = 2.0  # low-pass filter exponent factor: σ_2d = 2 |p - μ_2d|²
RADIUS_SIGMAS = 3.33  # screen-space radius of a surfel in units of its projected extent
TILE_SIZE = 16
MAX_PAIRS_PER_CHUNK = 1 << 18  # (surfel, pixel) pairs evaluated at once


@dataclass
class Projection:
    """One camera's view of N surfels (gsplat's `fully_fused_projection_2dgs` outputs)."""

    ray_transforms: Tensor  # (N, 3, 3) M = K [s_u t_u, s_v t_v, μ_cam]
    means2d: Tensor  # (N, 2) centre of the screen-space bounding box
    depths: Tensor  # (N,) camera z of the centre
    normals: Tensor  # (N, 3) camera-frame normals, flipped to face the camera
    radii: Tensor  # (N, 2) int32 bounding-box half sizes in pixels; 0 = culled


@dataclass
class Plan:
    """Which surfel meets which pixel, in compositing order (found without autograd)."""

    gauss: Tensor  # (P,) surfel of each pair
    row: Tensor  # (P,) index of the pair's pixel among the covered pixels
    slot: Tensor  # (P,) position of the pair in its pixel's front-to-back list
    pix_x: Tensor  # (P,) pixel centre x (j + 0.5)
    pix_y: Tensor  # (P,) pixel centre y (i + 0.5)
    row_pixel: Tensor  # (R,) flat pixel index of each covered pixel
    row_count: Tensor  # (R,) number of composited surfels per covered pixel
    median_slot: Tensor  # (R,) slot of the surfel that gives the median depth


def project_surfels(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    viewmat: Tensor,
    K: Tensor,
    width: int,
    height: int,
    near_plane: float,
    far_plane: float,
) -> Projection:
    """Project surfels `means` (N, 3), `quats` (N, 4) wxyz, tangent `scales` (N, 2) into one camera.

    `viewmat` (4, 4) world-to-camera (OpenCV), `K` (3, 3). Differentiable in everything but `radii`.
    """
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    mean_c = means @ R.T + t
    rot_c = R @ quat_to_matrix(quats)
    tangents = rot_c[..., :2] * scales[:, None, :]
    M = K @ torch.cat([tangents, mean_c[:, :, None]], dim=-1)
    normals = rot_c[..., 2]
    facing = (normals * mean_c).sum(-1) < 0
    normals = torch.where(facing[:, None], normals, -normals)

    # gsplat's bounding box: the projected unit circle has the dual conic M diag(1, 1, -1) Mᵀ; with d = its (2, 2)
    # entry, its centre is row 2 / d and its half extents √(centre² - diagonal / d).
    sign = M.new_tensor([1.0, 1.0, -1.0])
    M0, M1, M2 = M.unbind(-2)
    distance = (sign * M2 * M2).sum(-1)
    ok = distance != 0
    f = sign / torch.where(ok, distance, torch.ones_like(distance))[:, None]
    means2d = torch.stack([(f * M0 * M2).sum(-1), (f * M1 * M2).sum(-1)], dim=-1)
    with torch.no_grad():
        temp = torch.stack([(f * M0 * M0).sum(-1), (f * M1 * M1).sum(-1)], dim=-1)
        half_extent = means2d * means2d - temp
        radii = torch.ceil(RADIUS_SIGMAS * half_extent.clamp_min(1e-4).sqrt())
        z = mean_c[:, 2]
        visible = ok & (z > near_plane) & (z < far_plane)
        visible &= (means2d + radii > 0).all(-1)
        visible &= (means2d[:, 0] - radii[:, 0] < width) & (means2d[:, 1] - radii[:, 1] < height)
        radii = torch.where(visible[:, None], radii, torch.zeros_like(radii)).to(torch.int32)
    return Projection(M, means2d, mean_c[:, 2], normals, radii)


def splat_alpha(
    M: Tensor, means2d: Tensor, opacities: Tensor, px: Tensor, py: Tensor, shift: Tensor | None = None
) -> Tensor:
    """Alpha of surfels at pixel centres (all arguments broadcast over leading dims; M is (..., 3, 3)).

    `shift` (..., 2), zero in value, moves the surfel centre in the ray-splat kernel by that many pixels
    (M[:2, 2] += shift · M[2, 2]): its gradient is gsplat's `gradient_2dgs`, the densification statistic.
    NaN where the pixel ray is parallel to the surfel plane (gsplat skips those pairs).
    """
    if shift is not None:
        M = M + F.pad((shift * M[..., 2:, 2])[..., None], (2, 0, 0, 1))
    M0, M1, M2 = M.unbind(-2)
    h_u = px[..., None] * M2 - M0
    h_v = py[..., None] * M2 - M1
    cross = torch.linalg.cross(h_u, h_v, dim=-1)
    inv_z = 1.0 / cross[..., 2]
    rho_ray = (cross[..., 0] * inv_z) ** 2 + (cross[..., 1] * inv_z) ** 2
    rho_filter = FILTER_INV_SQUARE * ((means2d[..., 0] - px) ** 2 + (means2d[..., 1] - py) ** 2)
    rho = torch.minimum(rho_ray, rho_filter)
    rho = torch.where(cross[..., 2] == 0, torch.full_like(rho, math.nan), rho)
    return (opacities * torch.exp(-0.5 * rho)).clamp_max(ALPHA_MAX)


def _tile_rects(means2d: Tensor, radii: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    """Pixel rectangles [lo, hi) (N, 2) covered by the 16×16 tiles that each surfel's bounding box touches.

    gsplat's rule: tiles floor((μ - r) / 16) .. ceil((μ + r) / 16) - 1, clamped to the image.
    """
    tiles = means2d.new_tensor([math.ceil(width / TILE_SIZE), math.ceil(height / TILE_SIZE)])
    centre, extent = means2d / TILE_SIZE, radii.to(means2d.dtype) / TILE_SIZE
    lo = torch.minimum(torch.floor(centre - extent).clamp_min(0), tiles)
    hi = torch.minimum(torch.ceil(centre + extent).clamp_min(0), tiles)
    size = means2d.new_tensor([width, height])
    return (lo * TILE_SIZE).long(), torch.minimum(hi * TILE_SIZE, size).long()


def _reach_rects(M: Tensor, means2d: Tensor, opacities: Tensor) -> tuple[Tensor, Tensor]:
    """Pixel rectangles [lo, hi) (N, 2) outside which a surfel's alpha is below ALPHA_MIN (±1 pixel of margin).

    alpha >= 1/255 needs min(ρ_ray, ρ_filter) <= τ = 2 ln(255 o): either the ray meets the surfel plane within
    radius √τ, whose projection (an ellipse when that disk lies in front of the camera) has the exact bounding box
    of the dual conic M diag(τ, τ, -1) Mᵀ, or the pixel is within √(τ/2) of μ_2d. Surfels whose disk reaches the
    camera plane get an unbounded rectangle.
    """
    tau = 2.0 * torch.log(255.0 * opacities)
    scale = torch.stack([tau, tau, -torch.ones_like(tau)], dim=-1)[:, None, :]
    dual = (M * scale) @ M.transpose(1, 2)
    ellipse = dual[:, 2, 2] < 0
    denom = torch.where(ellipse, dual[:, 2, 2], -torch.ones_like(tau))[:, None]
    centre = dual[:, :2, 2] / denom
    half = (centre * centre - torch.diagonal(dual[:, :2, :2], dim1=1, dim2=2) / denom).clamp_min(0).sqrt()
    unbounded = torch.full_like(tau, math.inf).masked_fill(ellipse, 0.0)[:, None]
    filter_half = (0.5 * tau).clamp_min(0).sqrt()[:, None]
    lo = torch.minimum(centre - half - unbounded, means2d - filter_half)
    hi = torch.maximum(centre + half + unbounded, means2d + filter_half)
    # Pixel centres j + 0.5 inside [lo, hi], widened by one pixel each side against rounding.
    lo = torch.ceil(lo - 0.5).clamp(-1, 2**30) - 1
    hi = torch.floor(hi - 0.5).clamp(-1, 2**30) + 2
    return lo.long(), hi.long()


def _budget_slices(counts: Tensor, budget: int) -> list[tuple[int, int]]:
    """Consecutive index ranges [i0, i1) whose `counts` sum to about `budget` (one item may exceed it)."""
    if len(counts) == 0:
        return [(0, 0)]
    ends = torch.cumsum(counts, 0)
    marks = torch.arange(1, -(-int(ends[-1]) // budget), device=counts.device) * budget
    cuts = torch.searchsorted(ends, marks, right=True).tolist()
    bounds = [0] + sorted(set(cuts) - {0, len(counts)}) + [len(counts)]
    return list(zip(bounds[:-1], bounds[1:]))


@torch.no_grad()
def _alpha_pairs(proj: Projection, opacities: Tensor, width: int, height: int) -> tuple[Tensor, Tensor, Tensor]:
    """Every (surfel, pixel) pair gsplat evaluates and does not skip: surfel ids, flat pixel ids, alphas."""
    ids = ((proj.radii > 0).all(-1) & (opacities >= ALPHA_MIN)).nonzero().squeeze(1)
    M, means2d, opac = proj.ray_transforms[ids], proj.means2d[ids], opacities[ids]
    tile_lo, tile_hi = _tile_rects(means2d, proj.radii[ids], width, height)
    reach_lo, reach_hi = _reach_rects(M, means2d, opac)
    lo, hi = torch.maximum(tile_lo, reach_lo), torch.minimum(tile_hi, reach_hi)
    size = (hi - lo).clamp_min(0)
    count = size[:, 0] * size[:, 1]
    dtype = means2d.dtype
    found_g, found_pix, found_alpha = [], [], []
    for i0, i1 in _budget_slices(count, MAX_PAIRS_PER_CHUNK):
        owner = torch.repeat_interleave(torch.arange(i0, i1, device=ids.device), count[i0:i1])
        k = torch.arange(len(owner), device=ids.device) - (torch.cumsum(count[i0:i1], 0) - count[i0:i1])[owner - i0]
        x = lo[owner, 0] + k % size[owner, 0]
        y = lo[owner, 1] + k // size[owner, 0]
        alpha = splat_alpha(M[owner], means2d[owner], opac[owner], x.to(dtype) + 0.5, y.to(dtype) + 0.5)
        keep = alpha >= ALPHA_MIN
        found_g.append(ids[owner[keep]])
        found_pix.append((y * width + x)[keep])
        found_alpha.append(alpha[keep])
    return torch.cat(found_g), torch.cat(found_pix), torch.cat(found_alpha)


@torch.no_grad()
def plan_compositing(proj: Projection, opacities: Tensor, width: int, height: int) -> Plan:
    """Find the (surfel, pixel) pairs that gsplat composites, in order, with the stop and median decisions."""
    device, dtype = opacities.device, opacities.dtype
    g, pix, alpha = _alpha_pairs(proj, opacities, width, height)

    # Front-to-back order per pixel: by depth, ties by surfel index (gsplat's stable radix sort).
    rank = torch.empty_like(proj.depths, dtype=torch.long)
    rank[torch.sort(proj.depths.detach(), stable=True).indices] = torch.arange(len(rank), device=device)
    order = torch.argsort(pix * len(rank) + rank[g])
    g, pix, alpha = g[order], pix[order], alpha[order]
    row_pixel, row_count = torch.unique_consecutive(pix, return_counts=True)
    row = torch.repeat_interleave(torch.arange(len(row_pixel), device=device), row_count)
    slot = torch.arange(len(g), device=device) - (torch.cumsum(row_count, 0) - row_count)[row]

    # Stop before the surfel that takes T to TRANSMITTANCE_MIN; the median surfel is the last one seen with T > 0.5.
    length = int(row_count.max()) if len(row_count) else 0
    alpha_pad = torch.zeros(len(row_pixel), length, dtype=dtype, device=device)
    alpha_pad[row, slot] = alpha
    trans = torch.cumprod(1.0 - alpha_pad, dim=1)
    keep_pad = trans > TRANSMITTANCE_MIN
    keep_pad &= torch.arange(length, device=device) < row_count[:, None]
    trans_before = torch.cat([torch.ones_like(trans[:, :1]), trans[:, :-1]], dim=1)
    median_slot = (keep_pad & (trans_before > 0.5)).sum(1) - 1
    keep = keep_pad[row, slot]
    g, pix, row, slot = g[keep], pix[keep], row[keep], slot[keep]
    return Plan(
        gauss=g,
        row=row,
        slot=slot,
        pix_x=(pix % width).to(dtype) + 0.5,
        pix_y=(pix // width).to(dtype) + 0.5,
        row_pixel=row_pixel,
        row_count=keep_pad.sum(1),
        median_slot=median_slot,
    )


def _composite_rows(
    values: Tensor,
    M: Tensor,
    means2d: Tensor,
    opacities: Tensor,
    shifts: Tensor,
    gauss: Tensor,
    row: Tensor,
    slot: Tensor,
    pix_x: Tensor,
    pix_y: Tensor,
    median_slot: Tensor,
) -> Tensor:
    """Composite per-surfel `values` (N, V) (last column = depth) over planned pairs of a run of pixels.

    Returns (R, V + 3): accumulated values, alpha, distortion, median depth per pixel of the run.
    """
    n_rows, length = len(median_slot), int(slot.max()) + 1 if len(slot) else 1
    alpha = splat_alpha(M[gauss], means2d[gauss], opacities[gauss], pix_x, pix_y, shifts[gauss])
    alpha_pad = alpha.new_zeros(n_rows, length).index_put((row, slot), alpha)
    trans = torch.cumprod(1.0 - alpha_pad, dim=1)
    trans_before = torch.cat([torch.ones_like(trans[:, :1]), trans[:, :-1]], dim=1)
    weight_pad = alpha_pad * trans_before
    weight = weight_pad[row, slot]
    v = values[gauss]
    accumulated = v.new_zeros(n_rows, v.shape[1]).index_add(0, row, weight[:, None] * v)

    depth_pad = alpha.new_zeros(n_rows, length).index_put((row, slot), v[:, -1])
    wz = weight_pad * depth_pad
    distortion = (2.0 * weight_pad * (depth_pad * (1.0 - trans_before) - (torch.cumsum(wz, 1) - wz))).sum(1)
    median = depth_pad.gather(1, median_slot.clamp_min(0)[:, None]).squeeze(1) * (median_slot >= 0)
    return torch.cat([accumulated, 1.0 - trans[:, -1:], distortion[:, None], median[:, None]], dim=1)


def composite(
    proj: Projection, plan: Plan, values: Tensor, opacities: Tensor, shifts: Tensor, width: int, height: int
) -> Tensor:
    """Composite `values` (N, V) (last column = depth) into (H·W, V + 3) per-pixel sums, alpha, distortion, median."""
    image = values.new_zeros(width * height, values.shape[1] + 3)
    chunks = _budget_slices(plan.row_count, MAX_PAIRS_PER_CHUNK)
    use_checkpoint = len(chunks) > 1 and torch.is_grad_enabled()
    pair_bounds = torch.cumsum(plan.row_count, 0).tolist()
    rows = []
    for r0, r1 in chunks:
        p0, p1 = (pair_bounds[r0 - 1] if r0 else 0), (pair_bounds[r1 - 1] if r1 else 0)
        args = (
            values, proj.ray_transforms, proj.means2d, opacities, shifts,
            plan.gauss[p0:p1], plan.row[p0:p1] - r0, plan.slot[p0:p1],
            plan.pix_x[p0:p1], plan.pix_y[p0:p1], plan.median_slot[r0:r1],
        )
        rows.append(checkpoint(_composite_rows, *args, use_reentrant=False) if use_checkpoint
                    else _composite_rows(*args))
    return image.index_copy(0, plan.row_pixel, torch.cat(rows))


def depth_to_normal(depth: Tensor, viewmats: Tensor, Ks: Tensor) -> Tensor:
    """World-frame normals (C, 3, H, W) of z-depth maps (C, 1, H, W) by central differences; 0 on the border.

    Same construction as gsplat's `depth_to_normal`: back-project pixel centres, cross the vertical and horizontal
    differences (which makes the normal face the camera), normalise.
    """
    _, _, H, W = depth.shape
    R_cw = viewmats[:, :3, :3].transpose(1, 2)
    origin = camera_centers(viewmats)
    u = (torch.arange(W, device=depth.device, dtype=depth.dtype) + 0.5 - Ks[:, 0, 2, None]) / Ks[:, 0, 0, None]
    v = (torch.arange(H, device=depth.device, dtype=depth.dtype) + 0.5 - Ks[:, 1, 2, None]) / Ks[:, 1, 1, None]
    rays = torch.stack(torch.broadcast_tensors(u[:, None, :], v[:, :, None], torch.ones_like(u[:, None, :])), dim=1)
    points = torch.einsum("cij,cjhw->cihw", R_cw, rays) * depth + origin[:, :, None, None]
    d_down = points[:, :, 2:, 1:-1] - points[:, :, :-2, 1:-1]
    d_right = points[:, :, 1:-1, 2:] - points[:, :, 1:-1, :-2]
    normals = F.normalize(torch.linalg.cross(d_down, d_right, dim=1), dim=1)
    return F.pad(normals, (1, 1, 1, 1))


def rasterize_surfels(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    backgrounds: Tensor | None = None,
    shifts: Tensor | None = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
) -> dict[str, Tensor]:
    """Rasterize N surfels into C cameras, channel-first; the reference twin of gsplat's `rasterization_2dgs`.

    means (N, 3), quats (N, 4) wxyz (any norm), tangent scales (N, 2), opacities (N,), colors (C, N, D)
    post-activation, viewmats (C, 4, 4), Ks (C, 3, 3), backgrounds (C, D); `shifts` (C, N, 2), zero, moves
    each surfel's centre in the ray-splat kernel by that many pixels: its gradient is gsplat's `gradient_2dgs`.
    Returns colors (C, D, H, W) over the background, alphas, depth_accum (Σ w z), depth_median, distortion
    (C, 1, H, W), normals (C, 3, H, W) world frame, and per-surfel radii (C, N, 2), means2d (C, N, 2), depths (C, N).
    """
    C, D = colors.shape[0], colors.shape[-1]
    if shifts is None:
        shifts = means.new_zeros(C, len(means), 2)
    outs, radii, means2d, depths = [], [], [], []
    for c in range(C):
        proj = project_surfels(means, quats, scales, viewmats[c], Ks[c], width, height, near_plane, far_plane)
        plan = plan_compositing(proj, opacities.detach(), width, height)
        values = torch.cat([colors[c], proj.normals, proj.depths[:, None]], dim=1)
        image = composite(proj, plan, values, opacities, shifts[c], width, height)
        outs.append(image.T.reshape(-1, height, width))
        radii.append(proj.radii)
        means2d.append(proj.means2d)
        depths.append(proj.depths)
    out = torch.stack(outs)
    color, normal_c, depth_accum, alpha, distortion, median = out.split([D, 3, 1, 1, 1, 1], dim=1)
    if backgrounds is not None:
        color = color + (1.0 - alpha) * backgrounds[:, :, None, None]
    normals = torch.einsum("cji,cjhw->cihw", viewmats[:, :3, :3], normal_c)
    return {
        "colors": color,
        "alphas": alpha,
        "normals": normals,
        "depth_accum": depth_accum,
        "depth_median": median,
        "distortion": distortion,
        "radii": torch.stack(radii),
        "means2d": torch.stack(means2d),
        "depths": torch.stack(depths),
    }


def camera_centers(viewmats: Tensor) -> Tensor:
    """(C, 3) world positions -Rᵀt of cameras with world-to-camera matrices `viewmats` (C, 4, 4), as a product and
    a sum (a batched matmul costs a cuBLAS call's host time on every training step)."""
    return -(viewmats[:, :3, :3] * viewmats[:, :3, 3:]).sum(dim=1)


def mix_depth(expected: Tensor, median: Tensor, depth_ratio: float) -> Tensor:
    """(1 - depth_ratio) · expected + depth_ratio · median, without arithmetic at the two ends."""
    if depth_ratio == 0.0:
        return expected
    if depth_ratio == 1.0:
        return median
    return torch.lerp(expected, median, depth_ratio)


def render_reference(
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
    """Backend entry point (same contract as `gsplat_backend.render_gsplat`: the keys of `gaussian_renderer`'s table
    except `surf_normal`): SH colours + features in one pass.

    scales (N, 3) linear (the third column is ignored), sh (N, K, 3), features (N, F) or None, backgrounds (C, 3).
    """
    C, N = len(viewmats), len(means)
    dirs = means[None] - camera_centers(viewmats)[:, None]
    colors = (eval_sh(sh_degree, sh, dirs) + 0.5).clamp_min(0.0)
    if features is not None:
        colors = torch.cat([colors, features.expand(C, -1, -1)], dim=-1)
        backgrounds = F.pad(backgrounds, (0, features.shape[-1]))
    shifts = means.new_zeros(C, N, 2, requires_grad=True)
    out = rasterize_surfels(
        means, quats, scales[:, :2], opacities, colors, viewmats, Ks, width, height,
        backgrounds, shifts, near_plane, far_plane,
    )
    rgb, feature_maps = out["colors"].split([3, colors.shape[-1] - 3], dim=1)
    expected = out["depth_accum"] / out["alphas"].clamp_min(1e-10)
    depth = mix_depth(expected, out["depth_median"], depth_ratio)
    info = {
        "radii": out["radii"],
        "means2d": out["means2d"],
        "depths": out["depths"],
        "gradient_2dgs": shifts,
        "gaussian_ids": None,
        "width": width,
        "height": height,
        "n_cameras": C,
    }
    return {
        "render": rgb,
        "features": feature_maps if features is not None else None,
        "alpha": out["alphas"],
        "depth": depth,
        "depth_expected": expected,
        "depth_median": out["depth_median"],
        "rend_normal": out["normals"],
        "rend_dist": out["distortion"],
        "radii": out["radii"],
        "info": info,
    }
