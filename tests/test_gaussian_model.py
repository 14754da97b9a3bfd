"""Tests of the surfel model: creation, PLY I/O, optimisers, densification, and a CPU training smoke test."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from gaussian_renderer import render
from gaussian_renderer.sh import sh_to_rgb
from scene.gaussian_model import LOG_THICKNESS, Densifier, GaussianModel, LearningRates, exponential_lr
from test_renderer import camera, orbit_camera, surfels
from utils.image_utils import psnr
from utils.loss_utils import l1_loss, ssim
from utils.rotations import axis_angle_to_quat, quat_to_matrix


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small CPU tensors run fastest on one thread, and a busy shared machine makes two threads wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def grid_points(n: int = 4, spacing: float = 0.1) -> np.ndarray:
    axis = np.arange(n) * spacing
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)


def test_from_point_cloud_initialisation():
    xyz = grid_points()
    rgb = np.random.default_rng(0).uniform(size=xyz.shape)
    model = GaussianModel.from_point_cloud(xyz, rgb, sh_degree=3, num_features=5)
    n = len(xyz)
    assert model.num_points == n and model.num_features == 5 and model.max_sh_degree == 3
    assert model.active_sh_degree == 0
    # On a grid of spacing 0.1 the 3 nearest neighbours of every point are 0.1 away.
    torch.testing.assert_close(model.get_scaling, torch.full((n, 2), 0.1))
    torch.testing.assert_close(model.params["scales"][:, 2], torch.full((n,), LOG_THICKNESS))
    torch.testing.assert_close(model.get_opacity, torch.full((n,), 0.1))
    torch.testing.assert_close(sh_to_rgb(model.params["sh0"][:, 0]), torch.tensor(rgb, dtype=torch.float32))
    assert model.get_shs.shape == (n, 16, 3) and model.params["shN"].abs().max() == 0
    torch.testing.assert_close(model.get_rotation.norm(dim=1), torch.ones(n))
    assert model.get_features.shape == (n, 5) and model.get_features.abs().max() == 0
    again = GaussianModel.from_point_cloud(xyz, rgb, sh_degree=3, num_features=5)
    assert torch.equal(again.params["quats"], model.params["quats"])  # seeded
    for _ in range(5):
        model.oneup_sh_degree()
    assert model.active_sh_degree == 3


@pytest.mark.parametrize("xyz, rgb, message", [
    (np.zeros((0, 3)), np.zeros((0, 3)), "N >= 2"),
    (np.full((5, 3), np.nan), np.zeros((5, 3)), "NaN"),
    (np.zeros((5, 3)), np.zeros((4, 3)), "do not match"),
])
def test_from_point_cloud_rejects_bad_input(xyz, rgb, message):
    with pytest.raises(ValueError, match=message):
        GaussianModel.from_point_cloud(xyz, rgb)


def test_ply_round_trip_is_exact(tmp_path):
    g = torch.Generator().manual_seed(0)
    model = GaussianModel.from_point_cloud(grid_points(3), torch.rand(27, 3, generator=g).numpy(), sh_degree=2,
                                           num_features=3)
    with torch.no_grad():
        for p in model.params.values():
            p.add_(torch.randn(p.shape, generator=g))
        model.params["scales"][:, 2] = LOG_THICKNESS
    path = tmp_path / "point_cloud.ply"
    model.save_ply(path)
    assert [p.name for p in tmp_path.iterdir()] == ["point_cloud.ply"]  # no temporary left behind
    loaded = GaussianModel.load_ply(path)
    assert loaded.max_sh_degree == 2 and loaded.active_sh_degree == 2
    assert set(loaded.params) == set(model.params)
    for name, p in model.params.items():
        assert torch.equal(loaded.params[name], p.detach()), name
    names = [prop.name for prop in PlyData.read(str(path))["vertex"].properties]
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[9:33] == [f"f_rest_{i}" for i in range(24)]
    assert names[33:] == ["opacity", "scale_0", "scale_1", "rot_0", "rot_1", "rot_2", "rot_3", "feat_0", "feat_1",
                          "feat_2"]


def test_load_ply_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.ply"):
        GaussianModel.load_ply(tmp_path / "missing.ply")
    bad = tmp_path / "bad.ply"
    bad.write_text("not a ply")
    with pytest.raises(ValueError, match="bad.ply"):
        GaussianModel.load_ply(bad)
    vertex = np.zeros(3, dtype=[(name, "f4") for name in ("x", "y", "z", "opacity")])
    partial = tmp_path / "partial.ply"
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(partial))
    with pytest.raises(ValueError, match=r"partial.ply.*lacks properties \['f_dc_0'"):
        GaussianModel.load_ply(partial)
    model = GaussianModel.from_point_cloud(grid_points(2), np.zeros((8, 3)))
    with torch.no_grad():
        model.params["means"][0, 0] = math.nan
    nan_path = tmp_path / "nan.ply"
    model.save_ply(nan_path)
    with pytest.raises(ValueError, match="nan.ply.*NaN"):
        GaussianModel.load_ply(nan_path)


def test_clone_and_detach_copy_are_independent():
    model = GaussianModel.from_point_cloud(grid_points(2), np.zeros((8, 3)), num_features=2)
    frozen, twin = model.detach_copy(), model.clone()
    with torch.no_grad():
        model.params["means"].add_(1.0)
    assert not any(p.requires_grad for p in frozen.params.values())
    assert all(p.requires_grad for p in twin.params.values())
    torch.testing.assert_close(frozen.get_xyz + 1.0, model.get_xyz.detach())
    torch.testing.assert_close(twin.get_xyz.detach() + 1.0, model.get_xyz.detach())


def test_optimisers_learning_rates_and_freezing():
    model = GaussianModel.from_point_cloud(grid_points(2), np.zeros((8, 3)), num_features=2)
    model.setup_optimizers(LearningRates(features=0.5), spatial_scale=2.0, max_steps=100)
    lrs = {name: opt.param_groups[0]["lr"] for name, opt in model.optimizers.items()}
    assert lrs == pytest.approx({"means": 3.2e-4, "scales": 5e-3, "quats": 1e-3, "opacities": 5e-2, "sh0": 2.5e-3,
                                 "shN": 1.25e-4, "features": 0.5})
    assert all(len(opt.param_groups) == 1 for opt in model.optimizers.values())
    assert model.update_learning_rate(100) == pytest.approx(3.2e-6)
    assert model.update_learning_rate(50) == pytest.approx(math.sqrt(3.2e-4 * 3.2e-6))
    assert exponential_lr(500, 1.0, 0.01, 100) == pytest.approx(0.01)
    model.freeze("features")
    before = {name: p.detach().clone() for name, p in model.params.items()}
    for p in model.params.values():
        p.grad = torch.ones_like(p)
    model.step_optimizers()
    assert torch.equal(model.params["features"], before["features"])
    assert not torch.equal(model.params["means"], before["means"])
    assert all(p.grad is None for p in model.params.values())
    model.unfreeze("features")
    model.params["features"].grad = torch.ones_like(model.params["features"])
    model.step_optimizers()
    assert not torch.equal(model.params["features"], before["features"])
    with pytest.raises(KeyError, match="unknown parameters"):
        model.freeze("colours")


def _backward_through_render(model: GaussianModel, densifier: Densifier, step: int) -> None:
    out = render(camera(size=64, focal=100.0), model, torch.zeros(3))
    densifier.pre_backward(step, out["info"])
    ((out["render"] - 1.0) ** 2).sum().backward()
    densifier.post_backward(step, out["info"])


def test_densifier_clones_splits_prunes_and_resets():
    tilt = axis_angle_to_quat(torch.tensor([0.0, math.radians(30.0), 0.0]))  # the large surfel is tilted
    identity = torch.tensor([1.0, 0.0, 0.0, 0.0])
    model = surfels(
        [[-0.3, 0.0, 2.0], [0.3, 0.0, 2.0], [0.0, 0.3, 2.0], [0.0, 0.0, -2.0]],  # small, large, faint, behind
        quats=torch.stack([identity, tilt, identity, identity]),
        log_scales=torch.log(torch.tensor([[0.03] * 2, [0.2] * 2, [0.05] * 2, [0.05] * 2])),
        opacities=[0.5, 0.5, 0.001, 0.5],
    )
    model.setup_optimizers()
    # Scene scale 5: surfels up to 0.05 are "small" (cloned), larger ones split.
    densifier = Densifier(model, scene_scale=5.0, refine_start=0, refine_every=1, grad_threshold=1e-6, reset_every=1000)
    _backward_through_render(model, densifier, step=0)  # statistics only (refinement starts after step 0)
    model.step_optimizers()
    assert model.num_points == 4
    large = model.get_xyz.detach()[1].clone()
    _backward_through_render(model, densifier, step=1)
    # 4 surfels: the small one is cloned, the large one split in two, the faint one pruned, the hidden one kept.
    assert model.num_points == 5
    means = model.get_xyz.detach()
    near = lambda p: (means - torch.tensor(p)).norm(dim=1) < 1e-3  # noqa: E731 (one Adam step moved them a little)
    assert near([-0.3, 0.0, 2.0]).sum() == 2 and near([0.0, 0.0, -2.0]).sum() == 1 and near([0.0, 0.3, 2.0]).sum() == 0
    offsets = means[-2:] - large
    normal = quat_to_matrix(model.params["quats"][-1].detach())[:, 2]
    assert (offsets @ normal).abs().max() < 1e-6 and offsets.norm(dim=1).max() < 1.0  # in the surfel's plane
    torch.testing.assert_close(model.get_scaling[-2:].detach(), torch.full((2, 2), 0.2 / 1.6), rtol=0.02, atol=0)
    torch.testing.assert_close(model.params["scales"][:, 2].detach(), torch.full((5,), LOG_THICKNESS))
    for name, opt in model.optimizers.items():
        assert opt.param_groups[0]["params"][0] is model.params[name]
        assert opt.state[model.params[name]]["exp_avg"].shape[0] == 5, name
    model.step_optimizers()

    reset = Densifier(model, refine_start=10, reset_every=3)
    _backward_through_render(model, reset, step=3)
    assert model.num_points == 5 and model.get_opacity.max() <= 0.01 + 1e-6


@pytest.mark.parametrize("prune_after_stop", [True, False])
def test_densifier_prunes_transparent_surfels_after_densification_only_when_asked(prune_after_stop: bool) -> None:
    """After refine_stop nothing grows; with prune_after_stop the surfels below the pruning opacity still go every
    refine_every steps, with their Adam moments."""
    model = surfels([[-0.3, 0.0, 2.0], [0.3, 0.0, 2.0], [0.0, 0.3, 2.0]], opacities=[0.5, 0.001, 0.004])
    model.setup_optimizers()
    densifier = Densifier(model, refine_start=0, refine_stop=10, refine_every=5, grad_threshold=1e-9,
                          reset_every=1000, prune_after_stop=prune_after_stop)
    _backward_through_render(model, densifier, step=12)  # after the stop, not a refinement step: nothing changes
    model.step_optimizers()
    assert model.num_points == 3
    _backward_through_render(model, densifier, step=15)
    if not prune_after_stop:
        assert model.num_points == 3
        return
    assert model.num_points == 1 and float(model.get_opacity.detach()[0]) > 0.4
    torch.testing.assert_close(model.get_xyz.detach()[0], torch.tensor([-0.3, 0.0, 2.0]), rtol=0, atol=1e-2)
    for name, opt in model.optimizers.items():
        assert opt.state[model.params[name]]["exp_avg"].shape[0] == 1, name
    model.step_optimizers()


def test_densifier_statistics_match_gsplat():
    """The sync-free gradient statistics equal gsplat's own (boolean-indexed) accumulation over several renders."""
    from gsplat.strategy import DefaultStrategy

    model = surfels([[-0.3, 0.0, 2.0], [0.3, 0.1, 2.0], [0.0, 0.3, 2.5], [0.0, 0.0, -2.0]],
                    log_scales=torch.log(torch.full((4, 2), 0.05)), opacities=[0.5, 0.7, 0.3, 0.5])
    model.setup_optimizers()
    ours = Densifier(model, refine_start=100, reset_every=1000)
    reference = DefaultStrategy(key_for_gradient="gradient_2dgs")
    state = reference.initialize_state()
    for step in range(3):
        out = render(camera(size=64, focal=100.0), model, torch.zeros(3))
        ours.pre_backward(step, out["info"])
        ((out["render"] - 0.3 * step) ** 2).sum().backward()
        ours.post_backward(step, out["info"])
        reference._update_state(model.params, state, out["info"])
        model.step_optimizers()
    assert ours.state["count"].tolist() == state["count"].tolist() == [3.0, 3.0, 3.0, 0.0]
    torch.testing.assert_close(ours.state["grad2d"], state["grad2d"])
    assert state["grad2d"][:3].min() > 0


def test_densifier_needs_optimisers():
    with pytest.raises(ValueError, match="setup_optimizers"):
        Densifier(surfels([[0.0, 0.0, 2.0]]))


def test_training_smoke_raises_psnr():
    """200 Adam steps (with densification) on 4 views of a textured sphere of surfels raise PSNR by > 6 dB."""
    start = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(400, 3, generator=g), dim=1)
    axes = torch.nn.functional.normalize(torch.linalg.cross(torch.tensor([0.0, 0.0, 1.0]).expand_as(dirs), dirs), dim=1)
    facing_out = axis_angle_to_quat(axes * torch.acos(dirs[:, 2:]))  # surfel normals along the sphere normals
    truth = surfels(dirs, quats=facing_out, log_scales=torch.full((400, 2), math.log(0.12)),
                    opacities=torch.full((400,), 0.95), rgb=0.5 + 0.45 * dirs)
    cams = [orbit_camera([3.0 * math.cos(a), 3.0 * math.sin(a), 0.8], 32, uid=i)
            for i, a in enumerate(np.linspace(0, 2 * math.pi, 4, endpoint=False))]
    bg = torch.zeros(3)
    with torch.no_grad():
        targets = [render(cam, truth, bg)["render"] for cam in cams]

    noisy = dirs + 0.05 * torch.randn(400, 3, generator=g)
    model = GaussianModel.from_point_cloud(noisy, torch.full((400, 3), 0.5), sh_degree=1)
    model.setup_optimizers(max_steps=200)
    densifier = Densifier(model, refine_start=50, refine_stop=150, refine_every=50, reset_every=10_000)

    def mean_psnr() -> float:
        with torch.no_grad():
            return float(np.mean([psnr(render(c, model, bg)["render"], t).item() for c, t in zip(cams, targets)]))

    before = mean_psnr()
    for step in range(1, 201):
        model.update_learning_rate(step)
        if step % 100 == 0:
            model.oneup_sh_degree()
        i = step % len(cams)
        out = render(cams[i], model, bg)
        densifier.pre_backward(step, out["info"])
        loss = 0.8 * l1_loss(out["render"], targets[i]) + 0.2 * (1.0 - ssim(out["render"], targets[i]))
        loss.backward()
        densifier.post_backward(step, out["info"])
        model.step_optimizers()
    after = mean_psnr()
    elapsed = time.perf_counter() - start
    print(f"training smoke: PSNR {before:.2f} -> {after:.2f} dB, {model.num_points} surfels, {elapsed:.1f} s")
    assert after > before + 6.0  # measured: 10.1 -> 17.4 dB
