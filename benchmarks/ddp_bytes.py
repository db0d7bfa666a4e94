"""Bytes each rank sends through collectives per training iteration under ``lebm_ddp``, against the minimum.

    python benchmarks/ddp_bytes.py --recipe recipes/dual_mcmc/quickstart.yaml [--processes 2] [--iters 4]

Trains the recipe's model for ``--iters`` iterations on random data of its shape in
``--processes`` CPU processes (gloo, ``lebm_ddp``: the script is re-launched for ranks > 0),
counting on rank 0, per iteration:

- ``collective_bytes``: the bytes of every tensor given to ``all_reduce``, ``broadcast``,
  ``all_gather(_into_tensor)`` and ``reduce_scatter(_tensor)`` during the training batch;
- ``minimum_bytes``: the gradients of the nets the iteration updates, each reduced once (the
  parameters of every optimiser stepped, counted once each, times their element size);
- ``plain_ddp_bytes``: what a ``DistributedDataParallel`` wrapper would all-reduce: every
  trainable parameter at every backward pass (``backward_passes`` of them per iteration).

Prints one JSON line with the medians over the iterations.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import bare_trainer  # noqa: E402
from train_step import observation_shape, start_in_stage  # noqa: E402

from lebm.cli.resolve import resolve_recipe  # noqa: E402
from lebm.config import build  # noqa: E402

COLLECTIVES = ("all_reduce", "broadcast", "all_gather", "all_gather_into_tensor", "reduce_scatter_tensor")


def tensor_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, list | tuple):
        return sum(tensor_bytes(item) for item in value)
    return 0


class CollectiveCounter(L.Callback):
    """Counts, per training batch, the bytes given to collectives, the optimisers' parameters
    stepped and the backward passes; rank 0 writes the rows to ``output`` at the end."""

    def __init__(self, output: str) -> None:
        self.output = output
        self.rows: list[dict[str, int]] = []
        self.counting = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for name in COLLECTIVES:
            self._wrap_collective(name)
        manual_backward = pl_module.manual_backward

        def counted_backward(*args: Any, **kwargs: Any) -> Any:
            if self.counting:
                self.rows[-1]["backward_passes"] += 1
            return manual_backward(*args, **kwargs)

        pl_module.manual_backward = counted_backward

    def _wrap_collective(self, name: str) -> None:
        original: Callable[..., Any] = getattr(dist, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            if self.counting:
                row = self.rows[-1]
                row["collective_bytes"] += tensor_bytes(args[0] if name != "all_gather" else args[1])
                row["collective_calls"] += 1
            return original(*args, **kwargs)

        setattr(dist, name, counted)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stepped: set[int] = set()
        for optimizer in trainer.optimizers:
            step = optimizer.step

            def counted_step(*args: Any, _optimizer: Any = optimizer, _step: Any = step, **kwargs: Any) -> Any:
                if self.counting:
                    for group in _optimizer.param_groups:
                        for parameter in group["params"]:
                            if id(parameter) not in self.stepped:
                                self.stepped.add(id(parameter))
                                self.rows[-1]["minimum_bytes"] += tensor_bytes(parameter)
                return _step(*args, **kwargs)

            optimizer.step = counted_step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.stepped = set()
        fields = ("collective_bytes", "collective_calls", "minimum_bytes", "backward_passes")
        self.rows.append(dict.fromkeys(fields, 0))
        self.counting = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.counting = False
        trainable = sum(tensor_bytes(p) for p in pl_module.parameters() if p.requires_grad)
        self.rows[-1]["plain_ddp_bytes"] = self.rows[-1]["backward_passes"] * trainable

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank == 0:
            with open(self.output, "w") as handle:
                json.dump(self.rows, handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--iters", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--stage", type=int, default=None, help="multi-stage methods: the stage (default: the last)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    recipe = resolve_recipe(args.recipe)
    torch.manual_seed(0)
    model = build(recipe["model"])
    start_in_stage(model, args.stage)
    shape = observation_shape(model)
    n = args.batch_size * args.iters * args.processes
    data = DataLoader(TensorDataset(torch.rand(n, *shape) * 2 - 1), batch_size=args.batch_size, drop_last=True)
    # every rank re-runs this script (the launcher copies the environment): rank 0 names the file
    output = os.environ.setdefault("LEBM_DDP_BYTES_OUTPUT", os.path.join(tempfile.mkdtemp(), "rows.json"))
    trainer = bare_trainer(
        accelerator="cpu",
        devices=args.processes,
        strategy="lebm_ddp",
        max_epochs=1,
        callbacks=[CollectiveCounter(output)],
    )
    trainer.fit(model, data)
    if trainer.global_rank != 0:
        return
    with open(output) as handle:
        rows = json.load(handle)
    result: dict[str, Any] = {"recipe": args.recipe, "method": type(model).__name__, "processes": args.processes}
    for key in ("collective_bytes", "collective_calls", "minimum_bytes", "plain_ddp_bytes", "backward_passes"):
        result[key] = statistics.median(row[key] for row in rows)
    result["bytes_over_minimum"] = round(result["collective_bytes"] / result["minimum_bytes"], 4)
    result["plain_ddp_over_minimum"] = round(result["plain_ddp_bytes"] / result["minimum_bytes"], 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
