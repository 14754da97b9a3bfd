"""Tests of stage 3's part discovery package `parts/`.

Unit tests build small synthetic geometry (boxes, plates, pinhole views) by hand. Regression tests run
`discover_parts` on generated scenes at low resolution, with the back-projected ground-truth depth of the training
views as a perfect coarse model and the views' silhouettes, and compare with gt/trans.json and the part id images
(tests may read gt/; the stage may not). Scenes are generated with open_state="end": the canonical state (where the
parts are open) is state 1, and the stage's motions (canonical -> other) are converted to start -> end before they
are compared.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from benchmarks.stage3_proxy import part_ids, state_input
from data_tools.synthetic import generate_scene
from evaluation.metrics import evaluate_joints, load_gt_joints
from parts.accounts import Accounts, Landing, owners
from parts.attachment import attachment, contact, engaged, twin
from parts.discover import PART_REACH, Discovery, PartsConfig, discover_parts
from parts.joints import fit_joints, preferred_type
from parts.motion import (BOX_TRIM, Side, along_axis, along_box, axis_point, axis_scan, box_frame, compass_search,
                          constrain, fit_coarse_to_fine, fit_facing, fit_pairs, hinge_scan, invert, moved_apart,
                          rotation_axis)
from parts.observation import FREE, HIDDEN, SUPPORTED, Observation, View
from parts.refine import connected_pieces
from scene.articulation import joint_start_to_end, joint_to_matrix, matrix_to_joint
from utils.rigid_fit import apply_transform, make_transform, rotation_about_line


# ------------------------------------------------------------------------------------------------ synthetic geometry
def box_surface(size, spacing: float = 0.005, centre=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, 3) on the six faces of an axis-aligned box of `size` (3,) on a grid of `spacing`, and each point's
    outward face normal (N, 3)."""
    size, centre = np.asarray(size, float), np.asarray(centre, float)
    half = size / 2
    points, normals = [], []
    for axis in range(3):
        a, b = [d for d in range(3) if d != axis]
        ua = np.linspace(-half[a], half[a], max(2, int(round(size[a] / spacing)) + 1))
        ub = np.linspace(-half[b], half[b], max(2, int(round(size[b] / spacing)) + 1))
        grid_a, grid_b = np.meshgrid(ua, ub, indexing="ij")
        for sign in (-1.0, 1.0):
            face = np.zeros((grid_a.size, 3))
            face[:, a], face[:, b], face[:, axis] = grid_a.ravel(), grid_b.ravel(), sign * half[axis]
            normal = np.zeros(3)
            normal[axis] = sign
            points.append(face)
            normals.append(np.tile(normal, (len(face), 1)))
    points, normals = np.concatenate(points), np.concatenate(normals)
    # edge points appear on two faces: keep one of each
    _, first = np.unique(np.round(points / spacing * 4).astype(np.int64), axis=0, return_index=True)
    first = np.sort(first)
    return points[first] + centre, normals[first]


def look_at(eye: np.ndarray, target: np.ndarray = np.zeros(3)) -> np.ndarray:
    """OpenCV world-to-camera (4, 4) of a camera at `eye` looking at `target` (x right, y down, z forward)."""
    z = (target - eye) / np.linalg.norm(target - eye)
    up = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.95 else np.array([0.0, 1.0, 0.0])
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return make_transform(R, -R @ eye)


def camera_ring(count: int = 8, distance: float = 1.5, elevations=(40.0, -40.0)) -> list[np.ndarray]:
    """Camera centres (3,) around the origin: `count` azimuths at each elevation (degrees)."""
    centres = []
    for k, elevation in enumerate(elevations):
        e = np.radians(elevation)
        for i in range(count):
            a = 2 * np.pi * (i + 0.5 * k) / count
            centres.append(distance * np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)]))
    return centres


def views_of(points: np.ndarray, centres: list[np.ndarray], size: int = 128, focal: float = 150.0) -> list[View]:
    """Pinhole views (size x size pixels) from `centres` looking at the origin, with the silhouettes of `points`
    (their projected pixels, a 3x3 dilation closing the gaps between samples)."""
    from scipy import ndimage

    K = np.array([[focal, 0.0, size / 2], [0.0, focal, size / 2], [0.0, 0.0, 1.0]])
    views = []
    for eye in centres:
        view = View(K, look_at(np.asarray(eye, float)), size, size)
        uv, z = view.project(points)
        pix = np.floor(uv).astype(np.int64)
        ok = (z > 0) & (pix[:, 0] >= 0) & (pix[:, 0] < size) & (pix[:, 1] >= 0) & (pix[:, 1] < size)
        mask = np.zeros((size, size), dtype=bool)
        mask[pix[ok, 1], pix[ok, 0]] = True
        views.append(View(K, view.world_to_cam, size, size, ndimage.binary_dilation(mask, iterations=1)))
    return views


BOX = (0.4, 0.3, 0.2)


@pytest.fixture(scope="module")
def box_views():
    """A 40 x 30 x 20 cm box's surface points, normals, camera centres and views (8 at 40 degrees above, 8 at 40 below, 1.5 m away, 1 cm pixels)."""
    points, normals = box_surface(BOX)
    centres = camera_ring()
    return points, normals, centres, views_of(points, centres)


# ------------------------------------------------------------------------------------------------ parts.motion
def test_fit_pairs_and_constrain_recover_a_revolute_motion():
    """Exact pairs of a 35-degree turn about a line off the origin give back its angle, axis direction and axis line;
    `constrain` removes a screw translation along the axis, and leaves the pure rotation unchanged."""
    rng = np.random.default_rng(0)
    source = rng.uniform(-0.3, 0.3, (200, 3))
    origin, direction, angle = np.array([0.2, -0.1, 0.05]), np.array([0.3, 0.9, -0.2]), np.radians(35.0)
    direction = direction / np.linalg.norm(direction)
    truth = rotation_about_line(origin, direction, angle)
    T = fit_pairs(source, apply_transform(truth, source), "revolute")
    axis, turn = rotation_axis(T)
    assert abs(np.degrees(turn) - 35.0) < 1e-6
    assert abs(abs(axis @ direction) - 1.0) < 1e-9
    # the fitted axis line passes through the true one: its point lies on the true line
    offset = axis_point(T) - origin
    assert np.linalg.norm(offset - (offset @ direction) * direction) < 1e-7
    np.testing.assert_allclose(T, truth, atol=1e-9)
    screw = truth.copy()
    screw[:3, 3] += 0.07 * direction
    np.testing.assert_allclose(constrain(screw, "revolute"), truth, atol=1e-12)
    np.testing.assert_allclose(constrain(truth, "revolute"), truth, atol=1e-12)
    assert np.allclose(constrain(screw, "rigid"), screw)
    with pytest.raises(ValueError, match="motion model"):
        constrain(truth, "screw")


def test_fit_pairs_and_constrain_recover_a_prismatic_motion():
    """Exact pairs of a translation give it back (prismatic and rigid fits); `constrain` to prismatic drops a small
    rotation and keeps the translation of the origin."""
    rng = np.random.default_rng(1)
    source = rng.uniform(-0.3, 0.3, (150, 3))
    shift = np.array([0.12, -0.03, 0.25])
    target = source + shift
    for model in ("prismatic", "rigid"):
        T = fit_pairs(source, target, model)
        np.testing.assert_allclose(T[:3, 3], shift, atol=1e-12)
        np.testing.assert_allclose(T[:3, :3], np.eye(3), atol=1e-12)
    tilted = make_transform(Rotation.from_rotvec([0.0, 0.02, 0.0]).as_matrix(), shift)
    np.testing.assert_allclose(constrain(tilted, "prismatic"), make_transform(t=shift), atol=1e-15)
    # a revolute fit of a pure translation has no turn left
    assert rotation_axis(fit_pairs(source, target, "revolute"))[1] < 1e-6


def test_fit_coarse_to_fine_recovers_a_box_motion_from_a_perturbed_start():
    """Symmetric ICP of a box's surface onto the moved box (sampled on another grid) recovers the motion from a start
    off by 4 degrees and 2 cm, to within 0.2 degrees and 1 mm."""
    source, _ = box_surface((0.4, 0.25, 0.15), spacing=0.006)
    other, _ = box_surface((0.4, 0.25, 0.15), spacing=0.0071)
    truth = make_transform(Rotation.from_rotvec(np.radians(20.0) * np.array([0.0, 0.6, 0.8])).as_matrix(),
                           np.array([0.1, 0.05, -0.08]))
    target = apply_transform(truth, other)
    error = make_transform(Rotation.from_rotvec(np.radians(4.0) * np.array([1.0, 0.0, 0.0])).as_matrix(),
                           np.array([0.02, 0.0, 0.0]))
    start = error @ truth
    forward = Side(source, cKDTree(target))
    backward = Side(target, cKDTree(source))
    T = fit_coarse_to_fine(start, "rigid", forward, backward, tolerance=0.01)
    assert np.degrees(rotation_axis(T @ invert(truth))[1]) < 0.2
    assert moved_apart(T, truth, source) < 1e-3
    assert moved_apart(start, truth, source) > 0.02  # the start was well off


def test_invert_rotation_axis_and_axis_point_are_consistent():
    """invert(T) undoes T; T and its inverse turn by one angle about opposite directions; axis_point is the axis
    point nearest the origin, a fixed point of a pure rotation, and the origin for a translation."""
    direction = np.array([1.0, 2.0, 2.0]) / 3.0
    origin = np.array([0.3, 0.4, -0.2])
    T = rotation_about_line(origin, direction, np.radians(50.0))
    np.testing.assert_allclose(invert(T) @ T, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(T @ invert(T), np.eye(4), atol=1e-12)
    (a, angle), (b, angle_inv) = rotation_axis(T), rotation_axis(invert(T))
    assert abs(angle - np.radians(50.0)) < 1e-9 and abs(angle_inv - angle) < 1e-9
    np.testing.assert_allclose(a, direction, atol=1e-9)
    np.testing.assert_allclose(b, -direction, atol=1e-9)
    p = axis_point(T)
    assert abs(p @ direction) < 1e-9  # nearest the origin: orthogonal to the axis
    np.testing.assert_allclose(apply_transform(T, p[None])[0], p, atol=1e-9)
    np.testing.assert_allclose(axis_point(invert(T)), p, atol=1e-9)
    rel = origin - p
    assert np.linalg.norm(rel - (rel @ direction) * direction) < 1e-9  # on the true line
    np.testing.assert_allclose(axis_point(make_transform(t=[0.1, 0.0, 0.0])), np.zeros(3))
    assert rotation_axis(make_transform(t=[0.1, 0.0, 0.0]))[1] == 0.0


# ------------------------------------------------------------------------------------------------ parts.observation
def test_judge_supported_free_hidden(box_views):
    """Surface points are SUPPORTED; points 8-15 cm in front of the faces, in empty space, are FREE; points inside the
    box, behind every view's first surface, are HIDDEN."""
    points, normals, _, views = box_views
    obs = Observation(points, views, tolerance=0.01, margin=0.02)
    rng = np.random.default_rng(2)
    on_surface = points[rng.choice(len(points), 300, replace=False)]
    status, dist = obs.judge(on_surface)
    assert np.all(status == SUPPORTED) and np.all(dist < 1e-9)
    # in front of the faces (upper and side faces, which cameras see)
    pick = rng.choice(len(points), 300, replace=False)
    in_front = points[pick] + normals[pick] * rng.uniform(0.08, 0.15, (300, 1))
    assert np.all(obs.judge(in_front)[0] == FREE)
    inside = rng.uniform(-1, 1, (300, 3)) * (np.array(BOX) / 2 - 0.04)
    assert np.all(obs.judge(inside)[0] == HIDDEN)
    # seen from the side it was seen from, a surface point is still supported
    status, _ = obs.judge(on_surface, obs.seen_sides(on_surface))
    assert np.all(status == SUPPORTED)


def test_seen_sides_point_towards_the_cameras(box_views):
    """Nearly every surface point is seen, and its seen side points out of its face towards the cameras: away from
    the edges (which the cameras of two faces see), dot > 0.5 with the outward normal and > 0.3 with the mean
    direction to the cameras in front of the face."""
    points, normals, centres, views = box_views
    obs = Observation(points, views, tolerance=0.01, margin=0.02)
    sides = obs.sides
    seen = np.linalg.norm(sides, axis=1) > 0.5
    assert seen.mean() > 0.95  # all faces are in view of some camera
    np.testing.assert_allclose(obs.seen_sides(points[:500]), sides[:500])
    in_face = np.abs(points) * (1 - np.abs(normals)) < np.array(BOX) / 2 - 0.03
    seen &= in_face.all(axis=1)
    assert np.all(np.einsum("ij,ij->i", sides[seen], normals[seen]) > 0.5)
    to_cam = np.stack(centres)[None] - points[:, None]
    to_cam /= np.linalg.norm(to_cam, axis=2, keepdims=True)
    in_front = np.einsum("ncj,nj->nc", to_cam, normals) > 0  # the box is convex: these cameras can see the point
    towards = (to_cam * in_front[..., None]).sum(axis=1)
    towards /= np.linalg.norm(towards, axis=1, keepdims=True)
    assert np.all(np.einsum("ij,ij->i", sides[seen], towards[seen]) > 0.3)


def test_a_face_seen_from_the_wrong_side_is_not_supported(box_views):
    """A point on the top face seen from inside the box (an inner face turned onto it) is not SUPPORTED, though it
    lies on the surface; seen from outside it is."""
    points, normals, _, views = box_views
    obs = Observation(points, views, tolerance=0.01, margin=0.02)
    top = (normals[:, 2] > 0.5) & (np.abs(points[:, 0]) < 0.1) & (np.abs(points[:, 1]) < 0.07)
    x = points[top]
    outward = np.tile([0.0, 0.0, 1.0], (len(x), 1))
    assert np.all(obs.judge(x, outward)[0] == SUPPORTED)
    status, dist = obs.judge(x, -outward)
    assert np.all(status != SUPPORTED) and np.all(~np.isfinite(dist))
    assert np.all(status == HIDDEN)  # on the surface: no camera sees through it


def test_observation_rejects_a_state_without_points():
    """A state with no surface points is an error, not an empty observation."""
    with pytest.raises(ValueError, match="no surface points"):
        Observation(np.zeros((0, 3)), [], tolerance=0.01, margin=0.02)


# ------------------------------------------------------------------------------------------------ parts.joints
def joint_sides(points_c: np.ndarray, points_o: np.ndarray) -> tuple[Side, Side]:
    """The forward and backward sides of a part as discover.py's `part()` builds them: the canonical points onto the
    other state's tree, and the other state's points onto the canonical tree."""
    return Side(points_c, cKDTree(points_o)), Side(points_o, cKDTree(points_c))


def test_fit_joints_prefers_revolute_for_a_hinged_plate():
    """A 40 x 30 x 2 cm plate turned 40 degrees about one of its edges: revolute preferred (admissible, lower BIC),
    its axis within 1 degree of the hinge and passing within 5 mm of it."""
    rng = np.random.default_rng(3)
    plate, _ = box_surface((0.4, 0.3, 0.02), spacing=0.005)
    hinge_origin, hinge_dir = np.array([-0.2, 0.0, -0.01]), np.array([0.0, 1.0, 0.0])
    truth = rotation_about_line(hinge_origin, hinge_dir, np.radians(40.0))
    other, _ = box_surface((0.4, 0.3, 0.02), spacing=0.0055)
    other = apply_transform(truth, other) + rng.normal(0, 5e-4, other.shape)
    rigid = fit_pairs(plate, apply_transform(truth, plate), "rigid")
    fits = fit_joints(rigid, *joint_sides(plate, other), tolerance=0.01)
    assert preferred_type(fits) == "revolute"
    revolute = fits["revolute"]
    assert revolute.admissible and revolute.bic < fits["prismatic"].bic
    axis, angle = rotation_axis(revolute.transform)
    assert np.degrees(np.arccos(min(1.0, abs(axis @ hinge_dir)))) < 1.0
    assert abs(np.degrees(angle) - 40.0) < 1.0
    rel = axis_point(revolute.transform) - hinge_origin
    assert np.linalg.norm(rel - (rel @ hinge_dir) * hinge_dir) < 5e-3


def test_fit_joints_prefers_prismatic_for_a_slid_box():
    """A 30 x 40 x 15 cm box slid 15 cm along x (resampled, 0.5 mm noise): prismatic preferred, its translation
    within 2 mm of the slide."""
    rng = np.random.default_rng(4)
    box, _ = box_surface((0.3, 0.4, 0.15), spacing=0.005)
    other, _ = box_surface((0.3, 0.4, 0.15), spacing=0.0055)
    shift = np.array([0.15, 0.0, 0.0])
    other = other + shift + rng.normal(0, 5e-4, other.shape)
    rigid = fit_pairs(box, box + shift, "rigid")
    fits = fit_joints(rigid, *joint_sides(box, other), tolerance=0.01)
    assert preferred_type(fits) == "prismatic"
    np.testing.assert_allclose(fits["prismatic"].transform[:3, 3], shift, atol=2e-3)


def test_fit_joints_keeps_a_settled_translation_as_the_prismatic_joint():
    """A part whose motion is a translation (stage 3 settled it on one) keeps exactly that translation as its
    prismatic joint, and its revolute fit is not admissible: prismatic is preferred even where the box's far side is
    missing from the other state (a drawer's tray that the body hides), which lets ICP turn it."""
    box, _ = box_surface((0.3, 0.4, 0.15), spacing=0.005)
    shift = np.array([0.12, 0.01, 0.0])
    other = box[box[:, 0] > 0.05] + shift  # only the front third is seen in the other state
    fits = fit_joints(make_transform(t=shift), *joint_sides(box, other), tolerance=0.01)
    assert preferred_type(fits) == "prismatic" and not fits["revolute"].admissible
    np.testing.assert_array_equal(fits["prismatic"].transform, make_transform(t=shift))


def test_compass_search_finds_the_minimum_of_a_stepped_cost():
    """A piecewise-constant bowl (the count of samples a translation misses is one): compass search from 20 cm away
    ends within the last step (1 mm) of its minimum, and never above the starting cost."""
    target = np.array([0.13, -0.07, 0.02])

    def cost(t: np.ndarray) -> float:
        return float(np.floor(np.linalg.norm(t - target) / 0.002))

    start = target + np.array([0.2, 0.05, -0.1])
    found, value = compass_search(cost, start, 0.04, 0.001)
    assert np.linalg.norm(found - target) < 0.004 and value <= cost(start) and value == cost(found)


# ------------------------------------------------------------------------------------------------ parts.attachment
def laptop_like():
    """A 30 x 20 x 1 cm lid hinged along its edge x = -0.15 to a base lying beside it (x < -0.15), turned 100 degrees
    about the hinge: the lid's points and normals, the base's points, the hinge and the true motion."""
    lid, normals = box_surface((0.3, 0.2, 0.01), spacing=0.005)
    base, _ = box_surface((0.3, 0.2, 0.01), spacing=0.005, centre=(-0.305, 0.0, 0.0))
    hinge_origin, hinge_dir = np.array([-0.15, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    truth = rotation_about_line(hinge_origin, hinge_dir, np.radians(100.0))
    return lid, normals, base, truth


def test_twin_flips_a_slab_onto_the_same_place_and_attachment_tells_it_from_the_hinge():
    """The twin of a lid's motion puts the lid where the motion does (a slab flipped about its mid-plane) with its
    faces swapped, about an axis far from the hinge: the lid's contact with the base stays in place under the true
    motion (attachment under 1 cm) and moves by a large part of the lid's size under the twin."""
    lid, normals, base, truth = laptop_like()
    flipped = twin(truth, lid)
    assert flipped is not None and twin(make_transform(t=np.array([0.1, 0.0, 0.0])), lid) is None
    where = cKDTree(apply_transform(truth, lid))
    assert where.query(apply_transform(flipped, lid))[0].max() < 1e-6
    facing = np.einsum("nj,nj->n", normals @ truth[:3, :3].T, normals @ flipped[:3, :3].T)
    top = np.abs(normals[:, 2]) > 0.9
    assert np.all(facing[top] < -0.99)  # the top face turned where the bottom face goes
    touching = contact(lid, cKDTree(base), 0.02)
    assert 0 < len(touching) < 0.2 * len(lid)
    assert attachment(truth, touching) < 0.01
    assert attachment(flipped, touching) > 0.1


def test_a_slide_longer_than_the_part_is_not_engaged():
    """A 40 cm deep drawer box pulled 30 cm along its depth stays engaged; carried 60 cm, or 30 cm across its 5 cm
    thickness, it would have left its slot."""
    box, _ = box_surface((0.4, 0.3, 0.05), spacing=0.01)
    assert engaged(make_transform(t=[0.3, 0.0, 0.0]), box, 0.02)
    assert not engaged(make_transform(t=[0.6, 0.0, 0.0]), box, 0.02)
    assert not engaged(make_transform(t=[0.0, 0.0, 0.3]), box, 0.02)


def test_fit_facing_pairs_faces_seen_from_the_same_side():
    """A lid's motion started 8 mm off along the lid's normal (each face nearer the other face's place than its own):
    ICP pairing each face only with target surface facing its way recovers the motion within 1 mm."""
    lid, normals, _, truth = laptop_like()
    target, target_normals = apply_transform(truth, lid), normals @ truth[:3, :3].T
    tree = cKDTree(target)

    def match(points, sides, reach):
        dist, index = tree.query(points, k=8, distance_upper_bound=reach)
        found = np.isfinite(dist)
        facing = np.einsum("nj,nkj->nk", sides, target_normals[np.where(found, index, 0)]) > 0
        dist = np.where(found & facing, dist, np.inf)
        best = np.argmin(dist, axis=1)
        rows = np.arange(len(points))
        return dist[rows, best], np.where(np.isfinite(dist[rows, best]), index[rows, best], len(target))

    normal = truth[:3, :3] @ np.array([0.0, 0.0, 1.0])
    start = make_transform(t=0.008 * normal) @ truth  # each face 8 mm off its place, 2 mm from the other face
    fitted = fit_facing(start, lid, normals, match, target, tolerance=0.01)
    assert moved_apart(fitted, truth, lid) < 1e-3


# ------------------------------------------------------------------------------------------------ parts.discover
@pytest.mark.parametrize("kwargs, message", [
    (dict(voxel_size=0.0), "voxel_size"),
    (dict(voxel_size=-0.01), "voxel_size"),
    (dict(joint_types=("revolute", "hinge")), "joint types"),
    (dict(num_movable=2, joint_types=("prismatic", "prismatic", "prismatic")), "3 joint types given for 2"),
    (dict(num_movable=0), "at least 1"),
])
def test_parts_config_rejects_bad_values(kwargs, message):
    """PartsConfig refuses a non-positive voxel size, an unknown joint type, a joint-type count unlike the part count
    and a part count below 1, naming the problem."""
    with pytest.raises(ValueError, match=message):
        PartsConfig(**kwargs)


def test_parts_config_requested_count_and_open_cost():
    """The requested count comes from the joint types (else num_movable); the opening cost is the minimum part area
    in voxels."""
    assert PartsConfig(joint_types=("prismatic",) * 3).requested == 3
    assert PartsConfig(num_movable=2).requested == 2 and PartsConfig().requested is None
    assert PartsConfig(voxel_size=0.02, min_part_area=0.015).open_cost == pytest.approx(37.5)


def test_discover_parts_without_motion_is_a_clear_error(box_views):
    """Two identical states: discover_parts raises a ValueError saying there is no motion."""
    points, _, _, views = box_views
    with pytest.raises(ValueError, match="no motion"):
        discover_parts(points, views, points.copy(), views, PartsConfig())


# ------------------------------------------------------------------------------------------------ generated scenes
RES, VIEWS = 96, 24
CANONICAL = 1  # open_state="end": the parts are open in state 1


def make_scene(root: Path, category: str, seed: int) -> dict:
    """Generate a scene (default appearance and random orientation) and load both states' stage-3 inputs."""
    scene = root / f"{category}_{seed}"
    generate_scene(category, scene, res=RES, views=VIEWS, test_views=1, seed=seed, supersample=1, progress=False,
                   open_state="end")
    points_c, views_c = state_input(scene, CANONICAL)
    points_o, views_o = state_input(scene, 1 - CANONICAL)
    return dict(scene=scene, points_c=points_c, views_c=views_c, points_o=points_o,
                views_o=views_o, gt=load_gt_joints(scene / "gt" / "trans.json"))


def run(data: dict, points_c: np.ndarray | None = None, **config):
    """discover_parts on a scene's inputs (optionally other canonical points)."""
    points_c = data["points_c"] if points_c is None else points_c
    return discover_parts(points_c, data["views_c"], data["points_o"], data["views_o"], PartsConfig(**config))


def joint_errors(result, data: dict) -> dict:
    """evaluate_joints of the parts' start -> end joints against gt/trans.json."""
    joints = [joint_start_to_end(matrix_to_joint(p.transform, p.joint_type), CANONICAL) for p in result.parts]
    return evaluate_joints(joints, data["gt"])


@pytest.fixture(scope="module")
def window(tmp_path_factory):
    """window seed 0: a frame and one sliding sash."""
    return make_scene(tmp_path_factory.mktemp("window"), "window", 0)


@pytest.fixture(scope="module")
def drawers(tmp_path_factory):
    """The first drawers seed whose object has 3 drawers (read from its gt/trans.json)."""
    root = tmp_path_factory.mktemp("drawers")
    for seed in range(10):
        scene = root / f"probe_{seed}"
        generate_scene("drawers", scene, res=16, views=1, test_views=1, seed=seed, supersample=1, progress=False,
                       open_state="end")
        if len(json.loads((scene / "gt" / "trans.json").read_text())["trans_info"]) == 3:
            return make_scene(root, "drawers", seed)
    pytest.fail("no drawers seed in 0-9 has 3 drawers")


@pytest.fixture(scope="module")
def laptop(tmp_path_factory):
    """laptop seed 0: a base and a lid, a thin slab that its twin motion explains as well as its hinge does."""
    return make_scene(tmp_path_factory.mktemp("laptop"), "laptop", 0)


@pytest.fixture(scope="module")
def cabinet(tmp_path_factory):
    """cabinet seed 0: a body and one revolute door."""
    return make_scene(tmp_path_factory.mktemp("cabinet"), "cabinet", 0)


# At res 96 the back-projected window is too sparse for 1 cm voxels: its sash's samples fall apart into pieces under
# the opening cost and no part is left (see test_dropped_pieces_are_reported); 2 cm voxels are needed. (At res 128
# with 1 cm voxels one prismatic part is found, but its axis is 6.8 degrees off: res 96 and 2 cm voxels is cheaper.)
WINDOW_VOXEL = 0.02


def test_window_sash_is_one_prismatic_part(window):
    """The window's sliding sash: exactly one part, prismatic by the evidence, axis within 5 degrees of the GT."""
    result = run(window, voxel_size=WINDOW_VOXEL)
    assert len(result.parts) == 1
    part = result.parts[0]
    assert part.joint_type == "prismatic" and part.type_source == "evidence"
    errors = joint_errors(result, window)["parts"][0]
    assert errors["type_gt"] == "prismatic" and errors["axis_ang"] < 5.0


def test_window_sash_cut_in_two_is_still_one_part(window):
    """A 5 cm band of the open sash's points removed across it (its surface in two pieces, farther apart than the
    part reach): still exactly one part, holding samples of both pieces."""
    points = window["points_c"]
    ids = part_ids(window["scene"], CANONICAL, points)
    sash = ids == 2
    centred = points[sash] - points[sash].mean(axis=0)
    across = np.linalg.svd(centred, full_matrices=False)[2][0]  # the sash's longest direction
    coordinate = (points - points[sash].mean(axis=0)) @ across
    band = sash & (np.abs(coordinate) < 0.025)
    kept = points[~band]
    pieces = connected_pieces(kept[sash[~band]], PART_REACH * WINDOW_VOXEL)
    assert len(pieces) >= 2 and len(pieces[1]) > 0.3 * sash.sum()  # the cut leaves two large pieces
    # The two pieces are found as two parts and `absorb` merges them (the cost rise is about 1, far under the
    # opening cost of 37.5).
    result = run(window, kept, voxel_size=WINDOW_VOXEL)
    assert len(result.parts) == 1
    along = (result.parts[0].points - points[sash].mean(axis=0)) @ across
    assert (along < -0.03).sum() > 20 and (along > 0.03).sum() > 20
    assert result.parts[0].joint_type == "prismatic"


def test_dropped_pieces_are_reported(window):
    """Whatever the voxel size, a selected motion's samples end in a part or in `skipped`."""
    result = run(window)
    assert result.parts or result.skipped


@pytest.mark.slow
def test_three_drawers_are_three_prismatic_parts(drawers):
    """Automatic mode on a 3-drawer object: 3 parts, all prismatic, each mostly (> 80 %) one distinct GT drawer."""
    result = run(drawers)
    assert len(result.parts) == 3
    assert all(p.joint_type == "prismatic" and p.type_source == "evidence" for p in result.parts)
    owners = []
    for part in result.parts:
        ids = part_ids(drawers["scene"], CANONICAL, part.points)
        values, counts = np.unique(ids, return_counts=True)
        owner = values[np.argmax(counts)]
        assert owner >= 2 and counts.max() > 0.8 * len(ids)  # a drawer, not the body
        owners.append(int(owner))
    assert len(set(owners)) == 3


@pytest.mark.slow
def test_given_joint_types_are_used(drawers):
    """joint_types=("prismatic",) * 3 on the 3-drawer object: 3 parts, each prismatic with type_source "given"."""
    result = run(drawers, joint_types=("prismatic", "prismatic", "prismatic"))
    assert len(result.parts) == 3
    assert all(p.joint_type == "prismatic" and p.type_source == "given" for p in result.parts)


@pytest.mark.slow
def test_regroup_joins_a_drawer_cut_in_two_with_spurious_motions(drawers):
    """One drawer's samples cut in two halves across its slide, each given its slide turned 12 degrees about the
    half's centre (opposite turns; 3-4 cm off the slide), next to a second drawer with its own slide: `regroup` joins
    the halves into one part whose searched motion moves the drawer within 5 mm of its slide (1.4 mm when written),
    and leaves the second drawer apart."""
    discovery = Discovery(drawers["points_c"], drawers["views_c"], drawers["points_o"], drawers["views_o"],
                          PartsConfig())
    discovery.candidates = discovery.hypotheses(*discovery.evidence())  # what settle's options start from
    points = discovery.c.points
    ids = part_ids(drawers["scene"], CANONICAL, points)
    slides = [np.linalg.inv(joint_to_matrix(joint)) for joint in drawers["gt"]]  # canonical (end) -> start
    first, second = np.flatnonzero(ids == 2), np.flatnonzero(ids == 3)
    direction = slides[0][:3, 3] / np.linalg.norm(slides[0][:3, 3])
    along = points[first] @ direction
    halves = [first[along < np.median(along)], first[along >= np.median(along)]]
    across = np.cross(direction, [0.0, 0.0, 1.0] if abs(direction[2]) < 0.9 else [1.0, 0.0, 0.0])
    turned = [slides[0] @ rotation_about_line(points[half].mean(axis=0), across, sign * np.radians(12.0))
              for half, sign in zip(halves, (1, -1))]
    parts = [discovery.part(half, T, split=False) for half, T in zip(halves, turned)]
    parts.append(discovery.part(second, slides[1], split=False))
    regrouped = discovery.regroup(parts)
    assert len(regrouped) == 2
    joined = max(regrouped, key=lambda part: len(part.points))
    assert len(joined.points) == len(first)
    assert moved_apart(joined.rigid_transform, slides[0], points[first]) < 0.005
    assert regrouped[1] is parts[2]


@pytest.mark.slow
def test_cabinet_door_is_one_revolute_part(cabinet):
    """cabinet seed 0: one part, revolute by the evidence, axis within 3 degrees of the GT hinge."""
    result = run(cabinet)
    assert len(result.parts) == 1
    assert result.parts[0].joint_type == "revolute" and result.parts[0].type_source == "evidence"
    errors = joint_errors(result, cabinet)["parts"][0]
    assert errors["type_gt"] == "revolute" and errors["axis_ang"] < 3.0


@pytest.mark.slow
def test_cabinet_door_cut_in_two_is_still_one_part(cabinet):
    """A 2.5 cm band of the open door's points removed across it (two pieces, farther apart than the part reach of
    1.5 voxels, within the host reach of 4): still exactly one revolute part."""
    points = cabinet["points_c"]
    door = part_ids(cabinet["scene"], CANONICAL, points) == 2
    centre = points[door].mean(axis=0)
    across = np.linalg.svd(points[door] - centre, full_matrices=False)[2][0]
    band = door & (np.abs((points - centre) @ across) < 0.0125)
    kept = points[~band]
    pieces = connected_pieces(kept[door[~band]], PART_REACH * 0.01)
    if not (len(pieces) >= 2 and len(pieces[1]) > 0.3 * door.sum()):  # not the expected failure: fail outright
        pytest.fail(f"the cut should leave two large pieces of the door, got {[len(p) for p in pieces[:3]]}")
    result = run(cabinet, kept)
    assert len(result.parts) == 1 and result.parts[0].joint_type == "revolute"


@pytest.mark.slow
def test_laptop_lid_turns_about_its_hinge(laptop):
    """laptop seed 0: one revolute part whose motion is the lid's (within 3 degrees), not its twin 180 degrees away,
    and whose axis passes by the hinge (within 5 cm; the twin's axis lies half the lid's depth or more away)."""
    result = run(laptop)
    assert len(result.parts) == 1 and result.parts[0].joint_type == "revolute"
    errors = joint_errors(result, laptop)["parts"][0]
    assert errors["motion"] < 3.0 and errors["axis_ang"] < 3.0 and errors["axis_offset"] < 0.05


def test_accounts_weigh_a_fragment_with_the_surface_it_steals():
    """A fragment (B) whose spurious motion lands it on a true part's (A) surface, and claims it more closely, costs A
    its explanation. Giving B to A's motion frees that surface: the total drops by the hand-computed amount, and it
    is the cheapest give-up; giving A to B's motion (A's samples in free space) raises the total."""
    motion_a, motion_b = make_transform(t=[1.0, 0, 0]), make_transform(t=[0, 1.0, 0])
    region_a, region_b = np.arange(0, 10), np.arange(10, 20)

    def land(T: np.ndarray, index: np.ndarray) -> Landing:
        if T is motion_a and index[0] == 0:  # A's own samples land on the other state's samples 0..9
            return Landing(np.zeros(10), np.arange(10))
        if T is motion_b and index[0] == 10:  # B's land there too
            return Landing(np.zeros(10), np.arange(10))
        hidden = T is motion_a  # B under A's motion hides; A under B's lies in free space
        return Landing(np.full(len(index), 0.5 if hidden else 1.0), np.full(len(index), -1))

    def distances(T: np.ndarray, index: np.ndarray) -> np.ndarray:
        if index[0] == 0 and T is motion_a:
            return np.full(10, 0.5)
        if index[0] == 10 and T is motion_b:
            return np.full(10, 0.1)  # B's claim is the closer one
        return np.full(10, np.inf)

    accounts = Accounts([region_a, region_b], [motion_a, motion_b], land, distances, static_o=np.zeros(10, bool),
                        body_costs=np.ones(30), open_cost=3.0, reach=1.0)
    assert np.array_equal(owners(accounts.dist, 1.0), np.full(10, 2))
    assert accounts.total() == pytest.approx(10 * 0.5 + 0.0 + 2 * 3.0)  # A's landings are taken: hidden cost
    assert accounts.change(1, 0) == pytest.approx(10 * 0.5 + 3.0 - 11.0)  # B hides under A's motion, A explains
    assert accounts.change(0, 1) == pytest.approx(10 * 1.0 + 3.0 - 11.0)
    assert accounts.change(1, -1) == pytest.approx(10 * 1.0 + 3.0 - 11.0)  # B to the body: its samples in free space
    assert min((accounts.change(i, h), i, h) for i, h in [(0, 1), (1, 0), (0, -1), (1, -1)])[1:] == (1, 0)
    accounts.give(1, 0)
    assert len(accounts.regions) == 1 and np.array_equal(np.sort(accounts.regions[0]), np.arange(20))
    assert accounts.total() == pytest.approx(10 * 0.5 + 3.0)


def test_axis_scan_finds_the_slide_along_the_parts_own_axis():
    """A box-shaped part whose cost is least 0.23 along its (rotated) long axis, with a decoy farther off-axis: the
    scan returns the slide along that axis within a step, and reaches beyond the part's extent by `beyond`."""
    rng = np.random.default_rng(3)
    R = Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix()
    box = rng.uniform([-0.15, -0.05, -0.02], [0.15, 0.05, 0.02], size=(500, 3)) @ R.T
    long_axis = R[:, 0]
    truth = 0.23 * long_axis

    def cost(t: np.ndarray) -> float:
        return min(np.linalg.norm(t - truth), np.linalg.norm(t - np.array([0.5, 0.5, 0.5])) + 0.01)

    found = axis_scan(cost, box_frame(box), 0.01, 0.0)
    best = min(found, key=cost)
    assert np.linalg.norm(best - truth) < 0.012
    def ring(t: np.ndarray) -> float:
        return abs(np.linalg.norm(t) - 0.33)

    far = axis_scan(ring, box_frame(box), 0.01, 0.04)  # beyond the extent (about 0.3)
    assert max(np.linalg.norm(t) for t in far) == pytest.approx(0.33, abs=0.006)
    assert max(np.linalg.norm(t) for t in axis_scan(ring, box_frame(box), 0.01, 0.0)) < 0.32


def _square_panel(rng: np.random.Generator, R: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """(2000, 3) samples of a 0.4 x 0.4 x 0.02 panel turned by R about its centre and moved to `centre`."""
    return rng.uniform([-0.2, -0.2, -0.01], [0.2, 0.2, 0.01], size=(2000, 3)) @ R.T + centre


def test_box_frame_follows_the_edges_of_a_square_panel():
    """A square panel's in-plane variances are equal, so its principal axes may lie anywhere in its plane; the box
    follows its edges (within two degrees) and spans its extent less the trimmed ends."""
    R = Rotation.from_euler("xyz", [30, -20, 65], degrees=True).as_matrix()
    panel = _square_panel(np.random.default_rng(5), R, np.array([0.3, -0.1, 0.2]))
    box = box_frame(panel)
    cosines = np.abs(box.axes @ R)  # rows: box axes; columns: the panel's edges and normal
    assert np.all(cosines.max(axis=1) > np.cos(np.radians(2.0)))
    extents = np.sort(box.high - box.low)
    assert extents[0] == pytest.approx(0.02 * (1 - 2 * BOX_TRIM), abs=0.002)
    assert extents[1:] == pytest.approx([0.4 * (1 - 2 * BOX_TRIM)] * 2, abs=0.01)


def test_hinge_scan_finds_a_door_turning_about_its_edge():
    """A square door turned 80 degrees about one of its edges (the cost: how far the samples land from where that
    turn puts them): the cheapest of the scanned edges is that turn, as near as a start for the refit needs (the box's
    edges follow the sampled panel's within a few degrees)."""
    R = Rotation.from_euler("xyz", [10, 40, -25], degrees=True).as_matrix()
    centre = np.array([0.1, 0.2, -0.3])
    door = _square_panel(np.random.default_rng(6), R, centre)
    hinge = centre + R @ np.array([0.2, 0.0, 0.0])  # the edge at x = +0.2, along the panel's y
    truth = rotation_about_line(hinge, R[:, 1], np.radians(80.0))
    moved = apply_transform(truth, door)

    def cost(T: np.ndarray) -> float:
        return float(np.minimum(np.linalg.norm(apply_transform(T, door) - moved, axis=1), 0.05).mean())

    found = hinge_scan(cost, box_frame(door), np.radians(10.0), np.radians(0.5))
    assert len(found) == 12
    best = min(found, key=lambda f: f[1])[0]
    assert np.degrees(np.arccos(np.clip((np.trace(best[:3, :3] @ truth[:3, :3].T) - 1) / 2, -1, 1))) < 3.0
    assert np.linalg.norm(apply_transform(best, door) - moved, axis=1).mean() < 0.01


def test_stage3_proxy_reads_stage2_outputs(cabinet, tmp_path, capsys):
    """`stage3_proxy --coarse_root`: stage 3 on a stage-2 iteration folder (rendered surfaces, larger-motion state)
    with the scene's views; here the folder holds the scene's back-projected surfaces, so the door is found as on
    them, a missing folder names the stage that writes it, and `--jobs` below one is refused."""
    from benchmarks import stage3_proxy
    from utils.point_cloud import write_point_ply

    folder = tmp_path / "iteration_6000"
    folder.mkdir()
    for state in (0, 1):
        points = cabinet["points_c"] if state == CANONICAL else cabinet["points_o"]
        write_point_ply(folder / f"surface_points_{state}.ply", points, np.full_like(points, 0.5))
    (folder / "larger_motion_state.txt").write_text(f"{CANONICAL}\n")
    points, views = stage3_proxy.coarse_input(folder, cabinet["scene"], CANONICAL)
    assert np.allclose(points, cabinet["points_c"], atol=1e-6) and len(views) == len(cabinet["views_c"])
    row = stage3_proxy.run_object(cabinet["scene"], None, coarse=folder)
    assert row["status"] == "ok" and row["canonical"] == CANONICAL and row["types"] == ["revolute"]
    assert row["joint_errors"][0]["axis_ang"] < 5.0
    with pytest.raises(SystemExit, match="run_suite"):
        stage3_proxy.main(["run", "--set", "dev", "--objects", "cabinet_seed0", "--coarse_root", str(tmp_path),
                           "--data_root", str(tmp_path)])
    with pytest.raises(SystemExit):
        stage3_proxy.main(["run", "--set", "dev", "--jobs", "0"])
    assert "--jobs must be at least 1" in capsys.readouterr().err


def test_along_axis_holds_a_slide_to_its_direction():
    """A cost least 0.2 along x but with a slightly cheaper 1 cm sideways drift (flat across the axis, as a drawer
    front's cost is): the slide stays on x, at 0.2 within a tenth of the step, and `along_box` tells it from the
    drifted one."""
    def cost(t: np.ndarray) -> float:
        return abs(t[0] - 0.2) + 0.001 * (abs(t[1] - 0.01) > 1e-3) + abs(t[2])

    along = along_axis(cost, np.array([0.15, 0.0, 0.0]), 0.01, 0.001)
    assert along[1] == 0.0 and along[2] == 0.0 and along[0] == pytest.approx(0.2, abs=0.001)
    drifted = compass_search(cost, np.array([0.15, 0.0, 0.0]), 0.01, 0.001)[0]
    assert abs(drifted[1] - 0.01) < 1e-3  # the free search takes the drift
    flags = along_box([make_transform(t=along), make_transform(t=drifted), rotation_about_line(np.zeros(3),
                                                                                                 np.ones(3), 0.3)],
                      np.eye(3))
    assert flags.tolist() == [True, False, False]
