"""Pieces of the optimisation loop shared by stage 2 (coarse) and stage 4 (refinement)."""
from __future__ import annotations

import argparse
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gaussian_renderer.reference import depth_to_normal
from scene.cameras import composite
from scene.gaussian_model import Densifier, GaussianModel, LearningRates
from utils.io_utils import atomic_path
from utils.loss_utils import depth_log_l1, distortion_loss, l1_loss, normal_consistency_loss, ssim


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def seed_everything(seed: int, device: torch.device) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for view/background sampling.

    On the CPU torch also runs its deterministic algorithms, so that a seed gives the same run with any number of
    threads (the renderer's backward otherwise accumulates per-surfel gradients in a thread-dependent order: 1e-10
    differences that grow over a run). On CUDA they stay off: gsplat's kernels sum with atomics. The switch is only
    called when it changes something: it imports torch._inductor and torch._dynamo (1-2 s, and 5 s on a machine
    without compiled bytecode caches).
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(False)
    return torch.Generator().manual_seed(seed)


def pick_device(requested: str) -> torch.device:
    """`requested` if usable, else the CPU (so CPU-only machines run every stage)."""
    if requested.startswith("cuda") and not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device(requested)


def background(random_bg: bool, white: bool, device: torch.device, generator: torch.Generator) -> Tensor:
    """(3,) background colour: random per iteration, white, or black."""
    if random_bg:
        return torch.rand(3, generator=generator).to(device, non_blocking=True)
    return torch.full((3,), 1.0 if white else 0.0, device=device)


def photometric_loss(pred: Tensor, target: Tensor, lambda_dssim: float) -> Tensor:
    """(1 - λ)·L1 + λ·(1 - SSIM) between (3, H, W) images, or per image of (B, 3, H, W) batches."""
    return (1.0 - lambda_dssim) * l1_loss(pred, target) + lambda_dssim * (1.0 - ssim(pred, target))


IMAGE_TERMS = ("photo", "depth", "normal", "dist")  # the entries of `image_loss_terms`, in order


def image_loss_terms(maps: dict[str, Tensor], args: argparse.Namespace) -> Tensor:
    """(4,) weighted image-space loss terms of one render, `IMAGE_TERMS` in order, 0 for a term whose maps are absent;
    (S, 4) for S renders whose maps are all stacked on a leading axis (stage 2's two states: one set of batched
    kernels, so one captured graph half the size, and one input copy per map).

    `maps` holds the rendered "render" (3, H, W) and its target: "target" (3, H, W), or the ground truth "image"
    (3, H, W) with "image_alpha" (1, H, W) and the background "bg" (3,) to composite it over. Optional: "depth" with
    "gt_depth" (1, H, W) (log-L1 where gt > 0, weight `args.lambda_depth`); "rend_normal" (3, H, W) with "alpha"
    (1, H, W), "depth" and the camera's "viewmat" (4, 4) and "K" (3, 3) (2DGS normal consistency against the normals
    of the depth map, `args.lambda_normal`); "rend_dist" (1, H, W) (distortion, `args.lambda_dist`). A pure function
    of tensors, so `utils.cuda_graphs.GraphedFunction` can capture it, depth normals included.
    """
    if maps["render"].dim() == 3:
        return image_loss_terms({name: value[None] for name, value in maps.items()}, args)[0]
    target = maps["target"] if "target" in maps else composite(maps["image"], maps["image_alpha"], maps["bg"])
    zero = maps["render"].new_zeros(len(maps["render"]))
    terms = [photometric_loss(maps["render"], target, args.lambda_dssim)]
    terms.append(args.lambda_depth * depth_log_l1(maps["depth"], maps["gt_depth"]) if "gt_depth" in maps else zero)
    if "rend_normal" in maps:
        surf_normal = depth_to_normal(maps["depth"], maps["viewmat"], maps["K"])
        terms.append(args.lambda_normal * normal_consistency_loss(maps["rend_normal"], surf_normal, maps["alpha"]))
    else:
        terms.append(zero)
    terms.append(args.lambda_dist * distortion_loss(maps["rend_dist"]) if "rend_dist" in maps else zero)
    return torch.stack(terms, dim=-1)


class FiniteGuard:
    """Sums the values it is given (a loss per state, a parameter checksum) on the device, one kernel a step, and
    checks the sum for NaN/inf every `every` iterations (one host sync); a non-finite value keeps the sum so."""

    def __init__(self, every: int = 50, entries: str = "entries") -> None:
        self.every = every
        self.entries = entries  # what a vector's entries are, for the error message (e.g. "states")
        self._sum: Tensor | None = None
        self._count = 0

    def update(self, value: Tensor) -> None:
        """Add `value` (a tensor of the same shape every time) to the running sum."""
        value = value.detach()
        self._sum = value.clone() if self._sum is None else self._sum.add_(value)
        self._count += 1

    def check(self, iteration: int) -> Tensor | None:
        """Raise TrainingDiverged if a value since the last check was NaN/inf (naming the entries of a vector);
        else return the mean of those values (on the host; None if there were none) and start a new sum."""
        if self._sum is None:
            return None
        total = self._sum.cpu()
        bad = ~torch.isfinite(total)
        if bool(bad.any()):
            where = f" ({self.entries} {bad.nonzero().flatten().tolist()})" if total.dim() else ""
            raise TrainingDiverged(f"loss became NaN/inf at or before iteration {iteration}{where}")
        mean = total / self._count
        self._sum, self._count = None, 0
        return mean


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """`torch.save` of tensors/plain containers (loadable with weights_only=True), atomically."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, device: torch.device) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` without unpickling code."""
    return torch.load(path, map_location=device, weights_only=True)


def latest_checkpoint(folder: str | Path, prefix: str = "chkpnt") -> Path | None:
    """The checkpoint `<prefix><iteration>.pth` with the highest iteration in `folder`, if any."""
    found = sorted(Path(folder).glob(f"{prefix}*.pth"), key=lambda p: int(p.stem[len(prefix):]))
    return found[-1] if found else None


def learning_rates(args: argparse.Namespace, **overrides: float) -> LearningRates:
    """Adam learning rates from the optimisation group (3DGS: higher SH bands at 1/20 of the DC rate); `overrides`
    set others (e.g. `features` for stage 4's part logits)."""
    lrs = LearningRates(means=args.position_lr_init, means_final=args.position_lr_final, sh0=args.feature_lr,
                        shN=args.feature_lr / 20.0, opacities=args.opacity_lr, scales=args.scaling_lr,
                        quats=args.rotation_lr)
    return replace(lrs, **overrides)


def surfel_checkpoint(model: GaussianModel, densifier: Densifier) -> dict[str, Any]:
    """A surfel model's resumable state: parameters, active SH degree, Adam moments and densification statistics."""
    return {
        "params": {name: p.detach() for name, p in model.params.items()},
        "active_sh_degree": model.active_sh_degree,
        "optimizers": {name: opt.state_dict() for name, opt in model.optimizers.items()},
        "densifier": dict(densifier.state),
    }


def restore_surfel_training(model: GaussianModel, densifier: Densifier, saved: dict[str, Any]) -> None:
    """Load the Adam moments and densification statistics of `surfel_checkpoint` into a model already built from its
    `params` (with optimisers set up)."""
    for name, optimizer in model.optimizers.items():
        optimizer.load_state_dict(saved["optimizers"][name])
    densifier.state.update(saved["densifier"])
