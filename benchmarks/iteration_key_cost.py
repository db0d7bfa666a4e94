"""The host cost of a recorded iteration's key, per iteration, beside the eager iteration's time.

    python benchmarks/iteration_key_cost.py [--recipes quickstart|paper|all] [--iters 3] [--repeats 20]
        [--paper-batch-size N] [--quickstart-batch-size N] [--methods DAMC,...] [--write DIR]

With recorded iterations on, every training iteration does host work before it replays
(``IterationRecorder.run``): the cheap reasons to stay eager
(:func:`lebm.recording.recorded_iteration.quick_eager_reason`), what the method reads of the host
(``iteration_key()``), the check of the state's stamp (:class:`lebm.recording.key_stamp.StateStamp`:
the description of every module, attribute and optimiser is built again only when one of them was
replaced), the iteration's own parts of the key, and the check of the bindings of the code a
recording ran (:class:`lebm.recording.audit.Bindings`, made here by watching one eager iteration).
For every method's quickstart and paper-shape recipe, it times that work (median of
``--repeats`` at each of ``--iters`` iterations, after two warm-up iterations) inside a real eager
fit on the CPU, and once with the state described anew (``rebuild_us``: a fit's first iteration, or
one after a change), times the eager iteration itself (median), and prints one JSON line per recipe:
``key_us``, ``rebuild_us``, ``eager_iteration_ms``, their ratio (``key_share``), and the modules
and parameters the key describes. The data are random, of the recipe's shape and batch size
(``--paper-batch-size``: another for the paper shapes, whose eager iterations take seconds to
minutes on a CPU; the key does not depend on the batch size, and a smaller batch's shorter iteration
makes its share an upper bound; ``--quickstart-batch-size``: another for the quickstarts, as a
test of the script's output takes them). ``--write DIR`` also
writes the lines to ``DIR/iteration_key_cost-<date>-<commit>.jsonl`` and the table made from them
(:func:`table`) beside it, as ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import date
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import bare_trainer, describe_device, load_recipe, run_facts  # noqa: E402
from train_step import IterationTimer, observation_shape, start_in_stage  # noqa: E402

from lebm.config import build  # noqa: E402
from lebm.recording.audit import Bindings, CodeWatch  # noqa: E402
from lebm.recording.iteration_key import declared_reads, request_parts  # noqa: E402
from lebm.recording.keys import Description  # noqa: E402
from lebm.recording.recorded_iteration import quick_eager_reason  # noqa: E402
from lebm.recording.torch_internals import tree_flatten  # noqa: E402

QUICKSTARTS = {
    "LatentEBM": "recipes/quickstart.yaml",
    "MultiStageNCE": "recipes/multistage_nce/quickstart.yaml",
    "DualMCMC": "recipes/dual_mcmc/quickstart.yaml",
    "JointHierarchicalEBM": "recipes/hierarchical/quickstart.yaml",
    "DAMC": "recipes/damc/quickstart.yaml",
}
PAPER_SHAPES = {
    "LatentEBM": "recipes/latent_ebm/svhn.yaml",
    "MultiStageNCE": "recipes/multistage_nce/svhn.yaml",
    "DualMCMC": "recipes/dual_mcmc/cifar10.yaml",
    "JointHierarchicalEBM": "recipes/hierarchical/svhn.yaml",
    "DAMC": "recipes/damc/svhn.yaml",
}
WARMUP = 2


class KeyTimer(L.Callback):
    """Before each timed batch: the recorder's per-iteration host work, ``repeats`` times, timed one by
    one (``times``), and once with the state described anew (``rebuild_times``)."""

    def __init__(self, repeats: int) -> None:
        self.repeats = repeats
        self.times: list[float] = []
        self.rebuild_times: list[float] = []
        self.modules = 0
        self.parameters = 0

    bindings: Bindings | None = None
    watch: CodeWatch | None = None

    def on_train_batch_start(self, trainer: L.Trainer, module: Any, batch: Any, index: int) -> None:
        if index == WARMUP - 1:  # what a recording would bind: one eager training_iteration watched, as it watches
            self.watch = CodeWatch()
            iteration = type(module).training_iteration

            def watched(batch: Any, batch_idx: int) -> None:
                with self.watch:
                    iteration(module, batch, batch_idx)

            module.training_iteration = watched
        if index < WARMUP:
            return
        leaves, _ = tree_flatten(batch)
        recorder = module.iteration_recorder
        recorder.state = None  # the state described anew: what a change (or the fit's first iteration) costs
        start = time.perf_counter()
        per_iteration_key(module, leaves)
        self.rebuild_times.append(time.perf_counter() - start)
        for _ in range(self.repeats):
            start = time.perf_counter()
            per_iteration_key(module, leaves)
            assert self.bindings is not None and self.bindings.unchanged(), self.bindings.changed()
            self.times.append(time.perf_counter() - start)
        self.modules = len(recorder.state.described.modules)
        self.parameters = sum(1 for _ in module.parameters())

    def on_train_batch_end(self, trainer: L.Trainer, module: Any, outputs: Any, batch: Any, index: int) -> None:
        if index == WARMUP - 1 and self.watch is not None:
            del module.training_iteration
            classes = [type(module), *(type(m) for m in module.modules())]
            self.bindings = Bindings(self.watch.ran, classes, self.watch.c_calls.values())
            self.functions = len(self.bindings.functions)


def per_iteration_key(module: Any, leaves: list[Any]) -> None:
    """What the recorder does on the host before it replays (``IterationRecorder.run``): the cheap
    reasons to stay eager, ``iteration_key()``, the state's stamp (or its description when it
    changed) and the iteration's own parts of the key (the caller adds the bindings' check)."""
    quick_eager_reason(module)
    declared, _ = declared_reads(module)
    module.iteration_recorder.described_state(module)
    request_parts(module, leaves, declared, None, Description())


def measure(method: str, path: str, iters: int, repeats: int, batch_size: int | None = None) -> dict[str, Any]:
    recipe = load_recipe(path)
    batch_size = batch_size or recipe.get("data", {}).get("init_args", {}).get("batch_size", 100)
    torch.manual_seed(0)
    model = build(recipe["model"])
    start_in_stage(model, None)
    shape = observation_shape(model)
    n = batch_size * (WARMUP + iters)
    data = DataLoader(TensorDataset(torch.rand(n, *shape) * 2 - 1), batch_size=batch_size, drop_last=True)
    keys, timer = KeyTimer(repeats), IterationTimer()
    # callbacks run in order: the iteration's clock starts after the key's repeats
    bare_trainer(max_epochs=1, accelerator="cpu", devices=1, callbacks=[keys, timer]).fit(model, data)
    key_us = statistics.median(keys.times) * 1e6
    eager_ms = statistics.median(timer.times[WARMUP:]) * 1e3
    return {
        "method": method,
        "recipe": path,
        "batch_size": batch_size,
        "key_us": round(key_us, 1),
        "rebuild_us": round(statistics.median(keys.rebuild_times) * 1e6, 1),
        "eager_iteration_ms": round(eager_ms, 2),
        "key_share": round(key_us / 1e3 / eager_ms, 5),
        "modules_described": keys.modules,
        "parameters": keys.parameters,
    }


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of ``rows`` (the JSON lines), one row per recipe, with the run's facts under it."""
    lines = [
        "| method | recipe | modules described | key per iteration (us) | state described anew (us) "
        "| eager iteration (ms) | key / iteration |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | `{row['recipe']}` (batch {row['batch_size']}) | {row['modules_described']} "
            f"| {row['key_us']:,.0f} | {row.get('rebuild_us', float('nan')):,.0f} | {row['eager_iteration_ms']:,.0f} "
            f"| {100 * row['key_share']:.2f}% |"
        )
    first = rows[0]
    lines.append("")
    lines.append(
        f"{first['device']}, torch {first['torch']}, commit `{first['commit']}`, {first['date']}; load average "
        f"{first['load_average_before'][0]} before, {rows[-1]['load_average_after'][0]} after."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", choices=["quickstart", "paper", "all"], default="all")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per recipe (after 2 warm-ups)")
    parser.add_argument("--repeats", type=int, default=20, help="key computations timed before each iteration")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--paper-batch-size", type=int, default=None, help="default: each paper recipe's own")
    parser.add_argument("--quickstart-batch-size", type=int, default=None, help="default: each quickstart's own")
    parser.add_argument("--write", default=None, help="a folder for the JSON lines and their table")
    parser.add_argument("--methods", default="", help="only these methods (comma-separated class names)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = [round(v, 2) for v in os.getloadavg()]
    chosen = {"quickstart": [QUICKSTARTS], "paper": [PAPER_SHAPES], "all": [QUICKSTARTS, PAPER_SHAPES]}[args.recipes]
    stem = os.path.join(args.write, f"iteration_key_cost-{date.today()}") if args.write else None
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    rows = []
    for recipes in chosen:
        for method, path in recipes.items():
            if args.methods and method not in args.methods.split(","):
                continue
            batch_size = args.paper_batch_size if recipes is PAPER_SHAPES else args.quickstart_batch_size
            row = measure(method, path, args.iters, args.repeats, batch_size)
            row.update(device=describe_device(torch.device("cpu")), commit=commit, date=str(date.today()))
            row.update(run_facts(load_before))
            rows.append(row)
            print(json.dumps(row), flush=True)
            if stem:  # each line as it comes: a long run cut short keeps what it measured
                with open(f"{stem}-{commit}.jsonl", "w") as out:
                    out.writelines(json.dumps(row) + "\n" for row in rows)
                with open(f"{stem}-{commit}.md", "w") as out:
                    out.write(table(rows))


if __name__ == "__main__":
    main()
