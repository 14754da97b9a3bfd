"""Part motions as dual quaternions: blending, deformation of surfels, joints.

The only module of the project that knows dual quaternions (stage 4's part motions, docs/ARCHITECTURE.md).
A part motion is the rigid map x -> R(q) x + t from the canonical state to the other state;
as a unit dual quaternion `(..., 8)` it is [q, ½ (0, t) ⊗ q] (real part first, (w, x, y, z)).

Joints are plain dicts, the format of stage 5's `joint_info.json` export:
`{"type": "revolute"|"prismatic", "axis_origin": [3], "axis_direction": [3], "motion": m}`.
A revolute joint maps x -> R(d, m degrees)(x - o) + o, a prismatic joint x -> x + m d
(m in scene units), the convention of the datasets' `gt/trans.json`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from utils.rotations import (
    axis_angle_to_quat,
    matrix_to_quat,
    quat_conjugate,
    quat_identity,
    quat_multiply,
    quat_normalize,
    quat_rotate,
    quat_to_axis_angle,
    quat_to_matrix,
)

JOINT_TYPES = ("revolute", "prismatic")
JOINT_KEYS = ("type", "axis_origin", "axis_direction", "motion")
# A rotation angle (rad) or translation length at or below this has no direction; joints then
# report _DEFAULT_DIRECTION and zero motion.
_DEGENERATE = 1e-12
_DEFAULT_DIRECTION = (0.0, 0.0, 1.0)
# Largest deviation from orthonormality accepted in a 4x4 rigid transform.
_RIGID_TOL = 1e-4


# --------------------------------------------------------------------------- dual quaternions

def dq_from_qt(q: Tensor, t: Tensor) -> Tensor:
    """Dual quaternions `(..., 8)` of unit quaternions `(..., 4)` and translations `(..., 3)`."""
    t_quat = torch.cat([torch.zeros_like(t[..., :1]), t], dim=-1)
    return torch.cat([q, 0.5 * quat_multiply(t_quat, q)], dim=-1)


def dq_to_qt(dq: Tensor) -> tuple[Tensor, Tensor]:
    """Rotation `(..., 4)` and translation `(..., 3)` of unit dual quaternions `(..., 8)`."""
    real, dual = dq[..., :4], dq[..., 4:]
    return real, 2.0 * quat_multiply(dual, quat_conjugate(real))[..., 1:]


def dq_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Product a ⊗ b of dual quaternions `(..., 8)`: the motion b followed by the motion a."""
    a_real, a_dual = a[..., :4], a[..., 4:]
    b_real, b_dual = b[..., :4], b[..., 4:]
    dual = quat_multiply(a_real, b_dual) + quat_multiply(a_dual, b_real)
    return torch.cat([quat_multiply(a_real, b_real), dual], dim=-1)


def dq_normalize(dq: Tensor, eps: float = 1e-12) -> Tensor:
    """Unit dual quaternions `(..., 8)`: real part of norm 1 and dual part orthogonal to it."""
    real, dual = dq[..., :4], dq[..., 4:]
    norm = real.norm(dim=-1, keepdim=True).clamp_min(eps)
    real, dual = real / norm, dual / norm
    dual = dual - (real * dual).sum(-1, keepdim=True) * real
    return torch.cat([real, dual], dim=-1)


def dq_blend(weights: Tensor, part_dqs: Tensor) -> Tensor:
    """Dual-quaternion linear blending of K part motions with per-point weights.

    weights `(N, K)` (non-negative, e.g. softmax or one-hot), part_dqs `(K, 8)` -> unit `(N, 8)`.
    Every part is first put in the hemisphere of the identity (real w >= 0), the static part's
    motion, so that a part given as -dq blends exactly like dq.
    """
    aligned = torch.where(part_dqs[:, :1] < 0, -part_dqs, part_dqs)
    # A broadcast sum, not a matmul: exact in float32 even where TF32 matmuls are enabled.
    return dq_normalize((weights[:, :, None] * aligned).sum(1))


def dq_transform_points(dq: Tensor, points: Tensor) -> Tensor:
    """Apply unit dual quaternions `(N, 8)` (or one `(8,)`) to points `(N, 3)`: R x + t."""
    q, t = dq_to_qt(dq)
    return quat_rotate(q, points) + t


def dq_transform_rotations(dq: Tensor, rotations: Tensor) -> Tensor:
    """Rotate orientations `(N, 4)` by unit dual quaternions `(N, 8)`: q_dq ⊗ q (norms are kept)."""
    return quat_multiply(dq[..., :4], rotations)


def deform_surfels(part_q: Tensor, part_t: Tensor, means: Tensor, rotations: Tensor,
                   weights: Tensor) -> tuple[Tensor, Tensor]:
    """Surfel centres `(N, 3)` and orientations `(N, 4)` moved by the K part motions (rotations `(K, 4)`,
    translations `(K, 3)`) blended with weights `(N, K)`: `(N, 3)` centres, `(N, 4)` q_blend ⊗ orientations."""
    blended = dq_blend(weights, dq_from_qt(part_q, part_t))
    return dq_transform_points(blended, means), dq_transform_rotations(blended, rotations)


def blend_weights(logits: Tensor, hard: bool) -> Tensor:
    """Part weights `(N, K)` from logits `(N, K)`: softmax (E-step) or one-hot argmax (M-step)."""
    if hard:
        return torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.shape[-1]).to(logits.dtype)
    return torch.softmax(logits, dim=-1)


# --------------------------------------------------------------------------- input checking

def _float_array(value: object, what: str) -> np.ndarray:
    """`value` (list, numpy array or tensor) as a float64 array; ValueError naming `what` otherwise."""
    if isinstance(value, Tensor):
        value = value.detach().cpu()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} is not numeric: {value!r}") from error
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} has non-finite values: {array.tolist()}")
    return array


def _float_rows(value: object, rows: int, width: int, what: str) -> np.ndarray:
    """`value` as a float64 array of shape (rows, width) (an empty list is accepted for 0 rows)."""
    array = _float_array(value, what)
    if array.size == 0 and rows == 0:
        array = array.reshape(0, width)
    if array.shape != (rows, width):
        raise ValueError(f"{what} must have shape ({rows}, {width}), got {array.shape}")
    return array


def _vector3(value: object, what: str) -> np.ndarray:
    """`value` as a float64 array of shape (3,)."""
    array = _float_array(value, what)
    if array.shape != (3,):
        raise ValueError(f"{what} must be 3 numbers, got shape {array.shape}")
    return array


def _check_joint_type(joint_type: object) -> str:
    if joint_type not in JOINT_TYPES:
        raise ValueError(f"joint type must be one of {JOINT_TYPES}, got {joint_type!r}")
    return joint_type


def _parse_joint(joint: Mapping) -> tuple[str, np.ndarray, np.ndarray, float]:
    """Validated (type, origin (3,), unit direction (3,), motion) of a joint dict."""
    if not isinstance(joint, Mapping):
        raise ValueError(f"a joint must be a dict with keys {JOINT_KEYS}, got {type(joint).__name__}")
    missing = [key for key in JOINT_KEYS if key not in joint]
    if missing:
        raise ValueError(f"joint {dict(joint)!r} lacks keys {missing}")
    joint_type = _check_joint_type(joint["type"])
    origin = _vector3(joint["axis_origin"], "joint axis_origin")
    direction = _vector3(joint["axis_direction"], "joint axis_direction")
    length = np.linalg.norm(direction)
    if length <= _DEGENERATE:
        raise ValueError(f"joint axis_direction must be nonzero, got {direction.tolist()}")
    motion = _float_array(joint["motion"], "joint motion")
    if motion.shape != ():
        raise ValueError(f"joint motion must be a number, got {joint['motion']!r}")
    return joint_type, origin, direction / length, float(motion)


def _rigid_parts(transforms: object, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Rotation `(..., 3, 3)` and translation `(..., 3)` of rigid 4x4 transforms `(..., 4, 4)`."""
    T = _float_array(transforms, what)
    if T.shape[-2:] != (4, 4):
        raise ValueError(f"{what} must be 4x4 matrices, got shape {T.shape}")
    R, t = T[..., :3, :3], T[..., :3, 3]
    bottom_error = np.abs(T[..., 3, :] - np.array([0.0, 0.0, 0.0, 1.0])).max(initial=0.0)
    orthonormal_error = np.abs(np.swapaxes(R, -1, -2) @ R - np.eye(3)).max(initial=0.0)
    if bottom_error > _RIGID_TOL or orthonormal_error > _RIGID_TOL or np.any(np.linalg.det(R) < 0):
        raise ValueError(f"{what} is not a rigid transform (bottom row error {bottom_error:.2e}, "
                         f"orthonormality error {orthonormal_error:.2e}, det {np.linalg.det(R)})")
    return R, t


# --------------------------------------------------------------------------- joints

def _joint_dict(joint_type: str, origin: object, direction: object, motion: float) -> dict:
    """A joint dict of plain Python floats."""
    return {
        "type": joint_type,
        "axis_origin": [float(v) for v in origin],
        "axis_direction": [float(v) for v in direction],
        "motion": float(motion),
    }


def _joint_to_qt(joint: Mapping) -> tuple[Tensor, Tensor]:
    """Rotation `(4,)` and translation `(3,)` (float64) of the rigid motion of a joint."""
    joint_type, origin, direction, motion = _parse_joint(joint)
    d = torch.from_numpy(direction)
    if joint_type == "prismatic":
        return quat_identity(dtype=torch.float64), motion * d
    o = torch.from_numpy(origin)
    q = axis_angle_to_quat(d * math.radians(motion))
    return q, o - quat_rotate(q, o)


def _qt_to_joint(q: Tensor, t: Tensor, joint_type: str) -> dict:
    """Joint dict of the rigid motion (q `(4,)`, t `(3,)`) interpreted as `joint_type`.

    Revolute: axis direction and angle (degrees, in [0, 180]) from q; origin = the point of the
    axis closest to the world origin, solving (I - R) o = t_perp with o ⟂ d in closed form,
    o = ½ (t_perp + cot(θ/2) d × t_perp); the screw translation along d is dropped.
    Prismatic: direction t/|t| and distance |t|; the rotation is ignored.
    """
    q = q.detach().to("cpu", torch.float64)
    t = t.detach().to("cpu", torch.float64)
    zero = [0.0, 0.0, 0.0]
    if joint_type == "prismatic":
        distance = float(t.norm())
        if distance <= _DEGENERATE:
            return _joint_dict(joint_type, zero, _DEFAULT_DIRECTION, 0.0)
        return _joint_dict(joint_type, zero, t / distance, distance)
    rotvec = quat_to_axis_angle(q)
    theta = float(rotvec.norm())
    if theta <= _DEGENERATE:
        return _joint_dict(joint_type, zero, _DEFAULT_DIRECTION, 0.0)
    d = rotvec / theta
    t_perp = t - (t @ d) * d
    origin = 0.5 * (t_perp + torch.linalg.cross(d, t_perp) / math.tan(0.5 * theta))
    return _joint_dict(joint_type, origin, d, math.degrees(theta))


def joint_to_matrix(joint: Mapping) -> np.ndarray:
    """The 4x4 rigid transform (float64, x' = R x + t) that a joint dict applies."""
    q, t = _joint_to_qt(joint)
    T = np.eye(4)
    T[:3, :3] = quat_to_matrix(q).numpy()
    T[:3, 3] = t.numpy()
    return T


def matrix_to_joint(T: object, joint_type: str) -> dict:
    """Joint dict of a rigid 4x4 transform `T` read as `joint_type` (see `_qt_to_joint`)."""
    _check_joint_type(joint_type)
    R, t = _rigid_parts(T, "transform")
    if R.shape != (3, 3):
        raise ValueError(f"transform must be one 4x4 matrix, got shape {np.shape(T)}")
    return _qt_to_joint(matrix_to_quat(torch.from_numpy(R)), torch.from_numpy(t), joint_type)


def invert_joint(joint: Mapping) -> dict:
    """The inverse motion: same axis line, negated angle (revolute) or distance (prismatic).

    Keys other than the four joint keys (e.g. "part") are kept.
    """
    joint_type, origin, direction, motion = _parse_joint(joint)
    return {**joint, **_joint_dict(joint_type, origin, direction, -motion)}


def joint_start_to_end(joint: Mapping, canonical_state: int) -> dict:
    """A learned joint (canonical state -> other state) expressed from start (0) to end (1)."""
    if canonical_state not in (0, 1):
        raise ValueError(f"canonical_state must be 0 (start) or 1 (end), got {canonical_state!r}")
    if canonical_state == 1:
        return invert_joint(joint)
    return {**joint, **_joint_dict(*_parse_joint(joint))}


# --------------------------------------------------------------------------- the model

class ArticulationModel(torch.nn.Module):
    """Rigid motions of K parts from the canonical state to the other state.

    Part 0 is the static body (identity motion); parts 1..K-1 are movable, one joint each.
    Parameters: `quats` (K-1, 4), normalised on use, and `trans` (K-1, 3). The bool buffer
    `prismatic` (K-1,) holds the joint types; rows of `quats` of prismatic parts are replaced by
    the identity on use, so they have no effect and receive zero gradient.

    Construct with `transforms` (K-1, 4, 4) rigid matrices, or with `quats`/`trans` (identity and
    zero when omitted). The rotation of a prismatic part's initial motion is dropped, its
    translation kept.
    """

    def __init__(
        self,
        joint_types: Sequence[str],
        transforms: object | None = None,
        *,
        quats: object | None = None,
        trans: object | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        types = [_check_joint_type(joint_type) for joint_type in joint_types]
        count = len(types)
        if transforms is not None:
            if quats is not None or trans is not None:
                raise ValueError("give either transforms or quats/trans, not both")
            R, t = _rigid_parts(transforms, "initial transforms")
            if R.shape != (count, 3, 3):
                raise ValueError(f"initial transforms must have shape ({count}, 4, 4), got {np.shape(transforms)}")
            q0 = matrix_to_quat(torch.from_numpy(R))
            t0 = torch.from_numpy(t)
        else:
            q0 = quat_identity(count, dtype=torch.float64)
            if quats is not None:
                q0 = torch.from_numpy(_float_rows(quats, count, 4, "quats"))
            if np.any(q0.norm(dim=-1).numpy() <= _DEGENERATE):
                raise ValueError(f"quats must be nonzero, got {q0.tolist()}")
            t0 = torch.from_numpy(_float_rows(trans if trans is not None else np.zeros((count, 3)), count, 3, "trans"))
        prismatic = torch.tensor([joint_type == "prismatic" for joint_type in types], dtype=torch.bool)
        q0 = torch.where(prismatic[:, None], quat_identity(count, dtype=torch.float64), quat_normalize(q0))
        self.register_buffer("prismatic", prismatic)
        self.quats = torch.nn.Parameter(q0.to(dtype))
        self.trans = torch.nn.Parameter(t0.to(dtype))

    @property
    def num_parts(self) -> int:
        """K: the static body plus the movable parts."""
        return self.quats.shape[0] + 1

    @property
    def joint_types(self) -> list[str]:
        """Joint type of each movable part 1..K-1."""
        return ["prismatic" if flag else "revolute" for flag in self.prismatic.tolist()]

    def part_transforms(self) -> tuple[Tensor, Tensor]:
        """Unit quaternions `(K, 4)` and translations `(K, 3)` of all parts, part 0 the identity."""
        identity = quat_identity(1, dtype=self.quats.dtype, device=self.quats.device)
        movable = torch.where(self.prismatic[:, None], identity, quat_normalize(self.quats))
        static_trans = torch.zeros(1, 3, dtype=self.trans.dtype, device=self.trans.device)
        return torch.cat([identity, movable]), torch.cat([static_trans, self.trans])

    def deform(self, means: Tensor, rotations: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        """Move canonical surfels to the other state by blending the part motions.

        means `(N, 3)`, rotations `(N, 4)` (wxyz), weights `(N, K)` -> means `(N, 3)`,
        rotations `(N, 4)` = q_blend ⊗ rotations.
        """
        n = means.shape[0]
        if means.shape != (n, 3) or rotations.shape != (n, 4) or weights.shape != (n, self.num_parts):
            raise ValueError(
                f"deform expects means (N, 3), rotations (N, 4), weights (N, {self.num_parts}); got "
                f"{tuple(means.shape)}, {tuple(rotations.shape)}, {tuple(weights.shape)}")
        return deform_surfels(*self.part_transforms(), means, rotations, weights)

    def forward(self, means: Tensor, rotations: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        """Same as `deform` (so `model(...)` and `torch.func.functional_call` work)."""
        return self.deform(means, rotations, weights)

    def _movable_row(self, k: int) -> int:
        """Row of part k (1..K-1) in `quats`/`trans`."""
        if not isinstance(k, int) or not 1 <= k < self.num_parts:
            raise IndexError(f"part index must be in 1..{self.num_parts - 1} (part 0 is the static body), got {k!r}")
        return k - 1

    def _set_part(self, row: int, q: Tensor, t: Tensor, prismatic: bool) -> None:
        with torch.no_grad():
            self.quats[row] = q.to(self.quats)
            self.trans[row] = t.to(self.trans)
            self.prismatic[row] = prismatic

    def joint(self, k: int) -> dict:
        """Joint dict of movable part k (canonical -> other state); see `_qt_to_joint`."""
        row = self._movable_row(k)
        quats, trans = self.part_transforms()
        return _qt_to_joint(quats[k], trans[k], self.joint_types[row])

    def set_joint(self, k: int, joint_type: str, origin: object, direction: object, motion: float) -> None:
        """Set part k's type and motion from a joint (the inverse of `joint`)."""
        row = self._movable_row(k)
        joint = {"type": joint_type, "axis_origin": origin, "axis_direction": direction, "motion": motion}
        q, t = _joint_to_qt(joint)
        self._set_part(row, q, t, joint_type == "prismatic")

    def switch_to_prismatic(self, k: int, center: object | None = None) -> None:
        """Make part k prismatic: its translation becomes the displacement of `center` (3,)
        under the current motion (origin when None, i.e. t kept), its rotation the identity."""
        row = self._movable_row(k)
        c = torch.zeros(3, dtype=torch.float64)
        if center is not None:
            c = torch.from_numpy(_vector3(center, "center"))
        quats, trans = self.part_transforms()
        q, t = quats[k].detach().double().cpu(), trans[k].detach().double().cpu()
        displacement = quat_rotate(q, c) + t - c
        self._set_part(row, quat_identity(dtype=torch.float64), displacement, True)

    def to_json(self) -> dict:
        """Plain-JSON state: joint types and the raw parameters."""
        return {
            "joint_types": self.joint_types,
            "quats": self.quats.detach().cpu().double().tolist(),
            "trans": self.trans.detach().cpu().double().tolist(),
        }

    @classmethod
    def from_json(cls, data: Mapping, *, dtype: torch.dtype = torch.float32,
                  source: str = "articulation JSON") -> ArticulationModel:
        """Model from `to_json` output; `source` (e.g. the file name) is named in errors."""
        keys = ("joint_types", "quats", "trans")
        if not isinstance(data, Mapping) or any(key not in data for key in keys):
            raise ValueError(f"{source}: expected a dict with keys {keys}")
        if not isinstance(data["joint_types"], list):
            raise ValueError(f"{source}: joint_types must be a list, got {data['joint_types']!r}")
        try:
            return cls(data["joint_types"], quats=data["quats"], trans=data["trans"], dtype=dtype)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from error
