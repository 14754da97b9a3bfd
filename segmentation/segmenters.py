"""Stage-1 segmenters: the frame they read, the SAM settings, and a classical over-segmentation as a weaker fallback.

A segmenter takes one `Frame` (an RGBA image, optional depth and the focal lengths) and returns candidate region masks
`(H, W)` bool; `segmentation.label_maps` filters them against the alpha foreground and paints them into a label map.
SAM itself is in `segmentation.sam`, so that the classical path imports neither segment_anything nor torchvision.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from skimage.color import rgb2lab
from skimage.segmentation import felzenszwalb

FOREGROUND_ALPHA = 0.5
# SAM sees the object composited over white: the datasets (PARIS, ArtGS) are rendered and viewed on white, and a
# flat background gives SAM one large, easily rejected background mask instead of texture-like noise.
SAM_BACKGROUND = 1.0
# The automatic-mask-generator settings of the GEAR paper's stage 1.
SAM_SETTINGS = {
    "points_per_side": 32,
    "pred_iou_thresh": 0.86,
    "stability_score_thresh": 0.92,
    "crop_n_layers": 1,
    "crop_n_points_downscale_factor": 2,
    "min_mask_region_area": 100,
}
SAM_CHECKPOINT = Path("submodules/sam_vit_h_4b8939.pth")
SAM_CHECKPOINT_URL = "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"


@dataclass(frozen=True)
class Frame:
    """One training image: `rgb` (H, W, 3) and `alpha` (H, W) float in [0, 1], `depth` (H, W) in scene units
    (0 = unknown) or None, and the focal lengths `fx`, `fy` in pixels."""

    rgb: np.ndarray
    alpha: np.ndarray
    depth: np.ndarray | None
    fx: float
    fy: float

    @property
    def foreground(self) -> np.ndarray:
        """(H, W) bool: alpha above one half."""
        return self.alpha > FOREGROUND_ALPHA

    def composite(self, background: float) -> np.ndarray:
        """(H, W, 3) uint8 RGB over a grey level `background` in [0, 1]."""
        alpha = self.alpha[..., None]
        rgb = self.rgb * alpha + background * (1.0 - alpha)
        return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


Segmenter = Callable[[Frame], list[np.ndarray]]  # a frame -> candidate region masks (H, W) bool


class CheckpointError(ValueError):
    """The SAM checkpoint is missing or does not fit the requested model type."""


def missing_checkpoint_message(path: Path) -> str:
    """What to do when the SAM weights are not at `path`."""
    return (
        f"SAM checkpoint not found: {path}\n"
        f"Download the ViT-H weights ({SAM_CHECKPOINT_URL}) to {SAM_CHECKPOINT} "
        "(see submodules/README.md), or pass another file with --sam_checkpoint PATH "
        "(with --model_type vit_l or vit_b for the smaller models).\n"
        "Without SAM weights, --segmenter classic runs a classical over-segmentation instead (a weaker part prior)."
    )


def depth_normals(depth: np.ndarray, fx: float, fy: float) -> np.ndarray:
    """(H, W, 3) unit camera-frame normals of a depth map (H, W), from the cross product of its point gradients."""
    h, w = depth.shape
    u = (np.arange(w) + 0.5 - w / 2.0) / fx
    v = (np.arange(h) + 0.5 - h / 2.0) / fy
    points = depth[..., None] * np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((1, 1))), axis=-1)
    d_dv, d_du = np.gradient(points, axis=(0, 1))
    normals = np.cross(d_du, d_dv)
    return normals / np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class ClassicSegmenter:
    """Felzenszwalb's graph-based over-segmentation of the foreground on colour, depth and depth normals.

    Pixels are compared in a feature space of CIELAB chroma (a, b), down-weighted lightness (textures of one part
    share a hue but vary in lightness) and, when depth exists, inverse depth relative to the object's median (depth
    discontinuities) and normals (creases); geometry is what separates parts of one colour. Background pixels are
    placed far away so no region crosses the silhouette. Felzenszwalb's `scale` is `scale_per_pixel` times the
    foreground area, so regions keep their size relative to the object at any resolution.
    """

    scale_per_pixel: float = 8.0
    sigma: float = 0.3
    min_size: int = 30
    lightness_weight: float = 0.3
    depth_weight: float = 300.0
    normal_weight: float = 20.0

    def features(self, frame: Frame) -> np.ndarray:
        """(H, W, C) feature image whose Euclidean distances separate parts."""
        lab = rgb2lab(frame.rgb)
        channels = [lab[..., :1] * self.lightness_weight, lab[..., 1:]]
        fg = frame.foreground
        if frame.depth is not None and np.any(frame.depth[fg] > 0):
            depth = np.where(frame.depth > 0, frame.depth, np.median(frame.depth[fg & (frame.depth > 0)]))
            channels.append(self.depth_weight * (np.median(depth[fg]) / depth)[..., None])
            channels.append(self.normal_weight * depth_normals(depth, frame.fx, frame.fy))
        feats = np.concatenate(channels, axis=-1)
        feats[~fg] = 1e4
        return feats

    def __call__(self, frame: Frame) -> list[np.ndarray]:
        """Foreground regions (H, W) bool of one frame."""
        fg = frame.foreground
        scale = self.scale_per_pixel * fg.sum()
        with warnings.catch_warnings():  # skimage warns about any channel count other than 3; ours is intended
            warnings.filterwarnings("ignore", message="Got image with third dimension")
            regions = felzenszwalb(self.features(frame), scale=scale, sigma=self.sigma, min_size=self.min_size)
        return [regions == r for r in np.unique(regions[fg])]
