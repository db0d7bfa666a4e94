"""Two CPU ranks forked from the test process, for the tests whose subject is what DDP ranks do,
not how they start.

A forked rank starts in well under a second, where a spawned one (``lebm_ddp_spawn``, Lightning's
``ddp_spawn``) imports torch and Lightning again: about 12 CPU-s on a 2-core machine, most of such a
test's cost. ``lebm_ddp_spawn`` keeps an end-to-end test of its own (recorded iterations under
DDP, the CPU emulator set in each spawned rank: ``tests/recording/test_recorded_iterations.py``),
and the console script's ``--trainer.devices 2`` launches its ranks as a user's command does
(``tests/cli/test_cli.py``).

Each forked rank computes on one intra-op thread, set first thing in the rank: GNU OpenMP's thread
pool does not survive ``fork``, and a forked process that enters a parallel region with more than
one thread after its parent used the pool waits forever (PyTorch issues #17199 and #41197).

A forked rank receives the model, the Trainer and its callbacks and the DataModule by inheritance;
a spawned rank receives them through a pickle. :func:`assert_received_whole` checks what that
pickle carries, for lebm's methods, callbacks, samplers and DataModules (default-tier tests).
"""

from __future__ import annotations

import pickle
from typing import Any

import torch
from lightning.pytorch.strategies import DDPStrategy

from lebm.distributed import MethodDDPStrategy


class _OneThreadPerRank:
    """Strategy mixin: the rank runs one intra-op thread from its start-up on (Lightning calls
    ``setup_environment`` in each launched rank before any tensor operation of the run)."""

    def setup_environment(self) -> None:
        torch.set_num_threads(1)
        super().setup_environment()  # type: ignore[misc]


class ForkedMethodRanks(_OneThreadPerRank, MethodDDPStrategy):
    """lebm's DDP strategy (:class:`~lebm.distributed.MethodDDPStrategy`) with forked ranks."""


class ForkedLightningRanks(_OneThreadPerRank, DDPStrategy):
    """Lightning's own DDP strategy with forked ranks, for a plain ``LightningModule``."""


def forked_ranks(lightning: bool = False) -> DDPStrategy:
    """A new strategy (one per Trainer) whose ranks are forked from this process and run one thread:
    lebm's for an lebm method, Lightning's own with ``lightning=True``."""
    return (ForkedLightningRanks if lightning else ForkedMethodRanks)(start_method="fork")


def assert_received_whole(sent: Any) -> None:
    """``sent`` through the pickle a spawned rank receives it by: the same class, the same attribute
    names and, for a module, the same submodule classes and the same state (tensors, extra state)
    under the same names."""
    received = pickle.loads(pickle.dumps(sent))
    assert type(received) is type(sent)
    assert sorted(vars(received)) == sorted(vars(sent))
    if isinstance(sent, torch.nn.Module):
        assert [type(module) for module in received.modules()] == [type(module) for module in sent.modules()]
        sent_state, received_state = sent.state_dict(), received.state_dict()
        assert list(received_state) == list(sent_state)
        for name, value in sent_state.items():  # tensors, and a module's extra state (a vocabulary)
            same = torch.equal(value, received_state[name]) if torch.is_tensor(value) else value == received_state[name]
            assert same, name
