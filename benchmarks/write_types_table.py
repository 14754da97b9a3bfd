"""Write `benchmarks/joint_types_given.json`: the joint types of the benchmark objects, for the "given-types" protocol.

    python benchmarks/write_types_table.py [--protocol_file benchmarks/protocol.json] \
        [--out benchmarks/joint_types_given.json]

The papers' per-scene tables (PARIS, ArtGS, GEAR) give the method each object's part count and joint types; that is
the "types-given" protocol, and `run_suite.py run --protocol given-types` reproduces it by passing stage 3
`--num_parts K --joint_types s,...` from this table. Results of that protocol are a different measurement from the
default one (stage 3 finds the count and types itself) and are reported apart (their result files and table rows say
`given-types`).

The table is what a user would write by hand after looking at the object ("a door and two drawers"). Here it is
derived from the generator's object specification: for every object of both sets of `protocol.json`, the object is
built with `data_tools.objects.build_object(category, seed, open_state, ...)` (the description the generator renders
from) and its movable parts' joint kinds are listed in part order. Nothing is read from a generated scene folder (no
images, no ground-truth files) and nothing a stage wrote. Format (the one `run_suite.py` reads; scene names are
`<category>_seed<seed>`, unique across the sets):

    {"about": "...", "gear": {"cabinet_seed0": ["revolute"], "storage_seed0": ["prismatic", "prismatic", ...], ...}}
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.run_suite import DATASET, PROTOCOL_FILE, SETS, TYPES_TABLE, load_protocol  # noqa: E402

ABOUT = ("Joint types of the movable parts of the objects of benchmarks/protocol.json, for run_suite.py "
         "--protocol given-types (the papers' types-given protocol, reported apart from the default auto protocol). "
         "Written by benchmarks/write_types_table.py from the generator's object specification.")


def object_types(category: str, seed: int, open_state: str, options: dict) -> list[str]:
    """Joint kinds of the movable parts of the generator's object, in part order."""
    from data_tools.objects import build_object

    keywords = {key: options[key] for key in ("appearance", "orientation", "lighting", "motion") if key in options}
    spec = build_object(category, seed, open_state, **keywords)
    return [joint.kind for joint in spec.joints]


def build_table(protocol_file: Path) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for set_name in SETS:
        for obj in load_protocol(protocol_file, set_name)[1]:
            table[obj.scene] = object_types(obj.category, obj.seed, obj.open_state, obj.options)
    return table


def render(table: dict[str, list[str]]) -> str:
    """The table file's text: one scene per line."""
    rows = [f"    {json.dumps(scene)}: {json.dumps(types)}" for scene, types in table.items()]
    return "{\n  \"about\": " + json.dumps(ABOUT) + ",\n  " + json.dumps(DATASET) + ": {\n" + ",\n".join(rows) \
        + "\n  }\n}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol_file", default=str(PROTOCOL_FILE))
    parser.add_argument("--out", default=str(TYPES_TABLE))
    args = parser.parse_args(argv)
    table = build_table(Path(args.protocol_file))
    text = render(table)
    json.loads(text)  # well-formed
    Path(args.out).write_text(text)
    print(f"{args.out}: {len(table)} objects")
    return 0


if __name__ == "__main__":
    sys.exit(main())
