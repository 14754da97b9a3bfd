"""The image-space loss of one render (or of a stack of renders): photometric, depth, normal consistency, distortion."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from arguments import OptimizationOptions
from gaussian_renderer.reference import depth_to_normal
from scene.cameras import composite
from utils.loss_utils import depth_log_l1, distortion_loss, l1_loss, normal_consistency_loss, ssim

IMAGE_TERMS = ("photo", "depth", "normal", "dist")  # the entries of `image_loss_terms`, in order


@dataclass(frozen=True)
class LossWeights:
    """The weights of `image_loss_terms` (the --lambda_* options)."""

    lambda_dssim: float = 0.2
    lambda_depth: float = 1.0
    lambda_normal: float = 0.05
    lambda_dist: float = 0.1

    @classmethod
    def of(cls, config: OptimizationOptions) -> LossWeights:
        """The weights of a stage's optimisation settings."""
        return cls(config.lambda_dssim, config.lambda_depth, config.lambda_normal, config.lambda_dist)


def photometric_loss(pred: Tensor, target: Tensor, lambda_dssim: float) -> Tensor:
    """(1 - λ)·L1 + λ·(1 - SSIM) between (3, H, W) images, or per image of (B, 3, H, W) batches."""
    return (1.0 - lambda_dssim) * l1_loss(pred, target) + lambda_dssim * (1.0 - ssim(pred, target))


def image_loss_terms(maps: dict[str, Tensor], weights: LossWeights) -> Tensor:
    """(4,) weighted image-space loss terms of one render, `IMAGE_TERMS` in order, 0 for a term whose maps are absent;
    (S, 4) for S renders whose maps are all stacked on a leading axis (stage 2's two states: one set of batched
    kernels, so one captured graph half the size, and one input copy per map).

    `maps` holds the rendered "render" (3, H, W) and its target: "target" (3, H, W), or the ground truth "image"
    (3, H, W) with "image_alpha" (1, H, W) and the background "bg" (3,) to composite it over. Optional: "depth" with
    "gt_depth" (1, H, W) (log-L1 where gt > 0, weight `lambda_depth`); "rend_normal" (3, H, W) with "alpha"
    (1, H, W), "depth" and the camera's "viewmat" (4, 4) and "K" (3, 3) (2DGS normal consistency against the normals
    of the depth map, `lambda_normal`); "rend_dist" (1, H, W) (distortion, `lambda_dist`). A pure function of
    tensors, so `utils.cuda_graphs.GraphedFunction` can capture it, depth normals included.
    """
    if maps["render"].dim() == 3:
        return image_loss_terms({name: value[None] for name, value in maps.items()}, weights)[0]
    target = maps["target"] if "target" in maps else composite(maps["image"], maps["image_alpha"], maps["bg"])
    zero = maps["render"].new_zeros(len(maps["render"]))
    terms = [photometric_loss(maps["render"], target, weights.lambda_dssim)]
    terms.append(weights.lambda_depth * depth_log_l1(maps["depth"], maps["gt_depth"]) if "gt_depth" in maps else zero)
    if "rend_normal" in maps:
        surf_normal = depth_to_normal(maps["depth"], maps["viewmat"], maps["K"])
        terms.append(weights.lambda_normal * normal_consistency_loss(maps["rend_normal"], surf_normal, maps["alpha"]))
    else:
        terms.append(zero)
    terms.append(weights.lambda_dist * distortion_loss(maps["rend_dist"]) if "rend_dist" in maps else zero)
    return torch.stack(terms, dim=-1)
