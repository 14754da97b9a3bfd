"""Simulator-ready exports of stage 5: decimated meshes, URDF, MJCF and a summary, all under `<model_path>/eval/`.

    meshes/<state>_<part>.ply   every fused mesh, decimated to about `max_faces` faces, with vertex colours
    meshes/start_<part>.obj     the start-state static and movable part meshes (plain OBJ) the simulators load
    urdf/<scene>.urdf           static base + one link and joint per movable part, `<inertial>` per link
                                (evaluation/urdf.py; PyBullet, MuJoCo, Gazebo, SAPIEN, Isaac)
    mjcf/<scene>.xml            the same as MuJoCo XML (evaluation/mjcf.py)
    export.json                 {"max_faces", "density", "decimated", "meshes": {name: {"fused_faces", "faces"}},
                                 "links": {link: MassProperties.to_json() + "mesh"}}

Mass properties come from each mesh's volume at the assumed uniform `density` (evaluation/mass.py says which
volume). A movable part without a mesh gets no geometry and the mass properties of a small box at its axis origin,
so that simulators, which need a positive mass on every moving body, still load it.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import trimesh

from evaluation.mass import MIN_THICKNESS, MassProperties, box_mass_properties, mass_properties
from evaluation.meshes import decimate, decimator_available, save_mesh, save_obj
from evaluation.mjcf import write_mjcf
from evaluation.urdf import write_urdf
from utils.io_utils import write_json

log = logging.getLogger("export")

MESH_DIR, URDF_DIR, MJCF_DIR, SUMMARY_NAME = "meshes", "urdf", "mjcf", "export.json"


def _number(kind: type, minimum: float | None) -> Callable[[str], float]:
    """argparse type: a `kind` number >= `minimum` (None: > 0)."""
    def parse(text: str) -> float:
        value = kind(text)
        if (minimum is None and not value > 0) or (minimum is not None and value < minimum):
            raise argparse.ArgumentTypeError(f"must be {'positive' if minimum is None else f'>= {minimum}'}, "
                                             f"got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its 'invalid int value' error
    return parse


@dataclass(frozen=True)
class ExportConfig:
    """Settings of the simulator exports."""

    max_faces: int = 50_000  # face budget per mesh; 0 keeps the fused meshes as they are
    density: float = 500.0  # kg per cubic scene unit (kg/m^3 for scenes in metres): about that of wooden furniture

    def __post_init__(self) -> None:
        if self.max_faces < 0:
            raise ValueError(f"max_faces must not be negative, got {self.max_faces}")
        if not self.density > 0:
            raise ValueError(f"density must be positive, got {self.density}")

    @staticmethod
    def add_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        """Add --max_faces and --density, with this class's defaults (bad values are parser errors)."""
        parser.add_argument("--max_faces", type=_number(int, 0), default=ExportConfig.max_faces,
                            help="decimate every exported mesh to about this many faces (0 = keep the fused mesh)")
        parser.add_argument("--density", type=_number(float, None), default=ExportConfig.density,
                            help="assumed uniform density of the parts for the exported masses and inertias, in kg "
                                 "per cubic scene unit")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ExportConfig:
        return cls(max_faces=args.max_faces, density=args.density)


def mesh_relpath(name: str, suffix: str = ".obj") -> str:
    """Path of mesh `name` as written in the URDF and MJCF, relative to their folders."""
    return f"../{MESH_DIR}/{name}{suffix}"


def reduce_meshes(meshes: dict[str, trimesh.Trimesh], max_faces: int) -> tuple[dict[str, trimesh.Trimesh], bool]:
    """Every mesh decimated to `max_faces` (0 = unchanged); returns them and whether decimation ran. Without the
    decimator package the meshes stay as fused, with a warning (stage 5 still completes)."""
    if max_faces == 0:
        return dict(meshes), False
    if not decimator_available():
        log.warning("fast-simplification is not installed: meshes are exported undecimated "
                    "(pip install fast-simplification, or pass --max_faces 0 to silence this)")
        return dict(meshes), False
    return {name: decimate(mesh, max_faces) if len(mesh.faces) else mesh for name, mesh in meshes.items()}, True


def part_mass(mesh: trimesh.Trimesh | None, joint: dict, scale: float, density: float) -> MassProperties:
    """Mass properties of a movable part's mesh; without one, a cube of side MIN_THICKNESS x `scale` at the axis
    origin."""
    if mesh is not None and len(mesh.faces):
        return mass_properties(mesh, density)
    side = MIN_THICKNESS * scale
    return box_mass_properties(np.asarray(joint["axis_origin"], float), np.full(3, side), density)


def export_twin(out: str | Path, scene: str, joints: list[dict], meshes: dict[str, trimesh.Trimesh],
                config: ExportConfig = ExportConfig()) -> dict[str, trimesh.Trimesh]:
    """Write the exports of the module docstring for the start -> end `joints` (with their `part`) and the fused
    `meshes` (`<state>_<whole|static|part_k>`); returns the meshes as written (decimated). Without a start-state
    static mesh only the PLY meshes are written."""
    out = Path(out)
    written, decimated = reduce_meshes(meshes, config.max_faces)
    for name, mesh in written.items():
        save_mesh(out / MESH_DIR / f"{name}.ply", mesh)
    static = written.get("start_static")
    if static is None or len(static.faces) == 0:
        log.warning("%s: the start-state static mesh is empty: no base link, so no URDF or MJCF", scene)
        return written
    scale = float(np.max(static.extents))
    static_mass = mass_properties(static, config.density)
    save_obj(out / MESH_DIR / "start_static.obj", static)
    parts, links = [], {"base": {**static_mass.to_json(), "mesh": "start_static.obj"}}
    for joint in joints:
        name = f"part_{joint['part']}"
        mesh = written.get(f"start_{name}")
        has_mesh = mesh is not None and len(mesh.faces) > 0
        if has_mesh:
            save_obj(out / MESH_DIR / f"start_{name}.obj", mesh)
        else:
            log.warning("%s: part %s has no start-state mesh; its link has no geometry", scene, name)
        mass = part_mass(mesh, joint, scale, config.density)
        parts.append({"mesh_relpath": mesh_relpath(f"start_{name}") if has_mesh else None, "joint": joint,
                      "inertial": mass})
        links[name] = {**mass.to_json(), "mesh": f"start_{name}.obj" if has_mesh else None}
    write_urdf(out / URDF_DIR / f"{scene}.urdf", scene, mesh_relpath("start_static"), parts, static_mass)
    write_mjcf(out / MJCF_DIR / f"{scene}.xml", scene, mesh_relpath("start_static"), parts, static_mass)
    write_json(out / SUMMARY_NAME, {
        "max_faces": config.max_faces, "density": config.density, "decimated": decimated,
        "meshes": {name: {"fused_faces": len(meshes[name].faces), "faces": len(mesh.faces)}
                   for name, mesh in written.items()},
        "links": links})
    log.info("exports: %s", ", ".join(f"{name} {len(mesh.faces)} faces" for name, mesh in written.items()))
    return written
