"""The scripts of ``benchmarks/``, ``experiments/`` and ``scripts/`` as modules, for tests that call
their functions: ``load_script("benchmarks/train_step.py")``.

A script is imported under its file's name, as its neighbours import it (``import suite``), and
kept in ``sys.modules``: a second call returns the same module, as ``import`` does. Its folder is
on ``sys.path`` only while it loads (its own imports of its neighbours find them); a neighbour a
function imports later must be loaded first (``load_script("benchmarks/suite.py")``).

:func:`run_here` runs a script's command in the test's process, as from its command line."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import sys
from pathlib import Path
from types import ModuleType

import torch

REPO = Path(__file__).resolve().parents[2]


def load_script(path: str) -> ModuleType:
    """The module of the script at ``path`` (relative to the repository root), loaded once."""
    file = (REPO / path).resolve()
    name = file.stem
    module = sys.modules.get(name)
    if module is not None and Path(getattr(module, "__file__", None) or "").resolve() == file:
        return module
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"no script at {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # (a dataclass of the script looks its module up while it loads)
    folder = str(file.parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)
    return module


def run_here(script: str, *args: str) -> str:
    """What ``python script *args`` prints, run in this process: the script's ``main`` under
    ``sys.argv``, from the repository, with the script's folder on ``sys.path`` and one torch thread
    (each restored after). The script's own code runs as from its command line, without a new
    process importing torch and Lightning again; a script that fails raises here, and one whose
    ``main`` returns a status other than 0 fails."""
    module = load_script(script)
    printed = io.StringIO()
    threads, argv, folder, path = torch.get_num_threads(), sys.argv, os.getcwd(), list(sys.path)
    torch.set_num_threads(1)
    sys.argv = [script, *args]
    sys.path.insert(0, str((REPO / script).resolve().parent))
    os.chdir(REPO)
    try:
        with contextlib.redirect_stdout(printed):
            status = module.main()
        assert status in (None, 0), f"{script} ended with status {status}"
    finally:
        sys.argv, sys.path[:] = argv, path
        os.chdir(folder)
        torch.set_num_threads(threads)
    return printed.getvalue()
