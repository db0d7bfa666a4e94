"""Per-rank random streams, derived in one process with a stubbed rank and world size.

The slow multi-process DDP tests check the same contract end to end; these fast tests run the real
derivation (``Method.on_train_start`` / ``on_validation_epoch_start`` -> ``RandomStreams``) for
rank 0 and rank 1 of a 2-process run and for a single-process run, and the real checkpoint hooks
(``on_save_checkpoint`` gathering every rank's streams, ``on_load_checkpoint`` handing each rank its
own) for a resumed 2-process run, with no process spawned.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from lebm.models.base import Method
from lebm.randomness import CHECKPOINT_KEY as STREAMS_KEY
from lebm.randomness import pack

SEED = 1234


def _draws(rank: int, world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What rank ``rank`` of a ``world_size``-process run draws first from its training stream and
    its evaluation stream (epoch 0): a fresh method with a stub trainer runs the real hooks."""
    model = Method()
    model.trainer = SimpleNamespace(global_rank=rank, world_size=world_size, global_step=0, current_epoch=0)
    model.on_train_start()
    model.on_validation_epoch_start()
    train = torch.randn(16, generator=model.train_generator)
    evaluation = torch.randn(16, generator=model.eval_generator)
    return train, evaluation


def test_ranks_draw_different_streams_and_rank_0_draws_what_one_process_draws(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Device: CPU. Under DDP rank 0 and rank 1 draw different training and evaluation streams;
    rank 0 of 2 processes draws what a single process draws (``lebm/randomness.py`` and
    docs/design.md promise it); the same seed, rank and world size draw the same numbers again."""
    monkeypatch.setenv("PL_GLOBAL_SEED", str(SEED))  # the run's seed, as seed_everything sets it
    train_0, eval_0 = _draws(rank=0, world_size=2)
    train_1, eval_1 = _draws(rank=1, world_size=2)
    train_single, eval_single = _draws(rank=0, world_size=1)

    # (a) the ranks' streams differ
    assert not torch.equal(train_0, train_1), "rank 0 and rank 1 draw the same training stream"
    assert not torch.equal(eval_0, eval_1), "rank 0 and rank 1 draw the same evaluation stream"
    # (b) rank 0 of a multi-process run equals a single-process run
    assert torch.equal(train_0, train_single)
    assert torch.equal(eval_0, eval_single)
    # (c) the same seed, rank and world size reproduce the draws (whatever torch's global RNG did)
    torch.manual_seed(SEED + 1)
    for rank, expected in ((0, (train_0, eval_0)), (1, (train_1, eval_1))):
        again = _draws(rank=rank, world_size=2)
        assert torch.equal(again[0], expected[0]) and torch.equal(again[1], expected[1])


# ------------------------------------------------------------------ a resumed two-process run
class FakeWorld:
    """Two ranks of a DDP run in one process: each rank's model gets a stub trainer whose
    ``strategy.all_gather`` stacks every rank's tensor in rank order, as the real collective does
    when every rank saves its checkpoint."""

    def __init__(self, models: list[Method], global_step: int) -> None:
        self.models = models
        for rank, model in enumerate(models):
            model.trainer = SimpleNamespace(
                global_rank=rank,
                world_size=len(models),
                global_step=global_step,
                current_epoch=0,
                state=SimpleNamespace(fn="fit"),
                optimizers=[],
                strategy=SimpleNamespace(all_gather=lambda tensor, rank=rank: self.all_gather(rank, tensor)),
            )

    def all_gather(self, rank: int, tensor: torch.Tensor) -> torch.Tensor:
        rows = [
            tensor if other == rank else pack(model.random_streams.local_state(model.device, other))[0]
            for other, model in enumerate(self.models)
        ]
        return torch.stack(rows)


@pytest.mark.filterwarnings("ignore:`configure_optimizers` must be implemented")
def test_each_rank_of_a_resumed_two_process_run_gets_back_its_own_saved_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Device: CPU. Rank 0 and rank 1 of a 2-process run train a little, rank 0 writes the
    checkpoint (every rank's streams gathered into it, as under DDP), and each rank then draws on:
    a run resumed from that checkpoint on two processes draws, on every rank, exactly the numbers
    that rank would have drawn had it never stopped (its own stream, not rank 0's), and torch's
    global RNG goes on from where it was saved."""
    monkeypatch.setenv("PL_GLOBAL_SEED", str(SEED))
    running = [Method(), Method()]
    FakeWorld(running, global_step=0)
    for model in running:
        model.on_train_start()
        torch.randn(5, generator=model.train_generator)  # the chains of the steps before the checkpoint
    checkpoint: dict = {}
    running[0].on_save_checkpoint(checkpoint)
    assert checkpoint[STREAMS_KEY]["world_size"] == 2
    global_next = torch.randn(4)  # torch's global RNG after the save (dropout draws from it)
    never_stopped = [torch.randn(16, generator=model.train_generator) for model in running]
    assert not torch.equal(never_stopped[0], never_stopped[1])

    resumed = [Method(), Method()]
    FakeWorld(resumed, global_step=7)
    for rank, model in enumerate(resumed):
        torch.manual_seed(99)  # whatever the new processes' global RNG holds before the restore
        model.on_load_checkpoint(copy.deepcopy(checkpoint))
        model.on_train_start()
        assert torch.equal(torch.randn(4), global_next), f"rank {rank}: torch's global RNG not restored"
        draws = torch.randn(16, generator=model.train_generator)
        assert torch.equal(draws, never_stopped[rank]), f"rank {rank} resumed another rank's or a fresh stream"
