"""GPU tests: the gsplat backend against the reference backend and raw gsplat (run with `pytest -m cuda -s`).

Both backends run the same float32 scene on the GPU. The reference reproduces gsplat's decisions (tile culling, 1/255
skip, transmittance stop, sort order), so differences come from float32 rounding (gsplat builds with fast math, its
backward recovers T by division, the reference uses cumulative products) and from the rare pairs that sit within
rounding of a discrete decision (alpha at 1/255, T at 1e-4 or 0.5, a radius at an integer). Tolerances below are
stated per quantity with the reason; measured differences are printed for the record.
"""
from __future__ import annotations

import math

import pytest
import torch
from gsplat import rasterization_2dgs, spherical_harmonics

from gaussian_renderer import render, render_batch, render_each, render_stacked
from scene.cameras import Camera
from scene.gaussian_model import LOG_THICKNESS, Densifier, GaussianModel
from utils.rotations import axis_angle_to_quat, quat_to_matrix

pytestmark = pytest.mark.cuda

WIDTH, HEIGHT, FOCAL = 120, 100, 110.0  # partial tiles on both axes
IMAGE_KEYS = (
    "render", "features", "alpha", "depth_expected", "depth_median", "rend_normal", "surf_normal", "rend_dist",
)


def cameras(device: str) -> list[Camera]:
    """Two views of a scene around (0, 0, 3): straight on, and turned 20° about y from a point off to the side."""
    turned = torch.eye(4)
    turned[:3, :3] = quat_to_matrix(axis_angle_to_quat(torch.tensor([0.0, math.radians(-20.0), 0.0])))
    turned[:3, 3] = -turned[:3, :3] @ torch.tensor([1.0, 0.2, 0.2])
    return [Camera(i, 0, "train", f"view{i}", WIDTH, HEIGHT, FOCAL, FOCAL, 61.3, 48.7, w2c.to(device))
            for i, w2c in enumerate([torch.eye(4), turned])]


def random_model(n: int, seed: int, device: str) -> GaussianModel:
    """n surfels with SH degree 3 and 5 feature channels, sizes from sub-pixel to ~8 px, opacities 0.05-0.95."""
    g = torch.Generator().manual_seed(seed)
    log_scale = math.log(0.004) + 2.5 * torch.rand(n, 1, generator=g) + 0.3 * torch.randn(n, 2, generator=g)
    params = {
        "means": (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([2.0, 1.6, 1.0]) + torch.tensor([0.0, 0.0, 3.0]),
        "scales": torch.cat([log_scale, torch.full((n, 1), LOG_THICKNESS)], dim=1),
        "quats": torch.randn(n, 4, generator=g),
        "opacities": torch.logit(0.05 + 0.9 * torch.rand(n, generator=g)),
        "sh0": torch.randn(n, 1, 3, generator=g) * 0.6,
        "shN": torch.randn(n, 15, 3, generator=g) * 0.1,
        "features": torch.randn(n, 5, generator=g),
    }
    model = GaussianModel({k: v.to(device).requires_grad_() for k, v in params.items()}, sh_degree=3)
    model.active_sh_degree = 3
    return model


def render_and_backward(model: GaussianModel, backend: str, depth_ratio: float) -> tuple[dict, dict]:
    """Render both cameras, back-propagate a fixed random weighting of every output; return outputs and gradients."""
    device = model.device
    cams = cameras(str(device))
    bgs = torch.tensor([[0.2, 0.5, 0.9], [1.0, 1.0, 1.0]], device=device)
    out = render_batch(cams, model, bgs, backend=backend, depth_ratio=depth_ratio)
    g = torch.Generator(device=device).manual_seed(7)
    loss = sum((out[key] * torch.rand(out[key].shape, generator=g, device=device)).sum() for key in IMAGE_KEYS
               if key != "depth_expected") + (out["depth_expected"] * out["alpha"].detach()).sum()
    out["info"]["gradient_2dgs"].retain_grad()
    for p in model.params.values():
        p.grad = None
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.params.items()}
    grads["gradient_2dgs"] = out["info"]["gradient_2dgs"].grad.clone()
    return out, grads


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@pytest.mark.parametrize("depth_ratio", [0.0, 1.0])
def test_gsplat_matches_reference(depth_ratio):
    model = random_model(4000, seed=0, device="cuda")
    gs, gs_grads = render_and_backward(model, "gsplat", depth_ratio)
    ref, ref_grads = render_and_backward(model, "reference", depth_ratio)

    print(f"\ngsplat vs reference, depth_ratio={depth_ratio} (2 cameras {WIDTH}x{HEIGHT}, 4000 surfels):")
    assert torch.equal(gs["radii"] > 0, ref["radii"] > 0)
    radius_diff = (gs["info"]["radii"] - ref["info"]["radii"]).abs()
    print(f"  radii: {int((radius_diff > 0).sum())} of {radius_diff.numel()} differ, max {int(radius_diff.max())}")
    assert radius_diff.max() <= 1 and (radius_diff > 0).float().mean() < 1e-3  # fast-math sqrt at integer edges
    visible = gs["visibility_filter"]
    means2d_diff = (gs["info"]["means2d"] - ref["info"]["means2d"])[visible].abs().max()
    print(f"  means2d: max |diff| {means2d_diff:.2e} px")
    assert means2d_diff < 1e-3

    covered = ref["alpha"] > 1e-3  # expected depth divides by alpha: compare where it is not tiny
    for key in IMAGE_KEYS:
        diff = (gs[key] - ref[key]).abs()
        if key == "depth_expected":
            diff = diff * covered
        frac = (diff > 1e-3).float().mean().item()
        print(f"  {key:15s} max {diff.max():.2e}  mean {diff.mean():.2e}  99.9% {diff.flatten().quantile(0.999):.2e}"
              f"  >1e-3: {100 * frac:.3f}% of values")
        # Float32 rounding gives ~1e-6 (measured on an H200: max 4e-5, surface normals 6e-4 where depth differences
        # of 1e-5 meet silhouettes); a pair that flips a discrete decision moves one pixel by up to one surfel's
        # weight (the median depth: by the depth gap between surfels), so only a tiny fraction may differ visibly.
        assert diff.mean() < 1e-5 and frac < 1e-3, key
    for name, grad in ref_grads.items():
        err = relative_error(gs_grads[name], grad)
        print(f"  grad {name:13s} relative L2 error {err:.2e}")
        if name == "gradient_2dgs":
            # Both are dL/dM[0:2, 2]·z (a pixel shift of the centre in the ray-splat kernel), but gsplat reads the
            # accumulating sum without synchronisation (each tile's last warp writes what it sees), so its value
            # may miss some pixels' contributions: compare per-surfel norms statistically.
            a, b = gs_grads[name].norm(dim=-1)[visible], grad.norm(dim=-1)[visible]
            corr = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
            print(f"  gradient_2dgs norm correlation {corr:.4f}, mean ratio {(a.mean() / b.mean()).item():.4f}")
            assert corr > 0.99 and err < 1e-2  # measured on an H200: 6e-5, correlation 1.000
        else:
            # float32 sums over ~1e5 pairs and the flipped pairs above; measured on an H200: <= 5e-5
            assert err < 1e-3, name
            if name == "scales":
                assert gs_grads[name][:, 2].abs().max() == 0  # the thickness column is not rendered


def test_backend_matches_gsplat_rasterization_2dgs():
    model = random_model(2000, seed=1, device="cuda")
    cams = cameras("cuda")
    bgs = torch.rand(2, 3, device="cuda")
    out = render_batch(cams, model, bgs)
    viewmats = torch.stack([c.world_to_cam for c in cams])
    Ks = torch.stack([c.K for c in cams])
    campos = torch.linalg.inv(viewmats)[:, :3, 3]
    rgb = spherical_harmonics(3, model.get_xyz[None] - campos[:, None], model.get_shs.expand(2, -1, -1, -1))
    colors = torch.cat([torch.clamp_min(rgb + 0.5, 0.0), model.get_features.expand(2, -1, -1)], dim=-1)
    raw = rasterization_2dgs(
        model.get_xyz, model.params["quats"], torch.exp(model.params["scales"]), model.get_opacity, colors, viewmats,
        Ks, WIDTH, HEIGHT, backgrounds=torch.cat([bgs, torch.zeros(2, 5, device="cuda")], dim=1),
        render_mode="RGB+ED", distloss=True,
    )
    rendered = raw[0].permute(0, 3, 1, 2)
    torch.testing.assert_close(out["render"], rendered[:, :3], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out["features"], rendered[:, 3:8], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out["depth"], rendered[:, 8:], rtol=1e-6, atol=1e-6)
    for key, index in (("alpha", 1), ("rend_dist", 4), ("depth_median", 5)):
        torch.testing.assert_close(out[key], raw[index].permute(0, 3, 1, 2), rtol=1e-6, atol=1e-6, msg=key)
    # normals are rotated to the world by R^T here and by an LU inverse of the view matrix in gsplat's wrapper, and
    # the depth normals come from the reference's construction (same formula, different float operation order)
    torch.testing.assert_close(out["rend_normal"], raw[2].permute(0, 3, 1, 2), rtol=0, atol=1e-5, msg="rend_normal")
    torch.testing.assert_close(out["surf_normal"], raw[3].permute(0, 3, 1, 2), rtol=0, atol=1e-4, msg="surf_normal")
    # gradients through our rasterizer (gsplat's backward without its device synchronise) match gsplat's own: the
    # same kernels, summed by atomics in a run-dependent order, hence a relative tolerance
    g = torch.Generator(device="cuda").manual_seed(3)
    ours = [out["render"], out["features"], out["depth"], out["alpha"], out["rend_dist"], out["depth_median"]]
    theirs = [rendered[:, :3], rendered[:, 3:8], rendered[:, 8:], *(raw[i].permute(0, 3, 1, 2) for i in (1, 4, 5))]
    weights = [torch.rand(x.shape, generator=g, device="cuda") for x in ours]
    grads = []
    for maps in (ours, theirs):
        for p in model.params.values():
            p.grad = None
        sum((w * x).sum() for w, x in zip(weights, maps)).backward(retain_graph=True)
        grads.append({name: p.grad.clone() for name, p in model.params.items() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() == {"means", "scales", "quats", "opacities", "sh0", "shN", "features"}
    for name, grad in grads[1].items():
        assert relative_error(grads[0][name], grad) < 1e-4, name


def test_densifier_and_fused_adam_on_gpu():
    model = random_model(3000, seed=2, device="cuda")
    model.setup_optimizers()
    densifier = Densifier(model, refine_start=0, refine_every=2, grad_threshold=1e-5, reset_every=1000)
    cams = cameras("cuda")
    n0 = model.num_points
    for step in range(3):
        out = render_batch(cams, model, torch.zeros(2, 3, device="cuda"))
        densifier.pre_backward(step, out["info"])
        (out["render"] - 0.5).abs().mean().backward()
        densifier.post_backward(step, out["info"])
        model.step_optimizers()
    print(f"\ndensifier on gsplat info: {n0} -> {model.num_points} surfels")
    assert model.num_points != n0
    assert all(opt.state[model.params[name]]["exp_avg"].shape[0] == model.num_points
               for name, opt in model.optimizers.items())


def test_render_each_matches_separate_renders():
    """Two models drawn in one call, each from its own camera (stage 2's two states), give each model's own render:
    the same images, gradients and densification statistics; so do the stacked images of `render_stacked`."""
    cams, bgs = cameras("cuda"), torch.tensor([[0.2, 0.5, 0.9], [1.0, 1.0, 1.0]], device="cuda")
    base = [random_model(3000, seed=3, device="cuda"), random_model(2000, seed=4, device="cuda")]
    results = {}
    for mode in ("each", "stacked", "separate"):
        models = [model.clone() for model in base]
        densifiers = []
        for model in models:
            model.setup_optimizers()
            densifiers.append(Densifier(model, refine_start=100, refine_every=100, reset_every=1000))
        if mode == "each":
            outs = render_each(cams, models, bgs)
        elif mode == "stacked":
            batch, infos = render_stacked(cams, models, bgs)
            outs = [{**{key: value[c] for key, value in batch.items()}, "info": infos[c]} for c in range(2)]
        else:
            outs = [render(cam, model, bg, with_features=False) for cam, model, bg in zip(cams, models, bgs)]
        for densifier, out in zip(densifiers, outs):
            densifier.pre_backward(1, out["info"])
        g = torch.Generator(device="cuda").manual_seed(5)
        keys = [key for key in IMAGE_KEYS if key not in ("features", "depth_expected")]
        sum((out[key] * torch.rand(out[key].shape, generator=g, device="cuda")).sum()
            for out in outs for key in keys).backward()
        for densifier, out in zip(densifiers, outs):
            densifier.post_backward(1, out["info"])
        results[mode] = {
            "images": [{key: out[key].detach() for key in keys} for out in outs],
            "radii": [out["info"]["radii"] for out in outs],
            "grads": [{name: p.grad.clone() for name, p in m.params.items() if p.grad is not None} for m in models],
            "stats": [(d.state["grad2d"].clone(), d.state["count"].clone()) for d in densifiers],
        }
    for each, separate in ((results["each"], results["separate"]), (results["stacked"], results["separate"])):
        _assert_same_renders(each, separate)


def _assert_same_renders(each: dict, separate: dict) -> None:
    """Images, radii, gradients and densification statistics of two ways of rendering the same two models."""
    for model in range(2):
        assert torch.equal(each["radii"][model], separate["radii"][model])
        for key, image in separate["images"][model].items():
            torch.testing.assert_close(each["images"][model][key], image, rtol=0, atol=1e-5, msg=key)
        assert each["grads"][model].keys() == separate["grads"][model].keys()
        for name, grad in separate["grads"][model].items():
            assert relative_error(each["grads"][model][name], grad) < 1e-4, name
        (grad2d, count), (grad2d_ref, count_ref) = each["stats"][model], separate["stats"][model]
        assert torch.equal(count, count_ref) and int(count.sum()) > 0
        assert relative_error(grad2d, grad2d_ref) < 1e-2  # gsplat accumulates it without synchronisation


def test_render_each_draws_one_model_deformed_and_as_it_is():
    """Stage 4's pair in one call: one model drawn with moved centres and changed rotations (no features) from one camera
    and as it is with its feature channels from the other gives the two separate renders' images, features, radii,
    parameter gradients and densification statistics."""
    cams, bgs = cameras("cuda"), torch.tensor([[0.2, 0.5, 0.9], [0.0, 0.0, 0.0]], device="cuda")
    turn = axis_angle_to_quat(torch.tensor([0.0, 0.0, math.radians(10.0)], device="cuda"))
    results = {}
    for mode in ("each", "separate"):
        model = random_model(3000, seed=6, device="cuda")
        model.setup_optimizers()
        densifier = Densifier(model, refine_start=100, refine_every=100, reset_every=1000)
        means = model.get_xyz + torch.tensor([0.05, -0.02, 0.1], device="cuda")
        quats = model.params["quats"] * turn  # a differentiable change of every rotation
        if mode == "each":
            outs = render_each(cams, [model, model], bgs, means=[means, None], rotations=[quats, None],
                               with_features=[False, True], with_surf_normal=False)
        else:
            outs = [render(cams[0], model, bgs[0], means=means, rotations=quats, with_features=False,
                           with_surf_normal=False),
                    render(cams[1], model, bgs[1], with_features=True, with_surf_normal=False)]
        assert outs[0]["features"] is None and outs[1]["features"].shape == (5, HEIGHT, WIDTH)
        densifier.pre_backward(1, outs[1]["info"])
        g = torch.Generator(device="cuda").manual_seed(8)
        keys = ("render", "alpha", "depth", "rend_normal", "rend_dist")
        loss = sum((out[key] * torch.rand(out[key].shape, generator=g, device="cuda")).sum() for out in outs for key in keys)
        (loss + (outs[1]["features"] * torch.rand(outs[1]["features"].shape, generator=g, device="cuda")).sum()).backward()
        densifier.post_backward(1, outs[1]["info"])
        results[mode] = {
            "images": [{key: out[key].detach() for key in keys} for out in outs],
            "features": outs[1]["features"].detach(),
            "radii": [out["info"]["radii"] for out in outs],
            "grads": {name: p.grad.clone() for name, p in model.params.items() if p.grad is not None},
            "stats": (densifier.state["grad2d"].clone(), densifier.state["count"].clone()),
        }
    each, separate = results["each"], results["separate"]
    for view in range(2):
        assert torch.equal(each["radii"][view], separate["radii"][view])
        for key, image in separate["images"][view].items():
            torch.testing.assert_close(each["images"][view][key], image, rtol=0, atol=1e-5, msg=key)
    torch.testing.assert_close(each["features"], separate["features"], rtol=0, atol=1e-5)
    assert each["grads"].keys() == separate["grads"].keys() >= {"means", "quats", "features"}
    for name, grad in separate["grads"].items():
        assert relative_error(each["grads"][name], grad) < 1e-4, name
    (grad2d, count), (grad2d_ref, count_ref) = each["stats"], separate["stats"]
    assert torch.equal(count, count_ref) and int(count.sum()) > 0
    assert relative_error(grad2d, grad2d_ref) < 1e-2
