"""Stage 1's Segment Anything segmenter: the model loaded from a checkpoint, and its automatic mask generator with the
paper's settings (`segmentation.segmenters.SAM_SETTINGS`)."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator, sam_model_registry

from segmentation.segmenters import SAM_BACKGROUND, SAM_SETTINGS, CheckpointError, Frame, missing_checkpoint_message


def load_sam(checkpoint: Path, model_type: str, device: str) -> torch.nn.Module:
    """Build `segment_anything.sam_model_registry[model_type]` and load its weights from `checkpoint` (tensors only)."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(missing_checkpoint_message(checkpoint))
    if model_type not in sam_model_registry:
        raise CheckpointError(f"unknown SAM model type {model_type!r}; choose one of {sorted(sam_model_registry)}")
    sam = sam_model_registry[model_type]()
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        sam.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError, OSError, EOFError, pickle.UnpicklingError) as err:
        raise CheckpointError(
            f"cannot load SAM checkpoint {checkpoint} as --model_type {model_type}: {err}"
        ) from err
    return sam.to(device).eval()


class _MaskGenerator(SamAutomaticMaskGenerator):
    """`SamAutomaticMaskGenerator` that survives an image where no crop yields a mask.

    segment-anything 1.0 then stores the crop boxes as a (0,) tensor and fails in `box_area` when it merges crops
    (facebookresearch/segment-anything issue #614); giving them their (0, 4) shape makes it return no masks.
    """

    def _process_crop(self, *args, **kwargs):
        data = super()._process_crop(*args, **kwargs)
        if len(data["rles"]) == 0:
            data["crop_boxes"] = data["crop_boxes"].reshape(0, 4)
        return data


class SamSegmenter:
    """Segment Anything's automatic mask generator with the paper's settings (`points_per_side` may be lowered)."""

    def __init__(self, sam: torch.nn.Module, points_per_side: int = 32, points_per_batch: int = 64) -> None:
        settings = {**SAM_SETTINGS, "points_per_side": points_per_side}
        self.generator = _MaskGenerator(sam, points_per_batch=points_per_batch, **settings)

    def __call__(self, frame: Frame) -> list[np.ndarray]:
        """Candidate masks (H, W) bool of one frame."""
        return masks_from_records(self.generator.generate(frame.composite(SAM_BACKGROUND)))


def masks_from_records(records: list[dict]) -> list[np.ndarray]:
    """The (H, W) bool `segmentation` of each record that `SamAutomaticMaskGenerator.generate` returns."""
    masks = []
    for i, record in enumerate(records):
        mask = np.asarray(record["segmentation"])
        if mask.ndim != 2 or mask.dtype != bool:
            raise ValueError(f"SAM record {i}: 'segmentation' must be a 2-D bool mask, got {mask.dtype} {mask.shape}")
        masks.append(mask)
    return masks
