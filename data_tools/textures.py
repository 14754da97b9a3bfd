"""Procedural solid textures: an albedo defined on 3D points of a part's own frame, so it moves with the part.

A texture blends two colours of one hue by a pattern value in [0, 1]: smooth noise (a sum of random 3D sinusoids),
noise-warped stripes, or a checker softened by noise. Photometric optimisation needs such texture to see motion.
Patterns are evaluated in float32, whose vectorised sine is several times faster.

Two ways to colour an object's parts: `random_material` + `material_variant` give every part the body's material
(one wood, one paint) with a small per-part change of brightness and hue and its own realisation of the pattern, as
in real furniture; `random_texture` with hues spread around the colour wheel makes every part a different colour.
"""
from __future__ import annotations

import colorsys
import dataclasses
from dataclasses import dataclass

import numpy as np

PATTERNS = ("noise", "stripes", "checker")
NOISE_WAVES = 8

# Material families of `random_material`: hue, saturation and brightness ranges of the light colour, the dark
# colour's brightness relative to it, and the patterns the family uses (wood has a grain, paint a mottle).
MATERIALS = {
    "wood": {"hue": (0.04, 0.12), "saturation": (0.3, 0.65), "brightness": (0.65, 0.95), "dark": (0.35, 0.5),
             "patterns": ("stripes",)},
    "paint": {"hue": (0.0, 1.0), "saturation": (0.05, 0.55), "brightness": (0.65, 0.95), "dark": (0.35, 0.5),
              "patterns": ("noise",)},
    "laminate": {"hue": (0.0, 1.0), "saturation": (0.1, 0.5), "brightness": (0.65, 0.95), "dark": (0.35, 0.5),
                 "patterns": ("noise", "stripes", "checker")},
}
VARIANT_BRIGHTNESS = 0.06  # a part's colours are the body's scaled by 1 +- this
VARIANT_HUE = 0.012  # ... and turned by up to this much on the colour wheel


@dataclass(frozen=True)
class Texture:
    """Two colours (2, 3) in [0, 1], a pattern name, float32 noise waves (M, 3) with phases (M,), stripe axis (3,)
    and the stripe/checker period."""

    colors: np.ndarray
    pattern: str
    waves: np.ndarray
    phases: np.ndarray
    axis: np.ndarray
    period: float

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ValueError(f"texture pattern must be one of {PATTERNS}, got {self.pattern!r}")

    def noise(self, points: np.ndarray) -> np.ndarray:
        """Smooth noise in (-1, 1) at points (N, 3)."""
        # (M, N) layout: `waves @ points.T` is a BLAS product, several times faster than `points @ waves.T` here.
        waves = np.sin(self.waves @ points.T + self.phases[:, None]).sum(axis=0)
        return np.tanh(1.5 * waves / np.sqrt(len(self.phases)))

    def pattern_value(self, points: np.ndarray) -> np.ndarray:
        """Pattern value in [0, 1] at points (N, 3)."""
        noise = self.noise(points)
        if self.pattern == "noise":
            return 0.5 + 0.5 * noise
        if self.pattern == "stripes":
            phase = 2.0 * np.pi * (self.axis @ points.T) / self.period + 1.5 * noise
            return 0.5 + 0.5 * np.tanh(3.0 * np.sin(phase))
        parity = np.floor(points / self.period).sum(axis=1) % 2.0
        return 0.7 * parity + 0.3 * (0.5 + 0.5 * noise)

    def albedo(self, points: np.ndarray) -> np.ndarray:
        """RGB albedo (N, 3) in [0, 1] at points (N, 3) of the part's frame."""
        value = self.pattern_value(np.asarray(points, dtype=np.float32))
        return self.colors[0] + value[:, None] * (self.colors[1] - self.colors[0])


def _noise_fields(rng: np.random.Generator) -> dict:
    """Random noise waves, phases, stripe axis and period of a texture (objects of radius ~1)."""
    directions = rng.normal(size=(NOISE_WAVES, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    wavelengths = rng.uniform(0.08, 0.4, size=(NOISE_WAVES, 1))
    axis = rng.normal(size=3)
    return {
        "waves": (2.0 * np.pi * directions / wavelengths).astype(np.float32),
        "phases": rng.uniform(0.0, 2.0 * np.pi, size=NOISE_WAVES).astype(np.float32),
        "axis": (axis / np.linalg.norm(axis)).astype(np.float32),
        "period": float(rng.uniform(0.07, 0.15)),
    }


def random_texture(rng: np.random.Generator, hue: float) -> Texture:
    """A texture of the given hue in [0, 1) with a random pattern and random scales (for objects of radius ~1)."""
    saturation, brightness = rng.uniform(0.45, 0.8), rng.uniform(0.7, 0.95)
    light = colorsys.hsv_to_rgb(hue % 1.0, saturation, brightness)
    dark = colorsys.hsv_to_rgb((hue + rng.uniform(-0.04, 0.04)) % 1.0, min(1.0, saturation * 1.2), brightness * 0.45)
    return Texture(colors=np.array([light, dark]), pattern=str(rng.choice(PATTERNS)), **_noise_fields(rng))


def random_material(rng: np.random.Generator) -> Texture:
    """The texture of an object's body: a random family of MATERIALS, its colours and pattern."""
    family = MATERIALS[str(rng.choice(list(MATERIALS)))]
    hue = rng.uniform(*family["hue"])
    saturation, brightness = rng.uniform(*family["saturation"]), rng.uniform(*family["brightness"])
    light = colorsys.hsv_to_rgb(hue % 1.0, saturation, brightness)
    dark = colorsys.hsv_to_rgb((hue + rng.uniform(-0.03, 0.03)) % 1.0, min(1.0, saturation * 1.2),
                               brightness * rng.uniform(*family["dark"]))
    return Texture(colors=np.array([light, dark]), pattern=str(rng.choice(family["patterns"])), **_noise_fields(rng))


def material_variant(texture: Texture, rng: np.random.Generator) -> Texture:
    """The same material as `texture` for another part: its colours slightly brighter or darker and turned in hue,
    the same pattern and scales, and a new realisation of the noise (another board of the same wood)."""
    scale = 1.0 + rng.uniform(-VARIANT_BRIGHTNESS, VARIANT_BRIGHTNESS)
    turn = rng.uniform(-VARIANT_HUE, VARIANT_HUE)
    colors = []
    for rgb in texture.colors:
        hue, saturation, value = colorsys.rgb_to_hsv(*rgb)
        colors.append(colorsys.hsv_to_rgb((hue + turn) % 1.0, saturation, min(1.0, value * scale)))
    phases = rng.uniform(0.0, 2.0 * np.pi, size=len(texture.phases)).astype(np.float32)
    return dataclasses.replace(texture, colors=np.array(colors), phases=phases)
