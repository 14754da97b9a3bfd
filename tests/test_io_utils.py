"""Atomic writes (utils/io_utils.py): the user's umask, errors naming the destination, no temporary files left."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from utils.io_utils import atomic_path, write_json
from utils.point_cloud import write_point_ply


@pytest.fixture()
def umask():
    """Set a umask for one test and restore the previous one."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_get_the_users_umask(tmp_path: Path, umask, mask: int, mode: int) -> None:
    umask(mask)
    write_json(tmp_path / "a" / "summary.json", {"x": 1})
    write_point_ply(tmp_path / "cloud.ply", np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32))
    for path in (tmp_path / "a" / "summary.json", tmp_path / "cloud.ply"):
        assert stat.S_IMODE(path.stat().st_mode) == mode


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_failed_write_names_the_destination(tmp_path: Path) -> None:
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OSError, match=f"cannot write {folder / 'metrics.json'}"):
            write_json(folder / "metrics.json", {})
    finally:
        folder.chmod(0o755)


def test_an_error_while_writing_names_the_destination_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "model.ply"
    with pytest.raises(OSError, match=f"cannot write {target}: No space left on device"):
        with atomic_path(target):
            raise OSError(28, "No space left on device")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):  # other errors pass through unchanged, and the temporary file goes
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise ValueError("not an I/O error")
    assert list(tmp_path.iterdir()) == []
