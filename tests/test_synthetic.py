"""Tests of the synthetic articulated-object generator (data_tools): format, geometry, joints, determinism, CLI."""
from __future__ import annotations

import colorsys
import dataclasses
import hashlib
import json
import math
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import pytest
import trimesh

from data_tools.articulated import ObjectSpec
from data_tools.collisions import Solid, contacts, separation, solid
from data_tools.lighting import FIXED_LIGHTING
from data_tools.objects import MAX_TILT_DEG, build_object, categories
from data_tools.shapes import MAX_DOOR_DEG, MAX_PULL_FRACTION, MIN_DOOR_DEG, box
from data_tools.synthetic import generate_scene, main
from evaluation.meshes import load_mesh

RES, VIEWS, TEST_VIEWS, SEED = 48, 6, 2, 3
STATES, SPLITS = ("start", "end"), ("train", "test")
DOOR_CATEGORIES = ("cabinet", "fridge", "storage", "oven", "microwave")  # a revolute door hides a hollow interior
CATEGORIES = ("cabinet", "drawers", "fridge", "storage", "laptop", "oven", "box", "microwave", "washer", "window",
              "mixed")
CHECK_SEEDS = range(5)  # seeds of the construction checks (collisions, motions, axes) per category
CLEARANCE = 5e-4  # parts stay at least this far apart (normalised units; the gaps are 2-5 mm ~ 2-5e-3)
MIN_MOTION = 0.03  # every movable part moves at least this far somewhere (normalised units; ~5 px at 400 px)


@pytest.fixture(scope="module")
def scene_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("synthetic")


def scene_dir(root: Path, category: str) -> Path:
    """The small test scene of `category`, generated on first use and shared by the module's tests."""
    out = root / category
    if not (out / "gt" / "trans.json").exists():
        generate_scene(category, out, res=RES, views=VIEWS, test_views=TEST_VIEWS, seed=SEED, progress=False)
    return out


def read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, f"cannot read {path}"
    return image


def load_views(scene: Path, state: str, split: str) -> list[dict]:
    """Every frame of one transforms file with its pose, camera angles and images (RGBA in RGB order)."""
    meta = json.loads((scene / f"transforms_{split}_{state}.json").read_text())
    views = []
    for frame in meta["frames"]:
        rgba_path = scene / frame["file_path"]
        views.append({
            "c2w": np.array(frame["transform_matrix"], dtype=np.float64),
            "angle_x": meta["camera_angle_x"],
            "angle_y": meta["camera_angle_y"],
            "rgba": cv2.cvtColor(read_image(rgba_path), cv2.COLOR_BGRA2RGBA),
            "depth": read_image(rgba_path.parent.parent / "depth" / rgba_path.name),
            "part": read_image(rgba_path.parent.parent / "part" / rgba_path.name),
            "frame": frame,
        })
    return views


def backproject(view: dict) -> tuple[np.ndarray, np.ndarray]:
    """World points (M, 3) of the pixels with depth, and their (M,) part ids: OpenGL pose -> OpenCV, +0.5 centres."""
    depth = view["depth"].astype(np.float64) / 1000.0
    height, width = depth.shape
    fx = width / (2 * math.tan(view["angle_x"] / 2))
    fy = height / (2 * math.tan(view["angle_y"] / 2))
    v, u = np.nonzero(depth > 0)
    z = depth[v, u]
    cam = np.stack([(u + 0.5 - width / 2) / fx * z, (v + 0.5 - height / 2) / fy * z, z], axis=1)
    c2w = view["c2w"] @ np.diag([1.0, -1.0, -1.0, 1.0])
    return cam @ c2w[:3, :3].T + c2w[:3, 3], view["part"][v, u]


def surface_distance(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """(M,) unsigned distance of points (M, 3) to the triangles of `mesh`."""
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)),
                        o3d.core.Tensor(mesh.faces.astype(np.uint32)))
    return scene.compute_distance(o3d.core.Tensor(points.astype(np.float32))).numpy()


def gt_meshes(scene: Path, state: str, n_joints: int) -> dict[str, trimesh.Trimesh]:
    gt = scene / "gt" / state
    meshes = {"whole": load_mesh(gt / f"{state}_rotate.ply"), "static": load_mesh(gt / f"{state}_static_rotate.ply")}
    meshes.update({f"dynamic_{i}": load_mesh(gt / f"{state}_dynamic_{i}_rotate.ply") for i in range(n_joints)})
    return meshes


def trans_info(scene: Path) -> list[dict]:
    return json.loads((scene / "gt" / "trans.json").read_text())["trans_info"]


def apply_joint(joint: dict, points: np.ndarray) -> np.ndarray:
    """Move points (N, 3) from the start to the end state with a trans.json joint."""
    origin, direction = np.array(joint["axis"]["o"]), np.array(joint["axis"]["d"])
    if joint["type"] == "rotate":
        angle = math.radians(joint["rotate"]["r"] - joint["rotate"]["l"])
        return trimesh.transform_points(points, trimesh.transformations.rotation_matrix(angle, direction, origin))
    return points + (joint["translate"]["r"] - joint["translate"]["l"]) * direction


@pytest.mark.parametrize("category", categories())
def test_scene_layout_and_image_formats(scene_root: Path, category: str) -> None:
    scene = scene_dir(scene_root, category)
    joints = trans_info(scene)
    assert isinstance(joints, list) and len(joints) >= 1
    for joint in joints:
        assert joint["type"] in ("rotate", "translate")
        assert np.linalg.norm(joint["axis"]["d"]) == pytest.approx(1.0, abs=1e-12)
        assert set(joint["rotate"]) == set(joint["translate"]) == {"l", "r"}
    for state_index, state in enumerate(STATES):
        assert len(list((scene / "gt" / state).glob(f"{state}_dynamic_*_rotate.ply"))) == len(joints)
        for split, count in zip(SPLITS, (VIEWS, TEST_VIEWS)):
            views = load_views(scene, state, split)
            assert len(views) == count
            for index, view in enumerate(views):
                assert view["frame"]["file_path"] == f"{state}/{split}/rgba/{index:04d}.png"
                assert view["frame"]["time"] == float(state_index)
                assert view["rgba"].dtype == np.uint8 and view["rgba"].shape == (RES, RES, 4)
                assert view["depth"].dtype == np.uint16 and view["depth"].shape == (RES, RES)
                assert view["part"].dtype == np.uint8 and view["part"].shape == (RES, RES)
                assert view["part"].max() <= len(joints) + 1
                assert np.array_equal(view["part"] > 0, view["depth"] > 0)  # both come from the centre ray
                assert np.all(view["rgba"][view["rgba"][..., 3] == 0, :3] == 0)
                np.testing.assert_allclose(view["c2w"][3], [0, 0, 0, 1])
                np.testing.assert_allclose(view["c2w"][:3, :3] @ view["c2w"][:3, :3].T, np.eye(3), atol=1e-9)
            assert views[0]["angle_x"] == pytest.approx(views[0]["angle_y"])
            assert math.degrees(views[0]["angle_x"]) == pytest.approx(42.0)
    assert not list(scene.glob("point_cloud_*.ply")) and not list(scene.rglob("mask"))


@pytest.mark.parametrize("category", categories())
def test_joints_map_start_part_meshes_onto_end_meshes(scene_root: Path, category: str) -> None:
    scene = scene_dir(scene_root, category)
    joints = trans_info(scene)
    start, end = (gt_meshes(scene, state, len(joints)) for state in STATES)
    np.testing.assert_array_equal(start["static"].vertices, end["static"].vertices)
    for i, joint in enumerate(joints):
        moved = apply_joint(joint, start[f"dynamic_{i}"].vertices)
        assert np.abs(moved - end[f"dynamic_{i}"].vertices).max() < 1e-5
        assert np.abs(start[f"dynamic_{i}"].vertices - end[f"dynamic_{i}"].vertices).max() > MIN_MOTION
    for meshes in (start, end):
        parts = [meshes["static"]] + [meshes[f"dynamic_{i}"] for i in range(len(joints))]
        np.testing.assert_array_equal(meshes["whole"].vertices, np.concatenate([m.vertices for m in parts]))


@pytest.mark.parametrize("category", categories())
def test_depth_and_part_ids_lie_on_the_gt_surfaces(scene_root: Path, category: str) -> None:
    scene = scene_dir(scene_root, category)
    n_joints = len(trans_info(scene))
    for state in STATES:
        meshes = gt_meshes(scene, state, n_joints)
        size = float(np.linalg.norm(meshes["whole"].extents))
        points, parts = map(np.concatenate, zip(*(backproject(v) for s in SPLITS for v in load_views(scene, state, s))))
        assert len(points) > 0.05 * RES * RES * (VIEWS + TEST_VIEWS)
        distance = surface_distance(meshes["whole"], points)
        assert np.median(distance) < 0.005 * size
        # z-depth (not ray length), exact camera model: only the 0.5 mm quantisation of the PNG remains.
        assert distance.max() < 1e-3
        assert set(np.unique(parts)) == set(range(1, n_joints + 2)), "every part is seen in some view"
        for part_id in range(1, n_joints + 2):
            mesh = meshes["static"] if part_id == 1 else meshes[f"dynamic_{part_id - 2}"]
            assert surface_distance(mesh, points[parts == part_id]).max() < 1e-3


@pytest.mark.parametrize("category", categories())
def test_images_are_antialiased_and_textured(scene_root: Path, category: str) -> None:
    scene = scene_dir(scene_root, category)
    views = [v for state in STATES for v in load_views(scene, state, "train")]
    alpha = np.stack([v["rgba"][..., 3] for v in views])
    assert np.mean((alpha > 0) & (alpha < 255)) > 0.002
    assert np.any(alpha == 0) and np.any(alpha == 255)
    for part_id in range(1, len(trans_info(scene)) + 2):
        colours = np.concatenate([v["rgba"][(v["part"] == part_id) & (v["rgba"][..., 3] == 255), :3] for v in views])
        assert len(colours) > 20
        assert colours.astype(np.float64).std(axis=0).mean() / 255 > 0.04


@pytest.mark.parametrize("category", categories())
def test_part_textures_vary_on_a_flat_patch(category: str) -> None:
    spec = build_object(category, SEED)
    grid = np.stack(np.meshgrid(np.linspace(-0.3, 0.3, 40), np.linspace(-0.3, 0.3, 40), [0.1]), -1).reshape(-1, 3)
    for part in spec.parts:
        albedo = part.texture.albedo(grid)
        assert albedo.min() >= 0.0 and albedo.max() <= 1.0
        assert albedo.std(axis=0).mean() > 0.03, f"{category} {part.name}: texture is flat"


@pytest.mark.parametrize("category", categories())
def test_object_fits_unit_sphere_and_cameras_look_at_it(scene_root: Path, category: str) -> None:
    scene = scene_dir(scene_root, category)
    for state in STATES:
        radius = np.linalg.norm(load_mesh(scene / "gt" / state / f"{state}_rotate.ply").vertices, axis=1).max()
        assert radius <= 0.95
        positions = {}
        for split in SPLITS:
            c2w = np.stack([v["c2w"] for v in load_views(scene, state, split)])
            eye = c2w[:, :3, 3]
            distance = np.linalg.norm(eye, axis=1)
            assert np.all((distance >= 3.0) & (distance <= 3.5))
            # OpenGL camera z points backwards, i.e. away from the origin the camera looks at.
            np.testing.assert_allclose(c2w[:, :3, 2], eye / distance[:, None], atol=1e-9)
            elevation = np.degrees(np.arcsin(eye[:, 2] / distance))
            assert np.all((elevation >= -10.0) & (elevation <= 70.0))
            positions[split] = eye
        assert np.linalg.norm(positions["train"][:, None] - positions["test"][None], axis=2).min() > 1e-3
    spec = build_object(category, SEED)
    for state in range(2):
        assert np.linalg.norm(np.concatenate(spec.posed_vertices(state)), axis=1).max() <= 0.9 + 1e-6


def first_hits(meshes: dict[str, trimesh.Trimesh], names: list[str], rays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Name of the mesh each ray (N, 6) hits first (or "" for none), and the hit distance (N,)."""
    raycaster = o3d.t.geometry.RaycastingScene()
    for name in names:
        raycaster.add_triangles(o3d.core.Tensor(meshes[name].vertices.astype(np.float32)),
                                o3d.core.Tensor(meshes[name].faces.astype(np.uint32)))
    hits = raycaster.cast_rays(o3d.core.Tensor(rays.astype(np.float32)))
    ids, t_hit = hits["geometry_ids"].numpy(), hits["t_hit"].numpy()
    return np.array([names[i] if i < len(names) else "" for i in ids]), t_hit


def spec_meshes(spec: ObjectSpec, state: int) -> dict[str, trimesh.Trimesh]:
    """The posed meshes of an object in `state` under the names of the scene's GT files."""
    meshes = [trimesh.Trimesh(v, p.mesh.faces, process=False) for v, p in zip(spec.posed_vertices(state), spec.parts)]
    named = {"static": meshes[0], "whole": trimesh.util.concatenate(meshes)}
    named.update({f"dynamic_{i}": mesh for i, mesh in enumerate(meshes[1:])})
    return named


@pytest.mark.parametrize("category", DOOR_CATEGORIES)
def test_opening_a_door_reveals_a_hollow_interior(category: str) -> None:
    """Rays cast backwards (upright objects face -y) from a grid on a closed door hit the door; once it is open, most
    of them hit the body well behind the door's closed position: the body is hollow."""
    spec = build_object(category, SEED, orientation="upright")
    start, end = spec_meshes(spec, 0), spec_meshes(spec, 1)
    names = ["static", *(f"dynamic_{k}" for k in range(len(spec.joints)))]
    doors = [i for i, joint in enumerate(spec.joints) if joint.kind == "revolute"]
    assert doors
    for i in doors:
        lo, hi = start[f"dynamic_{i}"].bounds
        grid = np.stack(np.meshgrid(np.linspace(lo[0], hi[0], 7)[1:-1], [(lo[1] + hi[1]) / 2],
                                    np.linspace(lo[2], hi[2], 7)[1:-1]), -1).reshape(-1, 3)
        rays = np.concatenate([grid, np.tile([0.0, 1.0, 0.0], (len(grid), 1))], axis=1)
        assert np.all(first_hits(start, names, rays)[0] == f"dynamic_{i}")
        hit, depth = first_hits(end, names, rays)
        assert np.mean((hit == "static") & (depth > 0.05 * np.linalg.norm(start["whole"].extents))) >= 0.5


def file_digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    kwargs = dict(res=32, views=2, test_views=1, progress=False)
    generate_scene("storage", tmp_path / "a", seed=5, **kwargs)
    generate_scene("storage", tmp_path / "b", seed=5, **kwargs)
    generate_scene("storage", tmp_path / "c", seed=6, **kwargs)
    digests = file_digests(tmp_path / "a")
    assert len(digests) == 4 + 2 * 3 * 3 + 2 * (1 + 4 + 1) + 1  # jsons, PNGs, meshes (static, 4 dynamic, whole), trans
    assert digests == file_digests(tmp_path / "b")
    assert trans_info(tmp_path / "a") != trans_info(tmp_path / "c")


def test_open_state_start_reverses_the_motion(tmp_path: Path) -> None:
    kwargs = dict(res=32, views=1, test_views=1, seed=2, progress=False)
    generate_scene("fridge", tmp_path / "end", open_state="end", **kwargs)
    generate_scene("fridge", tmp_path / "start", open_state="start", **kwargs)
    opens_at_end, opens_at_start = trans_info(tmp_path / "end"), trans_info(tmp_path / "start")
    for a, b in zip(opens_at_end, opens_at_start, strict=True):
        assert a["axis"] == b["axis"] and a["type"] == b["type"] == "rotate"
        assert (a["rotate"]["l"], a["rotate"]["r"]) == (b["rotate"]["r"], b["rotate"]["l"])
        assert abs(a["rotate"]["r"]) >= MIN_DOOR_DEG and a["rotate"]["l"] == 0.0
    for i in range(len(opens_at_end)):
        end_of_a = load_mesh(tmp_path / "end" / "gt" / "end" / f"end_dynamic_{i}_rotate.ply").vertices
        start_of_b = load_mesh(tmp_path / "start" / "gt" / "start" / f"start_dynamic_{i}_rotate.ply").vertices
        np.testing.assert_array_equal(end_of_a, start_of_b)


def test_bad_arguments_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown category 'sofa'"):
        generate_scene("sofa", tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="supersample"):
        generate_scene("cabinet", tmp_path / "x", supersample=2, progress=False)
    with pytest.raises(ValueError, match="views"):
        generate_scene("cabinet", tmp_path / "x", views=0, progress=False)
    with pytest.raises(ValueError, match="open_state"):
        generate_scene("cabinet", tmp_path / "x", open_state="middle", progress=False)
    assert not (tmp_path / "x").exists()


def test_existing_scene_needs_overwrite(tmp_path: Path) -> None:
    scene = tmp_path / "scene"
    kwargs = dict(res=16, views=1, test_views=1, progress=False)
    generate_scene("laptop", scene, seed=0, **kwargs)
    (scene / "point_cloud_start.ply").write_text("stale")
    (scene / "notes.txt").write_text("keep me")
    before = trans_info(scene)
    with pytest.raises(FileExistsError, match=str(scene)):
        generate_scene("laptop", scene, seed=1, **kwargs)
    assert trans_info(scene) == before
    generate_scene("laptop", scene, seed=1, overwrite=True, **kwargs)
    assert trans_info(scene) != before
    assert not (scene / "point_cloud_start.ply").exists() and (scene / "notes.txt").read_text() == "keep me"


def test_cli_writes_a_scene(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data" / "synthetic" / "oven" / "seed4"
    args = ["--category", "oven", "--seed", "4", "--out", str(out), "--res", "24", "--views", "2", "--test_views", "1"]
    assert main(args) == 0
    assert "oven seed 4" in capsys.readouterr().out
    assert len(json.loads((out / "transforms_train_end.json").read_text())["frames"]) == 2
    assert read_image(out / "start" / "test" / "rgba" / "0000.png").shape == (24, 24, 4)
    assert main(args) == 2  # refuses to overwrite without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--category", "sofa", "--out", str(out)])


# ----------------------------------------------------------------------------------------------- construction

def test_categories_are_the_protocols() -> None:
    assert tuple(categories()) == CATEGORIES
    protocol = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "protocol.json").read_text())
    assert {entry["category"] for group in ("dev", "held_out") for entry in protocol[group]} <= set(CATEGORIES)


def cube(centre: list[float], half: float, angle_deg: float = 0.0) -> Solid:
    """A cube as a Solid, turned by `angle_deg` about z around its centre."""
    mesh = box(np.array(centre) - half, np.array(centre) + half)
    mesh.apply_transform(trimesh.transformations.rotation_matrix(math.radians(angle_deg), [0, 0, 1], centre))
    return solid(mesh.vertices, mesh.faces)


def test_separation_is_exact_for_convex_solids() -> None:
    a = cube([0.0, 0.0, 0.0], 0.5)
    assert separation(a, cube([1.3, 0.0, 0.0], 0.5)) == pytest.approx(0.3)
    assert separation(a, cube([0.9, 0.0, 0.0], 0.5)) == pytest.approx(-0.1)
    assert separation(a, cube([1.0, 1.0, 0.0], 0.5)) == pytest.approx(0.0, abs=1e-12)  # edges touching
    # A cube turned 45 degrees: its corner reaches 0.5 * sqrt(2) from its centre along x.
    assert separation(a, cube([1.3, 0.0, 0.0], 0.5, 45.0)) == pytest.approx(0.8 - 0.5 * math.sqrt(2))
    assert separation(a, cube([1.1, 0.0, 0.0], 0.5, 45.0)) < 0.0
    # Skew edges (one cube turned about z, the other about x): only an edge-edge cross product separates them.
    b = box([-0.5, -0.5, -0.5], [0.5, 0.5, 0.5])
    b.apply_transform(trimesh.transformations.rotation_matrix(math.radians(45), [1, 0, 0]))
    b.apply_translation([0.0, 0.0, 0.5 + 0.5 * math.sqrt(2) + 0.05])
    turned = box([-0.5, -0.5, -0.5], [0.5, 0.5, 0.5])
    turned.apply_transform(trimesh.transformations.rotation_matrix(math.radians(45), [0, 1, 0]))
    top = solid(turned.vertices, turned.faces)
    lifted = solid(b.vertices + [0.0, 0.0, 0.5 * math.sqrt(2) - 0.5], b.faces)
    assert separation(top, lifted) == pytest.approx(0.05, abs=1e-9)


def moved(spec: ObjectSpec, part: int, end: float) -> ObjectSpec:
    """`spec` with joint value `end` in the end state for movable part `part` (1-based part index)."""
    parts = list(spec.parts)
    parts[part] = dataclasses.replace(parts[part], joint=dataclasses.replace(parts[part].joint, end=end))
    return dataclasses.replace(spec, parts=parts)


def test_contacts_finds_parts_pushed_into_the_body() -> None:
    drawers = build_object("drawers", 0)
    assert contacts(drawers, CLEARANCE) == []
    found = contacts(moved(drawers, 1, -0.05), CLEARANCE)  # pushed in through the back wall
    assert [(c.state, c.first, c.second) for c in found] == [(1, "body", "drawer_0")] and found[0].separation < 0
    cabinet = build_object("cabinet", 0)
    assert contacts(cabinet, CLEARANCE) == []
    found = contacts(moved(cabinet, 1, -5.0), CLEARANCE)  # swung inwards
    assert [(c.first, c.second) for c in found] == [("body", "door_0")]


@pytest.mark.parametrize("category", CATEGORIES)
def test_parts_never_collide(category: str) -> None:
    """No solid of one part comes within CLEARANCE of a solid of another, in the closed and in the open state."""
    for seed in CHECK_SEEDS:
        assert contacts(build_object(category, seed), CLEARANCE) == [], f"{category} seed {seed}"


def axis_distance(joint, points: np.ndarray) -> np.ndarray:
    """(N,) distance of points (N, 3) to the joint's axis line."""
    offset = points - joint.origin
    return np.linalg.norm(offset - np.outer(offset @ joint.direction, joint.direction), axis=1)


@pytest.mark.parametrize("category", CATEGORIES)
def test_each_joint_moves_its_own_part_visibly_within_its_range(category: str) -> None:
    """Only joint i moves part i + 1; a hinge runs along an edge of its own part; doors open at least MIN_DOOR_DEG,
    drawers come out by at most MAX_PULL_FRACTION of their depth; every part moves at least MIN_MOTION."""
    for seed in CHECK_SEEDS:
        spec = build_object(category, seed)
        start, end = spec.posed_vertices(0), spec.posed_vertices(1)
        np.testing.assert_array_equal(start[0], spec.parts[0].mesh.vertices.astype(np.float32))
        for i, (part, joint) in enumerate(zip(spec.parts[1:], spec.joints), start=1):
            closed = part.mesh.vertices
            np.testing.assert_allclose(start[i], trimesh.transform_points(closed, joint.pose(joint.start)), atol=1e-6)
            np.testing.assert_allclose(end[i], trimesh.transform_points(closed, joint.pose(joint.end)), atol=1e-6)
            assert np.linalg.norm(end[i] - start[i], axis=1).max() > MIN_MOTION, f"{category} {seed} {part.name}"
            motion = abs(joint.end - joint.start)
            if joint.kind == "revolute":
                assert axis_distance(joint, closed).min() < 1e-6, f"{category} {seed}: hinge off {part.name}"
                assert MIN_DOOR_DEG <= motion <= 120.0
            elif part.name.startswith("drawer"):
                depth = np.ptp(closed @ joint.direction)
                assert motion <= MAX_PULL_FRACTION * depth, f"{category} {seed} {part.name}"


def test_same_material_by_default_distinct_hues_as_option() -> None:
    """By default every part's texture is a variant of the body's (same pattern and scales, colours within a few per
    cent); `appearance="distinct"` spreads the parts' hues around the colour wheel. Geometry is the same."""
    grid = np.random.default_rng(0).uniform(-0.5, 0.5, (4000, 3))
    for category in ("storage", "mixed", "washer"):
        material = build_object(category, SEED)
        distinct = build_object(category, SEED, appearance="distinct")
        for a, b in zip(material.parts, distinct.parts, strict=True):
            np.testing.assert_array_equal(a.mesh.vertices, b.mesh.vertices)
        body = material.parts[0].texture
        for part in material.parts[1:]:
            texture = part.texture
            assert texture.pattern == body.pattern and texture.period == body.period
            np.testing.assert_array_equal(texture.waves, body.waves)
            assert np.abs(texture.colors - body.colors).max() < 0.1
            assert np.abs(texture.albedo(grid).mean(0) - body.albedo(grid).mean(0)).max() < 0.08
            assert not np.array_equal(texture.phases, body.phases)  # its own board of the same material
        hues = [colorsys.rgb_to_hsv(*part.texture.colors[0])[0] for part in distinct.parts]
        gaps = [min(abs(h - g), 1.0 - abs(h - g)) for k, h in enumerate(hues) for g in hues[k + 1:]]
        assert min(gaps) > 0.5 / len(hues)


def similarity_fit(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Scale, rotation (3, 3) and translation (3,) with target ~ scale * rotation @ source + translation."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    s, t = source - mu_s, target - mu_t
    u, sigma, vt = np.linalg.svd(t.T @ s)
    fix = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ fix @ vt
    scale = float((sigma * np.diag(fix)).sum() / (s**2).sum())
    return scale, rotation, mu_t - scale * rotation @ mu_s


@pytest.mark.parametrize("category", ["mixed", "window", "laptop"])
def test_random_orientation_turns_geometry_and_joints_together(category: str) -> None:
    """The default object is the upright one turned (tilt <= MAX_TILT_DEG), scaled and moved: all parts in both
    states, and every joint's axis with them."""
    ups = []
    for seed in range(4):
        upright = build_object(category, seed, orientation="upright")
        turned = build_object(category, seed)
        points_u = np.concatenate([v for state in (0, 1) for v in upright.posed_vertices(state)]).astype(np.float64)
        points_t = np.concatenate([v for state in (0, 1) for v in turned.posed_vertices(state)]).astype(np.float64)
        scale, rotation, shift = similarity_fit(points_u, points_t)
        assert np.abs(scale * points_u @ rotation.T + shift - points_t).max() < 1e-5
        up = rotation @ [0.0, 0.0, 1.0]
        assert math.degrees(math.acos(min(1.0, up[2]))) <= MAX_TILT_DEG + 1e-6
        ups.append(up)
        for a, b in zip(upright.joints, turned.joints, strict=True):
            np.testing.assert_allclose(rotation @ a.direction, b.direction, atol=1e-6)
            assert axis_distance(b, (scale * rotation @ a.origin + shift)[None])[0] < 1e-6
            factor = 1.0 if a.kind == "revolute" else scale
            assert (b.start, b.end) == pytest.approx((factor * a.start, factor * a.end), abs=1e-6)
    yaws = [math.atan2(u[1], u[0]) for u in ups]
    assert len({round(y, 3) for y in yaws}) == len(yaws)  # each seed its own pose
    assert not np.allclose(build_object(category, 0).parts[0].mesh.vertices,
                           build_object(category, 0, orientation="upright").parts[0].mesh.vertices, atol=1e-3)


@pytest.mark.parametrize("category", CATEGORIES)
def test_large_motion_option_opens_every_part_further(category: str) -> None:
    """`motion="large"` moves each opening halfway to the top of its range: never less, doors at least halfway from
    MIN_DOOR_DEG to MAX_DOOR_DEG; the closed geometry is the same (up to the normalisation's scale and shift) and the
    parts still never collide."""
    full, large = build_object(category, SEED), build_object(category, SEED, motion="large")
    closed_full, closed_large = (np.concatenate([p.mesh.vertices for p in spec.parts]) for spec in (full, large))
    scale, rotation, shift = similarity_fit(closed_full, closed_large)
    np.testing.assert_allclose(rotation, np.eye(3), atol=1e-9)
    assert np.abs(scale * closed_full + shift - closed_large).max() < 1e-9
    for a, b in zip(full.joints, large.joints, strict=True):
        assert a.start == b.start == 0.0
        if a.kind == "revolute":
            assert b.end >= max(a.end, (MIN_DOOR_DEG + MAX_DOOR_DEG) / 2)
        else:
            assert b.end >= scale * a.end
    assert contacts(large, CLEARANCE) == []


def test_lighting_is_drawn_per_object_and_fixed_as_option() -> None:
    lights = [build_object(category, seed).lighting for category in ("cabinet", "box") for seed in (0, 1)]
    for light in lights:
        assert light.direction[2] > math.sin(math.radians(19.9))  # from above
        assert light.ambient + light.diffuse == pytest.approx(1.0) and 0.3 <= light.ambient <= 0.5
    assert len({tuple(np.round(light.direction, 6)) for light in lights}) == len(lights)
    assert build_object("cabinet", 0, lighting="fixed").lighting == FIXED_LIGHTING


def test_build_object_is_deterministic_and_checks_its_options() -> None:
    a, b = build_object("mixed", 11), build_object("mixed", 11)
    for pa, pb in zip(a.parts, b.parts, strict=True):
        np.testing.assert_array_equal(pa.mesh.vertices, pb.mesh.vertices)
        np.testing.assert_array_equal(pa.texture.colors, pb.texture.colors)
    assert a.trans_info() == b.trans_info() and a.lighting == b.lighting
    for option, value in (("appearance", "shiny"), ("orientation", "sideways"), ("lighting", "dark"),
                          ("motion", "wide")):
        with pytest.raises(ValueError, match=f"{option} must be one of .* got '{value}'"):
            build_object("mixed", 0, **{option: value})


def test_cli_options_reach_the_scene(tmp_path: Path) -> None:
    common = ["--category", "box", "--seed", "2", "--res", "16", "--views", "1", "--test_views", "1"]
    assert main([*common, "--out", str(tmp_path / "a"), "--appearance", "distinct", "--orientation", "upright",
                 "--lighting", "fixed", "--motion", "large"]) == 0
    generate_scene("box", tmp_path / "b", res=16, views=1, test_views=1, seed=2, progress=False,
                   appearance="distinct", orientation="upright", lighting="fixed", motion="large")
    assert file_digests(tmp_path / "a") == file_digests(tmp_path / "b")
    assert main([*common, "--out", str(tmp_path / "c")]) == 0
    assert trans_info(tmp_path / "c") != trans_info(tmp_path / "a")  # turned by default
    with pytest.raises(SystemExit):
        main([*common, "--out", str(tmp_path / "d"), "--appearance", "shiny"])
