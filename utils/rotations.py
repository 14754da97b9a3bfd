"""Quaternion and rotation helpers in torch (differentiable, batched over leading dims).

Conventions: quaternions are (w, x, y, z); rotation matrices act on column vectors (x' = R x).
All functions broadcast over leading dimensions and work for any float dtype and device.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

# Below this squared angle (rad^2) the Taylor expansions are exact to float64 rounding.
_SMALL_ANGLE_SQ = 1e-6
# Basis quaternions 1, i, j, k: e_a ⊗ e_b = _HAMILTON_SIGN[a][b] e_(a XOR b)  (i j = k, j i = -k, i i = -1, ...),
# so (p ⊗ q)_c = Σ_a _HAMILTON_SIGN[a][a XOR c] p_a q_(a XOR c).
_HAMILTON_SIGN = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, -1, -1, 1], [1, 1, -1, -1]], dtype=np.float64)


@functools.lru_cache(maxsize=None)
def _hamilton_terms(dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Index `(4, 4)` [c, a] = a XOR c and sign `(4, 4)` [c, a] of the term p_a q_(a XOR c) of (p ⊗ q)_c."""
    c, a = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    partner = c ^ a
    return (torch.as_tensor(partner, device=device),
            torch.as_tensor(_HAMILTON_SIGN[a, partner], dtype=dtype, device=device))


def quat_identity(*shape: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """Identity quaternions of shape `(*shape, 4)`."""
    q = torch.zeros(*shape, 4, dtype=dtype, device=device)
    q[..., 0] = 1.0
    return q


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a ⊗ b of `(..., 4)` quaternions (rotation b first, then a); broadcasts.

    Element-wise (no matmul), so float32 results stay exact where TF32 matmuls are enabled.
    """
    partner, sign = _hamilton_terms(torch.promote_types(a.dtype, b.dtype), a.device)
    b_partners = b.index_select(-1, partner.flatten()).unflatten(-1, (4, 4))
    return (a[..., None, :] * b_partners * sign).sum(-1)


def quat_conjugate(q: Tensor) -> Tensor:
    """Conjugate (w, -x, -y, -z) of `(..., 4)` quaternions; the inverse for unit quaternions."""
    return torch.cat([q[..., :1], -q[..., 1:]], dim=-1)


def quat_normalize(q: Tensor, eps: float = 1e-12) -> Tensor:
    """Unit quaternions `(..., 4)`; the norm is clamped below by `eps` so a zero input gives no NaN."""
    return torch.nn.functional.normalize(q, dim=-1, eps=eps)


def quat_canonical(q: Tensor) -> Tensor:
    """The sign of each `(..., 4)` quaternion that has w >= 0 (q and -q are the same rotation)."""
    return torch.where(q[..., :1] < 0, -q, q)


def quat_rotate(q: Tensor, x: Tensor) -> Tensor:
    """Rotate vectors `(..., 3)` by nonzero quaternions `(..., 4)` (normalised implicitly): R(q) x.

    x + 2 (w (v × x) + v × (v × x)) / |q|², without building matrices.
    """
    w, v = q[..., :1], q[..., 1:]
    v, x = torch.broadcast_tensors(v, x)
    vx = torch.linalg.cross(v, x, dim=-1)
    return x + 2.0 * (w * vx + torch.linalg.cross(v, vx, dim=-1)) / (q * q).sum(-1, keepdim=True)


def quat_to_matrix(q: Tensor) -> Tensor:
    """Rotation matrices `(..., 3, 3)` of nonzero quaternions `(..., 4)` (normalised implicitly)."""
    basis = torch.eye(3, dtype=q.dtype, device=q.device)
    return quat_rotate(q[..., None, :], basis).transpose(-1, -2)


def matrix_to_quat(R: Tensor) -> Tensor:
    """Unit quaternions `(..., 4)` with w >= 0 of rotation matrices `(..., 3, 3)`.

    Shepperd's method: of the four algebraically equivalent formulas, use the one whose
    divisor 4|q_i| is largest (>= 1), which is accurate for every angle including 180 degrees.
    """
    r00, r01, r02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    r10, r11, r12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    r20, r21, r22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    # 4 q_i^2 for i = w, x, y, z
    four_sq = torch.stack([
        1 + r00 + r11 + r22,
        1 + r00 - r11 - r22,
        1 - r00 + r11 - r22,
        1 - r00 - r11 + r22,
    ], dim=-1)
    # Row i holds 4 q_i q_j for j = w, x, y, z.
    products = torch.stack([
        torch.stack([four_sq[..., 0], r21 - r12, r02 - r20, r10 - r01], dim=-1),
        torch.stack([r21 - r12, four_sq[..., 1], r01 + r10, r02 + r20], dim=-1),
        torch.stack([r02 - r20, r01 + r10, four_sq[..., 2], r12 + r21], dim=-1),
        torch.stack([r10 - r01, r02 + r20, r12 + r21, four_sq[..., 3]], dim=-1),
    ], dim=-2)
    # The chosen row has 4 q_i^2 >= 1; clamping keeps the unused rows finite for autograd.
    candidates = products / (2.0 * four_sq.clamp_min(0.1).sqrt())[..., None]
    best = four_sq.argmax(dim=-1)[..., None, None].expand(*four_sq.shape[:-1], 1, 4)
    q = torch.gather(candidates, -2, best).squeeze(-2)
    return quat_canonical(quat_normalize(q))


def axis_angle_to_quat(rotvec: Tensor) -> Tensor:
    """Unit quaternions `(..., 4)` of rotation vectors `(..., 3)` (axis * angle in radians).

    Uses Taylor expansions of cos(θ/2) and sin(θ/2)/θ near θ = 0 so values and gradients are
    finite and exact at and around the identity.
    """
    theta_sq = (rotvec * rotvec).sum(-1, keepdim=True)
    small = theta_sq < _SMALL_ANGLE_SQ
    theta = torch.where(small, torch.ones_like(theta_sq), theta_sq).sqrt()
    half = 0.5 * theta
    cos_half = torch.where(small, 1 - theta_sq / 8 + theta_sq * theta_sq / 384, torch.cos(half))
    sin_half_over_theta = torch.where(small, 0.5 - theta_sq / 48 + theta_sq * theta_sq / 3840, torch.sin(half) / theta)
    return torch.cat([cos_half, rotvec * sin_half_over_theta], dim=-1)


def quat_to_axis_angle(q: Tensor) -> Tensor:
    """Rotation vectors `(..., 3)` (axis * angle, angle in [0, π]) of nonzero quaternions `(..., 4)`.

    The quaternion is normalised and put in the w >= 0 hemisphere first; near the identity
    θ/sin(θ/2) is replaced by its Taylor expansion so the result stays finite and differentiable.
    """
    q = quat_canonical(quat_normalize(q))
    w, v = q[..., :1], q[..., 1:]
    n_sq = (v * v).sum(-1, keepdim=True)
    small = n_sq < _SMALL_ANGLE_SQ
    n = torch.where(small, torch.ones_like(n_sq), n_sq).sqrt()
    # 2 atan2(n, w) / n  ≈  2/w - 2n²/(3w³) + 2n⁴/(5w⁵) for small n, where w ≈ 1; elsewhere the
    # expansion is unused and w is replaced by 1 so that it cannot divide by zero (NaN gradients).
    w_small = torch.where(small, w, torch.ones_like(w))
    taylor = 2 / w_small - 2 * n_sq / (3 * w_small**3) + 2 * n_sq * n_sq / (5 * w_small**5)
    factor = torch.where(small, taylor, 2 * torch.atan2(n, w) / n)
    return v * factor
