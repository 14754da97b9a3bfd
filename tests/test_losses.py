"""Losses and image helpers on inputs with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import correlate

from utils.image_utils import psnr
from utils.loss_utils import (
    depth_log_l1,
    distortion_loss,
    l1_loss,
    normal_consistency_loss,
    opacity_binarisation_loss,
    ssim,
)


def naive_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM with a full 11×11 Gaussian window (σ 1.5), zero padding, per channel, averaged over everything."""
    x = np.arange(11) - 5.0
    w = np.exp(-(x**2) / (2 * 1.5**2))
    window = np.outer(w, w) / np.outer(w, w).sum()
    maps = []
    for ca, cb in zip(a, b):
        blur = lambda img: correlate(img, window, mode="constant", cval=0.0)  # noqa: E731
        mu_a, mu_b = blur(ca), blur(cb)
        var_a, var_b = blur(ca * ca) - mu_a**2, blur(cb * cb) - mu_b**2
        cov = blur(ca * cb) - mu_a * mu_b
        c1, c2 = 0.01**2, 0.03**2
        maps.append((2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))
    return float(np.mean(maps))


def test_l1_and_psnr():
    gt = torch.full((3, 8, 8), 0.5)
    assert l1_loss(gt + 0.25, gt).item() == pytest.approx(0.25)
    assert psnr(gt + 0.1, gt).item() == pytest.approx(20.0, abs=1e-4)
    img = gt.clone()
    img[:, :4] += 0.1
    img[:, 4:] += 0.5
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[:, :4] = True
    assert psnr(img, gt, mask).item() == pytest.approx(20.0, abs=1e-4)
    with pytest.raises(ValueError, match="one shape"):
        psnr(gt, gt[:1])


def test_ssim_matches_a_direct_implementation():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 20, 24, generator=g, dtype=torch.float64)
    b = (a + 0.2 * torch.rand(3, 20, 24, generator=g, dtype=torch.float64)).clamp(0, 1)
    assert ssim(a, b).item() == pytest.approx(naive_ssim(a.numpy(), b.numpy()), abs=1e-10)
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-12)
    batch = ssim(torch.stack([a, b]), torch.stack([b, b]))  # one value per image of a batch
    assert batch.shape == (2,) and batch.tolist() == pytest.approx([ssim(a, b).item(), 1.0], abs=1e-10)
    a32 = a.float().requires_grad_()
    ssim(a32, b.float()).backward()
    assert a32.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="one shape"):
        ssim(a, b[:, :10])


def test_depth_log_l1_uses_valid_pixels_only():
    pred = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]], requires_grad=True)
    gt = torch.tensor([[[1.0, 0.0, 5.0, 2.0]]])
    assert depth_log_l1(pred, gt).item() == pytest.approx(2 * math.log(3.0) / 3)
    empty = depth_log_l1(pred, torch.zeros_like(gt))
    empty.backward()
    assert empty.item() == 0.0 and torch.equal(pred.grad, torch.zeros_like(pred))


def test_normal_consistency_and_distortion():
    n = torch.nn.functional.normalize(torch.randn(3, 5, 6, generator=torch.Generator().manual_seed(1)), dim=0)
    assert normal_consistency_loss(n, n).item() == pytest.approx(0.0, abs=1e-6)
    assert normal_consistency_loss(n, -n).item() == pytest.approx(2.0, abs=1e-6)
    alpha = torch.full((1, 5, 6), 0.5, requires_grad=True)
    loss = normal_consistency_loss(n * alpha, n, alpha)  # <α n, α n> = 0.25
    loss.backward()
    assert loss.item() == pytest.approx(0.75, abs=1e-6)
    # d/dα mean(1 - α·α_detached) = -α/30: the gradient flows through the rendered normal only.
    torch.testing.assert_close(alpha.grad, torch.full_like(alpha, -0.5 / 30))
    assert distortion_loss(torch.tensor([[[0.0, 2.0], [4.0, 6.0]]])).item() == pytest.approx(3.0)


def test_batched_losses_give_each_images_value():
    """A batch (B, C, H, W) gives each image's loss (B,): per-image means, also where images have different numbers of
    valid depth pixels."""
    g = torch.Generator().manual_seed(2)
    pred, target = torch.rand(2, 3, 6, 7, generator=g), torch.rand(2, 3, 6, 7, generator=g)
    depth, gt = torch.rand(2, 1, 6, 7, generator=g), torch.rand(2, 1, 6, 7, generator=g)
    gt[0, :, :4] = 0.0  # image 0 has fewer valid pixels than image 1
    normals = torch.nn.functional.normalize(torch.randn(2, 3, 6, 7, generator=g), dim=1)
    for loss, args in ((l1_loss, (pred, target)), (ssim, (pred, target)), (depth_log_l1, (depth, gt)),
                       (normal_consistency_loss, (normals, normals.flip(0))), (distortion_loss, (depth,))):
        batch = loss(*args)
        assert batch.shape == (2,), loss.__name__
        for i in range(2):
            torch.testing.assert_close(batch[i], loss(*(a[i] for a in args)), msg=loss.__name__)


def test_opacity_binarisation_is_bce_to_the_nearer_end():
    loss = opacity_binarisation_loss(torch.tensor([0.2, 0.9]))
    assert loss.item() == pytest.approx((-math.log(0.8) - math.log(0.9)) / 2)
