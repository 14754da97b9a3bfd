"""The articulated object as the simulator exports describe it: a static base link and one link per movable part,
each attached to the base by one revolute or prismatic joint (evaluation/urdf.py, evaluation/mjcf.py).

Meshes and mass properties are in START-state world coordinates: at joint value 0 every part sits where it is in the
start state, at joint value = the joint's motion (radians / scene units) where it is in the end state. Joint limits
span both observed states, [min(0, motion), max(0, motion)], unless given.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from evaluation.mass import MassProperties
from evaluation.metrics import Joint, as_joint

BASE_LINK = "base"


@dataclass(frozen=True)
class PartLink:
    """A movable part's link: its number k (link `part_<k>`, joint `joint_<k>`), mesh path as written in the export
    file (relative to it; None = no geometry), joint, limits (radians / scene units) and mass properties."""

    number: int
    mesh: str | None
    joint: Joint
    lower: float
    upper: float
    inertial: MassProperties | None

    @property
    def name(self) -> str:
        return f"part_{self.number}"

    @property
    def joint_name(self) -> str:
        return f"joint_{self.number}"


def numbers(values: Iterable[float]) -> str:
    """Space-separated numbers written with full float precision."""
    return " ".join(repr(float(v)) for v in values)


def joint_limits(joint: Joint, limits: Sequence[float] | None) -> tuple[float, float]:
    """(lower, upper) in radians / scene units; by default spanning the start (0) and end (motion) states."""
    if limits is not None:
        lower, upper = (float(v) for v in limits)
    else:
        value = math.radians(joint.motion) if joint.type == "revolute" else joint.motion
        lower, upper = min(0.0, value), max(0.0, value)
    if not lower <= upper:
        raise ValueError(f"joint limits must have lower <= upper, got {lower} > {upper}")
    return lower, upper


def check_relpath(value: Any, what: str) -> str:
    """A non-empty relative path string, or a ValueError naming `what`."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty relative path string, got {value!r}")
    return value


def part_links(parts: Sequence[Mapping[str, Any]]) -> list[PartLink]:
    """Validated links of `parts`: dicts with `mesh_relpath` (None for a part without geometry), `joint` (joint dict:
    type, axis_origin, axis_direction, motion in degrees or scene units from the start to the end state; its optional
    `part` number names the link, default the 1-based position), optional `limits` (lower, upper) overriding the
    default span and optional `inertial` (MassProperties in world coordinates)."""
    links, used = [], set()
    for index, part in enumerate(parts, start=1):
        raw_joint = part.get("joint")
        if not isinstance(raw_joint, Mapping):
            raise ValueError(f"part {index} needs a 'joint' dict, got {raw_joint!r}")
        joint = as_joint(raw_joint, f"part {index} joint")
        number = int(raw_joint.get("part", index))
        if number in used:
            raise ValueError(f"part number {number} appears twice")
        used.add(number)
        mesh = part.get("mesh_relpath")
        if mesh is not None or "mesh_relpath" not in part:
            mesh = check_relpath(mesh, f"part {index} mesh_relpath")
        links.append(PartLink(number, mesh, joint, *joint_limits(joint, part.get("limits")), part.get("inertial")))
    return links
