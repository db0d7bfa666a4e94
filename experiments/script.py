"""What every experiment script shares with ``lebm fit``'s way of refusing: its arguments' types,
its call of ``lebm``, and one line instead of a traceback.

- Argument types for ``argparse`` (:func:`positive_int`, :func:`positive_float`,
  :func:`existing_file`, :func:`existing_folder`): a budget of 0 or a negative sigma is refused
  before anything runs, in argparse's one line (``0`` used to read as "not given").
- :func:`run_lebm`: a ``lebm`` command in a child process; when it exits non-zero, its own line is
  already on the terminal, and the script stops with one more line (the exit code, nothing
  recorded), not a ``CalledProcessError`` traceback.
- :func:`run_main`: a script's ``main`` with its mistakes (a missing recipe, record or run folder;
  a value lebm refuses) said in one line, ``<script>: error: <what and the fix>``, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class ScriptError(Exception):
    """A mistake in what a script was given; its message names the problem and the fix."""


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (0 would read as "not given" in many scripts and run
    the recipe's whole budget)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (a sigma, a step size, a rate)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def existing_file(text: str) -> str:
    """An argparse type: a file that exists, as given or under the repository (a recipe, a
    record); the text as given."""
    if not (Path(text).is_file() or (REPO / text).is_file()):
        here = {os.getcwd(), str(REPO)}
        where = "" if Path(text).is_absolute() else f" (looked in {' and '.join(sorted(here))})"
        raise argparse.ArgumentTypeError(f"no file {text}{where}: check the path")
    return text


def existing_folder(text: str) -> Path:
    """An argparse type: a folder that exists (a run folder)."""
    path = Path(text)
    if not path.is_dir():
        where = "" if path.is_absolute() else f" (from {os.getcwd()})"
        raise argparse.ArgumentTypeError(f"no folder {text}{where}: give a run folder that exists")
    return path


def run_lebm(command: Sequence[str], what: str = "lebm") -> None:
    """Run ``command`` (a ``lebm`` or Python command) from the repository; when it fails, stop this
    script with one line (the child's own message is above it) and its exit code."""
    finished = subprocess.run(list(command), cwd=REPO)
    if finished.returncode != 0:
        script = Path(sys.argv[0]).name or "the script"
        sys.stderr.write(
            f"{script}: {what} stopped with exit code {finished.returncode} (its message is above); "
            "nothing was recorded\n"
        )
        raise SystemExit(finished.returncode if finished.returncode > 0 else 1)


def run_main(main: Callable[[], None]) -> None:
    """Run a script's ``main``: its mistakes in one line and exit code 2, not a traceback."""
    script = Path(sys.argv[0]).name or "the script"
    try:
        main()
    except subprocess.CalledProcessError as error:
        sys.stderr.write(f"{script}: a command stopped with exit code {error.returncode} (its message is above)\n")
        raise SystemExit(error.returncode or 1) from None
    except (ScriptError, FileNotFoundError, NotADirectoryError, IsADirectoryError, json.JSONDecodeError) as error:
        sys.stderr.write(f"{script}: error: {one_line(error)}\n")
        raise SystemExit(2) from None
    except ValueError as error:  # lebm's own refusals in Python (a constructor's check, a checkpoint's)
        sys.stderr.write(f"{script}: error: {one_line(error)}\n")
        raise SystemExit(2) from None


def one_line(error: BaseException) -> str:
    """An error's message on one line (a missing file's: its path)."""
    if isinstance(error, (FileNotFoundError, NotADirectoryError, IsADirectoryError)) and error.filename:
        return f"{error.strerror or 'not found'}: {error.filename}"
    text = " ".join(str(error).split())
    return text or type(error).__name__
