"""Command-line argument groups shared by the stages (3DGS-style), and scene-path helpers.

Each group is a plain object whose attributes are its defaults; constructing it registers one argparse group, and
`extract(args)` returns a namespace with just that group's values. A stage adds the groups it needs.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from utils.io_utils import read_json


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
        self.output_root = "outputs"
        self.resolution = -1
        self.sh_degree = 3
        self.data_device = "cuda"
        self.random_bg_color = False
        self.white_background = False
        self.depth_ratio = 0.0
        self.seed = 0
        super().__init__(parser, "Model", {
            "source_path": "data root holding <dataset>/<subset>/<scene>",
            "model_path": "output folder of this stage (default <output_root>/<dataset>/<subset>/<scene>/<stage name>)",
            "output_root": "root of all outputs: <output_root>/<dataset>/<subset>/<scene>/...",
            "resolution": "-1/1 native, 2/4/8 downscale, larger values = target width in pixels",
            "data_device": "device for images and training (cuda when available, else cpu)",
            "random_bg_color": "composite training images over a random background each iteration",
            "depth_ratio": "0 = expected depth, 1 = median depth (2DGS)",
        })


class PipelineParams(ParamGroup):
    """Renderer choice and how the training step's small kernels are launched."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.backend = "auto"
        self.cuda_graphs = True
        super().__init__(parser, "Pipeline", {
            "backend": "auto (CUDA -> gsplat, CPU -> reference), gsplat or reference",
            "cuda_graphs": "on CUDA, replay the image losses (and stage 4's deformation and part prior) from captured "
                           "CUDA graphs (utils/cuda_graphs.py) instead of launching their kernels one by one (same "
                           "values; --no-cuda_graphs to compare)",
        })


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
        self.lambda_dist = 0.1
        self.dist_from_iter = 3000
        self.lambda_opacity = 0.1
        self.opacity_from_iter = 15_000
        self.densify_from_iter = 500
        self.densify_until_iter = 15_000
        self.densification_interval = 100
        self.densify_grad_threshold = 2e-4
        self.opacity_reset_interval = 3000
        self.sh_increase_interval = 1000
        self.save_iterations = [7000, 30_000]
        super().__init__(parser, "Optimization", {
            # gsplat's distortion is sum_ij w_i w_j |z_i - z_j| in scene units (an L1 form), not 2DGS's squared NDC
            # form; coarse.py (LAMBDA_DIST note) explains the default.
            "lambda_dist": "weight of gsplat's L1 depth distortion (scene units), from --dist_from_iter; "
                           "0.1 for objects about 2 units across (>= 10 blurs colour and depth at silhouettes)",
            "lambda_depth": "weight of mean(log(1 + |D - D_gt|)) over valid depth (off when a view has no depth)",
            "lambda_normal": "weight of 2DGS normal consistency, from --normal_from_iter",
            "lambda_opacity": "weight of the opacity binarisation BCE(o, [o > 0.5]), from --opacity_from_iter",
            "opacity_from_iter": "start of the opacity binarisation: after the last opacity reset, since right after "
                                 "a reset every opacity is below 0.5 and Adam would drive them all to pruning",
            "save_iterations": "iterations at which the PLYs are written (the final iteration always is)",
        })


class RefinementParams(ParamGroup):
    """Stage 4 (geometry-motion alternating refinement): inputs, EM schedule, part-prior and joint settings."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.coarse_name = "coarse_gs"
        self.coarse_iter = 30_000
        self.joint_types = "auto"
        self.em_interval = 4000
        self.lambda_prior = 0.1
        self.static_class_weight = 1.2
        self.lambda_smooth = 0.1
        self.knn = 4
        self.lambda_anchor = 1.0
        self.anchor = "initial"
        self.init_static_logit = 2.0
        self.init_part_logit = 3.0
        self.init_reach = 2.0
        self.prismatic_switch_iter = 10_000
        self.prismatic_switch_angle = 10.0
        self.joint_lr_init = 1e-3
        self.joint_lr_final = 1e-5
        self.logit_lr = 1e-2
        self.checkpoint_iterations = [5000, 10_000, 15_000, 20_000]
        self.log_interval = 500
        self.one_render_call = True
        super().__init__(parser, "Refinement", {
            "joint_types": "auto (stage 3's types: arguments/joint_types.json or its guess) or e.g. s,r,p",
            "em_interval": "iterations per E or M phase (starts with E)",
            "anchor": "initial: keep the undeformed model close to renders of its frozen initial self (paper); "
                      "data: fit the canonical state's training images instead",
            "prismatic_switch_iter": "at this iteration a revolute joint below --prismatic_switch_angle degrees "
                                     "becomes prismatic unless its type was given (table or --joint_types); "
                                     "0 disables",
            "checkpoint_iterations": "iterations at which the model and a resume checkpoint are saved "
                                     "(the final iteration always is)",
            "init_reach": "surfels whose centre lies in no voxel of stage 3 (static or part) start in the class of "
                          "the nearest one within this many voxels (0: static, as in the paper)",
            "one_render_call": "on CUDA, draw each iteration's deformed and canonical views in one gsplat call "
                               "(gaussian_renderer.render_each; the same values as two renders, one host "
                               "synchronisation instead of two; --no-one_render_call: two renders)",
        })


def scene_dir(args: argparse.Namespace) -> Path:
    """`<source_path>/<dataset>/<subset>/<scene_name>`."""
    if not args.scene_name:
        raise SystemExit("--scene_name is required")
    return Path(args.source_path) / args.dataset / args.subset / args.scene_name


def iteration_dir(model_path: str | Path, iteration: int) -> Path:
    """`<model_path>/point_cloud/iteration_<iteration>`: where stages 2 and 4 save a model (stage 3 writes next to
    stage 2's)."""
    return Path(model_path) / "point_cloud" / f"iteration_{int(iteration)}"


def scene_output_dir(args: argparse.Namespace) -> Path:
    """`<output_root>/<dataset>/<subset>/<scene_name>`: where every stage writes for this scene."""
    if not args.scene_name:
        raise SystemExit("--scene_name is required")
    return Path(args.output_root) / args.dataset / args.subset / args.scene_name


JOINT_TYPES_FILE = Path(__file__).resolve().parent / "joint_types.json"
JOINT_TYPES = ("revolute", "prismatic")
_TYPE_NAMES = {"r": "revolute", "revolute": "revolute", "p": "prismatic", "prismatic": "prismatic"}
_STATIC_NAMES = ("s", "static")


def parse_joint_types(text: str) -> tuple[str, ...] | None:
    """Movable-part joint types of a `--joint_types` value like 's,r,p' (None for 'auto')."""
    if text == "auto":
        return None
    entries = [entry.strip().lower() for entry in text.split(",")]
    if len(entries) < 2 or entries[0] not in _STATIC_NAMES:
        raise ValueError(f"--joint_types {text!r}: expected 'auto' or a comma list starting with 's' for the "
                         "static part, e.g. s,r,p")
    bad = [entry for entry in entries[1:] if entry not in _TYPE_NAMES]
    if bad:
        raise ValueError(f"--joint_types {text!r}: unknown types {bad}; use r (revolute) or p (prismatic)")
    return tuple(_TYPE_NAMES[entry] for entry in entries[1:])


def listed_joint_types(path: Path, dataset: str, scene: str) -> tuple[str, ...] | None:
    """The scene's joint types from the per-scene table `path` if it lists the scene, else None.

    Accepts `{"<dataset>": {"<scene>": [...]}}` and `{"<scene>": [...]}`.
    """
    if not path.is_file():
        return None
    table = read_json(path, "joint type table")
    if not isinstance(table, dict):
        raise ValueError(f"{path} must hold a JSON object keyed by dataset or scene name")
    entry = table[dataset].get(scene) if isinstance(table.get(dataset), dict) else table.get(scene)
    if entry is None:
        return None
    if not isinstance(entry, list) or not entry or any(t not in JOINT_TYPES for t in entry):
        raise ValueError(f"{path}: the entry of {scene!r} must be a non-empty list of {JOINT_TYPES}, got {entry!r}")
    return tuple(entry)
