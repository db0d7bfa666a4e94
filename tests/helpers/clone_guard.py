"""The clone as the tests found it: every test writes under its own folder, never into the
checkout (a user's ``runs/``, the committed records). The session compares the clone's files
before and after, as CI does, so a test that writes there fails the run here first."""

from __future__ import annotations

import os
from pathlib import Path

#: Folders whose files are the tools' own caches, not the clone's (CI's list).
CACHES = frozenset({".git", "__pycache__", ".pytest_cache", ".ruff_cache"})


def clone_files(root: Path) -> dict[str, tuple[int, int]]:
    """``{path relative to root: (size, mtime in ns)}`` for every file of ``root`` outside the
    caches (the egg-info pip writes at install is the installer's, and a virtual environment made
    inside the clone, a folder holding ``pyvenv.cfg``, is the user's Python: both left out)."""
    files: dict[str, tuple[int, int]] = {}
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [
            name
            for name in subfolders
            if name not in CACHES and not name.endswith(".egg-info") and not Path(folder, name, "pyvenv.cfg").is_file()
        ]
        for name in names:
            path = Path(folder, name)
            try:
                status = path.stat()
            except FileNotFoundError:  # removed while walked
                continue
            files[str(path.relative_to(root))] = (status.st_size, status.st_mtime_ns)
    return files


def changes(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    """One line per file written, added or removed between the two listings, sorted."""
    lines = [f"written: {path}" for path in sorted(before.keys() & after.keys()) if before[path] != after[path]]
    lines += [f"added: {path}" for path in sorted(after.keys() - before.keys())]
    lines += [f"removed: {path}" for path in sorted(before.keys() - after.keys())]
    return lines
