"""CPU tests of the surfel renderer (reference backend): analytic profiles, geometry, compositing, gradients."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gsplat.cuda._torch_impl import _spherical_harmonics
from gsplat.cuda._torch_impl_2dgs import _fully_fused_projection_2dgs

from data_tools.cameras import look_at
from gaussian_renderer import _joint_features, render, render_batch
from gaussian_renderer.gsplat_backend import _densify_input, _range_mask
from gaussian_renderer.reference import depth_to_normal, project_surfels, rasterize_surfels
from gaussian_renderer.sh import eval_sh, rgb_to_sh, sh_to_rgb
from scene.cameras import Camera
from scene.gaussian_model import LOG_THICKNESS, GaussianModel
from utils.graphics_utils import blender_c2w_to_opencv_w2c
from utils.rotations import axis_angle_to_quat, matrix_to_quat, quat_to_matrix

IDENTITY = torch.eye(4)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small CPU tensors run fastest on one thread, and a busy shared machine makes two threads wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def camera(size: int = 64, focal: float = 100.0, world_to_cam: torch.Tensor = IDENTITY, uid: int = 0,
           centre: float | None = None) -> Camera:
    """A square pinhole camera; by default at the origin looking down +z with the principal point at the centre."""
    c = size / 2 if centre is None else centre
    return Camera(uid, 0, "train", f"view{uid}", size, size, focal, focal, c, c, world_to_cam.float())


def orbit_camera(eye: list[float], size: int, uid: int = 0) -> Camera:
    """Camera at `eye` looking at the origin (world z up), 40° field of view."""
    w2c = blender_c2w_to_opencv_w2c(look_at(np.asarray(eye, dtype=np.float64)))
    return camera(size, size / (2 * math.tan(math.radians(20))), torch.tensor(w2c), uid)


def surfels(means, quats=None, log_scales=None, opacities=None, rgb=None, features=None) -> GaussianModel:
    """A degree-0 model with the given surfels (tangent log scales (N, 2), opacities as probabilities)."""
    means = torch.as_tensor(means, dtype=torch.float32)
    n = len(means)
    quats = torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1) if quats is None else torch.as_tensor(quats).float()
    log_scales = torch.full((n, 2), math.log(0.1)) if log_scales is None else torch.as_tensor(log_scales).float()
    opacities = torch.full((n,), 0.5) if opacities is None else torch.as_tensor(opacities).float()
    rgb = torch.full((n, 3), 0.5) if rgb is None else torch.as_tensor(rgb).float()
    params = {
        "means": means,
        "scales": torch.cat([log_scales, torch.full((n, 1), LOG_THICKNESS)], dim=1),
        "quats": quats,
        "opacities": torch.logit(opacities),
        "sh0": rgb_to_sh(rgb)[:, None, :],
        "shN": torch.zeros(n, 0, 3),
    }
    if features is not None:
        params["features"] = torch.as_tensor(features).float()
    return GaussianModel({k: v.clone().requires_grad_() for k, v in params.items()}, sh_degree=0)


def test_single_surfel_alpha_profile_matches_gaussian():
    # σ = 0.1 · 100 px / 2 = 5 px; the surfel centre sits on the centre of pixel (32, 32).
    model = surfels([[0.0, 0.0, 2.0]], opacities=[0.8])
    out = render(camera(centre=32.5), model, torch.zeros(3))
    alpha = out["alpha"][0]
    for dx in (0, 5, 10, 15):  # 0, 1, 2, 3 σ along x
        expected = 0.8 * math.exp(-0.5 * (dx / 5.0) ** 2)
        assert alpha[32, 32 + dx].item() == pytest.approx(expected, rel=1e-5)
        assert alpha[32 - dx, 32].item() == pytest.approx(expected, rel=1e-5)
    assert alpha[32, 32 + 17].item() == 0.0  # 0.8·exp(-0.5·3.4²) < 1/255: skipped
    assert out["radii"].tolist() == [math.ceil(3.33 * 5.0)]
    assert out["visibility_filter"].tolist() == [True]
    torch.testing.assert_close(out["render"][:, 32, 32], torch.full((3,), 0.5 * 0.8))
    assert out["depth"][0, 32, 32].item() == pytest.approx(2.0)


def test_low_pass_filter_dominates_for_tiny_surfels():
    # σ = 0.05 px: the screen-space filter exp(-|d|²) takes over, as in gsplat.
    model = surfels([[0.0, 0.0, 2.0]], log_scales=[[math.log(0.001)] * 2], opacities=[0.9])
    alpha = render(camera(centre=32.0), model, torch.zeros(3))["alpha"][0]
    for (i, j), d2 in {(32, 32): 0.5, (32, 33): 2.5, (31, 33): 2.5}.items():  # pixel centres at +-0.5, 1.5 px
        assert alpha[i, j].item() == pytest.approx(0.9 * math.exp(-d2), rel=1e-5)


def test_projection_matches_gsplat_torch_reference():
    g = torch.Generator().manual_seed(1)
    n = 200
    means = torch.randn(n, 3, generator=g) * 0.5 + torch.tensor([0.0, 0.0, 3.0])
    quats, scales = torch.randn(n, 4, generator=g), torch.rand(n, 3, generator=g) * 0.2
    K = camera().K
    radii, means2d, depths, M, _ = _fully_fused_projection_2dgs(means, quats, scales, IDENTITY[None], K[None], 64, 64)
    proj = project_surfels(means, quats, scales[:, :2], IDENTITY, K, 64, 64, 0.01, 1e10)
    assert torch.equal(proj.radii, radii[0])
    torch.testing.assert_close(proj.means2d, means2d[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(proj.ray_transforms, M[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(proj.depths, depths[0])


def test_tilted_surfel_normal_and_centre_depth():
    # Camera 2 units from the origin on the -y side looking at it; surfel at the origin, tilted 40° about x.
    cam = orbit_camera([0.0, -2.0, 0.0], 48)
    q = axis_angle_to_quat(torch.tensor([math.radians(40.0), 0.0, 0.0]))
    model = surfels([[0.0, 0.0, 0.0]], quats=q[None], log_scales=[[math.log(0.2)] * 2], opacities=[0.9])
    out = render(cam, model, torch.zeros(3))
    covered = out["alpha"][0] > 0.05
    normal = quat_to_matrix(q)[:, 2]
    normal = normal if normal @ (cam.camera_center - 0.0) > 0 else -normal  # facing the camera
    rend = out["rend_normal"][:, covered] / out["alpha"][:, covered]
    torch.testing.assert_close(rend, normal[:, None].expand_as(rend), atol=1e-5, rtol=0)
    # gsplat renders each surfel's centre depth: the whole footprint has the centre's z (2.0 here).
    torch.testing.assert_close(out["depth_expected"][0, covered], torch.full((int(covered.sum()),), 2.0))
    torch.testing.assert_close(out["depth_median"][0, covered], torch.full((int(covered.sum()),), 2.0))


def test_depth_normals_of_a_tilted_plane_of_surfels():
    # A plane through (0, 0, 3) with normal n (tilted 30° towards -x) tiled by small opaque surfels.
    n = torch.tensor([-math.sin(math.radians(30)), 0.0, -math.cos(math.radians(30))])
    u = torch.tensor([math.cos(math.radians(30)), 0.0, -math.sin(math.radians(30))])
    v = torch.tensor([0.0, 1.0, 0.0])
    grid = torch.linspace(-0.8, 0.8, 81)
    a, b = torch.meshgrid(grid, grid, indexing="ij")
    means = torch.tensor([0.0, 0.0, 3.0]) + a.reshape(-1, 1) * u + b.reshape(-1, 1) * v
    R = torch.stack([u, v, -n], dim=1)  # columns: tangents and the normal (sign is irrelevant)
    q = matrix_to_quat(R)[None].repeat(len(means), 1)
    model = surfels(means, quats=q, log_scales=torch.full((len(means), 2), math.log(0.015)),
                    opacities=torch.full((len(means),), 0.95))
    out = render(camera(size=64, focal=120.0), model, torch.zeros(3))
    inner = (slice(16, 48), slice(16, 48))
    assert out["alpha"][0][inner].min() > 0.99
    # Depth of the ray-plane intersection at each pixel centre vs the rendered expectation of centre depths, which
    # leans to the front-most overlapping surfels: within their depth spread 3σ·sin 30° = 0.0225.
    px = (torch.arange(64) + 0.5 - 32) / 120.0
    rays = torch.stack(torch.broadcast_tensors(px[None, :], px[:, None], torch.ones(64, 64)), dim=0)
    plane_z = (n @ torch.tensor([0.0, 0.0, 3.0])) / torch.einsum("i,ihw->hw", n, rays)
    assert (out["depth"][0] - plane_z)[inner].abs().max() < 0.02
    surf = out["surf_normal"][(slice(None),) + inner]
    assert torch.rad2deg(torch.acos((surf * n[:, None, None]).sum(0).clamp(max=1))).max() < 5.0
    rend = out["rend_normal"][(slice(None),) + inner] / out["alpha"][(slice(None),) + inner]
    torch.testing.assert_close(rend, n[:, None, None].expand_as(rend), atol=1e-4, rtol=0)


def test_depth_to_normal_is_exact_on_a_plane():
    n = torch.nn.functional.normalize(torch.tensor([0.3, -0.2, -1.0]), dim=0)
    K = camera(size=16, focal=20.0).K
    px = (torch.arange(16) + 0.5 - 8) / 20.0
    rays = torch.stack(torch.broadcast_tensors(px[None, :], px[:, None], torch.ones(16, 16)), dim=0)
    depth = (n @ torch.tensor([0.0, 0.0, 2.0])) / torch.einsum("i,ihw->hw", n, rays)
    world_to_cam = torch.eye(4)
    world_to_cam[:3, :3] = quat_to_matrix(axis_angle_to_quat(torch.tensor([0.2, -0.4, 0.1])))
    world_to_cam[:3, 3] = torch.tensor([0.1, 0.2, 0.3])
    normals = depth_to_normal(depth[None, None], world_to_cam[None], K[None])[0]
    expected = world_to_cam[:3, :3].T @ n  # the camera-frame plane normal (facing the camera), in world frame
    torch.testing.assert_close(normals[:, 1:-1, 1:-1], expected[:, None, None].expand(3, 14, 14), atol=1e-5, rtol=0)
    assert normals[:, 0].abs().max() == 0 and normals[:, :, -1].abs().max() == 0


@pytest.mark.parametrize("reverse", [False, True])
def test_front_surfel_wins_and_back_one_adds_transmitted_part(reverse):
    means = [[0.0, 0.0, 2.0], [0.0, 0.0, 3.0]]
    rgb = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    order = [1, 0] if reverse else [0, 1]
    model = surfels([means[i] for i in order], log_scales=[[0.0, 0.0]] * 2, opacities=[[0.6, 0.5][i] for i in order],
                    rgb=[rgb[i] for i in order])
    bg = torch.tensor([0.0, 0.0, 1.0])
    out = render(camera(centre=32.5), model, bg)
    w_front, w_back = 0.6, 0.4 * 0.5
    torch.testing.assert_close(out["render"][:, 32, 32], torch.tensor([w_front, w_back, 1 - w_front - w_back]))
    assert out["alpha"][0, 32, 32].item() == pytest.approx(w_front + w_back)
    assert out["depth_expected"][0, 32, 32].item() == pytest.approx((2 * w_front + 3 * w_back) / (w_front + w_back))
    assert out["depth_median"][0, 32, 32].item() == pytest.approx(2.0)  # T = 0.4 < 0.5 after the front one
    assert out["rend_dist"][0, 32, 32].item() == pytest.approx(2 * w_front * w_back * (3.0 - 2.0), rel=1e-5)


def test_compositing_stops_and_skips_like_gsplat():
    # Two near-opaque surfels: the second would take T to 0.005² < 1e-4, so compositing stops before it.
    model = surfels([[0.0, 0.0, 2.0], [0.0, 0.0, 3.0]], log_scales=[[0.0, 0.0]] * 2, opacities=[0.995, 0.995],
                    rgb=[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    out = render(camera(centre=32.5), model, torch.zeros(3))
    torch.testing.assert_close(out["render"][:, 32, 32], torch.tensor([0.995, 0.0, 0.0]))
    # A surfel fainter than 1/255 is skipped entirely; a 0.999 clamp caps the rest.
    faint = surfels([[0.0, 0.0, 2.0]], log_scales=[[0.0, 0.0]], opacities=[0.003])
    assert render(camera(), faint, torch.zeros(3))["alpha"].max().item() == 0.0
    solid = surfels([[0.0, 0.0, 2.0]], log_scales=[[0.0, 0.0]], opacities=[0.9999])
    assert render(camera(centre=32.5), solid, torch.zeros(3))["alpha"][0, 32, 32].item() == pytest.approx(0.999)


def _random_scene(n: int, seed: int, scale: float):
    """float64 surfels around (0, 0, 2.5), mostly facing the camera, tangent scales in [scale, 1.5 scale]."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([0.6, 0.6, 0.5]) + torch.tensor([0.0, 0.0, 2.5])
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g) * 0.3 + torch.tensor([1.0, 0, 0, 0]), dim=1)
    scales = scale * (1.0 + 0.5 * torch.rand(n, 2, generator=g))
    opacities = 0.4 + 0.4 * torch.rand(n, generator=g)
    colors = torch.rand(1, n, 4, generator=g)
    return [t.double() for t in (means, quats, scales, opacities, colors)]


def test_gradcheck_reference_rasterizer():
    # Three surfels of 2-3 px σ (ray-splat kernel) and one of 0.3 px (low-pass filter), all over an 8×8 image.
    big, tiny = _random_scene(3, seed=3, scale=0.4), _random_scene(1, seed=5, scale=0.06)
    means, quats, scales, opacities, colors = [torch.cat([a, b], dim=-2 if a.dim() == 3 else 0)
                                               for a, b in zip(big, tiny)]
    K = camera(size=8, focal=12.0).K.double()[None]
    V = IDENTITY.double()[None]
    shifts = torch.zeros(1, 4, 2, dtype=torch.float64)
    bg = torch.tensor([[0.1, 0.2, 0.3, 0.0]], dtype=torch.float64)

    def fn(means, quats, scales, opacities, colors, shifts):
        out = rasterize_surfels(means, quats, scales, opacities, colors, V, K, 8, 8, bg, shifts)
        keys = ("colors", "alphas", "depth_accum", "normals", "distortion", "depth_median")
        return tuple(out[key] for key in keys)

    inputs = [t.clone().requires_grad_() for t in (means, quats, scales, opacities, colors, shifts)]
    assert fn(*inputs)[1].min() > 0.01  # every pixel sees a surfel
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_densification_gradient_is_the_screen_space_gradient():
    # For surfels facing the camera and wider than a pixel, moving every centre by δ pixels (the `shifts` whose
    # gradient is gradient_2dgs) is moving the principal point by δ: Σ_n dL/d shift_n = dL/d (cx, cy).
    means, _, scales, opacities, colors = _random_scene(6, seed=4, scale=0.3)
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64).repeat(6, 1)
    K = camera(size=16, focal=24.0).K.double()[None].requires_grad_()
    shifts = torch.zeros(1, 6, 2, dtype=torch.float64, requires_grad=True)
    out = rasterize_surfels(means, quats, scales, opacities, colors, IDENTITY.double()[None], K, 16, 16, None, shifts)
    weights = torch.rand(out["colors"].shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    (out["colors"] * weights).sum().backward()
    assert shifts.grad.abs().sum() > 0
    torch.testing.assert_close(shifts.grad[0].sum(0), torch.stack([K.grad[0, 0, 2], K.grad[0, 1, 2]]))


def test_sh_matches_gsplat_and_round_trips_colour():
    g = torch.Generator().manual_seed(0)
    coeffs, dirs = torch.randn(50, 16, 3, generator=g), torch.randn(50, 3, generator=g)
    for degree in range(4):
        torch.testing.assert_close(eval_sh(degree, coeffs, dirs), _spherical_harmonics(degree, dirs, coeffs))
    rgb = torch.rand(10, 3, generator=g)
    torch.testing.assert_close(sh_to_rgb(rgb_to_sh(rgb)), rgb)


def _subset(model: GaussianModel, keep: torch.Tensor, **replace: torch.Tensor) -> GaussianModel:
    """A copy of `model` with only the surfels in `keep`, some parameters replaced."""
    params = {k: replace.get(k, v.detach()[keep]).clone() for k, v in model.params.items()}
    return GaussianModel(params, model.max_sh_degree, model.active_sh_degree)


def test_render_dict_features_mask_overrides_and_batch():
    g = torch.Generator().manual_seed(2)
    means = (torch.rand(40, 3, generator=g) - 0.5) * 0.8
    model = surfels(means, log_scales=torch.full((40, 2), math.log(0.08)), features=torch.randn(40, 4, generator=g),
                    rgb=torch.rand(40, 3, generator=g))
    cams = [orbit_camera([0.0, -2.5, 0.0], 32), orbit_camera([0.8, -2.3, 0.5], 32, uid=1)]
    bgs = torch.rand(2, 3, generator=g)
    batch = render_batch(cams, model, bgs, depth_ratio=0.3)
    for c, cam in enumerate(cams):
        single = render(cam, model, bgs[c], depth_ratio=0.3)
        for key in ("render", "alpha", "depth", "rend_normal", "surf_normal", "rend_dist", "features", "radii"):
            torch.testing.assert_close(batch[key][c], single[key])
    out = render(cams[0], model, bgs[0], depth_ratio=0.3)
    shapes = {k: tuple(v.shape) for k, v in out.items() if k != "info"}
    assert shapes == {"render": (3, 32, 32), "alpha": (1, 32, 32), "depth": (1, 32, 32), "depth_expected": (1, 32, 32),
                      "depth_median": (1, 32, 32), "rend_normal": (3, 32, 32), "surf_normal": (3, 32, 32),
                      "rend_dist": (1, 32, 32), "features": (4, 32, 32), "radii": (40,), "visibility_filter": (40,)}
    assert out["alpha"].max() > 0.5
    torch.testing.assert_close(out["depth"], 0.7 * out["depth_expected"] + 0.3 * out["depth_median"])
    bare = render(cams[0], model, bgs[0], depth_ratio=0.3, with_features=False, with_surf_normal=False)
    assert bare["features"] is None and bare["surf_normal"] is None
    torch.testing.assert_close(bare["render"], out["render"])
    assert {"radii", "gradient_2dgs", "width", "height", "n_cameras", "gaussian_ids"} <= set(out["info"])
    assert out["info"]["gradient_2dgs"].shape == (1, 40, 2) and out["info"]["radii"].shape == (1, 40, 2)
    # Features composite over 0: a feature that is 1 everywhere renders as alpha.
    ones = render(cams[0], model, bgs[0], features=torch.ones(40, 1))["features"]
    torch.testing.assert_close(ones, out["alpha"])
    # A mask renders exactly the subset; masked-out surfels report radius 0.
    keep = torch.arange(40) % 3 == 0
    masked = render(cams[0], model, bgs[0], mask=keep)
    torch.testing.assert_close(masked["render"], render(cams[0], _subset(model, keep), bgs[0])["render"])
    assert (masked["radii"][~keep] == 0).all() and (masked["radii"][keep] > 0).any()
    # Overridden means/rotations render like a model that has them.
    everything = torch.ones(40, dtype=torch.bool)
    shifted, turned = means + torch.tensor([0.05, 0.0, 0.1]), torch.randn(40, 4, generator=g)
    moved = _subset(model, everything, means=shifted, quats=turned)
    torch.testing.assert_close(render(cams[0], model, bgs[0], means=shifted, rotations=turned)["render"],
                               render(cams[0], moved, bgs[0])["render"])


def test_render_rejects_bad_input():
    model = surfels([[0.0, 0.0, 2.0]])
    with pytest.raises(ValueError, match="share the image size"):
        render_batch([camera(32), camera(64)], model, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="unknown render backend"):
        render(camera(), model, torch.zeros(3), backend="optix")
    with pytest.raises(ValueError, match="CUDA tensors only"):
        render(camera(), model, torch.zeros(3), backend="gsplat")


def test_reference_speed_64px_5k_surfels():
    """A 64×64 render of 5k surfels with backward stays well under a second on 2 CPU cores (prints the time)."""
    import time

    g = torch.Generator().manual_seed(0)
    pts = torch.nn.functional.normalize(torch.randn(5000, 3, generator=g), dim=1)
    model = GaussianModel.from_point_cloud(pts, torch.rand(5000, 3, generator=g))
    with torch.no_grad():
        model.params["opacities"].fill_(2.0)
    cam = orbit_camera([0.9, -2.8, 0.6], 64)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        out = render(cam, model, torch.ones(3))
        (out["render"].sum() + out["depth"].sum() + out["rend_normal"].sum() + out["rend_dist"].sum()).backward()
        times.append(time.perf_counter() - start)
    print(f"reference 64x64, 5k surfels, forward+backward: {1000 * min(times):.0f} ms")
    assert out["alpha"].mean() > 0.3 and min(times) < 0.6


def test_render_each_ranges_mask_radii_and_split_the_densification_gradient():
    """`render_each`'s bookkeeping (CPU-testable; its gsplat call is checked in test_renderer_cuda.py): camera c keeps
    only surfels ranges[c], and each model's densification leaf receives exactly its block of the rasterizer's
    gradient."""
    ranges = [(0, 3), (3, 7)]
    mask = _range_mask(ranges, 7, torch.device("cpu"))
    assert mask.tolist() == [[1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1, 1]]
    densify, leaves = _densify_input(torch.zeros(2, 7, 2), ranges)
    assert densify.shape == (2, 7, 2) and not densify.any()
    assert [tuple(leaf.shape) for leaf in leaves] == [(1, 3, 2), (1, 4, 2)]
    upstream = torch.randn(2, 7, 2)
    (densify * upstream).sum().backward()
    torch.testing.assert_close(leaves[0].grad, upstream[0:1, 0:3])
    torch.testing.assert_close(leaves[1].grad, upstream[1:2, 3:7])
    plain, leaf = _densify_input(torch.zeros(2, 7, 2), None)
    assert plain is leaf and plain.requires_grad


def test_joint_features_zero_the_models_that_want_none():
    """Models drawn together (`render_each`) share one feature tensor: their own channels where wanted, zeros (no
    gradient) elsewhere, and an error when the wanted ones differ in size or are missing."""
    def model(n: int, channels: int | None) -> GaussianModel:
        params = {"means": torch.randn(n, 3), "scales": torch.zeros(n, 3), "quats": torch.randn(n, 4),
                  "opacities": torch.zeros(n), "sh0": torch.zeros(n, 1, 3), "shN": torch.zeros(n, 0, 3)}
        if channels is not None:
            params["features"] = torch.randn(n, channels, requires_grad=True)
        return GaussianModel(params, sh_degree=0)

    a, b = model(3, 4), model(2, 4)
    assert _joint_features([a, b], [False, False]) is None
    joint = _joint_features([a, b], [False, True])
    assert joint.shape == (5, 4) and not joint[:3].any() and torch.equal(joint[3:], b.get_features)
    joint.sum().backward()
    assert a.get_features.grad is None and torch.equal(b.get_features.grad, torch.ones(2, 4))
    with pytest.raises(ValueError, match="feature channels of one size"):
        _joint_features([a, model(2, 5)], [True, True])
    with pytest.raises(ValueError, match="feature channels of one size"):
        _joint_features([a, model(2, None)], [False, True])
