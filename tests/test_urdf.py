"""URDF export: parses with yourdfpy and moves each start-state part mesh onto its end-state pose."""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import trimesh
import yourdfpy
from scipy.spatial.transform import Rotation

from evaluation.meshes import save_mesh
from evaluation.urdf import write_urdf

DOOR = {"part": 1, "type": "revolute", "axis_origin": [0.31, -0.25, 0.05],
        "axis_direction": (np.array([0.05, 0.1, 1.0]) / np.linalg.norm([0.05, 0.1, 1.0])).tolist(), "motion": -72.5}
DRAWER = {"part": 2, "type": "prismatic", "axis_origin": [0.0, 0.0, 0.0],
          "axis_direction": (np.array([1.0, 0.2, 0.0]) / np.linalg.norm([1.0, 0.2, 0.0])).tolist(), "motion": 0.27}


def moved_by_joint(vertices: np.ndarray, joint: dict) -> np.ndarray:
    """End-state vertices: x -> R(d, theta)(x - o) + o or x + s d."""
    o, d = np.asarray(joint["axis_origin"]), np.asarray(joint["axis_direction"])
    if joint["type"] == "revolute":
        return Rotation.from_rotvec(d * math.radians(joint["motion"])).apply(vertices - o) + o
    return vertices + joint["motion"] * d


@pytest.fixture()
def exported(tmp_path):
    """A cabinet-like object written as meshes/ + urdf/cabinet.urdf; returns (urdf path, part meshes)."""
    meshes = {
        "static": trimesh.creation.box(extents=(0.6, 0.5, 0.7)),
        "part_1": trimesh.creation.box(extents=(0.02, 0.5, 0.3)).apply_translation([0.31, 0.0, 0.15]),
        "part_2": trimesh.creation.box(extents=(0.55, 0.45, 0.15)).apply_translation([0.0, 0.0, -0.2]),
    }
    for name, mesh in meshes.items():
        save_mesh(tmp_path / "meshes" / f"start_{name}.ply", mesh)
    path = tmp_path / "urdf" / "cabinet.urdf"
    write_urdf(path, "cabinet", "../meshes/start_static.ply",
               [{"mesh_relpath": "../meshes/start_part_1.ply", "joint": DOOR},
                {"mesh_relpath": "../meshes/start_part_2.ply", "joint": DRAWER}])
    return path, meshes


def placed_mesh(robot: yourdfpy.URDF, link: str) -> tuple[np.ndarray, np.ndarray]:
    """(vertices as loaded from the link's mesh file, the same vertices placed by the scene graph)."""
    pose, geometry = robot.scene.graph.get(f"start_{link}.ply")
    vertices = np.asarray(robot.scene.geometry[geometry].vertices)
    return vertices, vertices @ pose[:3, :3].T + pose[:3, 3]


def test_urdf_moves_parts_from_start_to_end(exported):
    path, meshes = exported
    robot = yourdfpy.URDF.load(str(path))
    assert set(robot.joint_names) == {"joint_1", "joint_2"}
    assert len(robot.scene.geometry) == 3  # every mesh file was found through its relative path
    for joint_name, joint, link in (("joint_1", DOOR, "part_1"), ("joint_2", DRAWER, "part_2")):
        robot.update_cfg({joint_name: 0.0})
        start, placed = placed_mesh(robot, link)
        np.testing.assert_allclose(np.sort(start, axis=0), np.sort(meshes[link].vertices, axis=0), atol=1e-6)
        assert np.abs(placed - start).max() < 1e-9
        value = math.radians(joint["motion"]) if joint["type"] == "revolute" else joint["motion"]
        robot.update_cfg({joint_name: value})
        _, placed = placed_mesh(robot, link)
        assert np.abs(placed - moved_by_joint(start, joint)).max() < 1e-5
    static, placed = placed_mesh(robot, "static")
    assert np.abs(placed - static).max() < 1e-12


def test_urdf_limits_and_axis(exported):
    path, _ = exported
    root = ET.parse(path).getroot()
    door, drawer = root.find("joint[@name='joint_1']"), root.find("joint[@name='joint_2']")
    assert door.get("type") == "revolute" and drawer.get("type") == "prismatic"
    assert float(door.find("limit").get("lower")) == pytest.approx(math.radians(-72.5), abs=1e-12)
    assert float(door.find("limit").get("upper")) == 0.0
    assert float(drawer.find("limit").get("lower")) == 0.0
    assert float(drawer.find("limit").get("upper")) == pytest.approx(0.27, abs=1e-12)
    np.testing.assert_allclose([float(v) for v in door.find("axis").get("xyz").split()], DOOR["axis_direction"],
                               atol=1e-15)
    np.testing.assert_allclose([float(v) for v in door.find("origin").get("xyz").split()], DOOR["axis_origin"])
    assert root.find("link[@name='part_1']/visual/geometry/mesh").get("filename") == "../meshes/start_part_1.ply"


def test_urdf_bad_input(tmp_path):
    with pytest.raises(ValueError, match="type"):
        write_urdf(tmp_path / "a.urdf", "x", "s.ply",
                   [{"mesh_relpath": "p.ply", "joint": {**DOOR, "type": "ball"}}])
    with pytest.raises(ValueError, match="zero vector"):
        write_urdf(tmp_path / "a.urdf", "x", "s.ply",
                   [{"mesh_relpath": "p.ply", "joint": {**DOOR, "axis_direction": [0, 0, 0]}}])
    with pytest.raises(ValueError, match="mesh_relpath"):
        write_urdf(tmp_path / "a.urdf", "x", "s.ply", [{"joint": DOOR}])
    with pytest.raises(ValueError, match="appears twice"):
        write_urdf(tmp_path / "a.urdf", "x", "s.ply",
                   [{"mesh_relpath": "p.ply", "joint": DOOR}, {"mesh_relpath": "q.ply", "joint": DOOR}])
    assert not (tmp_path / "a.urdf").exists()  # nothing half-written
