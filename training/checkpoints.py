"""Resumable checkpoints of stages 2 and 4: plain tensors and containers (loadable with `weights_only=True`), written
atomically, read with errors that name the file, and the random state that makes a resumed run equal an
uninterrupted one."""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scene.gaussian_model import Densifier, GaussianModel
from utils.io_utils import atomic_path


class CheckpointError(ValueError):
    """A checkpoint cannot be read, or it does not belong to this stage or model."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """`torch.save` of tensors/plain containers (loadable with weights_only=True), atomically."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, device: torch.device | str) -> dict[str, Any]:
    """A checkpoint written by `save_checkpoint`, without unpickling code: a dict with an integer "iteration".
    A corrupt, truncated or foreign file raises CheckpointError naming it."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch raises several types for corrupt, truncated or foreign files
        raise CheckpointError(f"cannot read checkpoint {path} ({type(err).__name__}: {err}); delete it or pass "
                              "--overwrite to start afresh") from err
    if not isinstance(payload, dict) or not isinstance(payload.get("iteration"), int):
        raise CheckpointError(f"{path} is not a checkpoint of this stage (no iteration); delete it or pass "
                              "--overwrite to start afresh")
    return payload


def latest_checkpoint(folder: str | Path, prefix: str) -> Path | None:
    """The checkpoint `<prefix><iteration>.pth` with the highest iteration in `folder`, if any (other names that
    start with `prefix` are not checkpoints of this kind)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.pth")
    found = [(int(match.group(1)), path) for path in Path(folder).glob(f"{prefix}*.pth")
             if (match := pattern.fullmatch(path.name))]
    return max(found)[1] if found else None


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


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every random state a training loop draws from: Python's, NumPy's, torch's CPU and CUDA generators and
    `generator` (views and backgrounds), as tensors and plain values."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if generator is not None:
        state["generator"] = generator.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Set the random states saved by `rng_state` (the CUDA ones only where CUDA is in use; Python's and NumPy's
    where the checkpoint holds them)."""
    if "python" in state:
        python = state["python"]
        random.setstate((python["version"], tuple(int(v) for v in python["state"].cpu().tolist()), python["gauss"]))
    if "numpy" in state:
        numpy = state["numpy"]
        np.random.set_state((numpy["kind"], numpy["keys"].cpu().numpy().astype(np.uint32), numpy["pos"],
                             numpy["has_gauss"], numpy["cached"]))
    torch.set_rng_state(state["torch"].cpu())
    if generator is not None:
        generator.set_state(state["generator"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
