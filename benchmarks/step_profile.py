"""Where a training iteration's time goes on a GPU: wall time per iteration against the GPU's busy time, by phase.

    python benchmarks/step_profile.py --scene_dir data/gear/suite/cabinet [--resolution 400] [--grow 3000]
    python benchmarks/step_profile.py --stage 4 --scene_dir data/gear/suite/cabinet --output_root outputs \\
        --coarse_iter 30000 [--grow 3000]

Other options go to the stage's own parser (e.g. `--no-cuda_graphs`). Stage 2 (default) runs coarse.py's own
`train_step` on both states of a scene (its defaults): `--grow` iterations with densification (as in the first half
of the default schedule), then in each phase 20 untimed iterations (which capture the phase's CUDA graphs) and
`--measure` timed ones: "densify" (statistics gathered every
step) and "late" (after densification, with the normal, distortion and opacity terms of the second half). Stage 4
runs train.py's own `Refinement.step` from the scene's stage 1-3 outputs under `--output_root` (its defaults):
`--grow` iterations, then the phases "E" (the E phase that follows) and "M" (the next M phase). For each phase it
prints wall ms per iteration (host-synchronised at the ends only), the GPU kernel time, kernel launches and
synchronising CUDA runtime calls per iteration from `torch.profiler`, the operators with the most GPU and host time,
and the Python lines PyTorch reports as synchronising (`torch.cuda.set_sync_debug_mode`; syncs inside compiled
extensions such as gsplat's show up only among the runtime calls). When wall time is well above GPU time, the loop
is bound by the host (Python, kernel launches, synchronisations), not by the renderer. `--host_profile N` adds a
cProfile of N iterations per phase (functions by own and by cumulative host time) to see which Python and compiled
calls make up the host's share.
"""
from __future__ import annotations

import argparse
import collections
import cProfile
import io
import pstats
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import coarse  # noqa: E402
import train  # noqa: E402
from scene import Scene  # noqa: E402
from utils.train_utils import seed_everything  # noqa: E402

LAUNCH_CALLS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")
SYNC_CALLS = ("cudaDeviceSynchronize", "cudaStreamSynchronize")
Step = Callable[[int], object]  # one training iteration, given its number
WARMUP = 20  # untimed iterations at the start of each phase
SYNC_CHECKS = 5  # iterations per phase run in PyTorch's synchronisation debug mode


@dataclass(frozen=True)
class Profiled:
    """A stage's training loop to measure: its step, the first iteration of each phase, and its surfel counts."""

    step: Step
    phases: dict[str, int]
    counts: Callable[[], str]


def stage2(opts: argparse.Namespace, device: torch.device, generator: torch.Generator) -> Profiled:
    """Both states of stage 2 from their initial point clouds, stepped together as coarse.py does."""
    folder = Path(opts.scene_dir)
    args = coarse.parse_args(["--scene_name", folder.name, "--resolution", str(opts.resolution), *opts.stage_args])
    scene = Scene(folder, args.resolution, device, splits=("train",), load_masks=False)
    runs = [coarse.make_run(s, coarse.initial_model(scene, s, args, device), scene, args) for s in coarse.STATES]
    image_loss = coarse.image_loss_function(args)

    def step(iteration: int) -> None:
        coarse.train_step(runs, iteration, args, image_loss)

    phases = {"densify": opts.grow + 1, "late": max(args.densify_until_iter, args.opacity_from_iter) + 1}
    return Profiled(step, phases, lambda: "/".join(str(run.model.num_points) for run in runs))


def stage4(opts: argparse.Namespace, device: torch.device, generator: torch.Generator) -> Profiled:
    """Stage 4 from the scene's stage 1-3 outputs under --output_root."""
    folder = Path(opts.scene_dir)
    args = train.parse_args([
        "--source_path", str(folder.parents[2]), "--output_root", opts.output_root, "--dataset",
        folder.parents[1].name, "--subset", folder.parent.name, "--scene_name", folder.name, "--coarse_iter",
        str(opts.coarse_iter), "--resolution", str(opts.resolution), "--random_bg_color", *opts.stage_args])
    gaussians, articulation, canonical, type_given = train.load_model(args, device)
    scene = Scene(train.scene_dir(args), args.resolution, device, splits=("train",), load_masks=True)
    train.check_masks(scene, canonical, args)
    refinement = train.Refinement(args, scene, gaussians, articulation, canonical, device, type_given)
    first_e = next(it for it in range(opts.grow + 1, opts.grow + 4 * args.em_interval) if refinement.phase(it) == "E")
    first_m = next(it for it in range(first_e, first_e + 2 * args.em_interval) if refinement.phase(it) == "M")
    return Profiled(lambda iteration: refinement.step(iteration, generator), {"E": first_e, "M": first_m},
                    lambda: str(refinement.gaussians.num_points))


def run_steps(loop: Profiled, first: int, count: int) -> None:
    """Iterations `first` .. `first + count - 1` of `loop`."""
    for iteration in range(first, first + count):
        loop.step(iteration)


def timed(loop: Profiled, first: int, count: int) -> float:
    """Wall milliseconds per iteration of `count` iterations starting at `first` (synchronised at both ends)."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    run_steps(loop, first, count)
    torch.cuda.synchronize()
    return 1000.0 * (time.perf_counter() - start) / count


def profiled(loop: Profiled, first: int, count: int) -> None:
    """GPU ms, kernel launches and synchronising runtime calls per iteration, and the top operators, over `count`
    iterations."""
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run_steps(loop, first, count)
        torch.cuda.synchronize()
    events = prof.key_averages()
    gpu_us = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA)  # kernels only
    launches = sum(e.count for e in events if e.key in LAUNCH_CALLS)
    syncs = sum(e.count for e in events if e.key in SYNC_CALLS)
    print(f"  GPU kernel time {gpu_us / 1000.0 / count:.2f} ms/iteration, {launches / count:.0f} kernel launches, "
          f"{syncs / count:.1f} synchronising runtime calls")
    print(events.table(sort_by="self_cuda_time_total", row_limit=12, max_name_column_width=50))
    print(events.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=50))


def synchronisations(loop: Profiled, first: int, count: int) -> None:
    """Print each Python line that PyTorch reports as synchronising the host with the GPU over `count` iterations."""
    sites: collections.Counter = collections.Counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run_steps(loop, first, count)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    for w in caught:
        if "synchroniz" in str(w.message):
            sites[f"{w.filename}:{w.lineno}"] += 1
    print(f"  synchronising Python lines per iteration: {sum(sites.values()) / count:.1f}")
    for site, n in sites.most_common():
        print(f"    {n / count:.2f}/iteration  {site}")


def host_profile(loop: Profiled, first: int, count: int, top: int = 40) -> None:
    """The Python functions (and the compiled calls they make) with the most host time over `count` iterations,
    from cProfile: where a host-bound loop spends its time."""
    profiler = cProfile.Profile()
    profiler.enable()
    run_steps(loop, first, count)
    torch.cuda.synchronize()
    profiler.disable()
    for order in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats(order).print_stats(top)
        print(f"  host time by function over {count} iterations (cProfile, {order} order):")
        print("\n".join(line for line in text.getvalue().splitlines() if line.strip()))


def measure(loop: Profiled, opts: argparse.Namespace) -> None:
    """Grow the model, then time, profile and check every phase of `loop`."""
    run_steps(loop, 1, opts.grow)
    for name, first in loop.phases.items():
        run_steps(loop, first, WARMUP)  # a phase's first steps capture its CUDA graphs: not timed
        first += WARMUP
        ms = timed(loop, first, opts.measure)
        print(f"phase {name} (iterations from {first}, {loop.counts()} surfels): {ms:.2f} ms/iteration wall "
              f"({1000.0 / ms:.0f} it/s)")
        first += opts.measure
        profiled(loop, first, opts.profile)
        first += opts.profile
        synchronisations(loop, first, SYNC_CHECKS)
        if opts.host_profile:
            host_profile(loop, first + SYNC_CHECKS, opts.host_profile)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scene_dir", required=True, help="data/<dataset>/<subset>/<scene>")
    parser.add_argument("--stage", type=int, choices=(2, 4), default=2)
    parser.add_argument("--output_root", default="outputs", help="stage 4: where the scene's stage 1-3 outputs are")
    parser.add_argument("--coarse_iter", type=int, default=30000, help="stage 4: the coarse iteration to start from")
    parser.add_argument("--resolution", type=int, default=400)
    parser.add_argument("--grow", type=int, default=3000, help="iterations before measuring (densifying)")
    parser.add_argument("--measure", type=int, default=300, help="timed iterations per phase")
    parser.add_argument("--profile", type=int, default=20, help="profiled iterations per phase")
    parser.add_argument("--host_profile", type=int, default=0, help="iterations per phase to profile with cProfile")
    opts, opts.stage_args = parser.parse_known_args(argv)
    if not torch.cuda.is_available():
        print("step_profile needs CUDA", file=sys.stderr)
        return 2
    build, device = stage2 if opts.stage == 2 else stage4, torch.device("cuda")
    measure(build(opts, device, seed_everything(0, device)), opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
