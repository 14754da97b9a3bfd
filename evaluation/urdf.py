"""URDF export of the reconstructed articulated object (conventions in evaluation/links.py).

The base link is the static part. Each movable part is a child link attached by one revolute or prismatic joint
whose frame sits at the axis origin, axis along the joint direction; the part mesh is in start-state world
coordinates, so the child link's visual/collision origin is the inverse offset (-axis_origin). Links carry an
`<inertial>` (centre of mass and inertia tensor, axes of the world frame) when mass properties are given.

A `<mujoco><compiler .../></mujoco>` element tells MuJoCo's URDF importer to keep the mesh paths as written (it
drops their folders by default) and to balance an inertia that rounding left just outside the triangle inequality;
other URDF readers ignore it.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Any, Mapping, Sequence

import numpy as np

from evaluation.links import BASE_LINK, check_relpath, numbers, part_links
from evaluation.mass import MassProperties
from utils.io_utils import atomic_path

# URDF requires effort and velocity on a limit; the twin has no dynamics, so these are nominal.
NOMINAL_EFFORT = 100.0
NOMINAL_VELOCITY = 1.0


def _add_geometry(link: ET.Element, mesh_relpath: str, offset: Sequence[float]) -> None:
    """Visual and collision elements of `link` showing the mesh at `mesh_relpath`, moved by `offset`."""
    for tag in ("visual", "collision"):
        element = ET.SubElement(link, tag)
        ET.SubElement(element, "origin", xyz=numbers(offset), rpy="0 0 0")
        ET.SubElement(ET.SubElement(element, "geometry"), "mesh", filename=mesh_relpath)


def _add_inertial(link: ET.Element, inertial: MassProperties, offset: Sequence[float]) -> None:
    """`<inertial>` of `link` from world-frame mass properties; the link frame is the world frame moved by `-offset`
    (the same axes)."""
    element = ET.SubElement(link, "inertial")
    element.append(ET.Comment(f" volume from the {inertial.source} "))
    ET.SubElement(element, "origin", xyz=numbers(np.asarray(inertial.center) + np.asarray(offset)), rpy="0 0 0")
    ET.SubElement(element, "mass", value=repr(inertial.mass))
    tensor = np.asarray(inertial.inertia, float)
    ET.SubElement(element, "inertia", **{f"i{'xyz'[r]}{'xyz'[c]}": repr(float(tensor[r, c]))
                                         for r, c in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))})


def write_urdf(path: str | os.PathLike, robot_name: str, static_mesh_relpath: str,
               parts: Sequence[Mapping[str, Any]], static_inertial: MassProperties | None = None) -> None:
    """Write a URDF of the static base plus one link and joint per movable part, atomically.

    `parts`: see `evaluation.links.part_links`; mesh paths are relative to the URDF file, e.g.
    `../meshes/start_part_1.obj`. `static_inertial`: the base's mass properties (world frame).
    """
    if not robot_name:
        raise ValueError("write_urdf needs a non-empty robot name")
    static_mesh_relpath = check_relpath(static_mesh_relpath, "static mesh path")
    links = part_links(parts)
    robot = ET.Element("robot", name=robot_name)
    ET.SubElement(ET.SubElement(robot, "mujoco"), "compiler", strippath="false", balanceinertia="true",
                  discardvisual="true")
    base = ET.SubElement(robot, "link", name=BASE_LINK)
    if static_inertial is not None:
        _add_inertial(base, static_inertial, (0.0, 0.0, 0.0))
    _add_geometry(base, static_mesh_relpath, (0.0, 0.0, 0.0))
    for link in links:
        element = ET.SubElement(robot, "link", name=link.name)
        if link.inertial is not None:
            _add_inertial(element, link.inertial, -link.joint.origin)
        if link.mesh is not None:
            _add_geometry(element, link.mesh, -link.joint.origin)
        joint = ET.SubElement(robot, "joint", name=link.joint_name, type=link.joint.type)
        ET.SubElement(joint, "parent", link=BASE_LINK)
        ET.SubElement(joint, "child", link=link.name)
        ET.SubElement(joint, "origin", xyz=numbers(link.joint.origin), rpy="0 0 0")
        ET.SubElement(joint, "axis", xyz=numbers(link.joint.direction))
        ET.SubElement(joint, "limit", lower=repr(link.lower), upper=repr(link.upper),
                      effort=repr(NOMINAL_EFFORT), velocity=repr(NOMINAL_VELOCITY))
    ET.indent(robot)
    with atomic_path(path) as tmp:
        ET.ElementTree(robot).write(tmp, encoding="utf-8", xml_declaration=True)
