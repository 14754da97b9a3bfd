"""URDF export of the reconstructed articulated object.

The base link is the static part. Each movable part is a child link attached by one revolute or prismatic joint
whose frame sits at the axis origin, axis along the joint direction. The part mesh is stored in START-state world
coordinates, so the child link's visual/collision origin is the inverse offset (-axis_origin): at joint value 0
every part sits where it is in the start state, and at joint value = motion (radians / metres) where it is in
the end state. Limits span both states: [min(0, motion), max(0, motion)].
"""
from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from typing import Any, Iterable, Mapping, Sequence

from evaluation.metrics import as_joint
from utils.io_utils import atomic_path

BASE_LINK = "base"
# URDF requires effort and velocity on a limit; the twin has no dynamics, so these are nominal.
NOMINAL_EFFORT = 100.0
NOMINAL_VELOCITY = 1.0


def _numbers(values: Iterable[float]) -> str:
    """Space-separated numbers written with full float precision."""
    return " ".join(repr(float(v)) for v in values)


def _add_geometry(link: ET.Element, mesh_relpath: str, offset: Sequence[float]) -> None:
    """Visual and collision elements of `link` showing the mesh at `mesh_relpath`, moved by `offset`."""
    for tag in ("visual", "collision"):
        element = ET.SubElement(link, tag)
        ET.SubElement(element, "origin", xyz=_numbers(offset), rpy="0 0 0")
        ET.SubElement(ET.SubElement(element, "geometry"), "mesh", filename=mesh_relpath)


def _joint_limits(joint_type: str, motion: float, limits: Sequence[float] | None) -> tuple[float, float]:
    """(lower, upper) in URDF units; by default spanning the start (0) and end (motion) states."""
    if limits is not None:
        lower, upper = (float(v) for v in limits)
    else:
        value = math.radians(motion) if joint_type == "revolute" else motion
        lower, upper = min(0.0, value), max(0.0, value)
    if not lower <= upper:
        raise ValueError(f"joint limits must have lower <= upper, got {lower} > {upper}")
    return lower, upper


def _check_relpath(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty relative path string, got {value!r}")
    return value


def write_urdf(path: str | os.PathLike, robot_name: str, static_mesh_relpath: str,
               parts: Sequence[Mapping[str, Any]]) -> None:
    """Write a URDF of the static base plus one link and joint per movable part, atomically.

    parts: dicts with `mesh_relpath` (mesh path as written in the URDF, relative to the URDF file, e.g.
    `../meshes/start_part_1.ply`), `joint` (joint dict: type, axis_origin, axis_direction, motion in degrees
    or metres, from start to end state; its optional `part` number names the link `part_<k>`, default the
    1-based position) and optional `limits` (lower, upper) in radians / metres overriding the default span.
    """
    if not robot_name:
        raise ValueError("write_urdf needs a non-empty robot name")
    robot = ET.Element("robot", name=robot_name)
    _add_geometry(ET.SubElement(robot, "link", name=BASE_LINK),
                  _check_relpath(static_mesh_relpath, "static mesh path"), (0.0, 0.0, 0.0))
    used = set()
    for index, part in enumerate(parts, start=1):
        raw_joint = part.get("joint")
        if not isinstance(raw_joint, Mapping):
            raise ValueError(f"URDF part {index} needs a 'joint' dict, got {raw_joint!r}")
        joint = as_joint(raw_joint, f"URDF part {index} joint")
        number = int(raw_joint.get("part", index))
        if number in used:
            raise ValueError(f"URDF part number {number} appears twice")
        used.add(number)
        link = ET.SubElement(robot, "link", name=f"part_{number}")
        _add_geometry(link, _check_relpath(part.get("mesh_relpath"), f"URDF part {index} mesh_relpath"),
                      -joint.origin)
        element = ET.SubElement(robot, "joint", name=f"joint_{number}", type=joint.type)
        ET.SubElement(element, "parent", link=BASE_LINK)
        ET.SubElement(element, "child", link=f"part_{number}")
        ET.SubElement(element, "origin", xyz=_numbers(joint.origin), rpy="0 0 0")
        ET.SubElement(element, "axis", xyz=_numbers(joint.direction))
        lower, upper = _joint_limits(joint.type, joint.motion, part.get("limits"))
        ET.SubElement(element, "limit", lower=repr(lower), upper=repr(upper),
                      effort=repr(NOMINAL_EFFORT), velocity=repr(NOMINAL_VELOCITY))
    ET.indent(robot)
    with atomic_path(path) as tmp:
        ET.ElementTree(robot).write(tmp, encoding="utf-8", xml_declaration=True)
