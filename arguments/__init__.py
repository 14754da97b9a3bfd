"""Typed settings of the stages and the command-line options made from them.

Every setting is a field of a frozen dataclass with its default and help text (`option`), so each default has one
home. An entry point composes the option groups it needs into one config class (e.g. `coarse.CoarseConfig`), adds
them to its parser with `add_options` (the group a field is declared in becomes its argparse group) and builds the
config from the parsed namespace with `build`; library code receives the config, never an argparse namespace.
The same flag means the same thing in every entry point: `--source_path` (the data root), `--dataset`, `--subset`,
`--scene_name`, `--output_root`, `--coarse_name`, `--coarse_iter`, `--model_name` / `--model_path`.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from scene.contract import COARSE_NAME, iteration_dir, scene_dir, scene_output_dir  # noqa: F401  (iteration_dir: re-export)
from scene.dataset_readers import MIN_IMAGE_SIDE
from utils.io_utils import read_json

VOXEL_SIZE = 0.01  # scene units: stage 2's initial point clouds, its larger-motion test and stage 3's voxel grid

T = TypeVar("T")


def option(default: Any, help: str = "", aliases: tuple[str, ...] = (), type: Any = None,  # noqa: A002
           choices: tuple | None = None, nargs: str | None = None, metavar: Any = None) -> Any:
    """A dataclass field that is also a command-line option `--<name>` (plus `aliases`); bools become
    `--x/--no-x`, tuples `nargs="+"` lists."""
    meta = {"help": help, "aliases": aliases, "type": type, "choices": choices, "nargs": nargs, "metavar": metavar}
    return field(default=default, metadata=meta)


def add_options(parser: argparse.ArgumentParser, config: type) -> None:
    """Add one option per field of the dataclass `config`, in one argparse group per dataclass that declares
    fields (titled by the first line of its docstring); a field redeclared in a subclass keeps its group and takes
    the subclass's default."""
    final = {f.name: f for f in dataclasses.fields(config)}
    added: set[str] = set()
    for cls in (*config.__mro__[1:], config):
        own = [name for name in vars(cls).get("__annotations__", {}) if name in final and name not in added]
        if not dataclasses.is_dataclass(cls) or not own:
            continue
        group = parser.add_argument_group((cls.__doc__ or cls.__name__).strip().splitlines()[0].rstrip("."))
        for name in own:
            _add_field(group, final[name])
            added.add(name)


def _add_field(group: argparse._ArgumentGroup, spec: dataclasses.Field) -> None:
    meta, default = spec.metadata, spec.default
    flags = [f"--{spec.name}", *meta.get("aliases", ())]
    kwargs: dict[str, Any] = {"default": default, "help": meta.get("help") or None, "dest": spec.name}
    if meta.get("metavar") is not None:
        kwargs["metavar"] = meta["metavar"]
    if meta.get("choices") is not None:
        kwargs["choices"] = meta["choices"]
    if isinstance(default, bool):
        kwargs["action"] = argparse.BooleanOptionalAction
    elif isinstance(default, tuple):
        kwargs["nargs"] = meta.get("nargs") or "+"
        kwargs["type"] = meta.get("type") or (type(default[0]) if default else str)
    else:
        kwargs["type"] = meta.get("type") or type(default)
        if meta.get("nargs") is not None:
            kwargs["nargs"] = meta["nargs"]
    group.add_argument(*flags, **kwargs)


def build(config: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """The dataclass `config` from parsed `args` (lists become tuples); `overrides` replace values."""
    values = {}
    for spec in dataclasses.fields(config):
        value = overrides.get(spec.name, getattr(args, spec.name, spec.default))
        values[spec.name] = tuple(value) if isinstance(value, list) else value
    return config(**values)


def new_parser(description: str) -> argparse.ArgumentParser:
    """An ArgumentParser that refuses abbreviated options (`--iter` is not `--iterations`)."""
    return argparse.ArgumentParser(description=description, allow_abbrev=False)


# --------------------------------------------------------------------------------------------- option groups
@dataclass(frozen=True)
class SceneOptions:
    """Scene: where the scene's data and outputs live, and what its images' background is."""

    source_path: str = option("data", "data root holding <dataset>/<subset>/<scene> (read only)",
                              aliases=("--data_root",))
    dataset: str = option("gear", "dataset folder under --source_path")
    subset: str = option("synthetic", "subset folder under --dataset")
    scene_name: str = option("", "scene folder under --subset (required)")
    output_root: str = option("outputs", "root of all outputs: <output_root>/<dataset>/<subset>/<scene>/...")
    white_background: bool = option(False, "the images' background is white: images are composited over white "
                                           "(else black), and RGB images without an alpha channel are accepted, "
                                           "their alpha keyed from the white background (without this flag such "
                                           "images are refused: alpha must mark the object)")

    @property
    def scene_dir(self) -> Path:
        """`<source_path>/<dataset>/<subset>/<scene_name>`: the input folder."""
        return scene_dir(self.source_path, self.dataset, self.subset, self.scene_name)

    @property
    def output_dir(self) -> Path:
        """`<output_root>/<dataset>/<subset>/<scene_name>`: where every stage writes for this scene."""
        return scene_output_dir(self.output_root, self.dataset, self.subset, self.scene_name)


@dataclass(frozen=True)
class ModelOptions:
    """Model: the output folder of this stage and how images are loaded and trained on."""

    model_path: str = option("", "output folder of this stage (default <output_root>/<dataset>/<subset>/<scene>/"
                                 "<model folder name>)")
    resolution: int = option(-1, f"-1/1 native, 2/4/8 downscale, larger values = target width in pixels "
                                 f"(at least {MIN_IMAGE_SIDE}, at most the native width)")
    sh_degree: int = option(3, "spherical-harmonics degree of the surfel colours")
    data_device: str = option("cuda", "device for images and training (cuda when available, else cpu)")
    random_bg_color: bool = option(False, "composite training images over a random background each iteration")
    depth_ratio: float = option(0.0, "0 = expected depth, 1 = median depth (2DGS)")
    seed: int = option(0, "seed of every random choice (views, backgrounds, initialisation)")


@dataclass(frozen=True)
class PipelineOptions:
    """Pipeline: renderer choice and how the training step's small kernels are launched."""

    backend: str = option("auto", "auto (CUDA -> gsplat, CPU -> reference), gsplat or reference",
                          choices=("auto", "gsplat", "reference"))
    cuda_graphs: bool = option(True, "on CUDA, replay the image losses (and stage 4's deformation and part prior) "
                                     "from captured CUDA graphs (utils/cuda_graphs.py) instead of launching their "
                                     "kernels one by one (same values; --no-cuda_graphs to compare)")

    @property
    def backend_name(self) -> str | None:
        """The renderer to force, or None for the automatic choice."""
        return None if self.backend == "auto" else self.backend


@dataclass(frozen=True)
class OptimizationOptions:
    """Optimization: learning rates, loss weights and densification schedule of the 2DGS optimisation."""

    iterations: int = option(30_000, "training iterations")
    position_lr_init: float = option(1.6e-4, "surfel-centre learning rate at the start (times the scene extent)")
    position_lr_final: float = option(1.6e-6, "surfel-centre learning rate at the end (times the scene extent)")
    feature_lr: float = option(2.5e-3, "learning rate of the colour (SH band 0; higher bands get 1/20)")
    opacity_lr: float = option(5e-2, "opacity learning rate")
    scaling_lr: float = option(5e-3, "scale learning rate")
    rotation_lr: float = option(1e-3, "rotation learning rate")
    lambda_dssim: float = option(0.2, "weight of 1 - SSIM against L1 in the photometric loss")
    lambda_depth: float = option(1.0, "weight of mean(log(1 + |D - D_gt|)) over valid depth (off when a view has "
                                      "no depth)")
    lambda_normal: float = option(0.05, "weight of 2DGS normal consistency, from --normal_from_iter")
    normal_from_iter: int = option(7000, "first iteration of the normal-consistency term")
    # gsplat's distortion is sum_ij w_i w_j |z_i - z_j| in scene units (an L1 form), not 2DGS's squared NDC form, so
    # 2DGS's weights do not transfer; about a tenth of the photometric loss at 400 px keeps silhouettes sharp.
    lambda_dist: float = option(0.1, "weight of gsplat's L1 depth distortion (scene units), from --dist_from_iter; "
                                     "0.1 for objects about 2 units across (>= 10 blurs colour and depth at "
                                     "silhouettes)")
    dist_from_iter: int = option(3000, "first iteration of the distortion term")
    lambda_opacity: float = option(0.1, "weight of the opacity binarisation BCE(o, [o > 0.5]), from "
                                        "--opacity_from_iter")
    opacity_from_iter: int = option(15_000, "start of the opacity binarisation: after the last opacity reset, since "
                                            "right after a reset every opacity is below 0.5 and Adam would drive "
                                            "them all to pruning")
    densify_from_iter: int = option(500, "first densification iteration")
    densify_until_iter: int = option(15_000, "densification stops at this iteration")
    densification_interval: int = option(100, "iterations between densification steps")
    densify_grad_threshold: float = option(2e-4, "screen-space gradient above which a surfel is split or cloned")
    opacity_reset_interval: int = option(3000, "iterations between opacity resets (0: never)")
    sh_increase_interval: int = option(1000, "iterations between increases of the active SH degree")
    save_iterations: tuple[int, ...] = option((7000, 30_000), "iterations at which the PLYs are written (the final "
                                                              "iteration always is)")


@dataclass(frozen=True)
class CoarseInput:
    """Stage-2 input: which stage-2 model and iteration a later stage reads."""

    coarse_name: str = option(COARSE_NAME, "stage-2 model folder inside the scene's output folder")
    coarse_iter: int = option(30_000, "the stage-2 iteration to read")


def default_model_path(config: SceneOptions, model_path: str, folder_name: str) -> str:
    """`model_path` when given, else `<scene output>/<folder_name>`."""
    return model_path or str(config.output_dir / folder_name)


# ----------------------------------------------------------------------------------------------- joint types
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
