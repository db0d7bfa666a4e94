"""Running the ``lebm`` command inside the test process (faster than a subprocess: no second
import of torch and Lightning). tests/test_cli.py runs it in a subprocess, as a user does."""

from __future__ import annotations

import os
from pathlib import Path

from lebm.cli import main as lebm_main

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> None:
    """``lebm <args>`` from the repository root, in this process."""
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        lebm_main(list(args))
    finally:
        os.chdir(cwd)
