"""Lighting of a synthetic object: one directional light from the upper hemisphere plus ambient light.

Each object draws its own light (direction, ambient/diffuse balance) so that shading differs between objects; both
joint states of one object share it, as they would in one capture. `FIXED_LIGHTING` is one light for every object.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LIGHTINGS = ("random", "fixed")
DEFAULT_LIGHTING = "random"
ELEVATION_RANGE_DEG = (20.0, 70.0)  # of the light above the horizon
AMBIENT_RANGE = (0.3, 0.5)  # share of ambient light; the diffuse light has the rest


@dataclass(frozen=True)
class Lighting:
    """Unit direction towards a directional light in world space (stored as a tuple, so lightings compare with ==)
    and the ambient and diffuse strengths."""

    direction: tuple[float, float, float]
    ambient: float
    diffuse: float

    def __post_init__(self) -> None:
        norm = float(np.linalg.norm(np.asarray(self.direction, dtype=np.float64)))
        if not np.isfinite(norm) or norm < 1e-9:
            raise ValueError(f"light direction must be a non-zero vector, got {self.direction}")
        if self.ambient < 0.0 or self.diffuse < 0.0 or self.ambient + self.diffuse > 1.0 + 1e-9:
            raise ValueError(f"ambient {self.ambient} and diffuse {self.diffuse} must be >= 0 with a sum <= 1")
        object.__setattr__(self, "direction", tuple(float(v) / norm for v in self.direction))


FIXED_LIGHTING = Lighting((0.35, -0.55, 0.76), ambient=0.35, diffuse=0.65)


def random_lighting(rng: np.random.Generator) -> Lighting:
    """A light from a random azimuth and an elevation in ELEVATION_RANGE_DEG, ambient share in AMBIENT_RANGE."""
    azimuth = rng.uniform(0.0, 2.0 * np.pi)
    elevation = np.radians(rng.uniform(*ELEVATION_RANGE_DEG))
    direction = (np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation))
    ambient = float(rng.uniform(*AMBIENT_RANGE))
    return Lighting(direction, ambient=ambient, diffuse=1.0 - ambient)


def make_lighting(lighting: str, rng: np.random.Generator) -> Lighting:
    """The object's light for the option `lighting` ("random" or "fixed")."""
    if lighting not in LIGHTINGS:
        raise ValueError(f"lighting must be one of {LIGHTINGS}, got {lighting!r}")
    return random_lighting(rng) if lighting == "random" else FIXED_LIGHTING
