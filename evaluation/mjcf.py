"""MJCF (MuJoCo XML) export of the reconstructed articulated object (conventions in evaluation/links.py).

The static part is a body fixed to the world (no joint); each movable part is its child body, at the world origin
with the world's axes, holding one hinge (revolute) or slide (prismatic) joint placed at the axis origin along the
axis, limited to the span of both observed states. Meshes are in start-state world coordinates, so the geoms need no
offset. Contacts between the base and its parts are off (MuJoCo filters parent-child contacts by default): the
collision shapes are the meshes' convex hulls, which overlap where a part closes the body.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Any, Mapping, Sequence

import numpy as np

from evaluation.links import BASE_LINK, check_relpath, numbers, part_links
from evaluation.mass import MassProperties
from utils.io_utils import atomic_path

MJCF_JOINT_TYPES = {"revolute": "hinge", "prismatic": "slide"}


def _add_inertial(body: ET.Element, inertial: MassProperties) -> None:
    """`<inertial>` of `body` (whose frame is the world frame) from world-frame mass properties."""
    tensor = np.asarray(inertial.inertia, float)
    full = [tensor[0, 0], tensor[1, 1], tensor[2, 2], tensor[0, 1], tensor[0, 2], tensor[1, 2]]
    body.append(ET.Comment(f" volume from the {inertial.source} "))
    ET.SubElement(body, "inertial", pos=numbers(inertial.center), mass=repr(inertial.mass), fullinertia=numbers(full))


def _add_mesh(asset: ET.Element, body: ET.Element, name: str, mesh_relpath: str) -> None:
    """A mesh asset `name` read from `mesh_relpath` and a geom of `body` showing it."""
    ET.SubElement(asset, "mesh", name=name, file=mesh_relpath)
    ET.SubElement(body, "geom", name=name, type="mesh", mesh=name)


def write_mjcf(path: str | os.PathLike, model_name: str, static_mesh_relpath: str,
               parts: Sequence[Mapping[str, Any]], static_inertial: MassProperties | None = None) -> None:
    """Write an MJCF model of the static base plus one body and joint per movable part, atomically.

    Arguments as `evaluation.urdf.write_urdf`; mesh paths are relative to the MJCF file. Bodies without mass
    properties get MuJoCo's default, the inertia of their geoms.
    """
    if not model_name:
        raise ValueError("write_mjcf needs a non-empty model name")
    static_mesh_relpath = check_relpath(static_mesh_relpath, "static mesh path")
    links = part_links(parts)
    root = ET.Element("mujoco", model=model_name)
    ET.SubElement(root, "compiler", angle="radian", balanceinertia="true")
    asset = ET.SubElement(root, "asset")
    base = ET.SubElement(ET.SubElement(root, "worldbody"), "body", name=BASE_LINK)
    if static_inertial is not None:
        _add_inertial(base, static_inertial)
    _add_mesh(asset, base, "static", static_mesh_relpath)
    for link in links:
        body = ET.SubElement(base, "body", name=link.name)
        if link.inertial is not None:
            _add_inertial(body, link.inertial)
        ET.SubElement(body, "joint", name=link.joint_name, type=MJCF_JOINT_TYPES[link.joint.type],
                      pos=numbers(link.joint.origin), axis=numbers(link.joint.direction), limited="true",
                      range=numbers((link.lower, link.upper)))
        if link.mesh is not None:
            _add_mesh(asset, body, link.name, link.mesh)
    ET.indent(root)
    with atomic_path(path) as tmp:
        ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
