"""`render()` / `render_batch()` / `render_each()`: the one renderer every stage calls, with two backends of the same
surfel model.

CUDA tensors go to gsplat (`gsplat_backend`), anything else to the pure-PyTorch reference (`reference`); `backend=`
forces one. Both return the same dictionary (channel-first images):

    render (3,H,W)          RGB composited over `bg`
    alpha (1,H,W)           accumulated opacity
    depth (1,H,W)           (1 - depth_ratio) · depth_expected + depth_ratio · depth_median
    depth_expected (1,H,W)  Σ w z / alpha, z = each surfel's centre depth (gsplat's definition)
    depth_median (1,H,W)    depth of the last surfel composited while transmittance > 0.5 (0 where empty)
    rend_normal (3,H,W)     alpha-weighted surfel normals, world frame, facing the camera
    surf_normal (3,H,W)     normals of the `depth` map (world frame, facing the camera, 0 on the image border);
                            None with `with_surf_normal=False` (training computes them inside its losses)
    rend_dist (1,H,W)       gsplat's distortion Σ_ij w_i w_j |z_i - z_j|
    features (F,H,W)        per-surfel feature channels composited over 0, or None
    radii (N,) int          screen-space radius in pixels (0 = culled)
    visibility_filter (N,)  radii > 0
    info                    what `scene.gaussian_model.Densifier` reads (radii (C,N,2), gradient_2dgs (C,N,2), ...)

`render_batch` renders several cameras of the same surfels in one call; its images and radii gain a leading C dim.
`render_each` renders several models, each from its own camera, in one gsplat call (stage 2's two states, stage
4's deformed and canonical views); `render_stacked` returns the same images stacked (C, X, H, W), as that call
makes them, for a loss over all of them at once (stage 2).
"""
from __future__ import annotations

import functools
import itertools
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from gaussian_renderer.gsplat_backend import render_gsplat
from gaussian_renderer.reference import depth_to_normal, render_reference
from scene.cameras import Camera

if TYPE_CHECKING:
    from scene.gaussian_model import GaussianModel

BACKENDS = {"gsplat": render_gsplat, "reference": render_reference}
IMAGE_KEYS = ("render", "alpha", "depth", "depth_expected", "depth_median", "rend_normal", "surf_normal", "rend_dist")


def render(
    camera: Camera,
    gaussians: GaussianModel,
    bg: Tensor,
    *,
    means: Tensor | None = None,
    rotations: Tensor | None = None,
    features: Tensor | None = None,
    mask: Tensor | None = None,
    with_features: bool = True,
    with_surf_normal: bool = True,
    backend: str | None = None,
    depth_ratio: float = 0.0,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
) -> dict:
    """Render `gaussians` from one camera over background colour `bg` (3,); see the module docstring for the keys.

    `means` (N, 3) / `rotations` (N, 4) replace the model's (e.g. deformed, differentiable), `features` (N, F)
    replaces its feature channels, `mask` (N,) bool renders only those surfels; `with_features=False` skips the
    feature channels and `with_surf_normal=False` the depth normals (those keys are then None).
    """
    out = render_batch(
        [camera], gaussians, bg[None], means=means, rotations=rotations, features=features, mask=mask,
        with_features=with_features, with_surf_normal=with_surf_normal, backend=backend, depth_ratio=depth_ratio,
        near_plane=near_plane, far_plane=far_plane,
    )
    return {**_view(out, 0), "info": out["info"]}


def render_batch(
    cameras: list[Camera],
    gaussians: GaussianModel,
    bgs: Tensor,
    *,
    means: Tensor | None = None,
    rotations: Tensor | None = None,
    features: Tensor | None = None,
    mask: Tensor | None = None,
    with_features: bool = True,
    with_surf_normal: bool = True,
    backend: str | None = None,
    depth_ratio: float = 0.0,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
) -> dict:
    """Render `gaussians` from C cameras of one image size over backgrounds `bgs` (C, 3) in one backend call."""
    means = gaussians.get_xyz if means is None else means
    quats = gaussians.params["quats"] if rotations is None else rotations
    if not with_features:
        features = None
    elif features is None:
        features = gaussians.get_features
    opacities = gaussians.get_opacity
    if mask is not None:
        opacities = opacities * mask
    viewmats, Ks, width, height = camera_tensors(cameras, means.device, means.dtype)
    backend = backend or ("gsplat" if means.is_cuda else "reference")
    if backend not in BACKENDS:
        raise ValueError(f"unknown render backend {backend!r}; choose one of {sorted(BACKENDS)}")
    out = BACKENDS[backend](
        means, quats, torch.exp(gaussians.params["scales"]), opacities, gaussians.get_shs,
        gaussians.active_sh_degree, features, viewmats, Ks, width, height, bgs, depth_ratio, near_plane, far_plane,
    )
    if mask is not None:
        out["info"]["radii"] = out["radii"] = out["radii"] * mask[:, None]
    return _finish(out, viewmats, Ks, with_surf_normal)


def render_each(
    cameras: list[Camera],
    models: list[GaussianModel],
    bgs: Tensor,
    *,
    means: list[Tensor | None] | None = None,
    rotations: list[Tensor | None] | None = None,
    with_features: bool | list[bool] = False,
    with_surf_normal: bool = True,
    backend: str | None = None,
    depth_ratio: float = 0.0,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
) -> list[dict]:
    """`render(cameras[i], models[i], bgs[i], means=means[i], rotations=rotations[i], with_features=with_features[i])`
    for every i (cameras of one image size): the same dictionaries, each `info` for its model's `Densifier`. A model
    may appear more than once (stage 4 draws its canonical model deformed in one view and as it is in another).

    With gsplat and one SH degree the models' surfels are concatenated and drawn in one call, camera i drawing only
    model i's: one projection, tile binning (one host synchronisation instead of one per model) and rasterization
    for all, and one autograd graph. Models that want no features get zero feature channels there (no gradient).
    Otherwise each model is rendered on its own.
    """
    count = len(models)
    means, rotations = means or [None] * count, rotations or [None] * count
    wanted = [with_features] * count if isinstance(with_features, bool) else list(with_features)
    options = dict(with_surf_normal=with_surf_normal, backend=backend, depth_ratio=depth_ratio,
                   near_plane=near_plane, far_plane=far_plane)
    if not _drawn_together(models, backend):
        return [render(camera, model, bg, means=xyz, rotations=quats, with_features=feats, **options)
                for camera, model, bg, xyz, quats, feats in zip(cameras, models, bgs, means, rotations, wanted)]
    views = camera_tensors(cameras, models[0].device, models[0].get_xyz.dtype)
    batch, info, ranges = _render_joint(views, models, bgs, means, rotations, wanted, **options)
    results = []
    for camera, (start, stop) in enumerate(ranges):
        view = _view(batch, camera, slice(start, stop))
        if not wanted[camera]:
            view["features"] = None
        results.append({**view, "info": _model_info(info, camera, start, stop)})
    return results


def render_stacked(
    cameras: list[Camera],
    models: list[GaussianModel],
    bgs: Tensor,
    *,
    with_surf_normal: bool = True,
    backend: str | None = None,
    depth_ratio: float = 0.0,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
) -> tuple[dict[str, Tensor | None], list[dict]]:
    """`render_each(cameras, models, bgs)` without features, its image maps stacked over the cameras: (C, X, H, W)
    for every image key of the module docstring (None where absent), with the cameras' "viewmats" (C, 4, 4) and "Ks"
    (C, 3, 3) it drew with; and each model's `info`. With gsplat's joint call the stack is the call's own output (no
    copy), so a loss over all C images needs one graph and one input copy per map, not C."""
    options = dict(with_surf_normal=with_surf_normal, backend=backend, depth_ratio=depth_ratio,
                   near_plane=near_plane, far_plane=far_plane)
    count = len(models)
    views = camera_tensors(cameras, models[0].device, models[0].get_xyz.dtype)
    if not _drawn_together(models, backend):
        outs = render_each(cameras, models, bgs, **options)
        images = {key: None if outs[0][key] is None else torch.stack([out[key] for out in outs]) for key in IMAGE_KEYS}
        infos = [out["info"] for out in outs]
    else:
        batch, info, ranges = _render_joint(views, models, bgs, [None] * count, [None] * count, [False] * count,
                                            **options)
        images = {key: batch[key] for key in IMAGE_KEYS}
        infos = [_model_info(info, camera, start, stop) for camera, (start, stop) in enumerate(ranges)]
    return {**images, "viewmats": views[0], "Ks": views[1]}, infos


def _drawn_together(models: list[GaussianModel], backend: str | None) -> bool:
    """Whether `render_each` draws these models in one gsplat call (several models of one SH degree on gsplat)."""
    backend = backend or ("gsplat" if models[0].device.type == "cuda" else "reference")
    return backend == "gsplat" and len(models) > 1 and len({m.active_sh_degree for m in models}) == 1


def _render_joint(views: tuple[Tensor, Tensor, int, int], models: list[GaussianModel], bgs: Tensor,
                  means: list[Tensor | None], rotations: list[Tensor | None], wanted: list[bool],
                  **options) -> tuple[dict, dict, list[tuple]]:
    """One gsplat call drawing model i's surfels (or `means[i]` / `rotations[i]`) in camera i only (`views`: the
    cameras' `camera_tensors`): the `_finish`ed batch, gsplat's info and each model's surfel range [start, stop) in
    the concatenation."""
    counts = [model.num_points for model in models]
    ends = itertools.accumulate(counts)
    ranges = [(end - n, end) for end, n in zip(ends, counts)]
    viewmats, Ks, width, height = views
    out = render_gsplat(
        torch.cat([m.get_xyz if xyz is None else xyz for m, xyz in zip(models, means)]),
        torch.cat([m.params["quats"] if quats is None else quats for m, quats in zip(models, rotations)]),
        torch.exp(torch.cat([m.params["scales"] for m in models])), torch.cat([m.get_opacity for m in models]),
        torch.cat([m.get_shs for m in models]), models[0].active_sh_degree, _joint_features(models, wanted),
        viewmats, Ks, width, height, bgs, options["depth_ratio"], options["near_plane"], options["far_plane"],
        ranges=ranges,
    )
    return _finish(out, viewmats, Ks, options["with_surf_normal"]), out["info"], ranges


def _model_info(info: dict, camera: int, start: int, stop: int) -> dict:
    """The `info` of the model drawn in `camera` (surfels start..stop-1 of a joint call), for its `Densifier`."""
    rows = (slice(camera, camera + 1), slice(start, stop))
    return {**info, "radii": info["radii"][rows], "means2d": info["means2d"][rows], "depths": info["depths"][rows],
            "n_cameras": 1, "gradient_2dgs": info["gradient_2dgs"][camera]}


def _joint_features(models: list[GaussianModel], wanted: list[bool]) -> Tensor | None:
    """The concatenated feature channels (sum N_i, F) of models drawn together: the model's own where `wanted`, zeros
    elsewhere; None when no model wants them."""
    if not any(wanted):
        return None
    shapes = {None if m.get_features is None else m.get_features.shape[1] for m, want in zip(models, wanted) if want}
    if None in shapes or len(shapes) > 1:
        raise ValueError(f"models drawn together with features need feature channels of one size, got {shapes}")
    channels = shapes.pop()
    return torch.cat([model.get_features if want else model.get_xyz.new_zeros(model.num_points, channels)
                      for model, want in zip(models, wanted)])


def _finish(out: dict, viewmats: Tensor, Ks: Tensor, with_surf_normal: bool) -> dict:
    """A backend's output with the depth normals (None unless `with_surf_normal`), and its radii (C, N, 2) as each
    surfel's largest radius (C, N) and visibility (C, N)."""
    surf_normal = depth_to_normal(out["depth"], viewmats, Ks) if with_surf_normal else None
    return {**out, "surf_normal": surf_normal, "radii": out["radii"].amax(dim=-1),
            "visibility_filter": (out["radii"] > 0).all(dim=-1)}


def _view(batch: dict, camera: int, surfels: slice = slice(None)) -> dict:
    """One camera's entries of a `_finish`ed batch (without "info"): its images, and the radii and visibility of
    `surfels`."""
    view = {key: None if value is None else value[camera] for key, value in batch.items() if key != "info"}
    view["radii"], view["visibility_filter"] = view["radii"][surfels], view["visibility_filter"][surfels]
    return view


def camera_tensors(cameras: list[Camera], device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor, int, int]:
    """viewmats (C, 4, 4) and Ks (C, 3, 3) on `device`, and the common image size; no host-device sync."""
    if not cameras:
        raise ValueError("render_batch needs at least one camera")
    width, height = cameras[0].width, cameras[0].height
    for cam in cameras:
        if (cam.width, cam.height) != (width, height):
            raise ValueError(
                f"cameras of one batch must share the image size: {cameras[0].image_name} is {width}x{height}, "
                f"{cam.image_name} is {cam.width}x{cam.height}"
            )
    viewmats = torch.stack([cam.world_to_cam for cam in cameras]).to(device=device, dtype=dtype)
    Ks = torch.stack([_intrinsics(cam.fx, cam.fy, cam.cx, cam.cy, device, dtype) for cam in cameras])
    return viewmats, Ks, width, height


@functools.lru_cache(maxsize=4096)
def _intrinsics(fx: float, fy: float, cx: float, cy: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(3, 3) intrinsics on `device`, cached so that repeated renders do not copy them from the host again."""
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=dtype, device=device)

