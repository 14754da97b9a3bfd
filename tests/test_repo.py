"""Repository contracts: CI runs exactly the README's test command; every numbered script exists and is executable."""
from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_test_command() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"The test command itself.*?```bash\n(.+?)\n```", text, re.S)
    assert match, "README.md must show the test command in a bash block after 'The test command itself'"
    return match.group(1).strip()


def test_ci_runs_the_readme_test_command() -> None:
    command = _readme_test_command()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines, f".ci/run must run README's test command {command!r}"


def test_numbered_scripts_exist_and_are_executable() -> None:
    names = ["1_get_mask.sh", "2_coarse.sh", "3_voxelize.sh", "4_train.sh", "5_render.sh", "demo.sh", "run_all.sh"]
    for name in names:
        path = ROOT / "scripts" / name
        assert path.is_file() and os.access(path, os.X_OK), f"scripts/{name} must exist and be executable"
        assert "common.sh" in path.read_text() or name == "demo.sh", f"scripts/{name} must source common.sh"
