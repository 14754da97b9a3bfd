"""Mass properties of a part mesh for the simulator exports: mass, centre of mass and inertia tensor from the
enclosed volume at an assumed uniform density.

Fused meshes are often open (regions no camera saw) or self-touching, and then have no well-defined volume. The
volume is therefore taken from the first of these that is valid:
- "mesh": the mesh itself, when it is watertight with consistent winding and a positive volume;
- "convex hull": its convex hull (over-estimates the volume of concave parts such as an open shelf);
- "box": its oriented bounding box with every side at least MIN_THICKNESS x the largest side, for a practically
  flat or linear part whose hull encloses no volume.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh

MIN_THICKNESS = 0.01  # thinnest side of the box fallback, as a fraction of the part's largest side


@dataclass(frozen=True)
class MassProperties:
    """Mass (kg when the density is in kg per cubic scene unit), centre of mass (3,) and inertia tensor (3, 3) about
    the centre of mass, both in the mesh's frame; `source` says which volume they come from (module docstring)."""

    mass: float
    center: np.ndarray
    inertia: np.ndarray
    source: str

    def to_json(self) -> dict:
        return {"mass": self.mass, "center": self.center.tolist(), "inertia": self.inertia.tolist(),
                "source": self.source}


def _from_volume(volume: trimesh.Trimesh, density: float, source: str) -> MassProperties:
    """Mass properties of a closed, outward-oriented mesh at `density`."""
    volume = volume.copy()
    volume.density = density
    return MassProperties(float(volume.mass), np.asarray(volume.center_mass, float),
                          np.asarray(volume.moment_inertia, float), source)


def box_mass_properties(center: np.ndarray, extents: np.ndarray, density: float,
                        rotation: np.ndarray | None = None) -> MassProperties:
    """Mass properties of a solid box of `extents` (3,) centred at `center`, its axes the columns of `rotation`."""
    rotation = np.eye(3) if rotation is None else np.asarray(rotation, float)
    x, y, z = np.asarray(extents, float)
    mass = density * x * y * z
    local = mass / 12.0 * np.diag([y * y + z * z, x * x + z * z, x * x + y * y])
    return MassProperties(float(mass), np.asarray(center, float), rotation @ local @ rotation.T, "box")


def _box_fallback(mesh: trimesh.Trimesh, density: float) -> MassProperties:
    """The oriented bounding box of the vertices, each side at least MIN_THICKNESS x the largest one."""
    transform, extents = trimesh.bounds.oriented_bounds(mesh.vertices)
    box_to_world = np.linalg.inv(transform)  # oriented_bounds maps the points into the box frame
    extents = np.maximum(extents, MIN_THICKNESS * float(np.max(extents)))
    return box_mass_properties(box_to_world[:3, 3], extents, density, box_to_world[:3, :3])


def mass_properties(mesh: trimesh.Trimesh, density: float) -> MassProperties:
    """Mass properties of the solid a part mesh bounds, at uniform `density` (see the module docstring)."""
    if not density > 0:
        raise ValueError(f"density must be positive, got {density}")
    if len(mesh.faces) == 0:
        raise ValueError("mass properties need a mesh with faces")
    largest = float(np.max(mesh.extents))
    if largest <= 0:
        raise ValueError("mass properties need a mesh of non-zero size")
    tiny = (MIN_THICKNESS * largest) ** 3  # below this the volume is that of a flat sheet or a line
    if mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > tiny:
        return _from_volume(mesh, density, "mesh")
    with np.errstate(invalid="ignore", divide="ignore"):  # trimesh divides by a flat hull's volume 0
        try:
            hull = mesh.convex_hull
        except Exception:  # qhull fails on coplanar or collinear points
            hull = None
        if hull is not None and len(hull.faces) > 0 and hull.volume > tiny:
            return _from_volume(hull, density, "convex hull")
        return _box_fallback(mesh, density)
