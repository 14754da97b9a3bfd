"""Triangle meshes: file I/O with clear errors and atomic writes, and decimation to a face budget.

Decimation is quadric edge collapse by `fast-simplification` (a wrapper of Fast-Quadric-Mesh-Simplification, the
decimator `trimesh.Trimesh.simplify_quadric_decimation` uses too); vertex colours are carried over from the nearest
original vertex.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from utils.io_utils import atomic_path
from utils.neighbours import query

DECIMATION_AGGRESSION = 7.0  # fast-simplification's default trade-off between speed (high) and quality (low)


def load_mesh(path: str | os.PathLike, allow_empty: bool = False) -> trimesh.Trimesh:
    """Load a triangle mesh (PLY/OBJ/...) without reordering its vertices.

    Raises FileNotFoundError for a missing file and ValueError for a file that is unreadable, not a triangle
    mesh, or (unless `allow_empty`) has no faces.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mesh file not found: {path}")
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as err:  # trimesh raises many types for corrupt files
        raise ValueError(f"mesh file {path} could not be read: {err}") from err
    if not isinstance(mesh, trimesh.Trimesh):
        raise ValueError(f"mesh file {path} holds a {type(mesh).__name__}, not a triangle mesh")
    if len(mesh.faces) == 0 and not allow_empty:
        raise ValueError(f"mesh file {path} has no faces")
    return mesh


def save_mesh(path: str | os.PathLike, mesh: trimesh.Trimesh) -> None:
    """Write `mesh` (format from the suffix, e.g. `.ply`, with vertex colours when present) atomically."""
    with atomic_path(path) as tmp:
        mesh.export(tmp)


def save_obj(path: str | os.PathLike, mesh: trimesh.Trimesh) -> None:
    """Write `mesh` as a plain OBJ (vertices and faces only, no material or colour extensions, which simulators'
    OBJ readers handle inconsistently), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(trimesh.exchange.obj.export_obj(mesh, include_normals=False, include_color=False,
                                                       include_texture=False, write_texture=False))


def decimator_available() -> bool:
    """Whether the decimator package (fast-simplification) is installed."""
    return importlib.util.find_spec("fast_simplification") is not None


def decimate(mesh: trimesh.Trimesh, max_faces: int) -> trimesh.Trimesh:
    """`mesh` decimated to about `max_faces` faces by quadric edge collapse (it can stop a few percent above, and
    further above where its topology blocks collapses); a mesh within the budget is returned as it is. Vertex
    colours, if any, are those of the nearest original vertex. Needs `fast-simplification`."""
    if max_faces <= 0:
        raise ValueError(f"max_faces must be positive, got {max_faces}")
    if len(mesh.faces) <= max_faces:
        return mesh
    from fast_simplification import simplify  # optional at import time: only exports need it

    # one pass: a second pass over an already decimated mesh was seen to collapse a thin slab (Chamfer x40)
    vertices, faces = simplify(np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64),
                               target_count=int(max_faces), agg=DECIMATION_AGGRESSION)
    simplified = trimesh.Trimesh(vertices, faces, process=False)
    simplified.remove_unreferenced_vertices()
    colours = getattr(mesh.visual, "vertex_colors", None)
    if mesh.visual.kind == "vertex" and colours is not None and len(simplified.vertices):
        nearest = query(cKDTree(mesh.vertices), simplified.vertices)[1]
        simplified.visual.vertex_colors = np.asarray(colours)[nearest]
    return simplified
