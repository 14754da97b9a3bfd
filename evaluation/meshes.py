"""Triangle-mesh file I/O with clear errors and atomic writes."""
from __future__ import annotations

import os
from pathlib import Path

import trimesh

from utils.io_utils import atomic_path


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
