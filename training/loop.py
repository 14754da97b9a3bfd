"""Pieces of the optimisation loop shared by stages 2 and 4: backgrounds, learning rates and the divergence guard."""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from arguments import OptimizationOptions
from scene.gaussian_model import LearningRates


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def background(random_bg: bool, white: bool, device: torch.device, generator: torch.Generator) -> Tensor:
    """(3,) background colour: random per iteration, white, or black."""
    if random_bg:
        return torch.rand(3, generator=generator).to(device, non_blocking=True)
    return torch.full((3,), 1.0 if white else 0.0, device=device)


def learning_rates(config: OptimizationOptions, **overrides: float) -> LearningRates:
    """Adam learning rates of the optimisation settings (3DGS: higher SH bands at 1/20 of the DC rate); `overrides`
    set others (e.g. `features` for stage 4's part logits)."""
    lrs = LearningRates(means=config.position_lr_init, means_final=config.position_lr_final, sh0=config.feature_lr,
                        shN=config.feature_lr / 20.0, opacities=config.opacity_lr, scales=config.scaling_lr,
                        quats=config.rotation_lr)
    return replace(lrs, **overrides)


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
