"""The scripts of ``benchmarks/``, ``experiments/`` and ``scripts/`` as modules, for tests that call
their functions: ``load_script("benchmarks/train_step.py")``.

A script is imported under its file's name, as its neighbours import it (``import suite``), and
kept in ``sys.modules``: a second call returns the same module, as ``import`` does. Its folder is
on ``sys.path`` only while it loads (its own imports of its neighbours find them); a neighbour a
function imports later must be loaded first (``load_script("benchmarks/suite.py")``).

:func:`run_here` runs a script's command in the test's process, as from its command line."""

from __future__ import annotations

import importlib.util
import io
import json
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
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


@dataclass
class Finished:
    """What a command run in this process left (a script's, :func:`run_here`; lebm's,
    ``tests.helpers.cli_runner.run_cli_output``): its exit status and what it printed."""

    returncode: int
    stdout: str
    stderr: str


def run_here(script: str, *args: str, env: dict[str, str] | None = None) -> Finished:
    """``python script *args`` run in this process, as from its command line: the script's
    ``__main__`` under that ``sys.argv``, from the repository, its folder first on ``sys.path`` (its
    neighbours import as there), one torch thread and ``env`` set (each restored after), without a
    new process importing torch and Lightning again. ``sys.exit`` gives the status (a message: 1,
    the message on stderr); an exception that escapes the script fails the test, as a
    subprocess's traceback would."""
    stdout, stderr = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            patch.chdir(REPO)
            patch.setattr(sys, "argv", [script, *args])
            patch.syspath_prepend(str((REPO / script).resolve().parent))
            patch.setattr(sys, "stdout", stdout)
            patch.setattr(sys, "stderr", stderr)
            try:
                runpy.run_path(str(REPO / script), run_name="__main__")
                code: int | str | None = 0
            except SystemExit as stop:
                code = stop.code
    finally:
        torch.set_num_threads(threads)
    if isinstance(code, str):  # sys.exit("message"): Python prints it and exits with 1
        stderr.write(code + "\n")
        code = 1
    return Finished(returncode=code or 0, stdout=stdout.getvalue(), stderr=stderr.getvalue())


def printed_here(script: str, *args: str) -> str:
    """What ``python script *args`` prints, run in this process (:func:`run_here`); the script must
    exit with status 0."""
    finished = run_here(script, *args)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return finished.stdout


def run_json(script: str, *args: str) -> dict:
    """The last line ``python script *args`` prints, as JSON, run in this process
    (:func:`printed_here`)."""
    return json.loads(printed_here(script, *args).strip().splitlines()[-1])
