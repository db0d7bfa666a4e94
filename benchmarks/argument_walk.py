"""The cost of walking an aten operation's arguments: lebm's ``leaves_of`` and ``map_leaves``
against torch's ``tree_leaves`` and ``tree_map``.

``lebm.testing``'s CPU emulator of captured chains and recorded iterations, and the check that
refuses host synchronisations, walk every operation's arguments (and the emulator its results). The
operations walked here are those of the quickstart's prior chain drawing ``--batch-size`` samples
(``model.generate``), logged once under a dispatch mode; each walk runs over all of them
``--repeats`` times, and the JSON gives the microseconds an operation each walk takes (median of
``--trials``), with ``walks_agree``: both give the same leaves and the same mapped values. Prints
one JSON line::

    python benchmarks/argument_walk.py
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_recipe  # noqa: E402

from lebm.config import build  # noqa: E402
from lebm.recording.torch_internals import (  # noqa: E402
    TorchDispatchMode,
    leaves_of,
    map_leaves,
    tree_leaves,
    tree_map,
)


class ArgumentLog(TorchDispatchMode):
    """Keeps every operation's ``(args, kwargs)`` and result."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, Any]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        result = func(*args, **(kwargs or {}))
        self.calls.append(((args, kwargs or {}), result))
        return result


def logged_calls(recipe: str, batch_size: int) -> list[tuple[Any, Any]]:
    """The arguments and results of every operation of the recipe's model drawing ``batch_size`` samples."""
    torch.manual_seed(0)
    model = build(load_recipe(recipe)["model"])
    log = ArgumentLog()
    with log:
        model.generate(batch_size)
    return log.calls


def per_operation_us(walk: Any, calls: list[tuple[Any, Any]], repeats: int, trials: int) -> float:
    """Median over ``trials`` of the microseconds ``walk(arguments)`` and ``walk(result)`` take an operation."""
    times = []
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(repeats):
            for arguments, result in calls:
                walk(arguments)
                walk(result)
        times.append((time.perf_counter() - start) / (repeats * len(calls)) * 1e6)
    return round(statistics.median(times), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/quickstart.yaml")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    calls = logged_calls(args.recipe, args.batch_size)
    same = lambda leaf: leaf  # noqa: E731
    agree = all(
        [id(x) for x in leaves_of(value)] == [id(x) for x in tree_leaves(value)]
        and repr(map_leaves(type, value)) == repr(tree_map(type, value))
        for call in calls
        for value in call
    )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {
        "benchmark": "argument_walk",
        "recipe": args.recipe,
        "operations": len(calls),
        "walks_agree": agree,
        "us_per_operation": {
            "leaves_of": per_operation_us(leaves_of, calls, args.repeats, args.trials),
            "tree_leaves": per_operation_us(tree_leaves, calls, args.repeats, args.trials),
            "map_leaves": per_operation_us(lambda v: map_leaves(same, v), calls, args.repeats, args.trials),
            "tree_map": per_operation_us(lambda v: tree_map(same, v), calls, args.repeats, args.trials),
        },
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "commit": commit or None,
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
