"""URDF and MJCF export: the files parse (yourdfpy) and load in the simulators (MuJoCo; PyBullet where installed),
and each simulator moves every start-state part mesh exactly onto its end-state pose."""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import trimesh
import yourdfpy
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from evaluation.mass import mass_properties
from evaluation.meshes import save_mesh, save_obj
from evaluation.mjcf import write_mjcf
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


# ------------------------------------------------------------------------------------------- inertia and simulators
SIM_TOLERANCE = 1e-5  # float32 vertices in the simulators


@pytest.fixture()
def sim_export(tmp_path):
    """The cabinet of `exported` as OBJ meshes with mass properties, written as URDF and MJCF; returns
    (urdf path, mjcf path, meshes, masses)."""
    meshes = {
        "static": trimesh.creation.box(extents=(0.6, 0.5, 0.7)),
        "part_1": trimesh.creation.box(extents=(0.02, 0.5, 0.3)).apply_translation([0.31, 0.0, 0.15]),
        "part_2": trimesh.creation.box(extents=(0.55, 0.45, 0.15)).apply_translation([0.0, 0.0, -0.2]),
    }
    masses = {name: mass_properties(mesh, 500.0) for name, mesh in meshes.items()}
    for name, mesh in meshes.items():
        save_obj(tmp_path / "meshes" / f"start_{name}.obj", mesh)
    parts = [{"mesh_relpath": f"../meshes/start_{name}.obj", "joint": joint, "inertial": masses[name]}
             for name, joint in (("part_1", DOOR), ("part_2", DRAWER))]
    paths = tmp_path / "urdf" / "cabinet.urdf", tmp_path / "mjcf" / "cabinet.xml"
    write_urdf(paths[0], "cabinet", "../meshes/start_static.obj", parts, masses["static"])
    write_mjcf(paths[1], "cabinet", "../meshes/start_static.obj", parts, masses["static"])
    return *paths, meshes, masses


def joint_value(joint: dict) -> float:
    return math.radians(joint["motion"]) if joint["type"] == "revolute" else joint["motion"]


def assert_same_points(a: np.ndarray, b: np.ndarray) -> None:
    """The two point sets coincide (each point of either has one of the other within SIM_TOLERANCE)."""
    assert cKDTree(b).query(a)[0].max() < SIM_TOLERANCE and cKDTree(a).query(b)[0].max() < SIM_TOLERANCE


def test_urdf_inertial_is_in_the_link_frame(sim_export):
    path, _, _, masses = sim_export
    root = ET.parse(path).getroot()
    inertial = root.find("link[@name='part_1']/inertial")
    xyz = [float(v) for v in inertial.find("origin").get("xyz").split()]
    np.testing.assert_allclose(xyz, masses["part_1"].center - DOOR["axis_origin"], atol=1e-12)
    assert float(inertial.find("mass").get("value")) == pytest.approx(500.0 * 0.02 * 0.5 * 0.3)
    tensor = inertial.find("inertia")
    assert float(tensor.get("ixx")) == pytest.approx(masses["part_1"].inertia[0, 0])
    assert float(tensor.get("iyz")) == pytest.approx(masses["part_1"].inertia[1, 2], abs=1e-12)
    assert root.find("link[@name='base']/inertial/mass") is not None
    assert yourdfpy.URDF.load(str(path)).joint_names == ["joint_1", "joint_2"]  # the <mujoco> element is ignored


@pytest.mark.parametrize("which", [0, 1], ids=["urdf", "mjcf"])
def test_mujoco_moves_parts_exactly(sim_export, which):
    mujoco = pytest.importorskip("mujoco")
    meshes, masses = sim_export[2], sim_export[3]
    model = mujoco.MjModel.from_xml_path(str(sim_export[which]))
    data = mujoco.MjData(model)
    for number, (name, joint) in enumerate((("part_1", DOOR), ("part_2", DRAWER)), start=1):
        body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
        joint_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"joint_{number}")
        assert model.body_mass[body] == pytest.approx(masses[name].mass)
        assert sorted(model.jnt_range[joint_id]) == pytest.approx(sorted((0.0, joint_value(joint))))
        (geom,) = [g for g in range(model.ngeom) if model.geom_bodyid[g] == body]
        mesh = model.geom_dataid[geom]
        vertices = model.mesh_vert[model.mesh_vertadr[mesh]:model.mesh_vertadr[mesh] + model.mesh_vertnum[mesh]]
        for value, expected in ((0.0, meshes[name].vertices),
                                (joint_value(joint), moved_by_joint(meshes[name].vertices, joint))):
            data.qpos[:] = 0.0
            data.qpos[model.jnt_qposadr[joint_id]] = value
            mujoco.mj_forward(model, data)
            assert_same_points(vertices @ data.geom_xmat[geom].reshape(3, 3).T + data.geom_xpos[geom], expected)
            np.testing.assert_allclose(data.xipos[body], moved_by_joint(masses[name].center[None], joint)[0]
                                       if value else masses[name].center, atol=SIM_TOLERANCE)


def test_pybullet_moves_parts_exactly(sim_export):
    pybullet = pytest.importorskip("pybullet", reason="pybullet has wheels only up to Python 3.11")
    meshes, masses = sim_export[2], sim_export[3]
    client = pybullet.connect(pybullet.DIRECT)
    try:
        body = pybullet.loadURDF(str(sim_export[0]), useFixedBase=True, physicsClientId=client)
        visuals = {shape[1]: shape for shape in pybullet.getVisualShapeData(body, physicsClientId=client)}
        for index, (name, joint) in enumerate((("part_1", DOOR), ("part_2", DRAWER))):
            assert pybullet.getDynamicsInfo(body, index, physicsClientId=client)[0] == pytest.approx(masses[name].mass)
            pybullet.resetJointState(body, index, joint_value(joint), physicsClientId=client)
            link = pybullet.getLinkState(body, index, computeForwardKinematics=True, physicsClientId=client)
            np.testing.assert_allclose(link[0], moved_by_joint(masses[name].center[None], joint)[0],
                                       atol=SIM_TOLERANCE)  # the centre of mass moves with the part
            position, orientation = pybullet.multiplyTransforms(link[4], link[5], visuals[index][5],
                                                                visuals[index][6])
            rotation = np.array(pybullet.getMatrixFromQuaternion(orientation)).reshape(3, 3)
            assert_same_points(meshes[name].vertices @ rotation.T + position,
                               moved_by_joint(meshes[name].vertices, joint))
    finally:
        pybullet.disconnect(client)


def test_mjcf_bad_input(tmp_path):
    with pytest.raises(ValueError, match="model name"):
        write_mjcf(tmp_path / "a.xml", "", "s.obj", [])
    with pytest.raises(ValueError, match="appears twice"):
        write_mjcf(tmp_path / "a.xml", "x", "s.obj",
                   [{"mesh_relpath": "p.obj", "joint": DOOR}, {"mesh_relpath": "q.obj", "joint": DOOR}])
    assert not (tmp_path / "a.xml").exists()
