"""Stage 5 (render.py) on tiny synthetic scenes with oracle stage-4 models built from the ground truth.

The oracle (data_tools/oracle_model.py) has exact joints and surfels on the GT part meshes, so joint errors must be
~0 and meshes close to the GT; the bounds on Chamfer distances and PSNR are measured at 64 px (see the constants),
where one pixel spans about 0.04 scene units and the fused surfaces sit about a pixel outside the true ones.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import trimesh
import yourdfpy

import render
from benchmarks import collect_results
from data_tools.oracle_model import build_oracle_model
from data_tools.synthetic import generate_scene
from evaluation.metrics import chamfer_distance, load_gt_joints, load_gt_meshes
from scene.dataset_readers import load_cameras
from scene.trained_model import ARTICULATION_NAME, ModelNotFoundError, TrainedModel, iteration_dir, save

RES, VIEWS, TEST_VIEWS, SURFELS, ORBIT = 64, 8, 2, 5000, 6
# Chamfer x1000 of the oracle's fused meshes at 64 px (measured: static 4.2/3.9, movable 2.0/2.0, whole 8.1/3.9
# start/end, the same with either canonical state; the closed start state hides the cabinet's inside, which the GT
# whole mesh contains). A door left in the wrong state would be off by ~100.
CD_BOUNDS = {"cd_static": 6.0, "cd_movable": 3.0, "cd_whole": 10.0}
PSNR_MIN = 20.0  # measured 23.3 dB (canonical start) and 27.1 dB (canonical end) on the test views
FAST = ["--tsdf_voxel_size", "0.02", "--orbit_frames", str(ORBIT)]


def scene_path(root: Path, scene: str) -> Path:
    return root / "data" / "gear" / "synthetic" / scene


def model_path(root: Path, scene: str) -> Path:
    return root / "outputs" / "gear" / "synthetic" / scene / "gear"


def run_render(root: Path, scene: str, *extra: str) -> int:
    """render.main on a scene of the workspace `root`; the model is at the default model path."""
    return render.main(["--source_path", str(root / "data"), "--output_root", str(root / "outputs"),
                        "--dataset", "gear", "--subset", "synthetic", "--scene_name", scene, *extra])


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One torch thread: on a shared 2-core machine intra-op threads oversubscribe the cores (a 48 px render
    measured 0.08 s with one thread and 2.2 s with two, while other processes kept the cores busy)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A workspace with a one-door cabinet (revolute) and a chest of drawers (prismatic)."""
    root = tmp_path_factory.mktemp("stage5")
    generate_scene("cabinet", scene_path(root, "cabinet"), res=RES, views=VIEWS, test_views=TEST_VIEWS, seed=0,
                   progress=False)
    generate_scene("drawers", scene_path(root, "drawers"), res=RES, views=2, test_views=1, seed=1, progress=False)
    return root


@pytest.fixture(scope="module")
def cabinet(root: Path) -> Path:
    """eval/ of the cabinet with an oracle whose canonical state is the start."""
    build_oracle_model(scene_path(root, "cabinet"), model_path(root, "cabinet"), 0, num_surfels=SURFELS)
    assert run_render(root, "cabinet", *FAST) == 0
    return model_path(root, "cabinet") / "eval"


@pytest.fixture(scope="module")
def cabinet_no_gt(root: Path) -> Path:
    """eval/ of a copy of the cabinet without gt/, with an oracle whose canonical state is the end."""
    source, copy = scene_path(root, "cabinet"), scene_path(root, "cabinet_nogt")
    copy.mkdir()
    for entry in source.iterdir():
        if entry.name != "gt":
            (copy / entry.name).symlink_to(entry)
    build_oracle_model(source, model_path(root, "cabinet_nogt"), 1, num_surfels=SURFELS)
    assert run_render(root, "cabinet_nogt", *FAST) == 0
    return model_path(root, "cabinet_nogt") / "eval"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def gt_joints_with_parts(root: Path) -> list[dict]:
    return [{"part": i + 1, **j} for i, j in enumerate(load_gt_joints(scene_path(root, "cabinet") / "gt" / "trans.json"))]


def assert_joints_close(pred: list[dict], gt: list[dict], atol: float) -> None:
    """Same parts, types and motions (a flipped axis with the opposite motion is the same motion)."""
    assert len(pred) == len(gt)
    for p, g in zip(pred, gt):
        assert p["part"] == g["part"] and p["type"] == g["type"]
        assert np.linalg.norm(p["axis_direction"]) == pytest.approx(1.0, abs=1e-9)
        if np.dot(p["axis_direction"], g["axis_direction"]) < 0:
            p = {**p, "axis_direction": [-v for v in p["axis_direction"]], "motion": -p["motion"]}
        assert p["motion"] == pytest.approx(g["motion"], abs=atol)
        np.testing.assert_allclose(p["axis_direction"], g["axis_direction"], atol=atol)
        if g["type"] == "revolute":  # the same line: the origin offset lies along the axis
            offset = np.subtract(p["axis_origin"], g["axis_origin"])
            assert np.linalg.norm(np.cross(offset, g["axis_direction"])) < atol


# ------------------------------------------------------------------------------------------ the stage-4 contract
def test_trained_model_states_follow_the_ground_truth(root: Path, tmp_path: Path):
    """Both canonical choices put the surfels on the GT meshes of each state, and interpolation hits both ends."""
    scene = scene_path(root, "cabinet")
    gt = load_gt_meshes(scene / "gt")
    for canonical in (0, 1):
        build_oracle_model(scene, tmp_path / f"c{canonical}", canonical, num_surfels=800, colour="grey")
        model = TrainedModel.load(tmp_path / f"c{canonical}", "final")
        assert (model.canonical_state, model.num_parts, model.iteration) == (canonical, 2, 30_000)
        for state, name in enumerate(("start", "end")):
            means, rotations = model.surfels_in_state(state)
            for part, mesh in ((0, "static"), (1, "part_1")):
                points = means[model.part_mask(part)].double().numpy()
                distance = np.abs(trimesh.proximity.signed_distance(gt[f"{name}_{mesh}"], points))
                assert distance.max() < 1e-4, (canonical, name, mesh)
            between = model.surfels_between(float(state))
            assert torch.allclose(between[0], means, atol=1e-5)
            assert torch.allclose(torch.nn.functional.normalize(between[1], dim=1),
                                  torch.nn.functional.normalize(rotations, dim=1), atol=1e-5)
        assert_joints_close(model.joints_start_to_end(), gt_joints_with_parts(root), 1e-5)


def test_trained_model_save_load_and_errors(root: Path, tmp_path: Path):
    model = TrainedModel.load(build_oracle_model(scene_path(root, "cabinet"), tmp_path / "m", 1, num_surfels=200,
                                                 iteration=100, colour="grey").parent.parent)
    save(tmp_path / "m", 250, model.gaussians, model.articulation, 1)
    assert TrainedModel.load(tmp_path / "m").iteration == 250
    assert TrainedModel.load(tmp_path / "m", 100).iteration == 100
    with pytest.raises(ModelNotFoundError, match="iteration_7"):
        TrainedModel.load(tmp_path / "m", 7)
    with pytest.raises(ModelNotFoundError, match="no trained model"):
        TrainedModel.load(tmp_path / "nothing")
    with pytest.raises(ValueError, match="feature channels"):
        save(tmp_path / "bad", 1, model.gaussians.detach_copy(), type(model.articulation)(["revolute"] * 2), 0)
    with pytest.raises(ValueError, match="canonical_state"):
        save(tmp_path / "bad", 1, model.gaussians, model.articulation, 2)
    (iteration_dir(tmp_path / "m", 250) / ARTICULATION_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="articulation.json"):
        TrainedModel.load(tmp_path / "m")


def test_part_render_equals_masked_render(root: Path, tmp_path: Path):
    model = TrainedModel.load(build_oracle_model(scene_path(root, "cabinet"), tmp_path, 0, num_surfels=1500)
                              .parent.parent)
    renderer = render.Renderer(model, torch.zeros(3), None, 0.0)
    camera = load_cameras(scene_path(root, "cabinet"), 1, "train")[0]
    part = renderer(camera, 1, part=1)
    means, rotations = model.surfels_in_state(1)
    with torch.no_grad():
        masked = render.render(camera, model.gaussians, torch.zeros(3), means=means, rotations=rotations,
                               mask=model.part_mask(1))
    assert float(part["alpha"].sum()) > 20.0  # the door covers pixels
    for key in ("render", "alpha", "depth"):
        assert torch.allclose(part[key], masked[key], atol=1e-4), key


# ---------------------------------------------------------------------------------------------- render.py outputs
def test_images_and_video(cabinet: Path):
    for kind in ("renders", "parts", "depth", "normal"):
        for state in ("start", "end"):
            for split, count in (("train", VIEWS), ("test", TEST_VIEWS)):
                files = sorted((cabinet / kind / state / split).glob("*.png"))
                assert [f.name for f in files] == [f"{i:04d}.png" for i in range(count)], (kind, state, split)
                assert iio.imread(files[0]).shape == (RES, RES, 3)
    parts = np.stack([iio.imread(f) for f in (cabinet / "parts" / "end" / "train").glob("*.png")]).reshape(-1, 3)
    colours = {tuple(c) for c in np.unique(parts, axis=0)}
    assert colours == {(0, 0, 0), tuple(render.PART_PALETTE[0]), tuple(render.PART_PALETTE[1])}
    frames = iio.imread(cabinet / "orbit.gif", index=None)
    assert frames.shape[0] == ORBIT and frames.shape[1:3] == (RES, 2 * RES)
    assert frames[..., :3].max() > 100  # the object is in view


def test_joint_info_is_start_to_end(root: Path, cabinet: Path):
    info = read_json(cabinet / "joint_info.json")
    assert info["larger_motion_state"] == 0
    assert_joints_close(info["joints"], gt_joints_with_parts(root), 1e-4)


def test_meshes_and_urdf(root: Path, cabinet: Path):
    gt = load_gt_meshes(scene_path(root, "cabinet") / "gt")
    for state in ("start", "end"):
        for name in ("whole", "static", "part_1"):
            mesh = trimesh.load(cabinet / "meshes" / f"{state}_{name}.ply")
            assert len(mesh.faces) > 100
            lo, hi = gt[f"{state}_{name}"].bounds
            assert np.all(mesh.bounds[0] > lo - 0.15) and np.all(mesh.bounds[1] < hi + 0.15), (state, name)
    robot = yourdfpy.URDF.load(str(cabinet / "urdf" / "cabinet.urdf"))
    assert robot.joint_names == ["joint_1"] and len(robot.link_map) == 2
    assert robot.joint_map["joint_1"].type == "revolute"
    assert len(robot.scene.geometry) == 2  # both mesh files were found through their relative paths
    motion = math.radians(read_json(cabinet / "joint_info.json")["joints"][0]["motion"])
    limit = robot.joint_map["joint_1"].limit
    assert (limit.lower, limit.upper) == pytest.approx((min(0.0, motion), max(0.0, motion)))


def test_oracle_metrics(cabinet: Path):
    metrics = read_json(cabinet / "metrics.json")
    assert {"summary", "joints", "meshes", "images", "scene", "iteration", "canonical_state"} <= set(metrics)
    assert set(metrics["seconds"]) == {"load", "train views", "test views", "orbit", "meshes", "exports", "metrics"}
    assert all(seconds >= 0.0 for seconds in metrics["seconds"].values())
    summary = metrics["summary"]
    assert summary["axis_ang"] < 0.5 and summary["axis_pos"] < 0.01 and summary["motion_revolute_deg"] < 0.5
    assert summary["type_accuracy"] == 1.0 and summary["motion_prismatic_m"] is None
    labels = metrics["part_labels"]  # the oracle's surfels lie on the ground-truth parts with their labels
    assert summary["part_accuracy"] == labels["accuracy"] > 0.99 and labels["state"] == "start"
    assert set(labels["per_part"]) == {"static", "part_1"} and labels["per_part"]["part_1"]["surfels"] > 0
    for key, bound in CD_BOUNDS.items():
        for state in ("start", "end"):
            assert 0.0 < summary[f"{key}_{state}"] < bound, (key, state, summary[f"{key}_{state}"])
    assert summary["psnr"] > PSNR_MIN and 0.0 < summary["ssim"] <= 1.0
    assert metrics["images"]["n"] == 2 * TEST_VIEWS
    assert metrics["images"]["start"]["n"] == metrics["images"]["end"]["n"] == TEST_VIEWS
    assert min(summary["psnr_start"], summary["psnr_end"]) <= summary["psnr"] <= max(summary["psnr_start"],
                                                                                      summary["psnr_end"])
    rows = list(csv.DictReader((cabinet / "result.csv").open()))
    assert len(rows) == 1 and rows[0]["scene"] == "cabinet"
    assert float(rows[0]["cd_whole"]) == pytest.approx(summary["cd_whole"])


def test_scene_without_gt_and_canonical_end(root: Path, cabinet: Path, cabinet_no_gt: Path):
    summary = read_json(cabinet_no_gt / "metrics.json")["summary"]
    assert all(summary[key] is None for key in summary if key not in ("psnr", "ssim", "psnr_start", "psnr_end"))
    assert summary["psnr"] > PSNR_MIN
    info = read_json(cabinet_no_gt / "joint_info.json")
    assert info["larger_motion_state"] == 1
    # canonical end: the learned end -> start joint is exported start -> end, the same as with canonical start
    reference = read_json(cabinet / "joint_info.json")["joints"]
    assert_joints_close(info["joints"], reference, 1e-4)
    for joint, same in zip(info["joints"], reference):  # not just the same motion: the same numbers
        assert joint["motion"] == pytest.approx(same["motion"], abs=1e-4) and joint["motion"] > 0
        np.testing.assert_allclose(joint["axis_direction"], same["axis_direction"], atol=1e-5)
        np.testing.assert_allclose(joint["axis_origin"], same["axis_origin"], atol=1e-4)
    gt = load_gt_meshes(scene_path(root, "cabinet") / "gt")
    for state in ("start", "end"):
        for name in ("static", "part_1"):
            mesh = trimesh.load(cabinet_no_gt / "meshes" / f"{state}_{name}.ply")
            bound = CD_BOUNDS["cd_static" if name == "static" else "cd_movable"]
            assert chamfer_distance(mesh, gt[f"{state}_{name}"]) < bound, (state, name)
    assert yourdfpy.URDF.load(str(cabinet_no_gt / "urdf" / "cabinet_nogt.urdf")).joint_names == ["joint_1"]
    assert len(list((cabinet_no_gt / "renders").rglob("*.png"))) == 2 * (VIEWS + TEST_VIEWS)
    assert (cabinet_no_gt / "orbit.gif").is_file() and (cabinet_no_gt / "result.csv").is_file()


def test_prismatic_joints_and_rerun(root: Path):
    """Joints only (no images or meshes): a three-drawer chest, canonical end, evaluated twice."""
    build_oracle_model(scene_path(root, "drawers"), model_path(root, "drawers"), 1, num_surfels=600, colour="grey")
    flags = ("--skip_train", "--skip_test", "--skip_mesh", "--orbit_frames", "0")
    for _ in range(2):  # a rerun overwrites everything in place
        assert run_render(root, "drawers", *flags) == 0
    out = model_path(root, "drawers") / "eval"
    info = read_json(out / "joint_info.json")
    gt = load_gt_joints(scene_path(root, "drawers") / "gt" / "trans.json")
    assert [j["type"] for j in info["joints"]] == ["prismatic"] * len(gt) and len(gt) >= 2
    summary = read_json(out / "metrics.json")["summary"]
    assert summary["motion_prismatic_m"] < 1e-4 and summary["axis_ang"] < 0.01
    assert summary["axis_pos"] is None and summary["cd_whole"] is None and summary["psnr"] is None
    assert sorted(p.name for p in out.iterdir()) == ["joint_info.json", "metrics.json", "result.csv"]


def test_eval_folder_is_always_one_runs(root: Path, tmp_path: Path, monkeypatch):
    """A run killed before it finishes leaves the previous eval/ as it was (its outputs went to a fresh folder, which
    the next run clears); a finished run replaces eval/ whole, keeping only files stage 5 does not write."""
    model = tmp_path / "m"
    build_oracle_model(scene_path(root, "drawers"), model, 1, num_surfels=300, colour="grey")
    flags = ("--skip_train", "--skip_test", "--skip_mesh", "--orbit_frames", "0", "--model_path", str(model))
    assert run_render(root, "drawers", *flags) == 0
    out = model / "eval"
    (out / "my_notes.txt").write_text("keep me")
    (out / "meshes").mkdir()
    (out / "meshes" / "start_whole.ply").write_text("an earlier run's mesh")
    before = {str(p): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(render, "evaluate", killed)
    with pytest.raises(KeyboardInterrupt):
        run_render(root, "drawers", *flags)
    assert {str(p): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert (model / ".eval.new" / "joint_info.json").is_file()  # the killed run's partial outputs, not in eval/
    monkeypatch.undo()
    assert run_render(root, "drawers", *flags) == 0
    assert sorted(p.name for p in out.iterdir()) == ["joint_info.json", "metrics.json", "my_notes.txt", "result.csv"]
    assert not (model / ".eval.new").exists() and not (model / ".eval.old").exists()


def test_a_nan_test_pose_is_an_error_not_a_black_render(root: Path, tmp_path: Path, capsys):
    source = scene_path(root, "drawers")
    copy = scene_path(tmp_path, "drawers")
    copy.mkdir(parents=True)
    for entry in source.iterdir():
        if entry.name != "transforms_test_end.json":
            (copy / entry.name).symlink_to(entry)
    meta = read_json(source / "transforms_test_end.json")
    meta["frames"][0]["transform_matrix"][1][1] = float("nan")
    (copy / "transforms_test_end.json").write_text(json.dumps(meta))
    build_oracle_model(source, model_path(tmp_path, "drawers"), 1, num_surfels=300, colour="grey")
    assert run_render(tmp_path, "drawers", "--skip_mesh", "--orbit_frames", "0") == 2
    err = capsys.readouterr().err
    assert "transforms_test_end.json: frame 0 'transform_matrix' holds NaN" in err
    assert not (model_path(tmp_path, "drawers") / "eval").exists()


def test_render_mode(root: Path, tmp_path: Path):
    """--mode render writes no metrics; --eval_app adds PSNR/SSIM only."""
    build_oracle_model(scene_path(root, "drawers"), tmp_path, 0, num_surfels=600, colour="grey")
    flags = ("--mode", "render", "--skip_train", "--skip_mesh", "--orbit_frames", "0", "--model_path", str(tmp_path))
    assert run_render(root, "drawers", *flags) == 0
    out = tmp_path / "eval"
    assert not (out / "metrics.json").exists() and (out / "joint_info.json").is_file()
    assert len(list((out / "renders").rglob("*.png"))) == 2
    assert run_render(root, "drawers", *flags, "--eval_app") == 0
    summary = read_json(out / "metrics.json")["summary"]
    assert summary["psnr"] > 10.0 and summary["axis_ang"] is None and summary["cd_whole"] is None


def test_missing_model_and_bad_files(root: Path, tmp_path: Path, capsys):
    assert run_render(root, "cabinet", "--model_path", str(tmp_path / "none")) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "none" / "point_cloud") in err and "python train.py" in err and "4_train.sh" in err
    folder = build_oracle_model(scene_path(root, "cabinet"), tmp_path / "m", 0, num_surfels=100, colour="grey")
    (folder / ARTICULATION_NAME).write_text('{"canonical_state": 0, "model": {"joint_types": ["hinge"]}}')
    assert run_render(root, "cabinet", "--model_path", str(tmp_path / "m")) == 2
    assert "articulation.json" in capsys.readouterr().err
    (folder / "point_cloud.ply").unlink()
    assert run_render(root, "cabinet", "--model_path", str(tmp_path / "m"), "--iteration", "30000") == 2
    assert "point_cloud.ply is missing" in capsys.readouterr().err
    assert run_render(root, "nowhere", "--model_path", str(tmp_path / "m")) == 2
    assert "nowhere" in capsys.readouterr().err


def test_collect_results(root: Path, cabinet: Path, cabinet_no_gt: Path, capsys, tmp_path: Path):
    out = tmp_path / "table.csv"
    assert collect_results.main(["--root", str(root / "outputs"), "--csv", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| gear/synthetic/cabinet |" in table and "| gear/synthetic/cabinet_nogt |" in table
    rows = list(csv.DictReader(out.open()))
    scenes = {row["scene"]: row for row in rows}
    assert {"gear/synthetic/cabinet", "gear/synthetic/cabinet_nogt", "mean"} <= set(scenes)
    cabinet_psnr = read_json(cabinet / "metrics.json")["summary"]["psnr"]
    assert float(scenes["gear/synthetic/cabinet"]["psnr"]) == pytest.approx(cabinet_psnr)
    # the mean of a column runs over the scenes that have it: CD only the cabinet with gt/
    assert float(scenes["mean"]["cd_whole"]) == pytest.approx(float(scenes["gear/synthetic/cabinet"]["cd_whole"]))
    assert scenes["gear/synthetic/cabinet_nogt"]["cd_whole"] == ""
    assert collect_results.main(["--root", str(tmp_path / "empty")]) == 2
