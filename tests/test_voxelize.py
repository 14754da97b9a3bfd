"""Stage 3 (voxelize.py): the voxel grid and rigid helpers it stands on, the CLI on a generated scene, its outputs,
the joint-types contract, resumption and its errors. The part-discovery algorithm itself (parts/) is tested in
tests/test_parts.py.

The scene-level tests use a small generated cabinet whose "coarse models" are the back-projected depth of its
training views (what a perfect stage 2 renders). Ground truth (gt/trans.json) is read here only, never by the stage.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

import arguments
import voxelize
from data_tools.synthetic import generate_scene
from evaluation.metrics import evaluate_joints, load_gt_joints
from scene.articulation import joint_start_to_end
from scene.camera_points import backproject_depth
from scene.dataset_readers import load_cameras
from utils.point_cloud import voxel_downsample, write_point_ply
from utils.rigid_fit import apply_transform, kabsch, make_transform
from utils.voxel_grid import VoxelGrid, connected_components, enclosed
from utils.voxel_keys import unique_rows

CANONICAL = 1  # the cabinet is generated open in the end state: the larger-motion state
SCENE = ("gear", "synthetic", "cabinet")


# ----------------------------------------------------------------------------------------------- voxel grid
def test_grid_indices_and_centres_round_trip() -> None:
    rng = np.random.default_rng(1)
    points = rng.uniform(-1.0, 1.0, (500, 3))
    grid = VoxelGrid.around([points], 0.05, padding=2)
    idx = grid.indices(points)
    assert grid.inside(idx).all()
    assert np.abs(grid.centres(idx) - points).max() <= 0.025 + 1e-12  # within half a voxel per axis
    assert np.allclose(grid.origin / 0.05, np.round(grid.origin / 0.05))  # origin on the voxel lattice
    assert grid.lookup(grid.occupancy(points), np.array([[-1, 0, 0], [10**6, 0, 0]])).tolist() == [False, False]


def test_grid_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="voxel_size must be positive"):
        VoxelGrid.around([np.zeros((3, 3))], 0.0)
    with pytest.raises(ValueError, match="zero points"):
        VoxelGrid.around([np.zeros((0, 3))], 0.01)
    with pytest.raises(ValueError, match="too large"):
        VoxelGrid.around([np.array([[0.0, 0.0, 0.0], [100.0, 100.0, 100.0]])], 0.01)


def test_connected_components_are_26_connected_and_sorted() -> None:
    mask = np.zeros((20, 20, 20), bool)
    mask[10:13, 10:13, 10:13] = True   # 27 voxels ...
    mask[13, 13, 13] = True            # ... and a diagonal neighbour: one component
    mask[17, 2:4, 2] = True            # a separate 2-voxel piece
    assert [len(c) for c in connected_components(mask)] == [28, 2]
    assert [len(c) for c in connected_components(mask, min_size=3)] == [28]


def test_enclosed_marks_the_inside_of_a_shell_only() -> None:
    occ = np.zeros((30, 30, 30), bool)
    occ[5:25, 5:25, 5:25] = True
    occ[7:23, 7:23, 7:23] = False                 # a closed box shell, 2 voxels thick
    occ[7:23, 7:23, 5:7] = False                  # with an open bottom: one free direction is allowed
    inside = enclosed(occ)
    assert inside[15, 15, 15] and inside[10, 12, 20]
    assert not inside[2, 15, 15] and not inside[15, 15, 27]   # outside
    assert not inside[7, 15, 15] and inside[8, 15, 15]  # the band next to the wall (x <= 6) is not free


def test_kabsch_recovers_a_rigid_motion() -> None:
    source = np.random.default_rng(2).uniform(-0.3, 0.3, (500, 3))
    T = make_transform(Rotation.from_rotvec([0.1, -0.2, 0.15]).as_matrix(), [0.05, -0.02, 0.03])
    assert np.allclose(kabsch(source, apply_transform(T, source)), T, atol=1e-9)


@pytest.mark.parametrize("spread", [10, 10**19])
def test_unique_rows_is_numpys_unique_over_rows(spread: int) -> None:
    """The one-key sort gives np.unique(axis=0)'s rows, groups and counts, also with negative indices; rows too far
    apart for one int64 key (and no rows) go through np.unique itself."""
    rng = np.random.default_rng(1)
    keys = rng.integers(-5, 6, size=(4000, 3))
    keys[0] = [spread // 2, -(spread // 2), 0]
    for rows in (keys, keys[:0]):
        expected = np.unique(rows, axis=0, return_inverse=True, return_counts=True)
        got = unique_rows(rows)
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b.reshape(a.shape))


def test_joint_type_table_formats(tmp_path: Path) -> None:
    nested = tmp_path / "nested.json"
    nested.write_text(json.dumps({"paris": {"fridge": ["revolute"], "storage": ["prismatic"]}}))
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"cabinet": ["revolute", "prismatic"]}))
    assert arguments.listed_joint_types(nested, "paris", "storage") == ("prismatic",)
    assert arguments.listed_joint_types(nested, "paris", "laptop") is None
    assert arguments.listed_joint_types(flat, "gear", "cabinet") == ("revolute", "prismatic")
    assert arguments.listed_joint_types(tmp_path / "absent.json", "gear", "cabinet") is None
    flat.write_text(json.dumps({"cabinet": ["hinge"]}))
    with pytest.raises(ValueError, match="flat.json"):
        arguments.listed_joint_types(flat, "gear", "cabinet")
    assert arguments.parse_joint_types("s,r,p") == ("revolute", "prismatic")
    assert arguments.parse_joint_types("static,prismatic") == ("prismatic",)
    assert arguments.parse_joint_types("auto") is None


# ----------------------------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def cabinet(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small generated cabinet (door open in the end state) and its perfect stage-2 surfaces."""
    root = tmp_path_factory.mktemp("stage3")
    scene = root / "data" / Path(*SCENE)
    generate_scene("cabinet", scene, res=128, views=24, test_views=1, seed=0, supersample=1, progress=False)
    surfaces = []
    for state in (0, 1):
        points, colours = backproject_depth(load_cameras(scene, state, "train"))
        surfaces.append(voxel_downsample(points, colours, 0.005)[0])
    return {"root": root, "scene": scene, "surfaces": surfaces}


def stage2_folder(root: Path, out: str = "out") -> Path:
    return root / out / Path(*SCENE) / "coarse_gs" / "point_cloud" / "iteration_100"


def write_stage2(folder: Path, surfaces: list[np.ndarray], canonical: int = CANONICAL) -> None:
    """Stage 2's rendered surfaces and state choice."""
    folder.mkdir(parents=True, exist_ok=True)
    for state, points in enumerate(surfaces):
        write_point_ply(folder / f"surface_points_{state}.ply", points, np.zeros_like(points))
    (folder / "larger_motion_state.txt").write_text(f"{canonical}\n")


def cli(root: Path, *extra: str, out: str = "out") -> list[str]:
    dataset, subset, scene = SCENE
    return ["--source_path", str(root / "data"), "--output_root", str(root / out), "--dataset", dataset,
            "--subset", subset, "--scene_name", scene, "--coarse_iter", "100", *extra]


def test_cli_finds_the_door_and_writes_the_contract(cabinet: dict, capsys: pytest.CaptureFixture) -> None:
    """Auto mode on the cabinet: one revolute part whose joint matches the ground truth; both output files agree;
    a second run resumes (skips); --overwrite redoes it and touches only stage 3's files."""
    root = cabinet["root"]
    folder = stage2_folder(root)
    write_stage2(folder, cabinet["surfaces"])
    (folder / "notes.txt").write_text("mine")
    assert voxelize.main(cli(root, "--save_ply")) == 0
    info = json.loads((folder / "joint_voxel_info.json").read_text())
    arrays = np.load(folder / "joint_voxel_info.npz", allow_pickle=False)
    assert info["larger_motion_state"] == CANONICAL and info["joint_types_source"] == "evidence"
    assert len(info["parts"]) == 1, info["skipped"]
    part = info["parts"][0]
    assert part["joint_type"] == "revolute" and part["type_source"] == "evidence"
    assert part["canonical_voxels"] == len(arrays["part_1_voxels"]) > 100
    assert part["matched_voxels"] == len(arrays["part_1_matched_voxels"]) > 100
    assert arrays["transforms"].shape == (1, 4, 4) and np.allclose(arrays["transforms"][0], part["transform"])
    assert arrays["static_voxels"].dtype == np.int32 and len(arrays["static_voxels"]) == info["static_voxels"]
    errors = evaluate_joints([joint_start_to_end(part["joint"], CANONICAL)],
                             load_gt_joints(cabinet["scene"] / "gt" / "trans.json"))["parts"][0]
    assert errors["axis_ang"] < 3.0 and errors["axis_pos"] < 0.03 and errors["motion"] < 5.0, errors
    # index -> world: the part's voxel centres lie on the canonical surface
    centres = np.asarray(info["grid_origin"]) + (arrays["part_1_voxels"] + 0.5) * info["voxel_size"]
    assert np.median(cKDTree(cabinet["surfaces"][CANONICAL]).query(centres)[0]) < info["voxel_size"]
    assert (folder / "voxel_parts_canonical.ply").is_file() and (folder / "voxel_parts_other.ply").is_file()
    assert "part 1:" in capsys.readouterr().out
    mtime = (folder / "joint_voxel_info.json").stat().st_mtime_ns
    assert voxelize.main(cli(root)) == 0
    assert "skipping" in capsys.readouterr().out
    assert (folder / "joint_voxel_info.json").stat().st_mtime_ns == mtime
    assert voxelize.main(cli(root, "--overwrite")) == 0
    assert (folder / "joint_voxel_info.json").stat().st_mtime_ns != mtime
    assert (folder / "notes.txt").read_text() == "mine"
    assert not any((root / "data").rglob("joint_voxel_info.*"))  # nothing written into the data folder


def test_given_types_are_assigned_and_marked_given(cabinet: dict) -> None:
    """The joint-types contract: a given multiset reaches the parts, marked 'given' (what stage 4 applies)."""
    root = cabinet["root"]
    folder = stage2_folder(root, "given")
    write_stage2(folder, cabinet["surfaces"])
    assert voxelize.main(cli(root, "--joint_types", "s,r", out="given")) == 0
    info = json.loads((folder / "joint_voxel_info.json").read_text())
    assert info["joint_types_source"] == "cli"
    assert [(p["joint_type"], p["type_source"]) for p in info["parts"]] == [("revolute", "given")]


def test_cli_errors_name_the_file_and_the_fix(cabinet: dict, capsys: pytest.CaptureFixture) -> None:
    root = cabinet["root"]
    folder = stage2_folder(root, "bad")
    assert voxelize.main(cli(root, out="bad")) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "coarse.py" in err
    folder.mkdir(parents=True)
    (folder / "larger_motion_state.txt").write_text("start")
    assert voxelize.main(cli(root, out="bad")) == 2
    assert "must hold 0 or 1" in capsys.readouterr().err
    (folder / "larger_motion_state.txt").write_text("1")
    assert voxelize.main(cli(root, out="bad")) == 2
    err = capsys.readouterr().err
    assert "point_cloud_0.ply is missing" in err and "2_coarse.sh" in err
    same = cabinet["surfaces"][0]
    write_stage2(folder, [same, same])
    assert voxelize.main(cli(root, out="bad")) == 2
    err = capsys.readouterr().err
    assert "scene cabinet" in err and "no motion" in err  # between the states, or none explaining a part
    assert voxelize.main(cli(root, "--num_parts", "3", "--joint_types", "s,r", out="bad")) == 2
    assert "--num_parts 3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        voxelize.main(cli(root, "--joint_types", "r,p", out="bad"))
    assert "starting with 's'" in capsys.readouterr().err
    missing = ["--source_path", str(root / "nowhere"), *cli(root, out="bad")[2:]]
    write_stage2(folder, cabinet["surfaces"])
    assert voxelize.main(missing) == 2
    assert "nowhere" in capsys.readouterr().err


def test_old_flag_spellings_still_work() -> None:
    config = voxelize.parse_args(["--scenes", "cabinet", "--iteration", "7000", "--dataset", "gear"])
    assert config.scene_name == "cabinet" and config.coarse_iter == 7000


def test_stage3_reads_the_rendered_surface_when_stage2_wrote_it(tmp_path: Path) -> None:
    surface = np.random.default_rng(0).random((50, 3)).astype(np.float32)
    write_point_ply(tmp_path / "surface_points_1.ply", surface, np.zeros_like(surface))
    assert np.allclose(voxelize.state_points(tmp_path, 1, 0.5), surface)
    with pytest.raises(FileNotFoundError, match="point_cloud_0.ply"):
        voxelize.state_points(tmp_path, 0, 0.5)  # no surface file: falls back to the coarse PLY, missing here
