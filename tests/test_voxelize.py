"""Tests of stage 3 (voxelize.py): voxel grid, components, rigid fits, motion hypotheses, part discovery, the CLI.

Scene-level tests use the synthetic generator: points sampled from the ground-truth meshes of every category, and
visible-surface points back-projected from rendered depth (cabinet, drawers). Ground truth (gt/trans.json) is read
here only, never by the stage. The canonical state is the open one ("end"); the stage's motions map it to "start",
so predictions are converted to start -> end before they are compared.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh
from plyfile import PlyData, PlyElement
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

import arguments
import voxelize
from benchmarks.part_chamfer import part_chamfers
from data_tools.synthetic import generate_scene
from evaluation.metrics import axis_offset_error, evaluate_joints, load_gt_joints
from scene.articulation import joint_start_to_end, joint_to_matrix, matrix_to_joint
from scene.camera_points import backproject_depth
from scene.dataset_readers import load_cameras
from utils.motion_estimation import correlation_shifts, fit_plane, guess_joint_type, plane_motion
from utils.motion_segmentation import split_by_local_motions
from utils.part_matching import PartMatcher
from utils.part_selection import (PartEstimate, VoxelizeConfig, _Selection, build_states, discover_parts,
                                  finalise_part, place_axis, select_parts)
from utils.point_cloud import write_point_ply
from utils.rigid_fit import apply_transform, icp, kabsch, make_transform, rotation_about_line, rotation_angle
from utils.voxel_grid import VoxelGrid, connected_components, enclosed, nearest_seed, split_static_dynamic
from utils.voxel_keys import unique_rows

CANONICAL = 1  # the generator opens the parts in the end state: the larger-motion state
# Seeds whose scenes the tests use (see the report for how other seeds fare). Storage units are a known failure:
# their doors swing under the pulled-out drawers, the parts touch, and one of them is not separated.
STORAGE_XFAIL = pytest.mark.xfail(strict=True, reason="storage: touching door and drawer not separated (known)")
SEEDS = {"cabinet": 0, "drawers": 3, "fridge": 2, "storage": 6, "laptop": 0, "oven": 0}
# Initial-motion tolerances of the brief: axis angle (deg), axis position, revolute motion (deg), prismatic (m).
AXIS_DEG, AXIS_POS, MOTION_DEG, MOTION_M = 3.0, 0.03, 5.0, 0.02


# ----------------------------------------------------------------------------------------------- helpers

def box_voxels(lo: tuple[int, int, int], hi: tuple[int, int, int]) -> np.ndarray:
    """(M, 3) integer voxel indices of the solid box lo..hi (inclusive)."""
    axes = [np.arange(a, b + 1) for a, b in zip(lo, hi)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def plate_points(rng: np.random.Generator, n: int, size: tuple[float, float, float]) -> np.ndarray:
    """(n, 3) points uniform in a box of extents `size` with a corner at the origin."""
    return rng.uniform(0.0, 1.0, (n, 3)) * np.asarray(size)


def surface_points(mesh_paths: list[Path], n: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """(n, 3) area-weighted samples of the meshes, with Gaussian noise of std `noise`."""
    mesh = trimesh.util.concatenate([trimesh.load(p, process=False) for p in mesh_paths])
    points, _ = trimesh.sample.sample_surface(mesh, n, seed=int(rng.integers(2**31)))
    return points + rng.normal(0.0, noise, points.shape)


def state_meshes(scene: Path, state: str) -> list[Path]:
    return sorted((scene / "gt" / state).glob(f"{state}_*_rotate.ply"))


def gt_part_centres(scene: Path, count: int) -> np.ndarray:
    """(count, 3) centroids of the GT movable parts in the canonical (end) state."""
    return np.stack([trimesh.load(scene / "gt" / "end" / f"end_dynamic_{i}_rotate.ply", process=False).vertices.mean(0)
                     for i in range(count)])


def joint_errors(result_parts: list, grid: VoxelGrid, scene: Path) -> dict:
    """`evaluation.metrics.evaluate_joints` of the predicted parts (as start -> end joints) against gt/trans.json."""
    gt = load_gt_joints(scene / "gt" / "trans.json")
    pred = [joint_start_to_end(matrix_to_joint(p.transform, p.joint_type), CANONICAL) for p in result_parts]
    centres = np.stack([grid.centres(p.voxels).mean(0) for p in result_parts])
    return evaluate_joints(pred, gt, centres, gt_part_centres(scene, len(gt)))


def assert_joints_close(errors: dict, label: str) -> None:
    """Every GT part matched, right type, and within the brief's tolerances."""
    for part in errors["parts"]:
        assert part["pred_index"] is not None, f"{label}: GT part {part['gt_index']} unmatched"
        assert part["type_correct"], \
            f"{label}: GT part {part['gt_index']} {part['type_gt']} guessed {part['type_pred']}"
        assert part["axis_ang"] < AXIS_DEG, f"{label}: axis angle {part['axis_ang']:.2f} deg"
        if part["type_gt"] == "revolute":
            assert part["axis_pos"] < AXIS_POS, f"{label}: axis position {part['axis_pos']:.4f}"
            assert part["motion"] < MOTION_DEG, f"{label}: motion {part['motion']:.2f} deg"
        else:
            assert part["motion"] < MOTION_M, f"{label}: motion {part['motion']:.4f}"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny synthetic scenes of every category (meshes are what matters here)."""
    root = tmp_path_factory.mktemp("scenes")
    return {category: Path(generate_scene(category, root / category, res=32, views=2, test_views=1, seed=seed,
                                          supersample=1, progress=False)["out_dir"])
            for category, seed in SEEDS.items()}


@pytest.fixture(scope="module")
def gt_points(scenes: dict[str, Path]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per category, 120k noisy GT-surface samples of the canonical (end) and the other (start) state."""
    rng = np.random.default_rng(0)
    return {category: (surface_points(state_meshes(scene, "end"), 120_000, rng, 0.005),
                       surface_points(state_meshes(scene, "start"), 120_000, rng, 0.005))
            for category, scene in scenes.items()}


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


def test_static_dynamic_split_and_components() -> None:
    shape = (20, 20, 20)
    a, b = np.zeros(shape, bool), np.zeros(shape, bool)
    a[2:6, 2:6, 2:6] = b[2:6, 2:6, 2:6] = True   # shared body
    a[10:13, 10:13, 10:13] = True                 # moved part in a (27 voxels) ...
    a[13, 13, 13] = True                          # ... with a diagonal neighbour: 26-connected
    a[17, 2:4, 2] = True                          # a separate 2-voxel piece
    b[2:6, 8:10, 2:6] = True                      # the part where b has it
    static, dyn_a, dyn_b = split_static_dynamic(a, b, radius=1)
    assert static[1:7, 1:7, 1:7].all() and not static[0, 0, 0] and static.sum() == 6**3
    assert not (dyn_a & static).any() and dyn_a.sum() == 27 + 1 + 2
    comps = connected_components(dyn_a)
    assert [len(c) for c in comps] == [28, 2]  # largest first, the diagonal voxel joins the cube
    assert [len(c) for c in connected_components(dyn_a, min_size=3)] == [28]
    # dyn_b: b's part minus the dilated static shell (y = 8 lies outside radius 1 of y <= 5)
    assert dyn_b.sum() == 4 * 2 * 4


def test_enclosed_marks_the_inside_of_a_shell_only() -> None:
    occ = np.zeros((30, 30, 30), bool)
    occ[5:25, 5:25, 5:25] = True
    occ[7:23, 7:23, 7:23] = False                 # a closed box shell, 2 voxels thick
    occ[7:23, 7:23, 5:7] = False                  # with an open bottom: one free direction is allowed
    inside = enclosed(occ)
    assert inside[15, 15, 15] and inside[10, 12, 20]
    assert not inside[2, 15, 15] and not inside[15, 15, 27]   # outside
    assert not inside[7, 15, 15] and inside[8, 15, 15]  # the band next to the wall (x <= 6) is not free


def test_nearest_seed_follows_the_set() -> None:
    # an L-shaped path: the far end of the long arm is closer to seed B in a straight line, but only reachable via A
    arm_a = box_voxels((0, 0, 0), (0, 9, 0))
    arm_b = box_voxels((1, 9, 0), (9, 9, 0))
    voxels = np.concatenate([arm_a, arm_b, [[9, 7, 0]]])  # last: a seed next to the arm's end, not connected
    seeds = np.zeros(len(voxels), bool)
    seeds[0] = seeds[-1] = True
    nearest = nearest_seed(voxels, seeds)
    end_of_arm = len(arm_a) + len(arm_b) - 1
    assert nearest[end_of_arm] == 0
    assert nearest[-1] == len(voxels) - 1
    assert (nearest_seed(voxels, np.zeros(len(voxels), bool)) == -1).all()


# ----------------------------------------------------------------------------------------------- rigid fits

def test_kabsch_and_icp_recover_a_rigid_motion() -> None:
    source = trimesh.sample.sample_surface(trimesh.creation.box(extents=(0.6, 0.4, 0.3)), 6000, seed=2)[0]
    T = make_transform(Rotation.from_rotvec([0.1, -0.2, 0.15]).as_matrix(), [0.05, -0.02, 0.03])
    target = apply_transform(T, source)
    assert np.allclose(kabsch(source, target), T, atol=1e-9)
    tree = cKDTree(target)
    init = make_transform(Rotation.from_rotvec([0.13, -0.17, 0.12]).as_matrix(), [0.07, 0.0, 0.02])  # ~3 deg off
    fitted = icp(source[::4], tree, init, iterations=60)
    assert np.abs(fitted - T).max() < 2e-3
    shifted = apply_transform(make_transform(t=[0.03, 0.01, -0.02]), source)
    fitted = icp(source[::4], cKDTree(shifted), np.eye(4), translation_only=True, iterations=60)
    assert np.allclose(fitted[:3, :3], np.eye(3)) and np.allclose(fitted[:3, 3], [0.03, 0.01, -0.02], atol=2e-3)
    # along a direction: only the offset's component along it is fitted
    along = apply_transform(make_transform(t=[0.03, 0.0, 0.0]), source)
    fitted = icp(source[::4], cKDTree(along), make_transform(t=[0.0, 0.02, 0.0]), translation_only=True,
                 direction=np.array([1.0, 0.0, 0.0]), iterations=60)
    assert np.allclose(fitted[:3, 3], [0.03, 0.02, 0.0], atol=2e-3) and fitted[1, 3] == 0.02
    # trimming: a quarter of the target moved away does not drag the fit
    damaged = target.copy()
    damaged[: len(damaged) // 4] += [0.0, 0.0, 0.2]
    fitted = icp(source[::4], cKDTree(damaged), init, max_distance=0.05, iterations=60)
    assert np.abs(fitted - T).max() < 5e-3


def test_plane_motion_rotates_about_the_planes_intersection() -> None:
    rng = np.random.default_rng(3)
    door = plate_points(rng, 4000, (0.02, 0.5, 0.8))     # a thin door in the plane x ~ 0.01, hinge at y = 0
    origin, axis = np.array([0.01, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])
    T = rotation_about_line(origin, axis, np.radians(60.0))
    moved = apply_transform(T, door)
    centroid, normal = fit_plane(door)
    assert abs(abs(normal[0]) - 1.0) < 1e-3 and abs(centroid[1] - 0.25) < 0.02

    def score(candidate: np.ndarray) -> float:
        return float(np.mean(np.linalg.norm(apply_transform(candidate, door) - moved, axis=1) < 0.02))

    estimate = plane_motion(door, moved, score)
    assert abs(np.degrees(rotation_angle(estimate)) - 60.0) < 1.0
    assert np.abs(apply_transform(estimate, door) - moved).max() < 0.03
    parallel = apply_transform(make_transform(t=[0.0, 0.3, 0.0]), door)
    assert np.allclose(plane_motion(door, parallel, score), np.eye(4))  # the paper's identity fallback


def test_correlation_shifts_find_every_slot() -> None:
    part = box_voxels((0, 0, 0), (9, 1, 5))
    slots = np.concatenate([part + [3, 20, 0], part + [3, 20, 12]])  # two identical slots
    shifts = correlation_shifts(part, slots, count=2)
    assert sorted(map(tuple, shifts)) == [(3, 20, 0), (3, 20, 12)]
    assert correlation_shifts(part, part + [5, -4, 2], count=1)[0].tolist() == [5, -4, 2]


def test_guess_joint_type() -> None:
    small = rotation_about_line(np.zeros(3), [0, 0, 1], np.radians(3.0))
    large = rotation_about_line(np.zeros(3), [0, 0, 1], np.radians(40.0))
    assert guess_joint_type(small, 0.95, 0.94) == "prismatic"
    assert guess_joint_type(small, 0.95, 0.80) == "revolute"   # the translation explains it worse
    assert guess_joint_type(large, 0.90, 0.91) == "revolute"   # a large rotation needs a clearly better translation
    assert guess_joint_type(large, 0.10, 0.80) == "prismatic"  # the rigid fit sat in a wrong minimum


# ----------------------------------------------------------------------------------------------- scenes

def test_identical_states_raise() -> None:
    points = np.random.default_rng(4).uniform(0.0, 0.3, (5000, 3))
    with pytest.raises(ValueError, match="look identical"):
        discover_parts(points, points.copy(), VoxelizeConfig())
    with pytest.raises(ValueError, match="no opaque points"):
        discover_parts(points, np.zeros((0, 3)), VoxelizeConfig())


def test_grid_and_components_of_200k_points_are_fast(gt_points: dict) -> None:
    rng = np.random.default_rng(5)
    canonical, other = (np.concatenate([p, p[rng.integers(len(p), size=80_000)]]) for p in gt_points["cabinet"])
    assert len(canonical) == len(other) == 200_000
    start = time.perf_counter()
    grid, static, c, o = build_states(canonical, other, VoxelizeConfig())
    seconds = time.perf_counter() - start
    print(f"\n200k points per state: grid {grid.shape}, {len(static)} static voxels, components "
          f"{[len(x) for x in c.components[:3]]} / {[len(x) for x in o.components[:3]]}, {seconds:.2f} s")
    assert c.components and o.components
    assert seconds < 5.0


@pytest.mark.slow
@pytest.mark.parametrize("category", [pytest.param(c, marks=STORAGE_XFAIL) if c == "storage" else c for c in SEEDS])
def test_gt_surfaces_give_parts_types_and_motions(category: str, scenes: dict, gt_points: dict) -> None:
    canonical, other = gt_points[category]
    result = discover_parts(canonical, other, VoxelizeConfig())
    gt = load_gt_joints(scenes[category] / "gt" / "trans.json")
    assert len(result.parts) == len(gt), f"{category}: {len(result.parts)} parts for {len(gt)} joints"
    assert_joints_close(joint_errors(result.parts, result.grid, scenes[category]), category)


@pytest.mark.slow
def test_plane_method_vs_refined(scenes: dict, gt_points: dict) -> None:
    """The paper's plane estimate on the same selected parts: revolute axes are usable, prismatic motions are lost."""
    rows = []
    for category, (canonical, other) in gt_points.items():
        _, _, c, o = build_states(canonical, other, VoxelizeConfig())
        matcher = PartMatcher(c, o)
        parts, _ = select_parts(matcher, VoxelizeConfig())
        for method in ("plane", "refined"):
            estimates = copy.deepcopy(parts)
            for part in estimates:
                finalise_part(matcher, part, None, method)
            errors = joint_errors(estimates, c.grid, scenes[category])
            rows += [(category, method, part["type_gt"], part["axis_ang"], part["axis_pos"], part["motion"])
                     for part in errors["parts"] if part["pred_index"] is not None]
    print("\ncategory  method   type       axis_deg  axis_pos  motion(deg|m)")
    for category, method, kind, ang, pos, motion in rows:
        print(f"{category:9s} {method:8s} {kind:10s} {ang:8.2f}  {'-' if pos is None else f'{pos:.4f}':>8s}  "
              f"{motion:.4f}")
    checked = [r for r in rows if r[0] != "storage"]  # storage: the selection itself fails (see STORAGE_XFAIL)
    plane_revolute = [r for r in checked if r[1] == "plane" and r[2] == "revolute"]
    assert max(r[3] for r in plane_revolute) < 1.0                       # axis direction within 1 deg
    assert max(r[4] for r in plane_revolute) < 0.03                      # axis position within 3 voxels
    assert max(r[5] for r in plane_revolute) < 1.0                       # angle within 1 deg
    plane_prismatic = [r for r in checked if r[1] == "plane" and r[2] == "prismatic"]
    assert all(r[3] > 45.0 and r[5] > 0.2 for r in plane_prismatic)     # identity: the drawer travel is missed
    refined = [r for r in checked if r[1] == "refined"]
    assert all(r[3] < AXIS_DEG for r in refined)
    assert np.mean([r[4] for r in refined if r[2] == "revolute"]) < np.mean([r[4] for r in plane_revolute])


def visible_points(scene: Path) -> tuple[np.ndarray, np.ndarray]:
    """Points back-projected from the rendered depth of the canonical (end) and the other (start) state."""
    states = []
    for state in (CANONICAL, 1 - CANONICAL):
        points, _ = backproject_depth(load_cameras(scene, state, "train"))
        states.append(points.astype(np.float64))
    return states[0], states[1]


@pytest.mark.slow
@pytest.mark.parametrize("category, seed, res, views", [("cabinet", 0, 160, 48), ("drawers", 2, 96, 24)])
def test_visible_surfaces(category: str, seed: int, res: int, views: int, tmp_path: Path) -> None:
    """Coarse models see only visible surfaces: the cabinet's inside appears when its door opens and must be
    skipped as occluded static, not taken for a part."""
    scene = Path(generate_scene(category, tmp_path / category, res=res, views=views, test_views=1, seed=seed,
                                supersample=1, progress=False)["out_dir"])
    canonical, other = visible_points(scene)
    result = discover_parts(canonical, other, VoxelizeConfig())
    gt = load_gt_joints(scene / "gt" / "trans.json")
    assert len(result.parts) == len(gt)
    assert_joints_close(joint_errors(result.parts, result.grid, scene), f"{category} (visible)")
    if category == "cabinet":
        occluded = sum(s["voxels"] for s in result.skipped if s["reason"].startswith("occluded static"))
        assert occluded > 0.3 * len(result.parts[0].voxels)  # a large inside, recognised and skipped


# ----------------------------------------------------------------------------------------------- CLI

def write_gaussian_ply(path: Path, points: np.ndarray, opacity_logit: float = 5.0) -> None:
    """A minimal 2DGS-style PLY (the properties GaussianModel.load_ply requires)."""
    names = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1",
             "rot_0", "rot_1", "rot_2", "rot_3"]
    vertex = np.zeros(len(points), dtype=[(name, "f4") for name in names])
    vertex["x"], vertex["y"], vertex["z"] = points.T
    vertex["opacity"] = opacity_logit
    vertex["scale_0"] = vertex["scale_1"] = np.log(0.005)
    vertex["rot_0"] = 1.0
    path.parent.mkdir(parents=True, exist_ok=True)
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(path))


def cli_args(root: Path, *extra: str) -> list[str]:
    return ["--dataset", "synthetic", "--subset", "test", "--scenes", "cabinet", "--output_root", str(root),
            "--coarse_name", "coarse_gs", "--iteration", "100", *extra]


def coarse_folder(root: Path) -> Path:
    return root / "synthetic" / "test" / "cabinet" / "coarse_gs" / "point_cloud" / "iteration_100"


def write_coarse_models(folder: Path, canonical: np.ndarray, other: np.ndarray) -> None:
    """Stage 2's two models (state 1 canonical) as opaque surfels on the given points, and its state choice."""
    write_gaussian_ply(folder / "point_cloud_1.ply", canonical)
    write_gaussian_ply(folder / "point_cloud_0.ply", other)
    (folder / "larger_motion_state.txt").write_text("1\n")


def test_cli_end_to_end(tmp_path: Path, gt_points: dict, capsys: pytest.CaptureFixture) -> None:
    canonical, other = gt_points["cabinet"]
    folder = coarse_folder(tmp_path)
    write_coarse_models(folder, canonical, other)
    faint = np.random.default_rng(6).uniform(-3.0, 3.0, (2000, 3))  # transparent floaters must be ignored
    write_gaussian_ply(folder / "faint.ply", faint, opacity_logit=-5.0)
    assert voxelize.main(cli_args(tmp_path, "--save_ply", "--joint_types", "s,r")) == 0
    info = json.loads((folder / "joint_voxel_info.json").read_text())
    arrays = np.load(folder / "joint_voxel_info.npz", allow_pickle=False)
    assert info["larger_motion_state"] == 1 and info["voxel_size"] == 0.01 and info["joint_types_source"] == "cli"
    assert len(info["parts"]) == 1 and info["parts"][0]["joint_type"] == "revolute"
    part = info["parts"][0]
    assert part["canonical_voxels"] == len(arrays["part_1_voxels"]) > 1000
    assert part["matched_voxels"] == len(arrays["part_1_matched_voxels"]) > 1000
    assert arrays["transforms"].shape == (1, 4, 4) and np.allclose(arrays["transforms"][0], part["transform"])
    assert arrays["static_voxels"].dtype == np.int32 and len(arrays["static_voxels"]) == info["static_voxels"]
    # index -> world: the part's voxel centres lie on the canonical points
    centres = np.asarray(info["grid_origin"]) + (arrays["part_1_voxels"] + 0.5) * info["voxel_size"]
    assert np.median(cKDTree(canonical).query(centres)[0]) < info["voxel_size"]
    assert (folder / "voxel_parts_canonical.ply").is_file() and (folder / "voxel_parts_other.ply").is_file()
    assert "part 1:" in capsys.readouterr().out
    # resumable: a second run skips the scene unless --overwrite
    mtime = (folder / "joint_voxel_info.json").stat().st_mtime_ns
    assert voxelize.main(cli_args(tmp_path)) == 0
    assert "skipping" in capsys.readouterr().out
    assert (folder / "joint_voxel_info.json").stat().st_mtime_ns == mtime


def test_part_chamfer_scores_the_stage3_part_against_its_gt_part(tmp_path: Path, gt_points: dict,
                                                                   scenes: dict) -> None:
    """`benchmarks/part_chamfer.py`: the cabinet's door cut out of ground-truth samples lies on the GT door (small
    Chamfer both ways); the body's points scored as that part do not."""
    canonical, other = gt_points["cabinet"]
    folder = coarse_folder(tmp_path)
    write_coarse_models(folder, canonical, other)
    write_point_ply(folder / "surface_points_1.ply", canonical, np.zeros_like(canonical))
    assert voxelize.main(cli_args(tmp_path, "--joint_types", "s,r")) == 0
    [(part, gt, to_gt, from_gt)] = part_chamfers(folder, scenes["cabinet"] / "gt")
    assert (part, gt) == (1, 0) and to_gt < 0.5 and from_gt < 0.5
    arrays = dict(np.load(folder / "joint_voxel_info.npz"))
    arrays["part_1_voxels"] = arrays["static_voxels"]
    np.savez(folder / "joint_voxel_info.npz", **arrays)
    [(_, _, to_gt, _)] = part_chamfers(folder, scenes["cabinet"] / "gt")
    assert to_gt > 10.0


def test_cli_errors(tmp_path: Path, gt_points: dict, capsys: pytest.CaptureFixture) -> None:
    assert voxelize.main(cli_args(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "coarse.py" in err
    folder = coarse_folder(tmp_path)
    canonical, _ = gt_points["cabinet"]
    write_gaussian_ply(folder / "point_cloud_0.ply", canonical)
    (folder / "larger_motion_state.txt").write_text("0")
    assert voxelize.main(cli_args(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "point_cloud_1.ply is missing" in err and "2_coarse.sh" in err
    write_gaussian_ply(folder / "point_cloud_1.ply", canonical)
    assert voxelize.main(cli_args(tmp_path)) == 2
    assert "look identical" in capsys.readouterr().err
    (folder / "larger_motion_state.txt").write_text("start")
    assert voxelize.main(cli_args(tmp_path)) == 2
    assert "must hold 0 or 1" in capsys.readouterr().err
    (folder / "larger_motion_state.txt").write_text("0")
    assert voxelize.main(cli_args(tmp_path, "--num_parts", "3", "--joint_types", "s,r")) == 2
    assert "--num_parts 3" in capsys.readouterr().err
    assert voxelize.main(cli_args(tmp_path, "--joint_types", "r,p")) == 2
    assert "starting with 's'" in capsys.readouterr().err


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


def test_given_joint_types_go_to_the_parts_they_explain_best() -> None:
    from utils.part_selection import PartEstimate, assign_joint_types

    def part(rev: float, pris: float) -> PartEstimate:
        estimate = PartEstimate(source=0, voxels=np.zeros((1, 3), int), matched_component=0,
                                matched_voxels=np.zeros((1, 3), int), overlap=0.0, rigid_transform=np.eye(4))
        estimate.model_overlaps = {"revolute": rev, "prismatic": pris}
        estimate.model_transforms = {"revolute": np.diag([1.0, -1, -1, 1]), "prismatic": np.eye(4)}
        return estimate

    parts = [part(0.9, 0.3), part(0.2, 0.95), part(0.5, 0.6)]
    assign_joint_types(parts, ("prismatic", "revolute", "prismatic"))
    assert [p.joint_type for p in parts] == ["revolute", "prismatic", "prismatic"]
    assert all(p.type_source == "given" for p in parts)
    assert parts[0].overlap == 0.9 and np.allclose(parts[0].transform, np.diag([1.0, -1, -1, 1]))


def test_stage3_reads_the_rendered_surface_when_stage2_wrote_it(tmp_path: Path) -> None:
    from utils.point_cloud import write_point_ply

    surface = np.random.default_rng(0).random((50, 3)).astype(np.float32)
    write_point_ply(tmp_path / "surface_points_1.ply", surface, np.zeros_like(surface))
    assert np.allclose(voxelize.state_points(tmp_path, 1, 0.5), surface)
    with pytest.raises(FileNotFoundError, match="point_cloud_0.ply"):
        voxelize.state_points(tmp_path, 0, 0.5)  # no surface file: falls back to the coarse PLY, missing here


def drawer_fronts(pulls: tuple[float, float], rng: np.random.Generator, gap: float = 0.015) -> list[np.ndarray]:
    """Surface samples of a body with two drawer fronts `gap` apart (1.5 cm: one component on a 1 cm grid), pulled out
    by `pulls` (the canonical state) and pushed in (the other)."""
    body = trimesh.creation.box(extents=(0.8, 0.5, 0.6))
    body.apply_translation([0.0, 0.26, 0.0])  # front face at y = 0.01

    def front(z: float, pulled: float) -> trimesh.Trimesh:
        slab = trimesh.creation.box(extents=(0.6, 0.02, 0.2))
        slab.apply_translation([0.0, -pulled, z])
        return slab

    zs = (-0.1 - gap / 2, 0.1 + gap / 2)  # edges at -gap/2 and +gap/2
    states = []
    for opened in (True, False):
        mesh = trimesh.util.concatenate([body, *(front(z, p if opened else 0.0) for z, p in zip(zs, pulls))])
        points, _ = trimesh.sample.sample_surface(mesh, 150_000, seed=int(rng.integers(2**31)))
        states.append(points + rng.normal(0.0, 0.001, points.shape))
    return states


def test_touching_drawers_that_move_alike_are_split_and_pieces_of_one_part_joined() -> None:
    """Pulled out 30 and 32 cm, the motions differ by less than the landing tolerance: only the pieces the points form
    at half the voxel size (`fine_pieces`) tell the two fronts apart. Pulled out alike, the pieces are one part
    again (`merge_alike`)."""
    rng = np.random.default_rng(0)
    pulls = (0.30, 0.32)
    states = drawer_fronts(pulls, rng)
    config = VoxelizeConfig(num_movable=2, joint_types=("prismatic", "prismatic"))
    result = discover_parts(states[0], states[1], config)
    found = sorted((float(result.grid.centres(part.voxels)[:, 2].mean()),
                    float(part.transform[1, 3])) for part in result.parts)
    assert [z for z, _ in found][0] < 0 < [z for z, _ in found][1]  # one part per front
    for (_, motion), pulled in zip(found, pulls):
        assert motion == pytest.approx(pulled, abs=0.004)
    assert not any(part.weak for part in result.parts)

    alike = discover_parts(*drawer_fronts((0.30, 0.30), rng), VoxelizeConfig())
    assert len(alike.parts) == 1
    z = alike.grid.centres(alike.parts[0].voxels)[:, 2]
    assert z.min() < -0.15 and z.max() > 0.15  # both fronts
    assert alike.parts[0].transform[1, 3] == pytest.approx(0.30, abs=0.004)


def test_touching_drawers_split_by_local_motions_when_parts_are_missing() -> None:
    """Fronts that touch (no gap even at half the voxel size) pulled out 30 and 33 cm land within the tolerance of
    one motion. With two parts requested and one found, the part is split by the motions of its spatial chunks
    (`split_by_local_motions`); with the count left automatic it stays one part. Closed, the two fronts form one
    flat face, so a front's slide within that face (and which voxels near their common edge go where) is not
    determined by geometry; the pull along y is."""
    rng = np.random.default_rng(1)
    pulls = (0.30, 0.33)
    states = drawer_fronts(pulls, rng, gap=0.0)
    single = discover_parts(*states, VoxelizeConfig())
    assert len(single.parts) == 1
    result = discover_parts(*states, VoxelizeConfig(num_movable=2))  # types given: the global fit (test_multi_motion)
    assert not any(part.weak for part in result.parts) and all(part.split for part in result.parts)
    upper = [float((result.grid.centres(part.voxels)[:, 2] > 0).mean()) for part in result.parts]
    lower, higher = np.argsort(upper)
    assert upper[lower] < 0.4 and upper[higher] > 0.6  # mostly one front each
    assert result.parts[lower].transform[1, 3] == pytest.approx(pulls[0], abs=0.005)
    assert result.parts[higher].transform[1, 3] == pytest.approx(pulls[1], abs=0.005)


def side_by_side_drawers(pulls: tuple[float, float], rng: np.random.Generator) -> list[np.ndarray]:
    """Surface samples of a body with two drawers side by side whose fronts touch (at x = 0), pulled out by `pulls`
    with their side walls showing (the canonical state), and pushed in, fronts only (the other)."""
    body = trimesh.creation.box(extents=(0.8, 0.5, 0.4))
    body.apply_translation([0.0, 0.26, 0.0])  # front face at y = 0.01

    def drawer(x: float, pulled: float, opened: bool) -> list[trimesh.Trimesh]:
        front = trimesh.creation.box(extents=(0.4, 0.02, 0.2))
        front.apply_translation([x, -pulled if opened else 0.0, 0.0])
        if not opened:
            return [front]
        sides = []
        for dx in (-0.17, 0.17):  # the drawer's side walls, their backs 5 cm before the body
            side = trimesh.creation.box(extents=(0.01, pulled - 0.06, 0.06))
            side.apply_translation([x + dx, -pulled / 2 - 0.02, 0.0])
            sides.append(side)
        return [front, *sides]

    states = []
    for opened in (True, False):
        meshes = [body, *(m for x, p in zip((-0.2, 0.2), pulls) for m in drawer(x, p, opened))]
        points, _ = trimesh.sample.sample_surface(trimesh.util.concatenate(meshes), 200_000,
                                                  seed=int(rng.integers(2**31)))
        states.append(points + rng.normal(0.0, 0.001, points.shape))
    return states


def test_side_by_side_drawers_split_along_their_common_slide() -> None:
    """Two touching drawers pulled out 23 and 25 cm are one part that one rigid motion fits best by turning. With the
    count given but not the types, the part is split as a sliding part (a translation explains it nearly as well),
    each drawer's motion a pull along y alone (a free translation slides a front within the closed face by 3 cm).
    With the types given, the global motion fit separates them too; its pulls are right, but a front may still slide
    within the face (the closed fronts are one flat face): stage 4's renders pin that."""
    states = side_by_side_drawers((0.23, 0.25), np.random.default_rng(2))
    for types in (None, ("prismatic", "prismatic")):
        result = discover_parts(*states, VoxelizeConfig(num_movable=2, joint_types=types))
        assert not any(part.weak for part in result.parts)
        assert all(part.split for part in result.parts) if types is None else all(
            part.fitted == "prismatic" for part in result.parts)
        found = sorted(((result.grid.centres(part.voxels)[:, 0] > 0).mean(), part.transform[:3, 3])
                       for part in result.parts)
        assert found[0][0] < 0.2 and found[1][0] > 0.8  # mostly one drawer each
        for (_, shift), pulled in zip(found, (0.23, 0.25)):
            assert shift[1] == pytest.approx(pulled, abs=0.004)
            assert np.hypot(shift[0], shift[2]) < (0.004 if types is None else 0.04)


def test_a_part_that_moves_as_one_is_not_split() -> None:
    """Two fronts pulled out alike: every chunk's motion is the same one, so `split_by_local_motions` finds no
    sub-parts (and does not fail on a single motion)."""
    states = drawer_fronts((0.30, 0.30), np.random.default_rng(3))
    grid, _, canonical, other = build_states(*states, VoxelizeConfig())
    matcher = PartMatcher(canonical, other)
    part = canonical.components[0]
    match = matcher.match(part)
    assert match is not None and match.transform[1, 3] == pytest.approx(0.30, abs=0.005)
    assert split_by_local_motions(matcher, part, match.transform, 0.5, 30, grid.voxel_size) == []


def test_part_estimates_compare_by_identity() -> None:
    """`split_parts` removes a split part from the list of parts; parts hold arrays of different shapes, so equality
    must be identity (a field-wise comparison raises)."""
    def part(n: int) -> PartEstimate:
        return PartEstimate(0, np.zeros((n, 3), np.int64), -1, np.zeros((0, 3), np.int64), 0.9, np.eye(4))

    first, second = part(5), part(7)
    parts = [first, second]
    parts.remove(second)
    assert parts == [first] and part(5) != first


def test_scraps_do_not_count_towards_the_requested_parts() -> None:
    """Pieces of a few dozen voxels match something easily; beside a part of thousands they are taken out of the
    count (`_Selection.scraps`) so that splits and larger rejected pieces fill it first."""
    def part(n: int) -> PartEstimate:
        return PartEstimate(0, np.zeros((n, 3), np.int64), -1, np.zeros((0, 3), np.int64), 0.9, np.eye(4))

    selection = _Selection()
    door, drawer, scrap = part(13000), part(2000), part(44)
    selection.parts = [door, scrap, drawer]
    assert selection.scraps() == [scrap] and selection.parts == [door, drawer]


def test_place_axis_moves_a_misplaced_hinge_to_the_best_overlap() -> None:
    """A door on a box, hinged at its bottom edge, open by 70° in the canonical state: the same rotation about an axis
    5 cm off lands the door on the closed one only in part; `place_axis` finds the hinge again, to within its one-voxel
    search step."""
    hinge, axis = np.array([0.0, -0.26, -0.2]), np.array([1.0, 0.0, 0.0])
    body = trimesh.creation.box(extents=(0.6, 0.5, 0.5))
    door = trimesh.creation.box(extents=(0.5, 0.02, 0.4))
    door.apply_translation([0.0, -0.26, 0.0])  # closed, its bottom edge on the hinge line
    opened = door.copy()
    opened.apply_transform(trimesh.transformations.rotation_matrix(np.radians(70.0), axis, hinge))
    states = [trimesh.sample.sample_surface(trimesh.util.concatenate([body, d]), 120_000, seed=s)[0]
              for s, d in ((3, opened), (4, door))]
    grid, _, canonical, other = build_states(*states, VoxelizeConfig())
    matcher = PartMatcher(canonical, other)
    part = canonical.components[0]
    closing = {"type": "revolute", "axis_direction": axis.tolist(), "motion": -70.0}
    true = joint_to_matrix({**closing, "axis_origin": hinge.tolist()})
    shifted = joint_to_matrix({**closing, "axis_origin": (hinge + [0.0, 0.03, 0.04]).tolist()})
    assert matcher.overlap(shifted, part) < matcher.overlap(true, part) - 0.1
    placed = matrix_to_joint(place_axis(matcher, shifted, part), "revolute")
    assert axis_offset_error(placed["axis_origin"], placed["axis_direction"], hinge) <= 0.0101  # from 5 cm
    assert abs(abs(placed["motion"]) - 70.0) <= 1.0


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
