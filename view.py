"""Browser viewer of a twin: the trained surfels and the part meshes, one slider per joint, part colours on/off and
the two observed states (viser).

    python view.py --model_path outputs/gear/synthetic/cabinet/gear [--iteration N|final] [--port 8080]
        [--host 127.0.0.1] [--surfels splats|points|none] [--no-meshes] [--up +z]

then open http://localhost:8080 (from another machine: forward the port, e.g. `ssh -L 8080:localhost:8080 host`).
Reads the stage-4 model (`scene/trained_model.py`) and, when stage 5 has run, its start-state part meshes
(`<model_path>/eval/meshes/start_<static|part_k>.ply`). Everything is placed in the START state and moved by the
joints as the URDF moves it: a part's surfels and mesh hang under one scene node whose pose is the part's joint
transform at the slider's value (0 = start state, the joint's motion = end state). Only surfels at least
render.OPAQUE opaque are shown.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import trimesh
from scipy.spatial.transform import Rotation

from evaluation.export import MESH_DIR
from evaluation.meshes import load_mesh
from gaussian_renderer.sh import sh_to_rgb
from render import OPAQUE, PART_PALETTE
from scene.trained_model import ModelNotFoundError, TrainedModel
from utils.rotations import quat_to_matrix

log = logging.getLogger("view")

SURFEL_MODES = ("splats", "points", "none")
POINT_SIZE_SCALE = 2.0  # points are drawn this many median surfel radii wide
SPLAT_THICKNESS = 0.05  # splats' normal extent relative to their smaller tangent one (0 would be degenerate)
SLIDER_STEPS = 200  # steps of a joint slider between its two observed states
VIEW_AZIMUTH_DEG, VIEW_ELEVATION_DEG, VIEW_DISTANCE = 50.0, 30.0, 2.5  # initial camera (radii of the object away)
UP_DIRECTIONS = {f"{sign}{axis}": (1.0 if sign == "+" else -1.0) * np.eye(3)[i]
                 for i, axis in enumerate("xyz") for sign in "+-"}


@dataclass
class PartSurfels:
    """A part's opaque surfels in the start state."""

    means: np.ndarray  # (N, 3)
    covariances: np.ndarray  # (N, 3, 3)
    rgb: np.ndarray  # (N, 3) in [0, 1]
    opacity: np.ndarray  # (N,)
    radius: float  # median tangent scale


@dataclass
class Twin:
    """What the viewer shows: the start -> end joints (with their `part`), per part (0 static, k movable) the
    start-state surfels and mesh, and the mean start -> end displacement (3,) of the movable surfels (the side the
    parts open to)."""

    joints: list[dict]
    surfels: dict[int, PartSurfels] = field(default_factory=dict)
    meshes: dict[int, trimesh.Trimesh] = field(default_factory=dict)
    opening: np.ndarray = field(default_factory=lambda: np.zeros(3))


def part_surfels(model: TrainedModel, min_opacity: float = OPAQUE) -> dict[int, PartSurfels]:
    """The opaque start-state surfels of every part that has any."""
    means, quats = model.surfels_in_state(0)
    gaussians = model.gaussians
    scales = gaussians.get_scaling
    thin = scales.min(dim=1, keepdim=True).values * SPLAT_THICKNESS
    axes = quat_to_matrix(torch.nn.functional.normalize(quats, dim=-1)) * torch.cat([scales, thin], dim=1)[:, None]
    covariances = axes @ axes.transpose(1, 2)
    rgb = sh_to_rgb(gaussians.params["sh0"][:, 0]).clamp(0.0, 1.0)
    opacity = gaussians.get_opacity
    result = {}
    for part in range(model.num_parts):
        keep = (model.part_ids == part) & (opacity >= min_opacity)
        if bool(keep.any()):
            result[part] = PartSurfels(*(t[keep].detach().double().cpu().numpy() for t in (means, covariances, rgb,
                                                                                          opacity)),
                                       radius=float(scales[keep].median()))
    return result


def part_meshes(model_path: Path, num_parts: int) -> dict[int, trimesh.Trimesh]:
    """Start-state meshes of stage 5 by part (0 static), those that exist and are not empty."""
    folder = model_path / "eval" / MESH_DIR
    names = {0: "static", **{k: f"part_{k}" for k in range(1, num_parts)}}
    meshes = {}
    for part, name in names.items():
        path = folder / f"start_{name}.ply"
        if path.is_file():
            mesh = load_mesh(path, allow_empty=True)
            if len(mesh.faces):
                meshes[part] = mesh
    return meshes


def load_twin(model_path: str | Path, iteration: int | str = "final", with_meshes: bool = True) -> Twin:
    """The twin of the stage-4 model at `model_path` (and stage 5's meshes, when `with_meshes` and present)."""
    model = TrainedModel.load(model_path, iteration)
    meshes = part_meshes(Path(model_path), model.num_parts) if with_meshes else {}
    movable = model.part_ids > 0
    shift = model.surfels_in_state(1)[0][movable] - model.surfels_in_state(0)[0][movable]
    opening = shift.mean(0).double().cpu().numpy() if bool(movable.any()) else np.zeros(3)
    return Twin(model.joints_start_to_end(), part_surfels(model), meshes, opening)


def initial_view(twin: Twin, up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(camera position, look-at point) of a three-quarter view of the surfels, from the side the parts open to
    (turned VIEW_AZIMUTH_DEG about `up` and raised VIEW_ELEVATION_DEG), far enough to see the open parts."""
    points = np.concatenate([s.means for s in twin.surfels.values()]) if twin.surfels else np.zeros((1, 3))
    centre = (points.min(0) + points.max(0)) / 2.0
    radius = max(float(np.linalg.norm(points - centre, axis=1).max()), 1e-3)
    flat = twin.opening - (twin.opening @ up) * up
    if np.linalg.norm(flat) < 1e-9:  # nothing moves sideways: any horizontal direction
        flat = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    side = Rotation.from_rotvec(up * math.radians(VIEW_AZIMUTH_DEG)).apply(flat / np.linalg.norm(flat))
    elevation = math.radians(VIEW_ELEVATION_DEG)
    direction = math.cos(elevation) * side + math.sin(elevation) * up
    return centre + VIEW_DISTANCE * radius * direction, centre


def joint_pose(joint: dict, value: float) -> tuple[np.ndarray, np.ndarray]:
    """(wxyz (4,), position (3,)) of the rigid motion that `joint` applies at `value` (degrees for revolute, scene
    units for prismatic joints): x -> R(d, value)(x - o) + o, or x -> x + value d."""
    direction = np.asarray(joint["axis_direction"], float)
    direction = direction / np.linalg.norm(direction)
    if joint["type"] == "prismatic":
        return np.array([1.0, 0.0, 0.0, 0.0]), value * direction
    rotation = Rotation.from_rotvec(direction * math.radians(value))
    origin = np.asarray(joint["axis_origin"], float)
    x, y, z, w = rotation.as_quat()
    return np.array([w, x, y, z]), origin - rotation.apply(origin)


def part_colour(part: int) -> tuple[int, int, int]:
    """The part's colour in render.py's part images."""
    return tuple(int(c) for c in PART_PALETTE[part % len(PART_PALETTE)])


class Viewer:
    """The scene and controls of one twin on a viser server.

    Scene: `/twin/part_<k>` (k = 0 static) holds the part's `surfels` and `mesh` in two colourings each (`rgb`,
    `parts`), of which one is visible. Controls: a slider per joint, a slider moving every joint between the states,
    buttons for the two observed states, and check boxes for part colours, surfels and meshes.
    """

    def __init__(self, server, twin: Twin, surfels: str = "splats", meshes: bool = True) -> None:
        if surfels not in SURFEL_MODES:
            raise ValueError(f"surfels must be one of {SURFEL_MODES}, got {surfels!r}")
        self.server, self.twin = server, twin
        self.joints = {int(joint["part"]): joint for joint in twin.joints}
        self.frames = {}
        self.nodes: list[tuple[str, str, object]] = []  # (kind "surfels"|"mesh", colouring "rgb"|"parts", handle)
        self.part_colours = False
        self.shown = {"surfels": True, "mesh": True}
        parts = sorted(set(twin.surfels) | (set(twin.meshes) if meshes else set()) | set(self.joints) | {0})
        for part in parts:
            self.frames[part] = server.scene.add_frame(f"/twin/part_{part}", show_axes=False)
            if surfels != "none" and part in twin.surfels:
                self._add_surfels(part, twin.surfels[part], surfels)
            if meshes and part in twin.meshes:
                self._add_mesh(part, twin.meshes[part])
        self.sliders = self._add_controls()

    # ------------------------------------------------------------------------------------------------------ scene
    def _keep(self, kind: str, colouring: str, handle) -> None:
        self.nodes.append((kind, colouring, handle))

    def _add_surfels(self, part: int, surfels: PartSurfels, mode: str) -> None:
        """The part's surfels as splats or points, in true and in part colour."""
        name = f"/twin/part_{part}/surfels"
        for colouring, rgb in (("rgb", surfels.rgb), ("parts", np.tile(np.array(part_colour(part)) / 255.0,
                                                                        (len(surfels.means), 1)))):
            visible = colouring == "rgb"
            if mode == "splats":
                handle = self.server.scene.add_gaussian_splats(
                    f"{name}/{colouring}", centers=surfels.means, covariances=surfels.covariances, rgbs=rgb,
                    opacities=surfels.opacity[:, None], visible=visible)
            else:
                handle = self.server.scene.add_point_cloud(
                    f"{name}/{colouring}", points=surfels.means, colors=rgb,
                    point_size=POINT_SIZE_SCALE * surfels.radius, point_shape="circle", visible=visible)
            self._keep("surfels", colouring, handle)

    def _add_mesh(self, part: int, mesh: trimesh.Trimesh) -> None:
        """The part's mesh in its vertex colours and in part colour."""
        name = f"/twin/part_{part}/mesh"
        self._keep("mesh", "rgb", self.server.scene.add_mesh_trimesh(f"{name}/rgb", mesh))
        self._keep("mesh", "parts", self.server.scene.add_mesh_simple(
            f"{name}/parts", vertices=np.asarray(mesh.vertices), faces=np.asarray(mesh.faces),
            color=part_colour(part), visible=False))

    # --------------------------------------------------------------------------------------------------- controls
    def _add_controls(self) -> dict[int, object]:
        """GUI: per-joint sliders, the state slider and buttons, the display check boxes; returns the sliders."""
        gui = self.server.gui
        sliders = {}
        with gui.add_folder("Joints"):
            for part, joint in sorted(self.joints.items()):
                unit = "deg" if joint["type"] == "revolute" else "units"
                low, high = sorted((0.0, float(joint["motion"])))
                slider = gui.add_slider(f"joint {part} ({joint['type']}, {unit})", min=low, max=high,
                                        step=max(high - low, 1e-9) / SLIDER_STEPS, initial_value=0.0)
                slider.on_update(lambda _, part=part, slider=slider: self.set_joint(part, slider.value))
                sliders[part] = slider
        with gui.add_folder("State"):
            self.state_slider = gui.add_slider("start -> end", min=0.0, max=1.0, step=1.0 / SLIDER_STEPS,
                                               initial_value=0.0)
            self.state_slider.on_update(lambda _: self.set_state(self.state_slider.value))
            gui.add_button("start state").on_click(lambda _: self.set_state(0.0))
            gui.add_button("end state").on_click(lambda _: self.set_state(1.0))
        with gui.add_folder("Display"):
            self.colour_box = gui.add_checkbox("part colours", initial_value=False)
            self.colour_box.on_update(lambda _: self.show_part_colours(self.colour_box.value))
            for kind in ("surfels", "mesh"):
                if any(node[0] == kind for node in self.nodes):
                    box = gui.add_checkbox(f"show {kind}", initial_value=True)
                    box.on_update(lambda _, kind=kind, box=box: self.show(kind, box.value))
        return sliders

    def set_joint(self, part: int, value: float) -> None:
        """Pose part `part` at joint value `value` (degrees / scene units from the start state)."""
        wxyz, position = joint_pose(self.joints[part], value)
        self.frames[part].wxyz = wxyz
        self.frames[part].position = position

    def set_state(self, fraction: float) -> None:
        """Move every joint to `fraction` of its motion (0 start state, 1 end state) through its slider."""
        self.state_slider.value = fraction  # calls back here once (an unchanged value does not)
        for part, slider in self.sliders.items():
            slider.value = float(np.clip(fraction * self.joints[part]["motion"], slider.min, slider.max))

    def show_part_colours(self, on: bool) -> None:
        """Part colours (render.py's palette) instead of the true colours."""
        self.part_colours = bool(on)
        self.colour_box.value = self.part_colours  # calls back here once (an unchanged value does not)
        self._update_visibility()

    def show(self, kind: str, on: bool) -> None:
        """Show or hide the `kind` ("surfels" or "mesh") nodes."""
        self.shown[kind] = bool(on)
        self._update_visibility()

    def _update_visibility(self) -> None:
        """Each node is visible when its kind is shown and its colouring is the chosen one."""
        for kind, colouring, handle in self.nodes:
            handle.visible = self.shown[kind] and (colouring == "parts") == self.part_colours


# ----------------------------------------------------------------------------------------------------------- run
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Browser viewer of a twin (surfels, part meshes, joint sliders).")
    parser.add_argument("--model_path", required=True, help="the stage-4 model folder (<output_root>/.../gear)")
    parser.add_argument("--iteration", default="final", help="stage-4 iteration to show, or 'final' (the highest)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8080, help="port to serve on")
    parser.add_argument("--surfels", choices=SURFEL_MODES, default="splats", help="how to draw the surfels")
    parser.add_argument("--meshes", action=argparse.BooleanOptionalAction, default=True,
                        help="show stage 5's start-state part meshes when they exist")
    parser.add_argument("--up", choices=sorted(UP_DIRECTIONS), default="+z", help="world up direction of the scene")
    return parser.parse_args(argv)


def serve(args: argparse.Namespace):
    """Load the twin, start a viser server and build the viewer on it; returns the viewer (`viewer.server`)."""
    import viser  # optional at import time: only the viewer needs it

    twin = load_twin(args.model_path, args.iteration, with_meshes=args.meshes)
    server = viser.ViserServer(host=args.host, port=args.port, verbose=False)
    server.scene.set_up_direction(args.up)
    server.initial_camera.position, server.initial_camera.look_at = initial_view(twin, UP_DIRECTIONS[args.up])
    return Viewer(server, twin, surfels=args.surfels, meshes=args.meshes)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    args = parse_args(argv)
    try:
        viewer = serve(args)
    except (ModelNotFoundError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"[view] serving {args.model_path} at http://{args.host}:{viewer.server.get_port()} (Ctrl+C stops)")
    try:
        viewer.server.sleep_forever()
    except KeyboardInterrupt:
        viewer.server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
