"""What the data's content digest costs (:mod:`lebm.data.content`): the first call on a set-up
DataModule (its label arrays hashed whole, its files' names and sizes, a fixed sample of their bytes)
and a repeated call (cached), against the settings-only fingerprint it extends. Prints one JSON line
with the commit, the command, the machine and its load::

    LEBM_DATA=../shared/data python benchmarks/data_content_cost.py            # the 70,000-digit pool
    LEBM_DATA=../shared/data python benchmarks/data_content_cost.py --repeats 50
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import run_facts  # noqa: E402

from lebm.data import MNISTAnomalyDataModule  # noqa: E402
from lebm.data.content import CACHE_ATTRIBUTE, data_content  # noqa: E402
from lebm.data.fingerprint import data_fingerprint  # noqa: E402


def commit() -> str | None:
    """The repository's commit (``+dirty`` with uncommitted changes), or None outside a clone."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "lebm"], capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty.strip() else "")


def median_seconds(work: Any, repeats: int) -> float:
    """The median wall time of ``repeats`` calls of ``work``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    load_before = [round(value, 2) for value in os.getloadavg()]
    module = MNISTAnomalyDataModule(root="$LEBM_DATA/mnist", anomaly_classes=[4], pool="full")
    module.setup()

    def first() -> None:
        module.__dict__.pop(CACHE_ATTRIBUTE, None)
        data_content(module)

    record = {
        "benchmark": "data_content_cost",
        "command": " ".join(["python", *sys.argv]),
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d"),
        "device": f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "pool": "MNIST full pool, 70,000 digits (4 gzipped IDX files)",
        "content": data_content(module),
        "first_call_ms": round(1000 * median_seconds(first, args.repeats), 3),
        "cached_call_ms": round(1000 * median_seconds(lambda: data_content(module), args.repeats), 4),
        "fingerprint_ms": round(1000 * median_seconds(lambda: data_fingerprint(module), args.repeats), 4),
        "repeats": args.repeats,
        **run_facts(load_before),
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
