"""Forward+backward time of the surfel renderer at 800×800 on a GPU: raw gsplat against our `render_batch` wrapper.

    python benchmarks/render_bench.py [--runs 50] [--warmup 10] [--size 800]

Cases: 100k and 300k surfels (SH degree 3), RGB only or RGB + 8 feature channels, one camera or two in one call.
"raw" is the least code a gsplat user writes for the same outputs (activations, SH, one `rasterization_2dgs` call
with depth, normals and distortion); both back-propagate the same sum of all outputs. Times are per view (a
two-camera call divided by 2), the median of `--runs` CUDA-event-timed iterations after `--warmup`, raw and
wrapper alternating; prints a markdown table with the wrapper's overhead.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gsplat import rasterization_2dgs, spherical_harmonics  # noqa: E402

from gaussian_renderer import camera_tensors, render_batch  # noqa: E402
from scene.cameras import Camera  # noqa: E402
from scene.gaussian_model import LOG_THICKNESS, GaussianModel  # noqa: E402
from utils.rotations import axis_angle_to_quat, quat_to_matrix  # noqa: E402

OUTPUT_KEYS = ("render", "features", "alpha", "depth", "depth_median", "rend_normal", "surf_normal", "rend_dist")


def make_model(n: int, features: int, device: str) -> GaussianModel:
    """n surfels filling a 2×2×1 box 3 units in front of the first camera, ~1-4 px wide at 800 px."""
    g = torch.Generator().manual_seed(0)
    log_scale = math.log(0.004) + 1.5 * torch.rand(n, 1, generator=g) + 0.2 * torch.randn(n, 2, generator=g)
    params = {
        "means": (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([2.0, 2.0, 1.0]) + torch.tensor([0.0, 0.0, 3.0]),
        "scales": torch.cat([log_scale, torch.full((n, 1), LOG_THICKNESS)], dim=1),
        "quats": torch.randn(n, 4, generator=g),
        "opacities": torch.logit(0.1 + 0.8 * torch.rand(n, generator=g)),
        "sh0": torch.randn(n, 1, 3, generator=g) * 0.5,
        "shN": torch.randn(n, 15, 3, generator=g) * 0.05,
    }
    if features:
        params["features"] = torch.randn(n, features, generator=g)
    model = GaussianModel({k: v.to(device).requires_grad_() for k, v in params.items()}, sh_degree=3)
    model.active_sh_degree = 3
    return model


def make_cameras(count: int, size: int, device: str) -> list[Camera]:
    """`count` cameras near the origin looking down +z, each turned 5° further about y."""
    cams = []
    for i in range(count):
        w2c = torch.eye(4)
        w2c[:3, :3] = quat_to_matrix(axis_angle_to_quat(torch.tensor([0.0, math.radians(5.0 * i), 0.0])))
        focal = size / (2.0 * math.tan(math.radians(25.0)))
        cams.append(Camera(i, 0, "train", f"bench{i}", size, size, focal, focal, size / 2, size / 2, w2c.to(device)))
    return cams


def raw_gsplat(model: GaussianModel, cams: list[Camera], bgs: torch.Tensor) -> Callable[[], None]:
    """One forward+backward through `rasterization_2dgs` called directly."""
    viewmats, Ks, width, height = camera_tensors(cams, model.device, torch.float32)
    campos = torch.linalg.inv(viewmats)[:, :3, 3]
    C = len(cams)

    def step() -> None:
        p = model.params
        shs = torch.cat([p["sh0"], p["shN"]], dim=1)
        if "features" in p:
            rgb = spherical_harmonics(3, p["means"][None] - campos[:, None], shs.expand(C, -1, -1, -1))
            colors = torch.cat([torch.clamp_min(rgb + 0.5, 0.0), p["features"].expand(C, -1, -1)], dim=-1)
            sh_degree, backgrounds = None, torch.cat([bgs, bgs.new_zeros(C, p["features"].shape[1])], dim=1)
        else:
            colors, sh_degree, backgrounds = shs, 3, bgs
        outs = rasterization_2dgs(
            p["means"], p["quats"], torch.exp(p["scales"]), torch.sigmoid(p["opacities"]), colors, viewmats, Ks,
            width, height, sh_degree=sh_degree, backgrounds=backgrounds, render_mode="RGB+ED", distloss=True,
        )
        sum(o.sum() for o in outs[:6]).backward()

    return step


def wrapper(model: GaussianModel, cams: list[Camera], bgs: torch.Tensor) -> Callable[[], None]:
    """One forward+backward through our `render_batch`."""

    def step() -> None:
        out = render_batch(cams, model, bgs)
        sum(out[key].sum() for key in OUTPUT_KEYS if out[key] is not None).backward()

    return step


def time_ms(steps: list[Callable[[], None]], model: GaussianModel, runs: int, warmup: int) -> list[float]:
    """Median milliseconds of each of `steps`, run alternately so that clock drift affects all alike.

    Gradients are cleared between runs, outside the timed region.
    """
    times: list[list[float]] = [[] for _ in steps]
    for i in range(warmup + runs):
        for step, record in zip(steps, times):
            for p in model.params.values():
                p.grad = None
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            if i >= warmup:
                record.append(start.elapsed_time(end))
    return [statistics.median(record) for record in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--size", type=int, default=800)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("render_bench.py needs a CUDA GPU (gsplat's kernels); none is visible")

    print(f"{torch.cuda.get_device_name()}, {args.size}x{args.size}, forward+backward per view, "
          f"median of {args.runs} runs\n")
    print("| surfels | channels | cameras | raw gsplat ms | wrapper ms | overhead |")
    print("|---:|---|---:|---:|---:|---:|")
    for n in (100_000, 300_000):
        for features in (0, 8):
            model = make_model(n, features, "cuda")
            for count in (1, 2):
                cams = make_cameras(count, args.size, "cuda")
                bgs = torch.rand(count, 3, device="cuda")
                steps = [raw_gsplat(model, cams, bgs), wrapper(model, cams, bgs)]
                raw, ours = (ms / count for ms in time_ms(steps, model, args.runs, args.warmup))
                channels = "RGB" if not features else f"RGB+{features}"
                overhead = 100.0 * (ours / raw - 1.0)
                print(f"| {n // 1000}k | {channels} | {count} | {raw:.2f} | {ours:.2f} | {overhead:+.1f}% |")


if __name__ == "__main__":
    main()
