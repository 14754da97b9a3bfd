"""README's results table from the committed suite result files: one row per file.

    python benchmarks/make_table.py                                   # print the table (benchmarks/results/*.json)
    python benchmarks/make_table.py --readme README.md                # and put it into README.md
    python benchmarks/make_table.py RESULT.json [RESULT.json ...]      # only these files

Rows are ordered by date. Columns: date, commit (`+` when the tree was dirty), GPU, set (with the share of it that
ran and the stages when not all), protocol (`auto`, or `given-types`: part count and types given to stage 3, a
different protocol), schedule, objects, objects that finished, then the run's means (`suite_results.aggregate`):
axis angle error (deg), axis position error (scene units), part motion error (revolute in degrees, prismatic in
scene units), joint-type accuracy and part-count accuracy (a failed object counts as wrong), Chamfer distance x1000
of the movable parts and of the whole object (where present), median seconds per finished object (stages 1-5).
Errors are means over the finished objects that have the number; the metric keys are those of
`evaluation.metrics.summarise` in each object's stage-5 `metrics.json`.

With `--readme FILE` the text between the lines `<!-- results:begin -->` and `<!-- results:end -->` of FILE is
replaced by the table; nothing else of the file changes. It is an error (and nothing is written) when the markers are
missing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.suite_results import (SUMMARY_COLUMNS, aggregate, cell, load_result, protocol_label,  # noqa: E402
                                      set_label)

RESULTS_DIR = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
HEADERS = ("Date", "Commit", "GPU", "Set", "Protocol", "Schedule", "Objects", "OK")


def table_row(result: dict) -> list[str]:
    agg = aggregate(result)
    commit = (result.get("commit") or "?")[:7] + ("+" if result.get("dirty") else "")
    gpu = result["machine"].get("gpu") or "none"
    if result["machine"].get("gpu_count", 0) > 1:
        gpu += f" x{result['machine']['gpu_count']}"
    return [result["date"][:10], commit, gpu, set_label(result), protocol_label(result), result["schedule"]["name"],
            str(agg["objects"]), str(agg["ok"]), *(cell(agg[key], decimals) for _, key, decimals in SUMMARY_COLUMNS)]


def markdown(results: list[dict]) -> str:
    headers = [*HEADERS, *(header for header, _, _ in SUMMARY_COLUMNS)]
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "---|" * 6 + "---:|" * (len(headers) - 6)]
    lines += ["| " + " | ".join(table_row(result)) + " |" for result in results]
    return "\n".join(lines) + "\n"


def replace_section(text: str, table: str, name: str = "README") -> str:
    """`text` with the lines between the marker lines replaced by `table`."""
    lines = text.splitlines(keepends=True)
    stripped = [line.strip() for line in lines]
    if stripped.count(BEGIN) != 1 or stripped.count(END) != 1:
        raise ValueError(f"{name} must contain the lines {BEGIN} and {END} once each")
    begin, end = stripped.index(BEGIN), stripped.index(END)
    if end < begin:
        raise ValueError(f"{name}: {END} comes before {BEGIN}")
    return "".join(lines[:begin + 1]) + "\n" + table + "\n" + "".join(lines[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", help="result files (default: every benchmarks/results/*.json)")
    parser.add_argument("--readme", help="replace the marked section of this file with the table")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.files] or sorted(RESULTS_DIR.glob("*.json"))
    try:
        results = [load_result(path) for path in paths]
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results.sort(key=lambda result: result["date"])
    table = markdown(results)
    print(table, end="")
    if args.readme:
        readme = Path(args.readme)
        try:
            text = replace_section(readme.read_text(), table, str(readme))
        except (OSError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        readme.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
