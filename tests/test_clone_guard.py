"""The test session's clone check (``tests/helpers/clone_guard.py``, used by tests/conftest.py)
on a folder of its own (device: CPU, files only)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers.clone_guard import changes, clone_files


def test_the_clone_check_names_each_file_written_added_or_removed_and_skips_caches_and_environments(
    tmp_path: Path,
) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "kept.txt").write_text("a")
    (tmp_path / "runs" / "gone.txt").write_text("b")
    (tmp_path / "record.json").write_text("{}")
    for cache in ("__pycache__", ".venv/lib"):
        (tmp_path / cache).mkdir(parents=True)
    (tmp_path / ".venv" / "pyvenv.cfg").write_text("home = /usr")
    before = clone_files(tmp_path)
    assert set(before) == {"runs/kept.txt", "runs/gone.txt", "record.json"}

    (tmp_path / "record.json").write_text('{"changed": 1}')
    os.utime(tmp_path / "runs" / "kept.txt", ns=(0, before["runs/kept.txt"][1]))  # read, not written
    (tmp_path / "runs" / "gone.txt").unlink()
    (tmp_path / "runs" / "new.txt").write_text("c")
    (tmp_path / "__pycache__" / "m.pyc").write_bytes(b"")
    (tmp_path / ".venv" / "lib" / "site.py").write_text("")
    assert changes(before, clone_files(tmp_path)) == [
        "written: record.json",
        "added: runs/new.txt",
        "removed: runs/gone.txt",
    ]
