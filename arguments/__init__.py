"""Command-line argument groups shared by the stages (3DGS-style), and scene-path helpers.

Each group is a plain object whose attributes are its defaults; constructing it registers one argparse group, and
`extract(args)` returns a namespace with just that group's values. A stage adds the groups it needs.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


class ParamGroup:
    """An argparse group built from the instance attributes set in `__init__` (bools become flags)."""

    def __init__(self, parser: argparse.ArgumentParser, name: str, helps: dict[str, str] | None = None) -> None:
        group = parser.add_argument_group(name)
        helps = helps or {}
        for key, value in vars(self).items():
            flag = "--" + key
            if isinstance(value, bool):
                group.add_argument(flag, default=value, action=argparse.BooleanOptionalAction, help=helps.get(key))
            elif isinstance(value, (list, tuple)):
                group.add_argument(flag, default=value, nargs="+", type=type(value[0]) if value else str, help=helps.get(key))
            else:
                group.add_argument(flag, default=value, type=type(value), help=helps.get(key))

    def extract(self, args: argparse.Namespace) -> argparse.Namespace:
        """The values of this group's options from parsed `args`."""
        return argparse.Namespace(**{key: getattr(args, key) for key in vars(self)})


class ModelParams(ParamGroup):
    """Where the scene and the outputs live, and how images are loaded."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.source_path = "data"
        self.dataset = "gear"
        self.subset = "synthetic"
        self.scene_name = ""
        self.model_path = ""
        self.resolution = -1
        self.sh_degree = 3
        self.data_device = "cuda"
        self.random_bg_color = False
        self.white_background = False
        self.depth_ratio = 0.0
        self.seed = 0
        super().__init__(parser, "Model", {
            "source_path": "data root holding <dataset>/<subset>/<scene>",
            "resolution": "-1/1 native, 2/4/8 downscale, larger values = target width in pixels",
            "data_device": "device for images and training (cuda when available, else cpu)",
            "random_bg_color": "composite training images over a random background each iteration",
            "depth_ratio": "0 = expected depth, 1 = median depth (2DGS)",
        })


class PipelineParams(ParamGroup):
    """Renderer choice."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.backend = "auto"
        super().__init__(parser, "Pipeline", {"backend": "auto (CUDA -> gsplat, CPU -> reference), gsplat or reference"})


class OptimizationParams(ParamGroup):
    """Learning rates, loss weights and densification schedule of the 2DGS optimisation (stage 2 defaults)."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.iterations = 30_000
        self.position_lr_init = 1.6e-4
        self.position_lr_final = 1.6e-6
        self.feature_lr = 2.5e-3
        self.opacity_lr = 5e-2
        self.scaling_lr = 5e-3
        self.rotation_lr = 1e-3
        self.lambda_dssim = 0.2
        self.lambda_depth = 1.0
        self.lambda_normal = 0.05
        self.normal_from_iter = 7000
        self.lambda_dist = 100.0
        self.dist_from_iter = 3000
        self.lambda_opacity = 0.1
        self.densify_from_iter = 500
        self.densify_until_iter = 15_000
        self.densification_interval = 100
        self.densify_grad_threshold = 2e-4
        self.opacity_reset_interval = 3000
        self.sh_increase_interval = 1000
        self.save_iterations = [7000, 30_000]
        super().__init__(parser, "Optimization")


def scene_dir(args: argparse.Namespace) -> Path:
    """`<source_path>/<dataset>/<subset>/<scene_name>`."""
    if not args.scene_name:
        raise SystemExit("--scene_name is required")
    return Path(args.source_path) / args.dataset / args.subset / args.scene_name


def load_scene_table(name: str) -> dict[str, Any]:
    """A per-scene JSON table shipped in `arguments/` (e.g. joint_types.json)."""
    return json.loads((Path(__file__).parent / name).read_text())
