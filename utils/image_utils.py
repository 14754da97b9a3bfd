"""Small image helpers for training and evaluation."""
from __future__ import annotations

import torch
from torch import Tensor


def psnr(img: Tensor, gt: Tensor, mask: Tensor | None = None) -> Tensor:
    """PSNR in dB of images in [0, 1] (any matching shape), over the pixels of `mask` (broadcastable) if given."""
    if img.shape != gt.shape:
        raise ValueError(f"psnr needs images of one shape, got {tuple(img.shape)} and {tuple(gt.shape)}")
    squared = (img - gt) ** 2
    if mask is None:
        mse = squared.mean()
    else:
        weight = torch.broadcast_to(mask, squared.shape).to(squared.dtype)
        mse = (squared * weight).sum() / weight.sum().clamp_min(1)
    return -10.0 * torch.log10(mse)
