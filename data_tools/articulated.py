"""The articulated-object description shared by the generator: parts (meshes + textures) and their joints.

Part meshes are stored at joint value 0 (the "closed" configuration). A joint value `q` poses its part with
`Joint.pose(q)`: revolute `x -> R(d, q)(x - o) + o` (q in degrees), prismatic `x -> x + q d` (q in scene units).
Each joint carries its value in the start and the end state, so the start -> end motion is the dataset format's joint
with `l = start`, `r = end`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import trimesh

from data_tools.lighting import FIXED_LIGHTING, Lighting
from data_tools.textures import Texture

STATE_NAMES = ("start", "end")
JOINT_KINDS = ("revolute", "prismatic")


@dataclass(frozen=True)
class Joint:
    """One joint: axis origin `o` (3,), unit direction `d` (3,), and its value in the start and end state."""

    kind: str
    origin: np.ndarray
    direction: np.ndarray
    start: float
    end: float

    def __post_init__(self) -> None:
        if self.kind not in JOINT_KINDS:
            raise ValueError(f"joint kind must be one of {JOINT_KINDS}, got {self.kind!r}")
        norm = float(np.linalg.norm(self.direction))
        if not np.isfinite(norm) or norm < 1e-9:
            raise ValueError(f"joint direction must be a non-zero vector, got {self.direction}")
        object.__setattr__(self, "origin", np.asarray(self.origin, dtype=np.float64))
        # `+ 0.0` turns -0.0 into 0.0 so the JSON reads cleanly.
        object.__setattr__(self, "direction", np.asarray(self.direction, dtype=np.float64) / norm + 0.0)

    def value(self, state: int) -> float:
        """Joint value in state 0 (start) or 1 (end)."""
        return (self.start, self.end)[state]

    def pose(self, value: float) -> np.ndarray:
        """(4, 4) transform that moves the part from joint value 0 to `value`."""
        if self.kind == "revolute":
            return trimesh.transformations.rotation_matrix(np.radians(value), self.direction, self.origin)
        return trimesh.transformations.translation_matrix(value * self.direction)

    def to_trans_info(self) -> dict:
        """The `trans_info` entry (gt/trans.json format) of this joint (start -> end)."""
        revolute = self.kind == "revolute"
        return {
            "axis": {"o": self.origin.tolist(), "d": self.direction.tolist()},
            "type": "rotate" if revolute else "translate",
            "rotate": {"l": self.start if revolute else 0.0, "r": self.end if revolute else 0.0},
            "translate": {"l": 0.0 if revolute else self.start, "r": 0.0 if revolute else self.end},
        }


@dataclass(frozen=True)
class Part:
    """A rigid part: its closed-configuration mesh, its texture and its joint (None for the static body).

    `pieces` are the vertex counts of the closed convex solids whose concatenation (in order) the mesh is, so that
    collision checks can treat each solid exactly; empty when the mesh is not built that way.
    """

    name: str
    mesh: trimesh.Trimesh
    texture: Texture
    joint: Joint | None = None
    pieces: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.pieces and sum(self.pieces) != len(self.mesh.vertices):
            raise ValueError(f"part {self.name}: pieces hold {sum(self.pieces)} vertices, the mesh "
                             f"{len(self.mesh.vertices)}")


@dataclass(frozen=True)
class ObjectSpec:
    """A procedural articulated object. `parts[0]` is the static body; `parts[i + 1]` moves with joint `i`."""

    category: str
    seed: int
    parts: list[Part]
    lighting: Lighting = FIXED_LIGHTING

    def __post_init__(self) -> None:
        if not self.parts or self.parts[0].joint is not None:
            raise ValueError("parts[0] must be the static body (joint None)")
        if any(part.joint is None for part in self.parts[1:]):
            raise ValueError("every part after the static body needs a joint")

    @property
    def joints(self) -> list[Joint]:
        """Joints in part order: joint i moves part i + 1 (part id i + 2 in the part images)."""
        return [part.joint for part in self.parts[1:]]

    def part_poses(self, state: int) -> np.ndarray:
        """(P, 4, 4) transforms from each part's closed configuration to its pose in `state`."""
        return np.stack([np.eye(4) if p.joint is None else p.joint.pose(p.joint.value(state)) for p in self.parts])

    def posed_vertices(self, state: int) -> list[np.ndarray]:
        """Per part, the (V, 3) float32 vertices posed in `state`: the exact geometry that is rendered and saved."""
        return [
            trimesh.transform_points(part.mesh.vertices, pose).astype(np.float32)
            for part, pose in zip(self.parts, self.part_poses(state))
        ]

    def trans_info(self) -> list[dict]:
        """The `trans_info` list of `gt/trans.json`, one entry per movable part in part order."""
        return [joint.to_trans_info() for joint in self.joints]


def similarity(spec: ObjectSpec, rotation: np.ndarray, scale: float, translation: np.ndarray) -> ObjectSpec:
    """The object moved by `x -> scale * rotation @ x + translation` (rotation (3, 3) proper, scale > 0).

    Every joint stays valid: origins move with the geometry, directions turn with it, prismatic values scale.
    """
    rotation = np.asarray(rotation, dtype=np.float64)
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-9) or np.linalg.det(rotation) < 0:
        raise ValueError("similarity needs a proper rotation matrix")
    transform = np.eye(4)
    transform[:3, :3], transform[:3, 3] = scale * rotation, translation
    parts = []
    for part in spec.parts:
        mesh = part.mesh.copy()
        mesh.apply_transform(transform)
        joint = part.joint
        if joint is not None:
            values = (joint.start, joint.end) if joint.kind == "revolute" else (joint.start * scale, joint.end * scale)
            joint = dataclasses.replace(joint, origin=trimesh.transform_points(joint.origin[None], transform)[0],
                                        direction=rotation @ joint.direction, start=values[0], end=values[1])
        parts.append(dataclasses.replace(part, mesh=mesh, joint=joint))
    return dataclasses.replace(spec, parts=parts)


def normalise(spec: ObjectSpec, radius: float) -> ObjectSpec:
    """Centre the object on the box around both states and scale it so both states just fit a sphere of `radius`."""
    points = np.concatenate([v for state in (0, 1) for v in spec.posed_vertices(state)]).astype(np.float64)
    centre = 0.5 * (points.min(axis=0) + points.max(axis=0))
    scale = radius / float(np.linalg.norm(points - centre, axis=1).max())
    return similarity(spec, np.eye(3), scale, -scale * centre)
