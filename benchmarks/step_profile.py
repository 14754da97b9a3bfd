"""Where a stage-2 iteration's time goes on a GPU: wall time per iteration against the GPU's busy time, by phase.

    python benchmarks/step_profile.py --scene_dir data/gear/suite/cabinet [--resolution 400] [--grow 3000]

Runs stage 2's own `train_step` on both states of a scene (coarse.py's defaults): `--grow` iterations with
densification (as in the first half of the default schedule), then `--measure` timed iterations in each phase:
"densify" (statistics gathered every step) and "late" (after densification, with the normal, distortion and opacity
terms of the second half). For each phase it prints wall ms per iteration (host-synchronised at the ends only),
the GPU kernel time and kernel launches per iteration from `torch.profiler`, the operators with the most GPU and host
time, and every line that made the host wait for the GPU (`torch.cuda.set_sync_debug_mode`). When wall time is well
above GPU time, the loop is bound by the host (Python, kernel launches, synchronisations), not by the renderer.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
import warnings
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import coarse  # noqa: E402
from scene import Scene  # noqa: E402
from utils.train_utils import seed_everything  # noqa: E402

LAUNCH_CALLS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")


def timed(runs: list, first: int, count: int, args: argparse.Namespace, generator: torch.Generator) -> float:
    """Wall milliseconds per iteration of `count` iterations starting at `first` (synchronised at both ends)."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    for iteration in range(first, first + count):
        for run in runs:
            coarse.train_step(run, iteration, args, generator)
    torch.cuda.synchronize()
    return 1000.0 * (time.perf_counter() - start) / count


def profiled(runs: list, first: int, count: int, args: argparse.Namespace, generator: torch.Generator) -> None:
    """GPU ms per iteration and the top operators over `count` iterations."""
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for iteration in range(first, first + count):
            for run in runs:
                coarse.train_step(run, iteration, args, generator)
        torch.cuda.synchronize()
    events = prof.key_averages()
    gpu_us = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA)  # kernels only
    launches = sum(e.count for e in events if e.key in LAUNCH_CALLS)
    print(f"  GPU kernel time {gpu_us / 1000.0 / count:.2f} ms/iteration, {launches / count:.0f} kernel launches")
    print(events.table(sort_by="self_cuda_time_total", row_limit=12, max_name_column_width=50))
    print(events.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=50))


def synchronisations(runs: list, first: int, count: int, args: argparse.Namespace,
                     generator: torch.Generator) -> None:
    """Print each source line that synchronised the host with the GPU over `count` iterations, with its count."""
    sites: collections.Counter = collections.Counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for iteration in range(first, first + count):
                for run in runs:
                    coarse.train_step(run, iteration, args, generator)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    for w in caught:
        if "synchroniz" in str(w.message):
            sites[f"{w.filename}:{w.lineno}"] += 1
    print(f"  host-GPU synchronisations per iteration: {sum(sites.values()) / count:.1f}")
    for site, n in sites.most_common():
        print(f"    {n / count:.2f}/iteration  {site}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scene_dir", required=True, help="data/<dataset>/<subset>/<scene>")
    parser.add_argument("--resolution", type=int, default=400)
    parser.add_argument("--grow", type=int, default=3000, help="densifying iterations before measuring")
    parser.add_argument("--measure", type=int, default=300, help="timed iterations per phase")
    parser.add_argument("--profile", type=int, default=20, help="profiled iterations per phase")
    opts = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("step_profile needs CUDA", file=sys.stderr)
        return 2
    folder = Path(opts.scene_dir)
    args = coarse.parse_args(["--scene_name", folder.name, "--resolution", str(opts.resolution)])
    generator = seed_everything(0)
    device = torch.device("cuda")
    scene = Scene(folder, args.resolution, device, splits=("train",), load_masks=False)
    runs = [coarse.make_run(s, coarse.initial_model(scene, s, args, device), scene, args) for s in coarse.STATES]
    timed(runs, 1, opts.grow, args, generator)
    phases = {"densify": opts.grow + 1, "late": max(args.densify_until_iter, args.opacity_from_iter) + 1}
    for name, first in phases.items():
        ms = timed(runs, first, opts.measure, args, generator)
        counts = "/".join(str(run.model.num_points) for run in runs)
        print(f"phase {name} (iterations from {first}, {counts} surfels): {ms:.2f} ms/iteration wall "
              f"({1000.0 / ms:.0f} it/s)")
        profiled(runs, first + opts.measure, opts.profile, args, generator)
        synchronisations(runs, first + opts.measure + opts.profile, 5, args, generator)
    return 0


if __name__ == "__main__":
    sys.exit(main())
