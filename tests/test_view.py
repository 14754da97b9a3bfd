"""The browser viewer (view.py), headless: the viser server starts on a free port and serves its page, the scene holds
the twin's surfels and meshes, and moving a joint's slider moves its part onto the part's end state."""
from __future__ import annotations

import math
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData

import view
from data_tools.oracle_model import build_oracle_model
from data_tools.synthetic import generate_scene
from evaluation.export import export_twin
from evaluation.metrics import load_gt_meshes
from scene.trained_model import PLY_NAME, TrainedModel, iteration_dir

pytest.importorskip("viser")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """An oracle model of a one-door cabinet (canonical end state) with stage-5 meshes (the ground-truth ones)."""
    root = tmp_path_factory.mktemp("view")
    scene = root / "cabinet"
    generate_scene("cabinet", scene, res=32, views=2, test_views=1, seed=0, progress=False)
    model = root / "gear"
    build_oracle_model(scene, model, 1, num_surfels=1500, colour="grey")
    joints = TrainedModel.load(model).joints_start_to_end()
    export_twin(model / "eval", "cabinet", joints, load_gt_meshes(scene / "gt"))
    return model


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def viewer(model_path: Path):
    args = view.parse_args(["--model_path", str(model_path), "--port", str(free_port()), "--surfels", "points"])
    viewer = view.serve(args)
    yield viewer
    viewer.server.stop()


def posed(viewer: view.Viewer, part: int, points: np.ndarray) -> np.ndarray:
    """`points` (start state) placed by the pose of the part's scene node."""
    frame = viewer.frames[part]
    w, x, y, z = frame.wxyz
    rotation = view.Rotation.from_quat([x, y, z, w])
    return rotation.apply(points) + np.asarray(frame.position)


def test_server_serves_the_scene(viewer: view.Viewer):
    with urllib.request.urlopen(f"http://127.0.0.1:{viewer.server.get_port()}/", timeout=10) as response:
        assert response.status == 200 and b"<html" in response.read().lower()
    assert set(viewer.frames) == {0, 1} and set(viewer.sliders) == {1}
    names = {("surfels", "rgb"), ("surfels", "parts"), ("mesh", "rgb"), ("mesh", "parts")}
    assert {(kind, colouring) for kind, colouring, _ in viewer.nodes} == names and len(viewer.nodes) == 8
    for part in (0, 1):
        for kind, colouring in names:
            assert viewer.server.scene.get_handle_by_name(f"/twin/part_{part}/{kind}/{colouring}") is not None


def test_slider_moves_the_part_onto_its_end_state(viewer: view.Viewer, model_path: Path):
    model = TrainedModel.load(model_path)
    door = (model.part_ids == 1) & (model.gaussians.get_opacity >= view.OPAQUE)
    start, end = (model.surfels_in_state(s)[0][door].double().numpy() for s in (0, 1))
    static_pose = (tuple(viewer.frames[0].wxyz), tuple(viewer.frames[0].position))
    np.testing.assert_allclose(posed(viewer, 1, start), start, atol=1e-9)  # the start state at value 0
    slider = viewer.sliders[1]
    assert slider.min == 0.0 and slider.max == pytest.approx(viewer.joints[1]["motion"])
    assert slider.max > 10.0  # degrees
    slider.value = slider.max  # what dragging the slider does: its callback poses the part
    np.testing.assert_allclose(posed(viewer, 1, start), end, atol=1e-4)
    slider.value = slider.max / 2
    halfway = posed(viewer, 1, start)
    assert 0.3 < np.linalg.norm(halfway - start, axis=1).mean() / np.linalg.norm(end - start, axis=1).mean() < 0.7
    assert (tuple(viewer.frames[0].wxyz), tuple(viewer.frames[0].position)) == static_pose  # the body stays


def test_states_and_display_controls(viewer: view.Viewer):
    viewer.set_state(1.0)
    assert viewer.sliders[1].value == pytest.approx(viewer.joints[1]["motion"])
    assert viewer.state_slider.value == 1.0
    viewer.set_state(0.0)
    np.testing.assert_allclose(viewer.frames[1].wxyz, [1.0, 0.0, 0.0, 0.0], atol=1e-12)

    def visible() -> set[tuple[str, str]]:
        return {(kind, colouring) for kind, colouring, handle in viewer.nodes if handle.visible}

    assert visible() == {("surfels", "rgb"), ("mesh", "rgb")}
    viewer.show_part_colours(True)
    assert visible() == {("surfels", "parts"), ("mesh", "parts")} and viewer.colour_box.value is True
    viewer.show("mesh", False)
    assert visible() == {("surfels", "parts")}


def test_joint_pose_matches_the_joint_convention():
    door = {"type": "revolute", "axis_origin": [1.0, 0.0, 0.0], "axis_direction": [0.0, 0.0, 2.0], "motion": 90.0}
    wxyz, position = view.joint_pose(door, 90.0)
    point = view.Rotation.from_quat([*wxyz[1:], wxyz[0]]).apply([2.0, 0.0, 0.0]) + position
    np.testing.assert_allclose(point, [1.0, 1.0, 0.0], atol=1e-12)  # (2, 0, 0) turned 90 deg about the line x = 1
    drawer = {"type": "prismatic", "axis_origin": [0.0, 0.0, 0.0], "axis_direction": [0.0, -1.0, 0.0], "motion": 1.0}
    np.testing.assert_allclose(view.joint_pose(drawer, 0.25)[1], [0.0, -0.25, 0.0])


def test_missing_model_is_a_clear_error(tmp_path: Path, capsys):
    assert view.main(["--model_path", str(tmp_path / "none"), "--port", str(free_port())]) == 2
    assert str(tmp_path / "none") in capsys.readouterr().err


def test_gaussian_ply_has_the_fields_2dgs_viewers_read(model_path: Path):
    """Common 2DGS/3DGS viewers read a binary PLY `vertex` element with these float properties."""
    path = iteration_dir(model_path, TrainedModel.load(model_path).iteration) / PLY_NAME
    ply = PlyData.read(str(path))
    names = [prop.name for prop in ply["vertex"].properties]
    required = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1",
                "rot_0", "rot_1", "rot_2", "rot_3"]
    assert set(required) <= set(names) and not ply.text
    assert all(ply["vertex"][name].dtype == np.float32 for name in required)
    quats = np.stack([ply["vertex"][f"rot_{i}"] for i in range(4)], axis=1)
    assert np.all(np.isfinite(quats)) and np.all(np.linalg.norm(quats, axis=1) > 0)
    assert not math.isnan(float(torch.tensor(ply["vertex"]["opacity"]).mean()))
