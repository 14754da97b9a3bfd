"""Stage-1 label maps: filter candidate region masks against the foreground and paint them into one int32 image.

Shared by every segmenter, so SAM and the classical fallback produce the same kind of prior.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from skimage.color import label2rgb
from skimage.segmentation import find_boundaries, relabel_sequential

MIN_INSIDE_FRACTION = 0.3
MIN_AREA = 50


def clip_masks(masks: Sequence[np.ndarray], foreground: np.ndarray, min_inside: float = MIN_INSIDE_FRACTION,
               min_area: int = MIN_AREA) -> list[np.ndarray]:
    """Masks (H, W) bool with at least `min_inside` of their area in `foreground` (H, W), clipped to it, of at
    least `min_area` pixels after clipping."""
    kept = []
    for i, mask in enumerate(masks):
        if mask.shape != foreground.shape:
            raise ValueError(f"mask {i} has shape {mask.shape}, expected the image's {foreground.shape}")
        area = int(mask.sum())
        clipped = mask & foreground
        inside = int(clipped.sum())
        if area and inside >= min_inside * area and inside >= min_area:
            kept.append(clipped)
    return kept


def paint_labels(masks: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) int32 labels 1..M (0 = no mask): masks painted largest first, so smaller ones stay visible on top;
    labels of masks painted over entirely are dropped and the rest renumbered consecutively (1 = largest)."""
    labels = np.zeros(shape, dtype=np.int32)
    order = sorted(range(len(masks)), key=lambda i: -int(masks[i].sum()))
    for label, i in enumerate(order, start=1):
        labels[masks[i]] = label
    return relabel_sequential(labels)[0].astype(np.int32)


def label_map(masks: Sequence[np.ndarray], foreground: np.ndarray) -> np.ndarray:
    """(H, W) int32 stage-1 prior from candidate masks: filter, clip to `foreground`, paint."""
    return paint_labels(clip_masks(masks, foreground), foreground.shape)


def overlay(rgb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 picture of `labels` (H, W) over `rgb` (H, W, 3) in [0, 1], region boundaries in black."""
    picture = label2rgb(labels, image=rgb, bg_label=0, bg_color=None, alpha=0.45, saturation=1.0)
    picture[find_boundaries(labels, mode="inner") & (labels > 0)] = 0.0
    return np.round(np.clip(picture, 0.0, 1.0) * 255.0).astype(np.uint8)
