"""Paper-style result table over many scenes' stage-5 `eval/metrics.json` files.

    python benchmarks/collect_results.py --root outputs [--model_name gear] [--csv outputs/results.csv]

Finds `<root>/**/<model_name>/eval/metrics.json` (every model folder when --model_name is empty), prints a markdown
table (one row per scene, then the mean over the scenes that have each number) and writes the same table as CSV
(default `<root>/results.csv`). Columns: axis angle error (deg), axis position error (scene units and the papers'
x10 display scaling), part motion error (revolute in degrees, prismatic in scene units), Chamfer distance x1000 of
the static part, the movable parts and the whole object (mean of the two states), PSNR. Empty cells are null.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.io_utils import read_json, write_text  # noqa: E402

# (header, metrics.json summary key, decimals)
COLUMNS = (
    ("Axis Ang (deg)", "axis_ang", 3),
    ("Axis Pos", "axis_pos", 4),
    ("Axis Pos x10", "axis_pos_x10", 3),
    ("Axis Offset", "axis_offset", 4),
    ("Motion rev (deg)", "motion_revolute_deg", 3),
    ("Motion pris (m)", "motion_prismatic_m", 4),
    ("CD-s", "cd_static", 3),
    ("CD-m", "cd_movable", 3),
    ("CD-w", "cd_whole", 3),
    ("Part Acc", "part_accuracy", 3),
    ("PSNR", "psnr", 2),
)


def find_metrics(root: Path, model_name: str) -> list[Path]:
    """Sorted `eval/metrics.json` paths under `root` (of model folders named `model_name` when given)."""
    pattern = f"**/{model_name}/eval/metrics.json" if model_name else "**/eval/metrics.json"
    return sorted(root.glob(pattern))


def scene_label(path: Path, metrics: dict, root: Path) -> str:
    """`<dataset>/<subset>/<scene>` from metrics.json, else the model folder's path relative to `root`."""
    keys = ("dataset", "subset", "scene")
    if all(isinstance(metrics.get(key), str) for key in keys):
        return "/".join(metrics[key] for key in keys)
    return str(path.parent.parent.relative_to(root))


def load_rows(paths: list[Path], root: Path) -> list[tuple[str, dict]]:
    """(scene label, summary dict) per metrics file; raises ValueError naming a file without a summary."""
    rows = []
    for path in paths:
        metrics = read_json(path, "metrics file")
        summary = metrics.get("summary") if isinstance(metrics, dict) else None
        if not isinstance(summary, dict):
            raise ValueError(f"metrics file {path} has no 'summary' dict; rerun render.py for that scene")
        rows.append((scene_label(path, metrics, root), summary))
    return rows


def column_means(rows: list[tuple[str, dict]]) -> dict:
    """Mean of each column over the scenes where it is a number (None when no scene has it)."""
    means = {}
    for _, key, _ in COLUMNS:
        values = [row[key] for _, row in rows if isinstance(row.get(key), (int, float))]
        means[key] = float(np.mean(values)) if values else None
    return means


def _cell(value: object, decimals: int) -> str:
    return f"{value:.{decimals}f}" if isinstance(value, (int, float)) else ""


def markdown_table(rows: list[tuple[str, dict]], means: dict) -> str:
    """The table as markdown: a row per scene, then the mean."""
    lines = ["| Scene | " + " | ".join(header for header, _, _ in COLUMNS) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    for label, row in [*rows, ("**mean**", means)]:
        lines.append(f"| {label} | " + " | ".join(_cell(row.get(key), dec) or "-" for _, key, dec in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def csv_table(rows: list[tuple[str, dict]], means: dict) -> str:
    """The table as CSV with full-precision numbers (empty = null); the last row is `mean`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["scene", *(key for _, key, _ in COLUMNS)])
    for label, row in [*rows, ("mean", means)]:
        writer.writerow([label, *("" if row.get(key) is None else row[key] for _, key, _ in COLUMNS)])
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Collect stage-5 metrics of many scenes into one table.")
    parser.add_argument("--root", default="outputs", help="folder searched recursively for eval/metrics.json")
    parser.add_argument("--model_name", default="gear", help="model folder name to collect ('' = any)")
    parser.add_argument("--csv", default=None, help="CSV output (default <root>/results.csv)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    paths = find_metrics(root, args.model_name)
    if not paths:
        print(f"error: no {args.model_name or '*'}/eval/metrics.json under {root}; run render.py (scripts/5_render.sh)"
              " first", file=sys.stderr)
        return 2
    try:
        rows = load_rows(paths, root)
    except (FileNotFoundError, ValueError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    means = column_means(rows)
    print(markdown_table(rows, means), end="")
    out = Path(args.csv) if args.csv else root / "results.csv"
    write_text(out, csv_table(rows, means))
    print(f"{len(rows)} scenes -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
