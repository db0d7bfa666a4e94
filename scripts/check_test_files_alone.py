"""Run test files one at a time, each in a fresh Python process, and say which fail alone.

A test that passes only after another test has run (one that put a module on ``sys.path``, wrote a
file or filled a cache) passes in the full suite and fails when a user runs its file, or its one
test, alone. This script runs each chosen file in its own ``pytest`` process (optionally with the
tests of each file in reverse order), so that such a dependency shows.

By default it checks the files that build modules on the fly (the page parts of
``docs/extending.md``, ``tests/models/cases.py``, scripts loaded by path, ``sys.path`` edits): the
ones where such dependencies arise. ``--all`` checks every test file.

Usage::

    python scripts/check_test_files_alone.py               # the files that build modules, default tier
    python scripts/check_test_files_alone.py --reverse     # ... each file's tests in reverse order too
    python scripts/check_test_files_alone.py --list        # only say which files it would run
    python scripts/check_test_files_alone.py tests/models/test_method_contract.py -k docs

Arguments after the file names (or after ``--``) go to pytest unchanged. Exit status: 0 when every
file passes alone, 1 otherwise.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Source text that marks a test file (or a helper it imports) as building modules on the fly.
MARKERS = ("page_parts", "from cases import", "load_script(", "sys.path", "spec_from_file_location", "sys.modules")
#: The default tier, as the README's test command runs it (``setup.cfg``'s ``addopts``).
DEFAULT_TIER = "not slow"
#: Runs pytest with each file's collected tests in reverse order (``--reverse``).
REVERSED_RUN = """
import sys
import pytest

class Reverse:
    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items):
        items.reverse()

sys.exit(pytest.main(sys.argv[1:], plugins=[Reverse()]))
"""


def test_files(root: Path = REPO / "tests") -> list[Path]:
    """Every ``test_*.py`` file under ``root``, sorted."""
    return sorted(root.rglob("test_*.py"))


def builds_modules(path: Path) -> bool:
    """Whether ``path``'s source names one of :data:`MARKERS`."""
    text = path.read_text(encoding="utf-8")
    return any(marker in text for marker in MARKERS)


def run_alone(path: Path, pytest_args: list[str], reverse: bool) -> tuple[bool, float, str]:
    """Run ``path`` alone in a fresh process: (passed, seconds, the last lines of its output)."""
    base = [sys.executable, "-c", REVERSED_RUN] if reverse else [sys.executable, "-m", "pytest"]
    # -n 0: the file in this one process, in its order (tests/conftest.py runs tests on every core otherwise)
    command = [*base, "-q", "-n", "0", "-p", "no:cacheprovider", str(path.relative_to(REPO)), *pytest_args]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
    # exit status 5: nothing collected (every test of the file deselected), not a failure
    return done.returncode in (0, 5), seconds, tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="test files (default: those that build modules)")
    parser.add_argument("--all", action="store_true", help="every test file, not only those that build modules")
    parser.add_argument("--reverse", action="store_true", help="also run each file's tests in reverse order")
    parser.add_argument("--list", action="store_true", help="print the files and stop")
    parser.add_argument("-m", dest="markers", default=DEFAULT_TIER, help=f"pytest -m expression ({DEFAULT_TIER!r})")
    args, pytest_args = parser.parse_known_args(argv)
    if args.files:
        files = [path.resolve() for path in args.files]
    else:
        files = [path for path in test_files() if args.all or builds_modules(path)]
    if args.list:
        print("\n".join(str(path.relative_to(REPO)) for path in files))
        return 0
    pytest_args = ["-m", args.markers, *[arg for arg in pytest_args if arg != "--"]]
    failed = []
    for path in files:
        for reverse in (False, True) if args.reverse else (False,):
            passed, seconds, tail = run_alone(path, pytest_args, reverse)
            label = f"{path.relative_to(REPO)}{' (reversed)' if reverse else ''}"
            summary = tail.splitlines()[-1].strip("= ") if tail else ""
            print(f"{'ok  ' if passed else 'FAIL'} {seconds:6.1f} s  {label}  ({summary})", flush=True)
            if not passed:
                failed.append(label)
                print("    " + tail.replace("\n", "\n    "), flush=True)
    print(f"{len(files)} files run alone: {len(failed)} failed" + (": " + ", ".join(failed) if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
