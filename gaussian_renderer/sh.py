"""Real spherical harmonics (degrees 0-3) in plain PyTorch, in the basis order and signs of 3DGS and gsplat.

Used by the reference backend; the CUDA backend calls gsplat's fused kernel, which evaluates the same basis.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

MAX_SH_DEGREE = 3

_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def num_sh_bases(degree: int) -> int:
    """Number of SH coefficients per colour channel up to `degree`: (degree + 1)²."""
    return (degree + 1) ** 2


def sh_bases(degree: int, dirs: Tensor) -> Tensor:
    """SH basis functions `(..., (degree+1)²)` at unit directions `(..., 3)`."""
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"SH degree must be in [0, {MAX_SH_DEGREE}], got {degree}")
    x, y, z = dirs.unbind(-1)
    bases = [torch.full_like(x, _C0)]
    if degree >= 1:
        bases += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        bases += [
            _C2[0] * x * y,
            _C2[1] * y * z,
            _C2[2] * (2.0 * zz - xx - yy),
            _C2[3] * x * z,
            _C2[4] * (xx - yy),
        ]
    if degree >= 3:
        bases += [
            _C3[0] * y * (3.0 * xx - yy),
            _C3[1] * x * y * z,
            _C3[2] * y * (4.0 * zz - xx - yy),
            _C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            _C3[4] * x * (4.0 * zz - xx - yy),
            _C3[5] * z * (xx - yy),
            _C3[6] * x * (xx - 3.0 * yy),
        ]
    return torch.stack(bases, dim=-1)


def eval_sh(degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    """Evaluate SH `coeffs` `(..., K, 3)` (K >= (degree+1)²) along view directions `dirs` `(..., 3)` (any length).

    Returns the raw SH value `(..., 3)`; colours are `clamp_min(value + 0.5, 0)` as in 3DGS.
    """
    n = num_sh_bases(degree)
    if coeffs.shape[-2] < n:
        raise ValueError(f"SH degree {degree} needs {n} coefficients per channel, got {coeffs.shape[-2]}")
    bases = sh_bases(degree, F.normalize(dirs, dim=-1))
    return (bases.unsqueeze(-1) * coeffs[..., :n, :]).sum(dim=-2)


def rgb_to_sh(rgb: Tensor) -> Tensor:
    """DC coefficient that reproduces colour `rgb` (any shape) from any direction."""
    return (rgb - 0.5) / _C0


def sh_to_rgb(sh_dc: Tensor) -> Tensor:
    """Colour `(…)` of a DC coefficient; the inverse of `rgb_to_sh` (before clamping)."""
    return sh_dc * _C0 + 0.5
