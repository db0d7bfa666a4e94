"""Where a test tier's time goes: runs ``python -m pytest -q --durations=0`` (the default tier, or
``-m slow``) in a fresh process and prints one JSON record: the tier's wall time, the summed time of
its tests per file, the machine's single-core speed before and after (a fixed pure-Python loop: on
a shared VM it drifts by half from one hour to the next), its load, the commit and the command::

    python benchmarks/test_tier_cost.py > benchmarks/results/test_tier_cost-DATE-COMMIT.json
    python benchmarks/test_tier_cost.py --tier slow --log /tmp/slow_tier.log
    python benchmarks/test_tier_cost.py --compare benchmarks/results/OLD.json --changed tests/cli
    git worktree add /tmp/old OLD_COMMIT && python benchmarks/test_tier_cost.py --clone /tmp/old

``--compare OLD.json`` adds the comparison with an earlier record measured at another speed of the
machine: ``speed_ratio`` is the median, over the files present in both whose summed time is over
1 s and that ``--changed`` (path prefixes) leaves out, of this record's time over the old one's; the
summed time divided by it is this tier's work at the old record's machine speed.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DURATION = re.compile(r"^\s*([\d.]+)s (call|setup|teardown)\s+(\S+)")
SUMMARY = re.compile(r"(\d+) passed.* in ([\d.]+)s")


def loop_seconds() -> float:
    """The seconds 10 million additions take in this Python: the machine's single-core speed now."""
    start = time.perf_counter()
    total = 0
    for number in range(10_000_000):
        total += number
    return round(time.perf_counter() - start, 3)


def commit(clone: Path) -> str | None:
    """The clone's commit (``+dirty`` with uncommitted changes under ``lebm/`` or ``tests/``)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=clone)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "lebm", "tests"], capture_output=True, text=True, cwd=clone
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def per_file(log: str) -> dict[str, float]:
    """``{test file: summed seconds of its tests' set-up, call and teardown}`` from a
    ``--durations=0`` log."""
    files: dict[str, float] = collections.defaultdict(float)
    for line in log.splitlines():
        found = DURATION.match(line)
        if found:
            files[found[3].split("::")[0]] += float(found[1])
    return {name: round(seconds, 2) for name, seconds in sorted(files.items(), key=lambda item: -item[1])}


def compared(record: dict[str, Any], old: dict[str, Any], changed: list[str]) -> dict[str, Any]:
    """This record's summed time at the old record's machine speed (see the module docstring)."""
    new_files, old_files = record["files"], old["files"]
    ratios = [
        new_files[name] / old_files[name]
        for name in new_files.keys() & old_files.keys()
        if old_files[name] > 1 and not name.startswith(tuple(changed))
    ]
    ratio = statistics.median(ratios)
    return {
        "old_commit": old.get("commit"),
        "files_read": len(ratios),
        "speed_ratio": round(ratio, 3),
        "summed_seconds_old": old["summed_seconds"],
        "summed_seconds_at_old_speed": round(record["summed_seconds"] / ratio, 1),
        "wall_seconds_at_old_speed": round(record["wall_seconds"] / ratio, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tier", choices=("default", "slow"), default="default")
    parser.add_argument("--compare", type=Path, help="an earlier record of this script")
    parser.add_argument("--changed", nargs="*", default=[], help="test path prefixes the change touched")
    parser.add_argument("--clone", type=Path, default=REPO, help="the clone to test (another commit)")
    parser.add_argument("--log", type=Path, help="a file to keep pytest's whole output in (failures, durations)")
    args = parser.parse_args()
    command = [sys.executable, "-m", "pytest", "-q", "--durations=0", "-p", "no:cacheprovider"]
    command += ["-m", "slow"] if args.tier == "slow" else []
    load_before, speed_before = [round(v, 2) for v in os.getloadavg()], loop_seconds()
    started = time.perf_counter()
    # the clone's own lebm first on the path: another commit's worktree tests its own code
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(args.clone), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, cwd=args.clone, env=environment)
    wall = time.perf_counter() - started
    if args.log is not None:
        args.log.write_text(done.stdout + done.stderr)
    summary = SUMMARY.search(done.stdout)
    files = per_file(done.stdout)
    record: dict[str, Any] = {
        "benchmark": "test_tier_cost",
        "tier": args.tier,
        "command": shlex.join(["python", *sys.argv]),
        "pytest": shlex.join(["python", *command[1:]]),
        "commit": commit(args.clone),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "exit_status": done.returncode,
        "passed": int(summary[1]) if summary else None,
        "wall_seconds": round(wall, 1),
        "pytest_seconds": float(summary[2]) if summary else None,
        "summed_seconds": round(sum(files.values()), 1),
        "loop_seconds_before": speed_before,
        "loop_seconds_after": loop_seconds(),
        "load_average_before": load_before,
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "files": files,
    }
    if args.compare is not None:
        record["compared"] = compared(record, json.loads(args.compare.read_text()), args.changed)
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
