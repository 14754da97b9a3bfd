"""Tests of the rotation helpers and the dual-quaternion articulation model (CPU, float64 oracles from scipy)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial.transform import Rotation

from scene.articulation import (
    ArticulationModel,
    blend_weights,
    dq_blend,
    dq_from_qt,
    dq_multiply,
    dq_normalize,
    dq_to_qt,
    dq_transform_points,
    invert_joint,
    joint_start_to_end,
    joint_to_matrix,
    matrix_to_joint,
)
from utils.rotations import (
    axis_angle_to_quat,
    matrix_to_quat,
    quat_multiply,
    quat_to_axis_angle,
    quat_to_matrix,
)

F64 = torch.float64


def scipy_quat(rotation: Rotation) -> np.ndarray:
    """(w, x, y, z) quaternions of scipy rotations, w >= 0."""
    q = np.roll(np.atleast_2d(rotation.as_quat()), 1, axis=-1)
    return np.where(q[:, :1] < 0, -q, q)


def apply_joint_reference(joint: dict, x: np.ndarray) -> np.ndarray:
    """The joint convention (scene/articulation.py) with scipy: revolute x -> R(d, m)(x - o) + o, prismatic x -> x + m d."""
    d = np.asarray(joint["axis_direction"], dtype=float)
    d = d / np.linalg.norm(d)
    if joint["type"] == "prismatic":
        return x + joint["motion"] * d
    o = np.asarray(joint["axis_origin"], dtype=float)
    return Rotation.from_rotvec(d * math.radians(joint["motion"])).apply(x - o) + o


def expected_canonical_joint(joint: dict) -> dict:
    """The form `joint()` reports: angle in [0, 180], unit direction, origin = point of the line nearest 0."""
    d = np.asarray(joint["axis_direction"], dtype=float)
    d = d / np.linalg.norm(d)
    motion = joint["motion"]
    if joint["type"] == "prismatic":
        return {"type": "prismatic", "axis_origin": np.zeros(3), "axis_direction": d * np.sign(motion),
                "motion": abs(motion)}
    motion = (motion + 180.0) % 360.0 - 180.0
    if motion < 0:
        d, motion = -d, -motion
    o = np.asarray(joint["axis_origin"], dtype=float)
    return {"type": "revolute", "axis_origin": o - (o @ d) * d, "axis_direction": d, "motion": motion}


def assert_joint_close(actual: dict, expected: dict, atol: float) -> None:
    assert actual["type"] == expected["type"]
    assert set(actual) >= {"type", "axis_origin", "axis_direction", "motion"}
    np.testing.assert_allclose(actual["axis_direction"], expected["axis_direction"], atol=atol)
    np.testing.assert_allclose(actual["axis_origin"], expected["axis_origin"], atol=atol)
    assert actual["motion"] == pytest.approx(expected["motion"], abs=atol)


def random_unit_quats(n: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(scipy_quat(Rotation.random(n, random_state=seed)))


# --------------------------------------------------------------------------- rotation helpers

def test_quat_matrix_conversions_match_scipy() -> None:
    rotations = Rotation.concatenate([
        Rotation.random(50, random_state=0),
        Rotation.from_rotvec(np.pi * np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]]) / np.array([[1], [1], [1], [math.sqrt(2)]])),
        Rotation.identity(),
        Rotation.from_rotvec([[0, 0, 1e-9], [0.3, -0.2, 3.14159]]),
    ])
    q_ref = torch.from_numpy(scipy_quat(rotations))
    R_ref = torch.from_numpy(rotations.as_matrix())
    torch.testing.assert_close(quat_to_matrix(q_ref), R_ref, atol=1e-12, rtol=0)
    q = matrix_to_quat(R_ref)
    assert torch.all(q[:, 0] >= 0)
    # At exactly 180 degrees q and -q both have w = 0: compare the rotations, not the signs.
    torch.testing.assert_close(quat_to_matrix(q), R_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(q[:50], q_ref[:50], atol=1e-12, rtol=0)


def test_quat_multiply_is_matrix_product() -> None:
    a, b = random_unit_quats(20, 1), random_unit_quats(20, 2)
    torch.testing.assert_close(quat_to_matrix(quat_multiply(a, b)), quat_to_matrix(a) @ quat_to_matrix(b),
                               atol=1e-12, rtol=0)


@pytest.mark.parametrize("angle", [0.0, 1e-10, 1e-5, 1e-3, 0.1, 1.0, 3.0, math.pi])
def test_axis_angle_round_trip_and_scipy(angle: float) -> None:
    axis = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    rotvec = torch.tensor(axis * angle, dtype=F64)
    q = axis_angle_to_quat(rotvec)
    expected = scipy_quat(Rotation.from_rotvec(axis * angle))[0]
    np.testing.assert_allclose(q.numpy(), expected, atol=1e-15)
    np.testing.assert_allclose(quat_to_axis_angle(q).numpy(), rotvec.numpy(), atol=1e-14)


def test_axis_angle_gradients_finite_at_identity() -> None:
    rotvec = torch.zeros(3, dtype=F64, requires_grad=True)
    jacobian = torch.autograd.functional.jacobian(axis_angle_to_quat, rotvec)
    expected = torch.cat([torch.zeros(1, 3, dtype=F64), 0.5 * torch.eye(3, dtype=F64)])
    torch.testing.assert_close(jacobian, expected)
    q = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=F64, requires_grad=True)
    jacobian = torch.autograd.functional.jacobian(quat_to_axis_angle, q)
    torch.testing.assert_close(jacobian[:, 1:], 2.0 * torch.eye(3, dtype=F64))
    assert torch.isfinite(jacobian).all()


def test_rotation_helpers_gradcheck() -> None:
    for rotvec in ([1e-4, -2e-4, 3e-4], [0.4, -1.2, 2.0]):
        x = torch.tensor(rotvec, dtype=F64, requires_grad=True)
        assert torch.autograd.gradcheck(axis_angle_to_quat, (x,))
        q = axis_angle_to_quat(x.detach()).mul(1.3).requires_grad_()
        assert torch.autograd.gradcheck(quat_to_axis_angle, (q,))
    R = torch.from_numpy(Rotation.random(3, random_state=11).as_matrix()).requires_grad_()
    assert torch.autograd.gradcheck(matrix_to_quat, (R,))


# --------------------------------------------------------------------------- dual quaternions

def test_dual_quaternion_points_and_composition_match_matrices() -> None:
    qa, qb = random_unit_quats(10, 3), random_unit_quats(10, 4)
    generator = torch.Generator().manual_seed(0)
    ta, tb = torch.randn(10, 3, generator=generator, dtype=F64), torch.randn(10, 3, generator=generator, dtype=F64)
    x = torch.randn(10, 3, generator=generator, dtype=F64)
    Ra, Rb = quat_to_matrix(qa), quat_to_matrix(qb)
    a, b = dq_from_qt(qa, ta), dq_from_qt(qb, tb)
    torch.testing.assert_close(dq_transform_points(a, x), (Ra @ x[..., None])[..., 0] + ta, atol=1e-12, rtol=0)
    composed = dq_multiply(a, b)
    expected = (Ra @ (Rb @ x[..., None]))[..., 0] + (Ra @ tb[..., None])[..., 0] + ta
    torch.testing.assert_close(dq_transform_points(composed, x), expected, atol=1e-12, rtol=0)
    q, t = dq_to_qt(composed)
    torch.testing.assert_close(quat_to_matrix(q), Ra @ Rb, atol=1e-12, rtol=0)
    torch.testing.assert_close(t, (Ra @ tb[..., None])[..., 0] + ta, atol=1e-12, rtol=0)


def test_dq_normalize_restores_unit_dual_quaternion() -> None:
    unit = dq_from_qt(random_unit_quats(6, 10), torch.linspace(-1, 1, 18, dtype=F64).reshape(6, 3))
    # Scale the whole dual quaternion and add a dual component along the real part.
    perturbed = 2.5 * unit + torch.cat([torch.zeros(6, 4, dtype=F64), 0.3 * unit[:, :4]], dim=1)
    normalized = dq_normalize(perturbed)
    torch.testing.assert_close(normalized, unit, atol=1e-14, rtol=0)
    real, dual = normalized[:, :4], normalized[:, 4:]
    torch.testing.assert_close((real * dual).sum(1), torch.zeros(6, dtype=F64), atol=1e-15, rtol=0)


def test_blend_sign_ambiguity_and_same_motion() -> None:
    q, t = random_unit_quats(1, 5), torch.tensor([[0.2, -0.4, 0.7]], dtype=F64)
    part = dq_from_qt(q, t)
    identity = dq_from_qt(torch.tensor([[1.0, 0, 0, 0]], dtype=F64), torch.zeros(1, 3, dtype=F64))
    weights = torch.tensor([[0.3, 0.7], [0.9, 0.1], [0.5, 0.5]], dtype=F64)
    blended = dq_blend(weights, torch.cat([identity, part]))
    torch.testing.assert_close(dq_blend(weights, torch.cat([identity, -part])), blended, atol=1e-14, rtol=0)
    # Two parts with the same motion (given with opposite signs) blend to that motion for any weights.
    same = dq_blend(weights, torch.cat([part, -part]))
    torch.testing.assert_close(same, part.expand(3, 8), atol=1e-14, rtol=0)


def test_blend_halfway_is_half_rotation_about_same_axis() -> None:
    joint = {"type": "revolute", "axis_origin": [0.4, 0.1, -0.2], "axis_direction": [0.0, 0.6, 0.8], "motion": 80.0}
    model = ArticulationModel(["revolute"], dtype=F64)
    model.set_joint(1, "revolute", joint["axis_origin"], joint["axis_direction"], joint["motion"])
    on_axis = torch.tensor([[0.4, 0.1, -0.2], [0.4, 0.7, 0.6]], dtype=F64)
    off_axis = torch.tensor([[1.0, 0.0, 0.0]], dtype=F64)
    means = torch.cat([on_axis, off_axis])
    rotations = torch.tensor([[1.0, 0, 0, 0]], dtype=F64).expand(3, 4)
    moved, _ = model.deform(means, rotations, torch.full((3, 2), 0.5, dtype=F64))
    torch.testing.assert_close(moved[:2], on_axis, atol=1e-12, rtol=0)
    half = dict(joint, motion=40.0)
    np.testing.assert_allclose(moved[2].detach().numpy(), apply_joint_reference(half, off_axis.numpy())[0], atol=1e-12)


# --------------------------------------------------------------------------- joints

REVOLUTE_CASES = [
    ([0.0, 0.0, 1.0], [0.5, 0.3, 0.0], 30.0),
    ([1.0, 2.0, -0.5], [-0.2, 0.7, 1.1], 0.01),
    ([0.3, -0.8, 0.1], [1.5, -0.5, 0.25], 179.0),
    ([0.0, 1.0, 0.0], [0.1, 5.0, -0.3], -60.0),
    ([-0.6, 0.0, 0.8], [0.0, 0.0, 0.0], 120.0),
    ([0.2, 0.2, 0.9], [2.0, -1.0, 0.5], -179.5),
]


@pytest.mark.parametrize("direction, origin, angle", REVOLUTE_CASES)
def test_revolute_joint_round_trip(direction: list, origin: list, angle: float) -> None:
    joint = {"type": "revolute", "axis_origin": origin, "axis_direction": direction, "motion": angle}
    model = ArticulationModel(["revolute"], dtype=F64)
    model.set_joint(1, "revolute", origin, direction, angle)
    got = model.joint(1)
    assert_joint_close(got, expected_canonical_joint(joint), atol=1e-9)
    assert 0.0 <= got["motion"] <= 180.0
    assert np.linalg.norm(got["axis_direction"]) == pytest.approx(1.0, abs=1e-12)
    # (d, θ) and (-d, -θ) are the same motion and report the same joint.
    model.set_joint(1, "revolute", origin, [-v for v in direction], -angle)
    assert_joint_close(model.joint(1), got, atol=1e-9)
    # Matrix form: matches the reference convention and converts back.
    points = np.random.default_rng(0).normal(size=(20, 3))
    T = joint_to_matrix(joint)
    np.testing.assert_allclose(points @ T[:3, :3].T + T[:3, 3], apply_joint_reference(joint, points), atol=1e-12)
    assert_joint_close(matrix_to_joint(T, "revolute"), got, atol=1e-9)


@pytest.mark.parametrize("direction, distance", [([0.0, 0.0, 2.0], 0.3), ([1.0, -1.0, 0.5], -0.75), ([0.0, 1.0, 0.0], 1e-6)])
def test_prismatic_joint_round_trip(direction: list, distance: float) -> None:
    joint = {"type": "prismatic", "axis_origin": [1.0, 2.0, 3.0], "axis_direction": direction, "motion": distance}
    model = ArticulationModel(["prismatic"], dtype=F64)
    model.set_joint(1, "prismatic", joint["axis_origin"], joint["axis_direction"], joint["motion"])
    got = model.joint(1)
    assert_joint_close(got, expected_canonical_joint(joint), atol=1e-12)
    points = np.random.default_rng(1).normal(size=(5, 3))
    T = joint_to_matrix(joint)
    np.testing.assert_allclose(points @ T[:3, :3].T + T[:3, 3], apply_joint_reference(joint, points), atol=1e-12)
    assert_joint_close(matrix_to_joint(T, "prismatic"), got, atol=1e-12)


def test_degenerate_motions_report_zero() -> None:
    model = ArticulationModel(["revolute", "prismatic"], dtype=F64)
    for k, joint_type in ((1, "revolute"), (2, "prismatic")):
        joint = model.joint(k)
        assert joint == {"type": joint_type, "axis_origin": [0.0, 0.0, 0.0], "axis_direction": [0.0, 0.0, 1.0],
                         "motion": 0.0}


def test_screw_translation_is_dropped_from_revolute() -> None:
    d = np.array([0.0, 0.0, 1.0])
    T = joint_to_matrix({"type": "revolute", "axis_origin": [1.0, 1.0, 0.0], "axis_direction": d, "motion": 50.0})
    T[:3, 3] += 0.4 * d
    assert_joint_close(matrix_to_joint(T, "revolute"),
                       {"type": "revolute", "axis_origin": [1.0, 1.0, 0.0], "axis_direction": d, "motion": 50.0}, atol=1e-12)


def test_canonical_end_state_exports_start_to_end() -> None:
    gt = {"type": "revolute", "axis_origin": [0.3, -0.2, 0.5], "axis_direction": [0.1, 0.9, 0.2], "motion": 70.0}
    start = np.random.default_rng(2).uniform(-1, 1, size=(100, 3))
    end = apply_joint_reference(gt, start)
    # Canonical = end: the model learns end -> start, the inverse motion.
    learned = np.linalg.inv(joint_to_matrix(gt))
    model = ArticulationModel(["revolute"], learned[None], dtype=F64)
    ones = torch.ones(100, 1, dtype=F64)
    weights = torch.cat([torch.zeros_like(ones), ones], dim=1)
    rotations = torch.tensor([[1.0, 0, 0, 0]], dtype=F64).expand(100, 4)
    moved, _ = model.deform(torch.from_numpy(end), rotations, weights)
    np.testing.assert_allclose(moved.detach().numpy(), start, atol=1e-12)
    exported = joint_start_to_end({**model.joint(1), "part": 1}, canonical_state=1)
    assert exported["part"] == 1
    np.testing.assert_allclose(apply_joint_reference(exported, start), end, atol=1e-12)
    np.testing.assert_allclose(apply_joint_reference(invert_joint(exported), end), start, atol=1e-12)
    assert_joint_close(expected_canonical_joint(exported), expected_canonical_joint(gt), atol=1e-9)
    assert joint_start_to_end(gt, canonical_state=0) == {**gt, "motion": 70.0, "axis_direction": list(
        np.asarray(gt["axis_direction"]) / np.linalg.norm(gt["axis_direction"]))}
    prismatic = {"type": "prismatic", "axis_origin": [0, 0, 0], "axis_direction": [1, 0, 0], "motion": 0.2}
    assert joint_start_to_end(prismatic, 1)["motion"] == -0.2


def test_switch_to_prismatic_keeps_translation() -> None:
    model = ArticulationModel(["revolute"], dtype=F64)
    model.set_joint(1, "revolute", [0.5, 0.5, 0.0], [0.0, 0.0, 1.0], 8.0)
    old_t = model.trans.detach().clone()
    model.switch_to_prismatic(1)
    assert model.joint_types == ["prismatic"]
    torch.testing.assert_close(model.trans.detach(), old_t)
    torch.testing.assert_close(model.part_transforms()[0][1], torch.tensor([1.0, 0, 0, 0], dtype=F64))
    assert model.joint(1)["motion"] == pytest.approx(float(old_t.norm()), abs=1e-15)

    model.set_joint(1, "revolute", [0.5, 0.5, 0.0], [0.0, 0.0, 1.0], 8.0)
    center = np.array([1.0, 0.2, 0.3])
    old_joint = model.joint(1)
    model.switch_to_prismatic(1, center=center)
    means = torch.from_numpy(center)[None]
    moved, rotated = model.deform(means, torch.tensor([[1.0, 0, 0, 0]], dtype=F64), torch.tensor([[0.0, 1.0]], dtype=F64))
    np.testing.assert_allclose(moved.detach().numpy(), apply_joint_reference(old_joint, center[None]), atol=1e-12)
    np.testing.assert_allclose(rotated.detach().numpy(), [[1.0, 0, 0, 0]], atol=1e-15)


# --------------------------------------------------------------------------- the model

def make_model(dtype: torch.dtype = F64) -> ArticulationModel:
    model = ArticulationModel(["revolute", "prismatic"], dtype=dtype)
    model.set_joint(1, "revolute", [0.3, -0.1, 0.2], [0.2, 0.9, -0.3], 65.0)
    model.set_joint(2, "prismatic", [0.0, 0.0, 0.0], [0.0, 0.6, 0.8], 0.35)
    return model


def test_one_hot_blending_is_the_part_motion() -> None:
    model = make_model()
    generator = torch.Generator().manual_seed(3)
    means = torch.randn(30, 3, generator=generator, dtype=F64)
    rotations = random_unit_quats(30, 6)
    weights = blend_weights(torch.randn(30, 3, generator=generator, dtype=F64), hard=True)
    assert torch.equal(weights.sum(1), torch.ones(30, dtype=F64)) and set(weights.unique().tolist()) == {0.0, 1.0}
    moved, rotated = model.deform(means, rotations, weights)
    labels = weights.argmax(1).numpy()
    for k in range(3):
        joint = model.joint(k) if k else {"type": "prismatic", "axis_origin": [0, 0, 0], "axis_direction": [1, 0, 0], "motion": 0.0}
        rows = labels == k
        assert rows.any()
        np.testing.assert_allclose(moved[rows].detach().numpy(), apply_joint_reference(joint, means[rows].numpy()), atol=1e-12)
        R = Rotation.from_matrix(joint_to_matrix(joint)[:3, :3])
        expected = scipy_quat(R * Rotation.from_quat(np.roll(rotations[rows].numpy(), -1, axis=1)))
        got = rotated[rows].detach().numpy()
        np.testing.assert_allclose(got * np.sign(got[:, :1]), expected, atol=1e-12)
    soft = blend_weights(torch.randn(30, 3, generator=generator, dtype=F64), hard=False)
    torch.testing.assert_close(soft.sum(1), torch.ones(30, dtype=F64))


def test_negated_part_quaternion_gives_same_deformation() -> None:
    model = make_model()
    generator = torch.Generator().manual_seed(4)
    means = torch.randn(10, 3, generator=generator, dtype=F64)
    rotations = random_unit_quats(10, 7)
    weights = torch.softmax(torch.randn(10, 3, generator=generator, dtype=F64), 1)
    before = model.deform(means, rotations, weights)
    with torch.no_grad():
        model.quats[0].neg_()
    after = model.deform(means, rotations, weights)
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, atol=1e-14, rtol=0)


def test_gradcheck_deform() -> None:
    model = make_model()
    generator = torch.Generator().manual_seed(5)
    means = torch.randn(4, 3, generator=generator, dtype=F64, requires_grad=True)
    rotations = random_unit_quats(4, 8)
    weights = torch.rand(4, 3, generator=generator, dtype=F64).add(0.1).requires_grad_()
    quats = model.quats.detach().clone().requires_grad_()
    trans = model.trans.detach().clone().requires_grad_()

    def deform(q: torch.Tensor, t: torch.Tensor, w: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.func.functional_call(model, {"quats": q, "trans": t}, (x, rotations, w))

    assert torch.autograd.gradcheck(deform, (quats, trans, weights, means))
    moved, rotated = model(means, rotations, weights)
    (moved.sum() + rotated.sum()).backward()
    assert model.quats.grad[0].abs().sum() > 0 and model.trans.grad.abs().min() > 0
    assert torch.equal(model.quats.grad[1], torch.zeros(4, dtype=F64))  # prismatic: held at identity


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_gt_joints_reproduce_other_state(dtype: torch.dtype, atol: float) -> None:
    """Static body + door (revolute) + drawer (prismatic) sampled with trimesh, moved with gt/trans.json joints."""
    body = trimesh.creation.box(bounds=[[-0.5, -0.3, 0.0], [0.5, 0.3, 1.0]])
    door = trimesh.creation.box(bounds=[[-0.5, 0.3, 0.5], [0.0, 0.32, 1.0]])
    drawer = trimesh.creation.box(bounds=[[-0.45, -0.28, 0.05], [0.45, 0.3, 0.45]])
    trans_info = [
        {"axis": {"o": [-0.5, 0.31, 0.0], "d": [0.0, 0.0, 1.0]}, "type": "rotate",
         "rotate": {"l": 0.0, "r": -75.0}, "translate": {"l": 0.0, "r": 0.0}},
        {"axis": {"o": [0.0, 0.0, 0.0], "d": [0.0, 1.0, 0.0]}, "type": "translate",
         "rotate": {"l": 0.0, "r": 0.0}, "translate": {"l": 0.1, "r": 0.4}},
    ]
    joints = [{
        "type": "revolute" if info["type"] == "rotate" else "prismatic",
        "axis_origin": info["axis"]["o"], "axis_direction": info["axis"]["d"],
        "motion": info["rotate"]["r"] - info["rotate"]["l"] if info["type"] == "rotate"
        else info["translate"]["r"] - info["translate"]["l"],
    } for info in trans_info]
    points = [trimesh.sample.sample_surface(mesh, 2000, seed=i)[0] for i, mesh in enumerate((body, door, drawer))]
    start = np.concatenate(points)
    end = np.concatenate([points[0]] + [apply_joint_reference(j, p) for j, p in zip(joints, points[1:])])
    labels = torch.cat([torch.full((len(p),), i) for i, p in enumerate(points)])

    model = ArticulationModel([j["type"] for j in joints], dtype=dtype)
    for k, joint in enumerate(joints, start=1):
        model.set_joint(k, joint["type"], joint["axis_origin"], joint["axis_direction"], joint["motion"])
    weights = torch.nn.functional.one_hot(labels, 3).to(dtype)
    rotations = torch.tensor([[1.0, 0, 0, 0]], dtype=dtype).expand(len(start), 4)
    moved, _ = model.deform(torch.from_numpy(start).to(dtype), rotations, weights)
    assert np.abs(moved.detach().double().numpy() - end).max() < atol


# --------------------------------------------------------------------------- persistence and bad input

def test_json_round_trip() -> None:
    model = make_model(torch.float32)
    loaded = ArticulationModel.from_json(json.loads(json.dumps(model.to_json())))
    assert loaded.joint_types == ["revolute", "prismatic"]
    torch.testing.assert_close(loaded.quats, model.quats, atol=0, rtol=0)
    torch.testing.assert_close(loaded.trans, model.trans, atol=0, rtol=0)
    assert loaded.joint(1) == model.joint(1)
    empty = ArticulationModel.from_json({"joint_types": [], "quats": [], "trans": []})
    assert empty.num_parts == 1


@pytest.mark.parametrize("data, message", [
    ({"joint_types": ["revolute"], "quats": [[1, 0, 0, 0]]}, "keys"),
    ({"joint_types": ["hinge"], "quats": [[1, 0, 0, 0]], "trans": [[0, 0, 0]]}, "joint type"),
    ({"joint_types": ["revolute"], "quats": [[1, 0, 0]], "trans": [[0, 0, 0]]}, "quats must have shape"),
    ({"joint_types": ["revolute"], "quats": [[0, 0, 0, 0]], "trans": [[0, 0, 0]]}, "nonzero"),
    ({"joint_types": ["revolute"], "quats": [[1, 0, 0, 0]], "trans": [[0, "x", 0]]}, "not numeric"),
    ({"joint_types": ["revolute"], "quats": [[1, 0, 0, 0]], "trans": [[0, float("nan"), 0]]}, "non-finite"),
])
def test_from_json_bad_input(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        ArticulationModel.from_json(data, source="ckpt/articulation.json")
    assert "ckpt/articulation.json" in str(info.value)


def test_bad_joints_and_transforms_raise() -> None:
    good = {"type": "revolute", "axis_origin": [0, 0, 0], "axis_direction": [0, 0, 1], "motion": 10.0}
    with pytest.raises(ValueError, match="lacks keys"):
        joint_to_matrix({"type": "revolute", "motion": 1.0})
    with pytest.raises(ValueError, match="nonzero"):
        joint_to_matrix({**good, "axis_direction": [0, 0, 0]})
    with pytest.raises(ValueError, match="3 numbers"):
        invert_joint({**good, "axis_origin": [0, 0]})
    with pytest.raises(ValueError, match="canonical_state"):
        joint_start_to_end(good, 2)
    skewed = np.eye(4)
    skewed[0, 1] = 0.1
    with pytest.raises(ValueError, match="not a rigid transform"):
        matrix_to_joint(skewed, "revolute")
    with pytest.raises(ValueError, match="not a rigid transform"):
        ArticulationModel(["revolute"], np.diag([1.0, 1.0, -1.0, 1.0])[None])
    with pytest.raises(ValueError, match="shape"):
        ArticulationModel(["revolute", "revolute"], np.eye(4)[None])
    model = make_model()
    with pytest.raises(IndexError, match="part index"):
        model.joint(0)
    with pytest.raises(IndexError, match="part index"):
        model.set_joint(3, "revolute", good["axis_origin"], good["axis_direction"], good["motion"])
    with pytest.raises(ValueError, match="weights"):
        model.deform(torch.zeros(2, 3, dtype=F64), torch.zeros(2, 4, dtype=F64), torch.zeros(2, 2, dtype=F64))


def test_initial_transforms_construct_the_motion() -> None:
    revolute = {"type": "revolute", "axis_origin": [0.1, 0.2, 0.3], "axis_direction": [1, 1, 0], "motion": 33.0}
    T_rev = joint_to_matrix(revolute)
    T_pri = T_rev.copy()
    T_pri[:3, 3] = [0.0, 0.5, 0.0]
    model = ArticulationModel(["revolute", "prismatic"], np.stack([T_rev, T_pri]), dtype=F64)
    assert_joint_close(model.joint(1), expected_canonical_joint(revolute), atol=1e-12)
    assert_joint_close(model.joint(2), {"type": "prismatic", "axis_origin": [0, 0, 0], "axis_direction": [0, 1, 0],
                                        "motion": 0.5}, atol=1e-12)


@pytest.mark.cuda
@pytest.mark.parametrize("allow_tf32", [False, True])
def test_deform_on_cuda_matches_cpu(allow_tf32: bool) -> None:
    """Same result on CUDA, also when another module has enabled TF32 matmuls (no matmul in the math)."""
    model = make_model(torch.float32)
    generator = torch.Generator().manual_seed(6)
    means = torch.randn(1000, 3, generator=generator)
    rotations = random_unit_quats(1000, 9).float()
    weights = torch.softmax(torch.randn(1000, 3, generator=generator), 1)
    expected = model.deform(means, rotations, weights)
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    try:
        got = model.cuda().deform(means.cuda(), rotations.cuda(), weights.cuda())
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    for a, b in zip(got, expected):
        torch.testing.assert_close(a.cpu(), b, atol=2e-6, rtol=0)
