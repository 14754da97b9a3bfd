"""The 2D Gaussian surfel model: parameters, PLY I/O, optimisers with the 3DGS learning rates, and densification.

Parameters live in a `torch.nn.ParameterDict` under the names gsplat's densification strategy expects:
    means (N, 3); scales (N, 3) log scales, columns 0-1 the surfel's tangent scales and column 2 a fixed thickness
    (log THICKNESS) that no renderer reads and that keeps gsplat's split samples in the surfel plane; quats (N, 4)
    wxyz, unnormalised; opacities (N,) logits; sh0 (N, 1, 3); shN (N, (D+1)²-1, 3); features (N, F) when the model
    has per-surfel feature channels (part logits in stage 4).
Each parameter has its own Adam (one param group), so `gsplat.strategy` can grow and prune them with their state.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gsplat.strategy import DefaultStrategy
from gsplat.strategy.ops import remove, reset_opa
from plyfile import PlyData, PlyElement
from scipy.spatial import cKDTree
from torch import Tensor

from gaussian_renderer.sh import MAX_SH_DEGREE, num_sh_bases, rgb_to_sh
from utils.adam import FusedAdam
from utils.io_utils import atomic_path
from utils.neighbours import query

THICKNESS = 1e-8  # third scale of every surfel: far below any scene feature, so splits stay in-plane
LOG_THICKNESS = math.log(THICKNESS)
PARAM_NAMES = ("means", "scales", "quats", "opacities", "sh0", "shN", "features")
_PLY_REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1",
                 "rot_0", "rot_1", "rot_2", "rot_3")


@dataclass
class LearningRates:
    """Adam learning rates per parameter (3DGS defaults); `means` and `means_final` are scaled by the scene size."""

    means: float = 1.6e-4
    means_final: float = 1.6e-6
    sh0: float = 2.5e-3
    shN: float = 2.5e-3 / 20
    opacities: float = 5e-2
    scales: float = 5e-3
    quats: float = 1e-3
    features: float = 1e-2


def exponential_lr(step: int, lr_init: float, lr_final: float, max_steps: int) -> float:
    """Log-linear interpolation from `lr_init` at step 0 to `lr_final` at `max_steps` (held after)."""
    t = min(max(step / max(max_steps, 1), 0.0), 1.0)
    return math.exp((1.0 - t) * math.log(lr_init) + t * math.log(lr_final))


class GaussianModel:
    """N 2D Gaussian surfels with SH colour (degree `max_sh_degree`) and optional feature channels."""

    def __init__(self, params: dict[str, Tensor], sh_degree: int, active_sh_degree: int = 0) -> None:
        _check_params(params, sh_degree)
        self.params = torch.nn.ParameterDict(
            {name: torch.nn.Parameter(value, requires_grad=value.requires_grad) for name, value in params.items()}
        )
        self.max_sh_degree = sh_degree
        self.active_sh_degree = min(active_sh_degree, sh_degree)
        self.optimizers: dict[str, FusedAdam] = {}
        self.frozen: set[str] = set()
        self._means_lr = (0.0, 0.0, 1)

    # ----------------------------------------------------------------------------------------------------- creation
    @classmethod
    def from_point_cloud(
        cls,
        xyz: np.ndarray | Tensor,
        rgb: np.ndarray | Tensor,
        sh_degree: int = 3,
        num_features: int = 0,
        init_opacity: float = 0.1,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ) -> "GaussianModel":
        """Surfels at points `xyz` (N, 3) with colours `rgb` (N, 3) in [0, 1].

        Tangent scale = mean distance to the 3 nearest neighbours; rotation uniformly random (seeded);
        opacity `init_opacity`; SH DC from the colour, higher bands 0; feature channels 0.
        """
        xyz = np.asarray(torch.as_tensor(xyz).detach().cpu(), dtype=np.float64)
        rgb = np.asarray(torch.as_tensor(rgb).detach().cpu(), dtype=np.float64)
        if xyz.ndim != 2 or xyz.shape[1] != 3 or len(xyz) < 2:
            raise ValueError(f"point cloud must be (N, 3) with N >= 2, got shape {xyz.shape}")
        if rgb.shape != xyz.shape:
            raise ValueError(f"colours {rgb.shape} do not match points {xyz.shape}")
        if not (np.isfinite(xyz).all() and np.isfinite(rgb).all()):
            raise ValueError("point cloud contains NaN or infinite values")
        n = len(xyz)
        dist, _ = query(cKDTree(xyz), xyz, k=min(4, n))
        scale = np.log(np.maximum(dist[:, 1:].mean(axis=1), 1e-7))
        generator = torch.Generator().manual_seed(seed)
        to = dict(dtype=torch.float32, device=device)
        params = {
            "means": torch.tensor(xyz, **to),
            "scales": torch.tensor(np.stack([scale, scale, np.full(n, LOG_THICKNESS)], axis=1), **to),
            "quats": torch.nn.functional.normalize(torch.randn(n, 4, generator=generator), dim=1).to(device),
            "opacities": torch.full((n,), math.log(init_opacity / (1.0 - init_opacity)), **to),
            "sh0": rgb_to_sh(torch.tensor(rgb, **to))[:, None, :],
            "shN": torch.zeros(n, num_sh_bases(sh_degree) - 1, 3, **to),
        }
        if num_features > 0:
            params["features"] = torch.zeros(n, num_features, **to)
        return cls({k: v.requires_grad_() for k, v in params.items()}, sh_degree)

    def clone(self) -> "GaussianModel":
        """An independent copy of the parameters (same trainability), without optimisers."""
        params = {name: p.detach().clone().requires_grad_(p.requires_grad) for name, p in self.params.items()}
        return GaussianModel(params, self.max_sh_degree, self.active_sh_degree)

    def detach_copy(self) -> "GaussianModel":
        """A frozen copy: same values, no gradients, no optimisers (e.g. stage 4's anchor to its initial self)."""
        params = {name: p.detach().clone() for name, p in self.params.items()}
        return GaussianModel(params, self.max_sh_degree, self.active_sh_degree)

    # --------------------------------------------------------------------------------------------------- properties
    @property
    def num_points(self) -> int:
        return self.params["means"].shape[0]

    @property
    def num_features(self) -> int:
        return self.params["features"].shape[1] if "features" in self.params else 0

    @property
    def device(self) -> torch.device:
        return self.params["means"].device

    @property
    def get_xyz(self) -> Tensor:
        """(N, 3) centres."""
        return self.params["means"]

    @property
    def get_scaling(self) -> Tensor:
        """(N, 2) tangent scales."""
        return torch.exp(self.params["scales"][:, :2])

    @property
    def get_rotation(self) -> Tensor:
        """(N, 4) unit quaternions wxyz."""
        return torch.nn.functional.normalize(self.params["quats"], dim=-1)

    @property
    def get_opacity(self) -> Tensor:
        """(N,) opacities in (0, 1)."""
        return torch.sigmoid(self.params["opacities"])

    @property
    def get_shs(self) -> Tensor:
        """(N, (D+1)², 3) SH coefficients, DC first."""
        return torch.cat([self.params["sh0"], self.params["shN"]], dim=1)

    @property
    def get_features(self) -> Tensor | None:
        """(N, F) feature channels, or None when the model has none."""
        return self.params["features"] if "features" in self.params else None

    def oneup_sh_degree(self) -> None:
        """Use one more SH band (the caller's schedule: every 1000 iterations in 3DGS)."""
        self.active_sh_degree = min(self.active_sh_degree + 1, self.max_sh_degree)

    # ------------------------------------------------------------------------------------------------- optimisation
    def setup_optimizers(
        self, lrs: LearningRates | None = None, spatial_scale: float = 1.0, max_steps: int = 30_000
    ) -> None:
        """One Adam per trainable parameter (`FusedAdam`); the position lr decays by `update_learning_rate`."""
        lrs = lrs or LearningRates()
        self._means_lr = (lrs.means * spatial_scale, lrs.means_final * spatial_scale, max_steps)
        lr = {name: getattr(lrs, name) for name in PARAM_NAMES}
        lr["means"] = self._means_lr[0]
        self.optimizers = {
            name: FusedAdam([{"params": [p], "lr": lr[name], "name": name}], eps=1e-15)
            for name, p in self.params.items()
            if p.requires_grad
        }

    def update_learning_rate(self, step: int) -> float:
        """Set the position learning rate for `step` (exponential decay over the run) and return it."""
        lr = exponential_lr(step, *self._means_lr)
        self.optimizers["means"].param_groups[0]["lr"] = lr
        return lr

    def freeze(self, *names: str) -> None:
        """Stop updating these parameters in `step_optimizers` (their Adam state is kept for `unfreeze`)."""
        unknown = set(names) - set(self.params)
        if unknown:
            raise KeyError(f"cannot freeze unknown parameters {sorted(unknown)}; the model has {list(self.params)}")
        self.frozen |= set(names)

    def unfreeze(self, *names: str) -> None:
        self.frozen -= set(names)

    def step_optimizers(self) -> None:
        """One Adam step for every parameter that is not frozen, then clear all gradients."""
        for name, optimizer in self.optimizers.items():
            if name not in self.frozen:
                optimizer.step()
        for param in self.params.values():
            param.grad = None

    # ------------------------------------------------------------------------------------------------------ PLY I/O
    def save_ply(self, path: str | Path) -> None:
        """Write the surfels as a 3DGS/2DGS-style binary PLY (f_rest channel-major, extra `feat_i`), atomically."""
        n = self.num_points
        columns = {name: p.detach().float().cpu().numpy() for name, p in self.params.items()}
        fields = {"x": columns["means"][:, 0], "y": columns["means"][:, 1], "z": columns["means"][:, 2]}
        fields.update({axis: np.zeros(n, np.float32) for axis in ("nx", "ny", "nz")})
        fields.update(_named("f_dc_", columns["sh0"].transpose(0, 2, 1).reshape(n, -1)))
        fields.update(_named("f_rest_", columns["shN"].transpose(0, 2, 1).reshape(n, -1)))
        fields["opacity"] = columns["opacities"]
        fields.update(_named("scale_", columns["scales"][:, :2]))
        fields.update(_named("rot_", columns["quats"]))
        if "features" in columns:
            fields.update(_named("feat_", columns["features"]))
        vertex = np.empty(n, dtype=[(name, "f4") for name in fields])
        for name, values in fields.items():
            vertex[name] = values
        with atomic_path(path) as tmp:
            PlyData([PlyElement.describe(vertex, "vertex")]).write(str(tmp))

    @classmethod
    def load_ply(cls, path: str | Path, device: torch.device | str = "cpu") -> "GaussianModel":
        """Read a PLY written by `save_ply` (or 3DGS/2DGS); all SH bands active. Raises naming the file on bad input."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Gaussian PLY not found: {path}")
        try:
            ply = PlyData.read(str(path))
            vertex = ply["vertex"]
        except Exception as err:
            raise ValueError(f"{path} is not a readable PLY file with a 'vertex' element: {err}") from err
        names = {prop.name for prop in vertex.properties}
        missing = [name for name in _PLY_REQUIRED if name not in names]
        if missing:
            raise ValueError(f"{path}: vertex element lacks properties {missing}")
        rest, feats = _indexed(names, "f_rest_", path), _indexed(names, "feat_", path)
        sh_degree = round(math.sqrt(len(rest) // 3 + 1)) - 1
        if len(rest) % 3 or num_sh_bases(sh_degree) != len(rest) // 3 + 1 or sh_degree > MAX_SH_DEGREE:
            raise ValueError(f"{path}: {len(rest)} f_rest_* properties are not SH bands of degree <= {MAX_SH_DEGREE}")

        def stack(keys: list[str]) -> Tensor:
            data = np.stack([np.asarray(vertex[key], dtype=np.float32) for key in keys], axis=1)
            if not np.isfinite(data).all():
                raise ValueError(f"{path}: properties {keys[0]}..{keys[-1]} contain NaN or infinite values")
            return torch.tensor(data, device=device)

        n = vertex.count
        scales = stack(["scale_0", "scale_1"])
        params = {
            "means": stack(["x", "y", "z"]),
            "scales": torch.cat([scales, torch.full((n, 1), LOG_THICKNESS, device=device)], dim=1),
            "quats": stack([f"rot_{i}" for i in range(4)]),
            "opacities": stack(["opacity"])[:, 0],
            "sh0": stack([f"f_dc_{i}" for i in range(3)])[:, None, :],
            "shN": stack(rest).reshape(n, 3, -1).transpose(1, 2).contiguous() if rest
            else torch.zeros(n, 0, 3, device=device),
        }
        if feats:
            params["features"] = stack(feats)
        return cls({k: v.requires_grad_() for k, v in params.items()}, sh_degree, active_sh_degree=sh_degree)


class _SyncFreeStrategy(DefaultStrategy):
    """gsplat's `DefaultStrategy` whose per-step gradient statistics need no host synchronisation.

    gsplat 1.5.3 accumulates them through `torch.where(radii > 0)` and boolean indexing, three device-to-host
    synchronisations per render that serialise the CPU with the GPU on every densifying iteration. Multiplying by the
    visibility mask instead gives the same sums (a visible surfel adds its gradient norm and 1, others add 0).
    Only the unpacked layout and no screen-size pruning (`refine_scale2d_stop_iter == 0`, gsplat's default) are used.
    """

    def _update_state(self, params: dict[str, Tensor], state: dict, info: dict, packed: bool = False) -> None:
        if packed or self.refine_scale2d_stop_iter > 0:
            super()._update_state(params, state, info, packed=packed)
            return
        grads = info[self.key_for_gradient].absgrad if self.absgrad else info[self.key_for_gradient].grad
        grad2d = torch.hypot(grads[..., 0] * (info["width"] / 2.0 * info["n_cameras"]),
                             grads[..., 1] * (info["height"] / 2.0 * info["n_cameras"]))  # (C, N), no host copy
        visible = (info["radii"] > 0.0).all(dim=-1).to(grads.dtype)  # (C, N)
        n = len(params["means"])
        if state["grad2d"] is None:
            state["grad2d"] = torch.zeros(n, device=grads.device)
        if state["count"] is None:
            state["count"] = torch.zeros(n, device=grads.device)
        state["grad2d"] += (grad2d * visible).sum(dim=0)
        state["count"] += visible.sum(dim=0)


class Densifier:
    """3DGS densification (clone small / split large surfels with high screen-space gradient, prune transparent and
    oversized ones, periodic opacity reset) on a `GaussianModel`, driven by gsplat's `DefaultStrategy` (with
    gradient statistics gathered without host synchronisation, `_SyncFreeStrategy`).

    Call `pre_backward(step, info)` after rendering and `post_backward(step, info)` after `loss.backward()` and
    before `model.step_optimizers()`; `info` is the render's `info`. Works with both render backends, whose
    `gradient_2dgs` is the same quantity (gsplat's): the gradient of a pixel shift of each surfel's centre in the
    ray-splat kernel. Surfels drawn only through the low-pass filter (sub-pixel ones) get none, as in gsplat.
    The opacity reset is done here because gsplat 1.5.3's own reset condition never fires
    (`step % reset_every == 0 & step > 0` parses as a chained comparison); resetting is idempotent, so a fixed gsplat
    resetting too changes nothing. With `prune_after_stop`, surfels whose opacity falls below `prune_opacity` are
    still removed every `refine_every` steps after `refine_stop` (nothing grows then): stage 2's opacity
    binarisation, which starts when densification ends, drives most surfels there, and they render nothing.
    """

    def __init__(
        self,
        model: GaussianModel,
        *,
        scene_scale: float = 1.0,
        refine_start: int = 500,
        refine_stop: int = 15_000,
        refine_every: int = 100,
        grad_threshold: float = 2e-4,
        reset_every: int = 3000,
        prune_opacity: float = 0.005,
        grow_scale3d: float = 0.01,
        prune_scale3d: float = 0.1,
        prune_after_stop: bool = False,
        verbose: bool = False,
    ) -> None:
        if not model.optimizers:
            raise ValueError("Densifier needs the model's optimizers: call model.setup_optimizers() first")
        self.model = model
        self.prune_after_stop = prune_after_stop
        self.strategy = _SyncFreeStrategy(
            prune_opa=prune_opacity,
            grow_grad2d=grad_threshold,
            grow_scale3d=grow_scale3d,
            prune_scale3d=prune_scale3d,
            refine_start_iter=refine_start,
            refine_stop_iter=refine_stop,
            reset_every=reset_every,
            refine_every=refine_every,
            key_for_gradient="gradient_2dgs",
            verbose=verbose,
        )
        self.strategy.check_sanity(model.params, model.optimizers)
        self.state = self.strategy.initialize_state(scene_scale=scene_scale)

    def pre_backward(self, step: int, info: dict) -> None:
        """Keep the screen-space gradient of this render."""
        self.strategy.step_pre_backward(self.model.params, self.model.optimizers, self.state, step, info)

    def post_backward(self, step: int, info: dict) -> None:
        """Accumulate gradient statistics; on refinement steps grow and prune; on reset steps reset opacities."""
        s = self.strategy
        self.strategy.step_post_backward(self.model.params, self.model.optimizers, self.state, step, info)
        if step >= s.refine_stop_iter:
            if self.prune_after_stop and step % s.refine_every == 0:
                self.prune_transparent()
            return
        if step > s.refine_start_iter and step % s.refine_every == 0:
            with torch.no_grad():
                self.model.params["scales"][:, 2] = LOG_THICKNESS
        if step > 0 and step % s.reset_every == 0:
            reset_opa(self.model.params, self.model.optimizers, self.state, value=2.0 * s.prune_opa)

    def prune_transparent(self) -> int:
        """Remove the surfels whose opacity is below the pruning threshold (with their Adam moments and statistics);
        returns how many (one host synchronisation)."""
        with torch.no_grad():
            transparent = self.model.get_opacity < self.strategy.prune_opa
        count = int(transparent.sum())
        if count:
            remove(self.model.params, self.model.optimizers, self.state, transparent)
        return count


def _check_params(params: dict[str, Tensor], sh_degree: int) -> None:
    """Raise if names or shapes of surfel parameters are wrong."""
    if not 0 <= sh_degree <= MAX_SH_DEGREE:
        raise ValueError(f"SH degree must be in [0, {MAX_SH_DEGREE}], got {sh_degree}")
    unknown = set(params) - set(PARAM_NAMES)
    missing = set(PARAM_NAMES[:6]) - set(params)
    if unknown or missing:
        raise ValueError(f"surfel parameters: missing {sorted(missing)}, unknown {sorted(unknown)}")
    n = params["means"].shape[0]
    expected = {
        "means": (n, 3),
        "scales": (n, 3),
        "quats": (n, 4),
        "opacities": (n,),
        "sh0": (n, 1, 3),
        "shN": (n, num_sh_bases(sh_degree) - 1, 3),
    }
    if "features" in params:
        expected["features"] = (n, params["features"].shape[-1])
    for name, shape in expected.items():
        if tuple(params[name].shape) != shape:
            raise ValueError(f"surfel parameter {name!r} has shape {tuple(params[name].shape)}, expected {shape}")


def _named(prefix: str, columns: np.ndarray) -> dict[str, np.ndarray]:
    """{prefix0: columns[:, 0], prefix1: ...} for PLY properties."""
    return {f"{prefix}{i}": columns[:, i] for i in range(columns.shape[1])}


def _indexed(names: set[str], prefix: str, path: Path) -> list[str]:
    """Properties `prefix<i>` sorted by i; raises naming `path` if the indices are not 0..k-1."""
    found = sorted((int(m.group(1)), name) for name in names if (m := re.fullmatch(re.escape(prefix) + r"(\d+)", name)))
    if [i for i, _ in found] != list(range(len(found))):
        raise ValueError(f"{path}: properties {prefix}* are not numbered 0..{len(found) - 1}")
    return [name for _, name in found]
