"""The CPU twin of the GPU test that every method trains with its chains captured
(``test_chain_graphs_cuda.py::test_every_method_trains_with_captured_chains_as_with_eager_ones``;
device: CPU, through the replay emulator): the same cases, built and trained by the same function
(``trained_with_chains``, the cases imported by the same path), and the same check of every chain's
counters, so that a setup that leaves the chains eager fails here, not first on a lent GPU.

At 256fb1d that test failed on an H200 for every case (LatentEBM ``{'captures': 0, 'replays': 0,
'eager_calls': 14}``, DAMC ``{'captures': 5, 'replays': 11, 'eager_calls': 12}``): it imported the
cases as ``cases`` and ``without_recording`` as ``test_chain_capture_methods``, which looks for
``tests.models.cases.Recording``, another class; the wrappers stayed, and a ``Recording`` states no
``capturable``, so its chains ran eagerly. DAMC's 12 eager calls were its two wrapped chains (prior
and posterior, 6 training batches each), its 5 captures the unwrapped ones (the amortizer's
ancestral start and its EMA copy's, the generation chain); unwrapped, DAMC runs no chain eagerly.

Also here: the twin of the GPU test of two keys in turn (a, b, a, b), each replaying the eager chain.
"""

from __future__ import annotations

import pytest
import torch

from lebm.models import TiltedGaussianPrior
from lebm.nets import EnergyMLP
from lebm.recording.cache import chain_graphs
from lebm.samplers import Langevin
from lebm.testing.capture import emulate_on_cpu
from tests.models.test_chain_graphs_cuda import CASES, assert_every_chain_captured, chain_roles, trained_with_chains


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_every_method_trains_with_its_chains_captured_on_the_emulator(case, one_thread) -> None:
    with emulate_on_cpu():
        model, _ = trained_with_chains(case, capture=True, accelerator="cpu")
    assert chain_roles(model)  # the case has chains to capture
    assert_every_chain_captured(model)


def test_keys_a_b_a_b_of_one_sampler_each_replay_the_eager_chain(one_thread) -> None:
    """The twin of the GPU test of that name: two batch sizes in turn, each recorded once and
    replayed once, every call the eager chain's numbers, bit for bit under the strict emulator."""
    torch.manual_seed(0)
    prior = TiltedGaussianPrior(16, EnergyMLP(16, hidden=32), sampler=Langevin(10, 0.4))
    eager_sampler = Langevin(10, 0.4, cuda_graph=False)
    with emulate_on_cpu():
        for n in (32, 20, 32, 20):
            captured = prior.sample(n, generator=torch.Generator().manual_seed(n))
            eager = prior.sample(n, sampler=eager_sampler, generator=torch.Generator().manual_seed(n))
            assert torch.equal(captured, eager), n
    assert chain_graphs(prior.sampler).stats() == {"captures": 2, "replays": 2, "eager_calls": 0}
