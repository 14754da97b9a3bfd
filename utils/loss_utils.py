"""Training losses on rendered maps: photometric (L1, SSIM), depth, 2DGS normal consistency and distortion, and
opacity binarisation. Images are channel-first, (C, H, W) or a batch (B, C, H, W); every image loss returns one value
per image: a scalar for one image, (B,) for a batch (so the terms of several renders are one set of batched kernels).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_SSIM_C1 = 0.01**2
_SSIM_C2 = 0.03**2


IMAGE_DIMS = (-3, -2, -1)  # the channel and pixel axes an image loss averages over


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute difference of each image."""
    return (pred - target).abs().mean(dim=IMAGE_DIMS)


@functools.lru_cache(maxsize=None)
def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(size,) normalised 1D Gaussian."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    w = torch.exp(-(x**2) / (2.0 * sigma**2))
    return (w / w.sum()).to(device=device, dtype=dtype)


def _blur(x: Tensor, window: Tensor) -> Tensor:
    """Separable Gaussian blur of (B, C, H, W), channel by channel, zero-padded so the size is kept."""
    channels, pad = x.shape[1], len(window) // 2
    x = F.conv2d(x, window.view(1, 1, 1, -1).expand(channels, 1, 1, -1), padding=(0, pad), groups=channels)
    return F.conv2d(x, window.view(1, 1, -1, 1).expand(channels, 1, -1, 1), padding=(pad, 0), groups=channels)


def ssim(img1: Tensor, img2: Tensor) -> Tensor:
    """Mean SSIM (11×11 Gaussian window, σ = 1.5, zero-padded borders as in 3DGS) of each pair of (C,H,W)/(B,C,H,W)
    images."""
    if img1.shape != img2.shape:
        raise ValueError(f"ssim needs images of one shape, got {tuple(img1.shape)} and {tuple(img2.shape)}")
    if img1.dim() == 3:
        return ssim(img1[None], img2[None])[0]
    window = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA, img1.dtype, img1.device)
    stats = _blur(torch.cat([img1, img2, img1 * img1, img2 * img2, img1 * img2], dim=1), window)
    mu1, mu2, e11, e22, e12 = stats.chunk(5, dim=1)
    mu11, mu22, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    numerator = (2.0 * mu12 + _SSIM_C1) * (2.0 * (e12 - mu12) + _SSIM_C2)
    denominator = (mu11 + mu22 + _SSIM_C1) * ((e11 - mu11) + (e22 - mu22) + _SSIM_C2)
    return (numerator / denominator).mean(dim=IMAGE_DIMS)


def depth_log_l1(pred: Tensor, gt: Tensor) -> Tensor:
    """mean(log(1 + |D - D_gt|)) over each depth map's pixels with gt > 0 (0, still differentiable, when there are
    none)."""
    valid = gt > 0
    error = torch.log1p((pred - gt).abs())
    return (error * valid).sum(dim=IMAGE_DIMS) / valid.sum(dim=IMAGE_DIMS).clamp_min(1)


def normal_consistency_loss(rend_normal: Tensor, surf_normal: Tensor, alpha: Tensor | None = None) -> Tensor:
    """2DGS normal consistency: mean over each image's pixels of 1 - <rendered normal, depth normal>.

    rend_normal (3, H, W) (or a batch) is the alpha-weighted normal the renderer returns; as in 2DGS the depth normal is
    weighted by the (detached) `alpha` (1, H, W) when given, so empty pixels cost a constant and push nothing.
    """
    if alpha is not None:
        surf_normal = surf_normal * alpha.detach()
    return (1.0 - (rend_normal * surf_normal).sum(dim=-3)).mean(dim=(-2, -1))


def distortion_loss(rend_dist: Tensor) -> Tensor:
    """Mean of each rendered depth distortion map."""
    return rend_dist.mean(dim=IMAGE_DIMS)


def opacity_binarisation_loss(opacity: Tensor) -> Tensor:
    """BCE(o, [o > 0.5]): pushes every opacity towards 0 or 1, whichever is nearer."""
    return F.binary_cross_entropy(opacity, (opacity > 0.5).to(opacity.dtype))
