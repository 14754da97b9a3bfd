"""Metrics: joint errors, part matching, GT loading, Chamfer distance, image metrics, metrics.json / result.csv."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial.transform import Rotation
from skimage.metrics import structural_similarity

from evaluation import metrics
from evaluation.meshes import save_mesh

DOOR = {"type": "revolute", "axis_origin": [0.3, -0.2, 0.1], "axis_direction": [0.0, 0.0, 1.0], "motion": 60.0}
LID = {"type": "revolute", "axis_origin": [0.0, 0.25, 0.4], "axis_direction": [1.0, 0.0, 0.0], "motion": -35.0}
DRAWER = {"type": "prismatic", "axis_origin": [0.0, 0.0, 0.0], "axis_direction": [0.0, 1.0, 0.0], "motion": 0.3}


def with_(joint: dict, **changes) -> dict:
    return {**joint, **changes}


def rotated(direction, degrees: float, about) -> list[float]:
    return Rotation.from_rotvec(np.radians(degrees) * np.asarray(about, float)).apply(direction).tolist()


@pytest.mark.parametrize("gt", [DOOR, LID, DRAWER])
def test_prediction_equal_to_gt_has_zero_errors(gt):
    result = metrics.evaluate_joints([gt], [gt])
    part = result["parts"][0]
    assert part["axis_ang"] == 0.0 and part["motion"] == pytest.approx(0.0, abs=1e-12)
    assert part["axis_pos"] == (0.0 if gt["type"] == "revolute" else None)
    assert result["type_correct"] == [True] and result["matched"] == [0]


def test_axis_angle_error_is_the_rotation_angle_either_sign():
    d = rotated([0.0, 0.0, 1.0], 5.0, [1.0, 1.0, 0.0] / np.sqrt(2.0))
    assert metrics.axis_angle_error(d, [0, 0, 1]) == pytest.approx(5.0, abs=1e-6)
    assert metrics.axis_angle_error(-np.asarray(d), [0, 0, 1]) == pytest.approx(5.0, abs=1e-6)  # 175 -> 5
    assert metrics.axis_angle_error([1e-3, 0, 1], [0, 0, 2]) == pytest.approx(math.degrees(math.atan(1e-3)), rel=1e-9)


def test_axis_position_error_is_the_distance_between_lines():
    o, d = np.array(DOOR["axis_origin"]), np.array(DOOR["axis_direction"])
    perpendicular = np.array([0.6, 0.8, 0.0])
    assert metrics.axis_position_error(o + 0.05 * perpendicular, d, o, d) == pytest.approx(0.05, abs=1e-12)
    assert metrics.axis_position_error(o + 0.7 * d, -d, o, d) == pytest.approx(0.0, abs=1e-12)  # along the axis
    # skew lines: x axis and a line along y at height 0.2 -> 0.2 apart
    assert metrics.axis_position_error([0, 0, 0], [1, 0, 0], [5.0, -3.0, 0.2], [0, 1, 0]) == pytest.approx(0.2)


def test_axis_offset_sees_parallel_axes_apart():
    o, d = np.array([0.0, -0.12, -0.37]), np.array([1.0, 0.0, 0.0])
    apart = np.array([0.0, 0.012, -0.016])  # 2 cm off the axis; the predicted axis tilts 0.1 degrees towards it
    tilted = d + np.radians(0.1) * apart / np.linalg.norm(apart)
    o_pred = o + 0.3 * d + apart
    assert metrics.axis_position_error(o_pred, tilted, o, d) < 0.001  # the papers' line distance hides the offset
    assert metrics.axis_offset_error(o_pred, tilted, o) == pytest.approx(0.02, abs=0.001)
    assert metrics.axis_offset_error(o + 0.7 * d, -d, o) == pytest.approx(0.0, abs=1e-12)  # along the axis
    errors = metrics.evaluate_joints([with_(DOOR, axis_origin=list(np.add(DOOR["axis_origin"], [0.0, 0.03, 0.0])))],
                                     [DOOR])
    assert errors["parts"][0]["axis_offset"] == pytest.approx(0.03 * np.linalg.norm(np.cross([0, 1, 0], np.array(
        DOOR["axis_direction"]) / np.linalg.norm(DOOR["axis_direction"]))))
    assert errors["mean"]["axis_offset"] == errors["parts"][0]["axis_offset"]


def test_motion_error():
    assert metrics.motion_error(with_(DOOR, motion=63.0), DOOR) == pytest.approx(3.0, abs=1e-6)
    assert metrics.motion_error(with_(DRAWER, motion=0.32), DRAWER) == pytest.approx(0.02, abs=1e-12)
    # a wrong axis also counts: rotating 60 degrees about a tilted axis differs from the GT rotation
    tilted = with_(DOOR, axis_direction=rotated([0, 0, 1], 10.0, [1, 0, 0]))
    expected = (Rotation.from_rotvec(np.radians(60) * np.array(tilted["axis_direction"]))
                * Rotation.from_rotvec(np.radians(60) * np.array([0, 0, 1.0])).inv()).magnitude()
    assert metrics.motion_error(tilted, DOOR) == pytest.approx(math.degrees(expected), abs=1e-9)
    # a wrong type is charged the whole GT motion
    assert metrics.motion_error(with_(DOOR, type="prismatic", motion=0.1), DOOR) == pytest.approx(60.0)
    assert metrics.motion_error(with_(DRAWER, type="revolute", motion=20.0), DRAWER) == pytest.approx(0.3)


@pytest.mark.parametrize("gt", [DOOR, DRAWER])
def test_flipped_axis_with_negated_motion_is_the_same_joint(gt):
    flipped = with_(gt, axis_direction=(-np.array(gt["axis_direction"])).tolist(), motion=-gt["motion"],
                    axis_origin=(np.array(gt["axis_origin"]) + 0.4 * np.array(gt["axis_direction"])).tolist())
    part = metrics.evaluate_joints([flipped], [gt])["parts"][0]
    assert part["axis_ang"] == pytest.approx(0.0, abs=1e-12)
    assert part["motion"] == pytest.approx(0.0, abs=1e-9)
    if gt["type"] == "revolute":
        assert part["axis_pos"] == pytest.approx(0.0, abs=1e-12)


def noisy(joint: dict, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return with_(joint, axis_direction=rotated(joint["axis_direction"], 2.0, rng.normal(size=3) / np.sqrt(3.0)),
                 axis_origin=(np.array(joint["axis_origin"]) + rng.normal(scale=0.01, size=3)).tolist(),
                 motion=joint["motion"] * 1.05)


def test_matching_recovers_shuffled_parts():
    gt = [DOOR, LID, with_(DOOR, axis_origin=[-0.3, -0.2, 0.1], motion=-50.0)]
    order = [2, 0, 1]
    pred = [noisy(gt[i], seed) for seed, i in enumerate(order)]
    assert metrics.match_parts(pred, gt) == [1, 2, 0]
    result = metrics.evaluate_joints(pred, gt)
    assert result["matched"] == [1, 2, 0] and all(p["axis_ang"] < 2.5 for p in result["parts"])


def test_matching_never_pairs_types_wrongly_when_a_same_type_match_exists():
    # errors alone would pair each prediction with the GT of the other type (same axis direction)
    gt = [with_(DOOR, axis_direction=[1, 0, 0]), with_(DRAWER, axis_direction=[0, 0, 1])]
    pred = [with_(DRAWER, axis_direction=[1, 0, 0]), with_(DOOR, axis_direction=[0, 0, 1])]
    result = metrics.evaluate_joints(pred, gt)
    assert result["matched"] == [1, 0]
    assert result["type_correct"] == [True, True]
    # with a single part of the wrong type it is still matched, flagged, and charged the full motion
    single = metrics.evaluate_joints([pred[0]], [gt[0]])
    assert single["type_correct"] == [False] and single["mean"]["type_accuracy"] == 0.0
    assert single["parts"][0]["motion"] == pytest.approx(60.0) and single["parts"][0]["axis_pos"] is None


def test_matching_with_different_counts_and_part_centres():
    gt = [DOOR, DRAWER, LID]
    result = metrics.evaluate_joints([noisy(LID, 0), noisy(DOOR, 1)], gt)
    assert result["matched"] == [1, -1, 0]
    assert result["parts"][1]["motion"] is None and result["mean"]["type_accuracy"] == pytest.approx(2 / 3)
    extra = metrics.evaluate_joints([DRAWER, noisy(DOOR, 2), LID], [DOOR, DRAWER])
    assert extra["matched"] == [1, 0] and extra["unmatched_pred"] == [2]
    # two identical drawers can only be told apart by where the parts are
    drawers = [DRAWER, DRAWER]
    centres = np.array([[0.0, 0.0, 0.3], [0.0, 0.0, -0.3]])
    assert metrics.match_parts(drawers, drawers, centres[::-1], centres) == [1, 0]


def test_evaluate_joints_means_and_display_scaling():
    pred = [with_(DOOR, axis_origin=[0.34, -0.2, 0.1], motion=62.0), with_(DRAWER, motion=0.25)]
    mean = metrics.evaluate_joints(pred, [DOOR, DRAWER])["mean"]
    assert mean["axis_ang"] == pytest.approx(0.0, abs=1e-12)
    assert mean["axis_pos"] == pytest.approx(0.04) and mean["axis_pos_x10"] == pytest.approx(0.4)
    assert mean["motion_revolute_deg"] == pytest.approx(2.0) and mean["motion_prismatic_m"] == pytest.approx(0.05)
    assert mean["type_accuracy"] == 1.0


def test_load_gt_joints(tmp_path):
    path = tmp_path / "trans.json"
    path.write_text(json.dumps({"trans_info": [
        {"axis": {"o": [0.1, 0.2, 0.3], "d": [0, 0, 2]}, "type": "rotate", "rotate": {"l": 10.0, "r": 70.0},
         "translate": {"l": 0.0, "r": 0.0}},
        {"axis": {"o": [0, 0, 0], "d": [0, 2, 0]}, "type": "translate", "rotate": {"l": 0.0, "r": 0.0},
         "translate": {"l": 0.1, "r": 0.4}}]}))
    door, drawer = metrics.load_gt_joints(path)
    assert door == {"type": "revolute", "axis_origin": [0.1, 0.2, 0.3], "axis_direction": [0.0, 0.0, 1.0],
                    "motion": 60.0}
    assert drawer["type"] == "prismatic" and drawer["axis_direction"] == [0.0, 1.0, 0.0]
    assert drawer["motion"] == pytest.approx(0.6)  # x + (r - l) d with |d| = 2
    path.write_text(json.dumps({"trans_info": {"axis": {"o": [0, 0, 0], "d": [1, 0, 0]}, "type": "rotate",
                                               "rotate": {"l": 0, "r": -90}}}))
    assert metrics.load_gt_joints(path)[0]["motion"] == -90.0


@pytest.mark.parametrize("content, message", [
    ('{"trans_info": [{"type": "rotate", "rotate": {"l": 0, "r": 1}}]}', "axis"),
    ('{"trans_info": [{"axis": {"o": [0, 0, 0], "d": [0, 0, 0]}, "type": "rotate", "rotate": {"l": 0, "r": 1}}]}',
     "zero vector"),
    ('{"trans_info": [{"axis": {"o": [0, 0], "d": [0, 0, 1]}, "type": "rotate", "rotate": {"l": 0, "r": 1}}]}',
     "axis.o"),
    ('{"trans_info": [{"type": "screw"}]}', "rotate"),
    ('{"trans_info": []}', "non-empty"),
    ("{not json", "not valid JSON"),
])
def test_load_gt_joints_bad_content_names_the_file(tmp_path, content, message):
    path = tmp_path / "trans.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        metrics.load_gt_joints(path)
    assert str(path) in str(err.value)


def test_load_gt_joints_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="trans.json"):
        metrics.load_gt_joints(tmp_path / "gt" / "trans.json")


def square(z: float = 0.0) -> trimesh.Trimesh:
    return trimesh.Trimesh([[0, 0, z], [1, 0, z], [1, 1, z], [0, 1, z]], [[0, 1, 2], [0, 2, 3]])


def test_chamfer_distance_of_a_shifted_surface():
    base = metrics.chamfer_distance(square(), square())
    assert 0.0 < base < 0.1  # sampling floor of 10k samples on a unit square
    delta = 0.05
    shifted = metrics.chamfer_distance(square(delta), square())
    assert shifted - base == pytest.approx(2 * delta ** 2 * 1000, rel=0.02)
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    moved = metrics.chamfer_distance(box.copy().apply_translation([0.02, 0, 0]), box)
    # two of six faces move off by 0.02, the other four slide in their planes
    assert moved - metrics.chamfer_distance(box, box) == pytest.approx(2 * 0.02 ** 2 * 1000 / 3, rel=0.05)
    assert metrics.chamfer_distance(square(), square(), seed=3) == metrics.chamfer_distance(square(), square(), seed=3)
    assert metrics.chamfer_distance(trimesh.Trimesh(), square()) is None


def test_load_gt_meshes_and_evaluate_meshes(tmp_path):
    names = {"static": "static_rotate", "part_1": "dynamic_0_rotate", "part_2": "dynamic_1_rotate", "whole": "rotate"}
    gt = {}
    for state, z in (("start", 0.0), ("end", 1.0)):
        for i, (name, stem) in enumerate(names.items()):
            mesh = square(z + 0.1 * i)
            save_mesh(tmp_path / "gt" / state / f"{state}_{stem}.ply", mesh)
            gt[f"{state}_{name}"] = mesh
    loaded = metrics.load_gt_meshes(tmp_path / "gt")
    assert sorted(loaded) == sorted(gt)
    np.testing.assert_allclose(loaded["end_part_2"].vertices, gt["end_part_2"].vertices)

    pred = dict(gt)
    pred["start_part_1"] = square(0.1 + 0.05)  # start-state part 1 off by 0.05
    del pred["end_static"]
    result = metrics.evaluate_meshes(pred, loaded)
    floor = metrics.chamfer_distance(square(), square())
    assert result["part_1"]["start"] == pytest.approx(5.0 + floor, rel=0.02)
    assert result["part_1"]["end"] == pytest.approx(floor, rel=1e-6)
    assert result["part_1"]["mean"] == pytest.approx((result["part_1"]["start"] + floor) / 2)
    assert result["static"]["end"] is None and result["static"]["mean"] is None  # no mesh: never a number
    assert result["movable"]["start"] == pytest.approx((result["part_1"]["start"] + floor) / 2)
    # predicted parts numbered the other way round: joint matching gives the mesh pairing
    pred_joints = [with_(DRAWER, part=1), with_(DOOR, part=2)]
    pairs = metrics.mesh_part_pairs(metrics.match_parts(pred_joints, [DOOR, DRAWER]), pred_joints)
    assert pairs == {"part_1": "part_2", "part_2": "part_1"}
    swapped = metrics.evaluate_meshes(
        {f"{s}_part_{3 - k}": gt[f"{s}_part_{k}"] for s in ("start", "end") for k in (1, 2)},
        {k: v for k, v in loaded.items() if "part" in k}, part_pairs=pairs)
    assert swapped["movable"]["mean"] == pytest.approx(floor, rel=1e-6)


def test_load_gt_meshes_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="ground-truth folder"):
        metrics.load_gt_meshes(tmp_path / "gt")
    (tmp_path / "gt" / "start").mkdir(parents=True)
    bad = tmp_path / "gt" / "start" / "start_static_rotate.ply"
    bad.write_text("not a mesh")
    with pytest.raises(ValueError, match="start_static_rotate.ply"):
        metrics.load_gt_meshes(tmp_path / "gt")
    save_mesh(bad, trimesh.Trimesh())
    with pytest.raises(ValueError, match="no faces"):
        metrics.load_gt_meshes(tmp_path / "gt")


def test_psnr_and_ssim():
    gt = torch.full((3, 32, 32), 0.5)
    assert metrics.psnr(gt + 0.1, gt) == pytest.approx(20.0, abs=1e-4)
    assert metrics.psnr(gt, gt) == math.inf
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        metrics.psnr(gt[:1], gt[:1])
    noise = torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(0))
    assert metrics.ssim(noise, noise) == pytest.approx(1.0, abs=1e-5)
    # A flat image shares no structure with noise: SSIM ~ C2 / (var + C2) ~ 0.01 inside the image, more within the
    # 5 zero-padded border pixels (0.056 measured at 128 px; 0.18 at 32 px, where the border is half the image).
    assert metrics.ssim(noise, torch.full_like(noise, 0.5)) < 0.07
    # Equals scikit-image's Gaussian SSIM (which crops the border instead of zero-padding it) up to the border:
    # 0.8085 vs 0.8006 measured.
    dimmed = 0.5 * noise + 0.25
    expected = structural_similarity(dimmed.permute(1, 2, 0).numpy(), noise.permute(1, 2, 0).numpy(), channel_axis=2,
                                     gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
    assert metrics.ssim(dimmed, noise) == pytest.approx(expected, abs=0.015)
    images = metrics.evaluate_images([gt + 0.1, noise], [gt, noise])
    assert images["n"] == 2 and images["ssim"] == pytest.approx((metrics.ssim(gt + 0.1, gt) + 1.0) / 2)
    assert images["psnr"] == math.inf  # one exact image: its infinite PSNR dominates the mean
    by_state = metrics.evaluate_images([gt + 0.1, gt + 0.2, gt], [gt, gt, gt], states=["start", "end", "end"])
    assert by_state["n"] == 3 and by_state["start"]["n"] == 1 and by_state["end"]["n"] == 2
    assert by_state["start"]["psnr"] == pytest.approx(20.0, abs=1e-4) and by_state["end"]["psnr"] == math.inf
    with pytest.raises(ValueError, match="2 states"):
        metrics.evaluate_images([gt, gt, gt], [gt, gt, gt], states=["start", "end"])


def test_summarise_and_result_csv(tmp_path):
    joints = metrics.evaluate_joints([with_(DOOR, axis_origin=[0.32, -0.2, 0.1])], [DOOR])
    out = metrics.summarise(joints=joints)
    summary = out["summary"]
    assert summary["axis_pos"] == pytest.approx(0.02) and summary["axis_pos_x10"] == pytest.approx(0.2)
    assert summary["motion_prismatic_m"] is None and summary["cd_whole"] is None and summary["psnr"] is None
    json.dumps(out, allow_nan=False)  # plain JSON: numbers or null
    assert list(metrics.summarise()["summary"]) == list(summary)  # same columns with or without GT
    metrics.write_result_csv(tmp_path / "result.csv", out, scene="cabinet")
    rows = list(csv.reader((tmp_path / "result.csv").open()))
    assert len(rows) == 2 and rows[0][:3] == ["scene", "axis_ang", "axis_pos"]
    row = dict(zip(*rows))
    assert row["scene"] == "cabinet" and float(row["axis_pos"]) == pytest.approx(0.02) and row["cd_whole"] == ""


@pytest.mark.parametrize("joint, message", [
    ({"type": "hinge", "axis_origin": [0, 0, 0], "axis_direction": [0, 0, 1], "motion": 1}, "type"),
    ({"type": "revolute", "axis_origin": [0, 0, 0], "axis_direction": [0, 0, 1]}, "motion"),
    ({"type": "revolute", "axis_origin": [0, 0, 0], "axis_direction": [0, 0, 0], "motion": 1}, "zero vector"),
    ({"type": "revolute", "axis_origin": [0, 0], "axis_direction": [0, 0, 1], "motion": 1}, "axis_origin"),
    ({"type": "revolute", "axis_origin": [0, 0, 0], "axis_direction": [0, 0, 1], "motion": float("nan")}, "finite"),
])
def test_bad_joint_dicts_raise(joint, message):
    with pytest.raises(ValueError, match=message):
        metrics.evaluate_joints([joint], [DOOR])


def _boxes() -> dict[str, trimesh.Trimesh]:
    """A body (static) with two doors beside it, as ground-truth part meshes of the end state."""
    body = trimesh.creation.box((0.4, 0.4, 0.6))
    left = trimesh.creation.box((0.02, 0.3, 0.5))
    left.apply_translation((-0.3, 0.0, 0.0))
    right = trimesh.creation.box((0.02, 0.3, 0.5))
    right.apply_translation((0.3, 0.0, 0.0))
    return {"end_static": body, "end_part_1": left, "end_part_2": right, "end_whole": body + left + right,
            "start_static": body}


def test_part_labels_are_scored_against_the_nearest_ground_truth_part():
    gt = _boxes()
    rng = np.random.default_rng(0)
    points = np.concatenate([trimesh.sample.sample_surface(gt[f"end_{name}"], n, seed=i)[0]
                             for i, (name, n) in enumerate((("static", 600), ("part_1", 300), ("part_2", 100)))])
    points += rng.normal(0.0, 0.002, points.shape)  # surfel centres a little off the surface
    truth = np.repeat([0, 1, 2], [600, 300, 100])
    perfect = metrics.evaluate_part_labels(points, truth, gt, "end")
    assert perfect["accuracy"] == 1.0 and perfect["surfels"] == 1000 and perfect["state"] == "end"
    assert {name: entry["surfels"] for name, entry in perfect["per_part"].items()} == \
        {"static": 600, "part_1": 300, "part_2": 100}
    wrong = truth.copy()
    wrong[900:950] = 0  # half of the right door's surfels called static
    scored = metrics.evaluate_part_labels(points, wrong, gt, "end")
    assert scored["accuracy"] == pytest.approx(0.95) and scored["per_part"]["part_2"]["accuracy"] == pytest.approx(0.5)
    assert scored["per_part"]["static"]["accuracy"] == 1.0
    # predicted parts numbered the other way round: matched through the mesh pairs, unmatched parts count as wrong
    swapped = np.repeat([0, 2, 1], [600, 300, 100])
    assert metrics.evaluate_part_labels(points, swapped, gt, "end")["accuracy"] == pytest.approx(0.6)
    pairs = {"part_1": "part_2", "part_2": "part_1"}
    assert metrics.evaluate_part_labels(points, swapped, gt, "end", pairs)["accuracy"] == 1.0
    assert metrics.evaluate_part_labels(points, swapped, gt, "end", {"part_1": "part_2"})["accuracy"] == \
        pytest.approx(0.9)
    assert metrics.evaluate_part_labels(points, truth, gt, "start") is None  # no part meshes in that state
    assert metrics.evaluate_part_labels(points[:0], truth[:0], gt, "end") is None
    with pytest.raises(ValueError, match="999 labels for 1000 points"):
        metrics.evaluate_part_labels(points, truth[:999], gt, "end")
    summary = metrics.summarise(part_labels=scored)["summary"]
    assert summary["part_accuracy"] == pytest.approx(0.95)
