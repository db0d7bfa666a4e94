"""Per-rank random streams, derived in one process with a stubbed rank and world size.

The slow multi-process DDP tests check the same contract end to end; this fast test runs the real
derivation (``Method.on_train_start`` / ``on_validation_epoch_start`` -> ``RandomStreams``) for
rank 0 and rank 1 of a 2-process run and for a single-process run, with no process spawned.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lebm.models.base import Method

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
